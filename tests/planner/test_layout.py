"""Layout (planner/_layout.py): derived sizes, the one global-batch rule, and the layout rules."""

from __future__ import annotations

import pytest

from trainplan.errors import UsageError
from trainplan.planner import ZERO_STAGES, Layout, load_model


def test_derived_sizes():
    layout = Layout(gpus=64, gpus_per_node=8, tp=2, pp=4, micro_batch=2, grad_accum=8, seq_len=4096)
    assert layout.dp == 8  # 64 / (2 x 4)
    assert layout.global_batch == 2 * 8 * 8 == 128
    assert layout.tokens_per_step == 128 * 4096
    assert Layout(gpus=20, gpus_per_node=8).nodes == 3
    assert Layout(precision="fp32").mixed is False and Layout(precision="bf16").mixed is True


def test_the_one_global_batch_rule_sets_accumulation_or_refuses():
    # plan, run and the search all turn a global batch into accumulation through this one method.
    layout = Layout(gpus=8, tp=2, micro_batch=4)  # dp 4: 16 sequences per micro-step
    assert layout.with_global_batch(64).grad_accum == 4
    assert layout.with_global_batch(16).grad_accum == 1
    for bad in (60, 8, 0):  # never rounded: not a multiple, below one micro-step, not positive
        with pytest.raises(UsageError) as err:
            layout.with_global_batch(bad)
        assert err.value.key == "--global-batch" and "4 x 4 = 16" in err.value.message
    with pytest.raises(UsageError) as err:
        layout.with_global_batch(10, flag="space.global_batch")
    assert err.value.key == "space.global_batch"


def test_problems_lists_every_rule_broken_and_validate_raises_the_first():
    layout = Layout(gpus=6, gpus_per_node=2, tp=4, zero=1, offload="nvme")
    assert [p.key for p in layout.problems()] == ["--gpus", "--tp", "--offload"]
    with pytest.raises(UsageError) as err:
        layout.validate()
    assert err.value.key == "--gpus" and "multiple of --tp x --pp x --cp = 4" in err.value.message
    assert Layout(gpus=8, zero=3, offload="nvme").problems() == []


@pytest.mark.parametrize(("changes", "flag"), [
    ({"gpus": 0}, "--gpus"), ({"micro_batch": -1}, "--micro-batch"), ({"zero": 4}, "--zero"),
    ({"precision": "fp8"}, "--precision"), ({"offload": "cpu"}, "--offload"),
    ({"pp": 2, "gpus": 2, "zero": 2}, "--zero"), ({"checkpointing": "some"}, "--checkpointing"),
    ({"micro_batch": True}, "--micro-batch"),  # a JSON true is an int to Python, not a count
])
def test_each_rule_names_its_flag(changes, flag):
    assert [p.key for p in Layout(**changes).problems()] == [flag]


def test_model_rules():
    gpt2 = load_model("gpt2")  # 12 heads, 12 layers, 1024 learned positions
    # tp 5 divides neither the 12 heads nor the 12 kv-heads (nor they it): two rules broken
    assert [p.key for p in Layout(gpus=5, tp=5, seq_len=1024).problems(gpt2)] == ["--tp", "--tp"]
    assert [p.key for p in Layout(gpus=16, pp=16, seq_len=1024).problems(gpt2)] == ["--pp"]
    assert [p.key for p in Layout(seq_len=2048).problems(gpt2)] == ["--seq-len"]
    assert Layout(seq_len=8192).problems(load_model("llama-2-7b")) == []  # rotary: no learned limit
    assert Layout(gpus=5, tp=5).problems() == []  # without a model only the layout's own rules apply


def test_zero_stages_are_the_ones_deepspeed_has():
    assert ZERO_STAGES == (0, 1, 2, 3)
    assert all(Layout(zero=z).problems() == [] for z in ZERO_STAGES)


def test_global_batch_at_least_rounds_up_where_the_exact_rule_refuses():
    lay = Layout(gpus=8, micro_batch=4)  # 8 data-parallel ranks: 32 sequences per accumulation step
    assert lay.with_global_batch_at_least(100).grad_accum == 4  # 128 >= 100; the exact rule refuses 100
    assert lay.with_global_batch_at_least(64).grad_accum == lay.with_global_batch(64).grad_accum == 2
    assert lay.with_global_batch_at_least(1).grad_accum == 1
    with pytest.raises(UsageError):
        lay.with_global_batch(100)
