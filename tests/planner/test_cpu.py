"""CPU step time from kernel timings (planner/_cpu.py): the cost models' regressors and the step's
products, checked against values worked out by hand; the fit recovers known constants."""

from __future__ import annotations

import pytest

from trainplan.planner._cpu import KernelModel, fit_kernels, kernel_seconds, linear_row, sdpa_row
from trainplan.planner._layout import Layout
from trainplan.planner._model import from_hf_config
from trainplan.planner._lsq import nonneg_rel_lsq

KM = KernelModel(linear=(1e-11, 1e-10, 1e-5), sdpa=(1e-10, 1e-8, 1e-4), threads=1, misfit=0.0)
SMALL = {"model_type": "llama", "vocab_size": 256, "hidden_size": 64, "intermediate_size": 176,
         "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2,
         "max_position_embeddings": 64, "tie_word_embeddings": False}


def test_regressors_by_hand() -> None:
    # 16 tokens through a 64 -> 176 linear layer: 3 products of 2*16*64*176 FLOPs; each touches
    # x (16x64), W (176x64) and y (16x176): 1024 + 11264 + 2816 = 15104 floats of 4 bytes
    assert linear_row(16, 64, 176) == [1_081_344, 3 * 4 * 15_104, 3.0]
    # 2 sequences x 2 heads of 8 positions, 32-wide heads: 2*2*8*8*32 score-width elements, 2*2*8*32 q/k/v/o
    assert sdpa_row(2, 2, 8, 32) == [8192, 1024, 1.0]
    assert KM.linear_s(16, 64, 64) == pytest.approx(393_216e-11 + 73_728e-10 + 3e-5)  # 4.130496e-5 s


def test_step_kernel_seconds_by_hand() -> None:
    """One Llama block of width 64 (MLP 176, 2 heads of 32) and a 256-token head, micro-batch 2 x 8
    tokens, 2 micro-batches: q, k, v, o at 4.130496e-5 s each, gate/up/down at 5.893824e-5 s each,
    attention 8.192e-7 + 1.024e-5 + 1e-4 s, LM head 1.572864e-5 + 2.58048e-5 + 3e-5 s."""
    block = 4 * 4.130496e-5 + 3 * 5.893824e-5 + 1.110592e-4
    expected = 2 * (block + 7.153344e-5)
    model = from_hf_config(SMALL, name="small")
    layout = Layout(gpus=1, micro_batch=2, seq_len=8, grad_accum=2, precision="fp32")
    assert kernel_seconds(model, layout, KM) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(1.0492544e-3, rel=1e-9)
    # two layers: the block twice, the head once
    two = from_hf_config({**SMALL, "num_hidden_layers": 2}, name="small2")
    assert kernel_seconds(two, layout, KM) == pytest.approx(expected + 2 * block, rel=1e-12)


def test_layouts_the_products_do_not_describe_give_none() -> None:
    model = from_hf_config(SMALL, name="small")
    base = Layout(gpus=1, micro_batch=2, seq_len=8, precision="fp32")
    assert kernel_seconds(model, base.with_(checkpointing="full"), KM) is None
    assert kernel_seconds(model, base, KM) is not None


def test_fit_recovers_the_cost_models_from_exact_samples() -> None:
    lin = [[t, i, o, KM.linear_s(t, i, o)] for t in (128, 512, 2048) for i, o in ((64, 64), (64, 176), (256, 704),
                                                                                    (704, 256), (128, 128))]
    att = [[b, h, s, 32, KM.sdpa_s(b, h, s, 32)] for b, h, s in ((4, 2, 64), (16, 2, 128), (4, 4, 256), (64, 4, 32),
                                                                 (8, 8, 128))]
    km = fit_kernels({"threads": 1, "linear": lin, "sdpa": att})
    assert km is not None and km.misfit < 1e-9
    for got, want in zip(km.linear + km.sdpa, KM.linear + KM.sdpa):
        assert got == pytest.approx(want, rel=1e-6)
    assert fit_kernels({"linear": lin[:2], "sdpa": att}) is None  # too few samples


def test_nonneg_least_squares_drops_a_column_that_would_go_negative() -> None:
    # y = 2 x1 exactly; x2 only adds noise-free nothing, so its best unconstrained weight is 0 or negative
    rows = [[1.0, 1.0], [2.0, 1.0], [3.0, 1.0], [4.0, 1.0]]
    y = [2.0 * r[0] - 0.1 for r in rows]  # unconstrained: 2 x1 - 0.1; non-negative: x2's weight 0
    c = nonneg_rel_lsq(rows, y)
    assert c is not None and c[1] == 0.0 and c[0] > 0
