"""FLOP counts against ``torch.utils.flop_counter.FlopCounterMode`` on real models, and the conventions.

Each tiny model of every family runs a real forward + backward (loss from labels) on the CPU in
fp32; the exact count must equal what FlopCounterMode reports. Which attention kernel PyTorch
picks decides what it can count (see ``ATTENTION_KERNELS``); the test names the kernel it expects.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.planner.conftest import TINY_CONFIGS, build_hf_model
from tests.planner.family_configs import FAMILY_CONFIGS
from trainplan.errors import UsageError
from trainplan.planner import from_hf_config, load_model
from trainplan.planner._flops import (
    counted_flops_per_step,
    flops,
    hardware_flops_per_token,
    model_flops_per_token,
)
from trainplan.planner._params import count_parameters

BATCH = 2
ALL_CONFIGS = {**TINY_CONFIGS, **FAMILY_CONFIGS}


def _measure(model: Any, seq_len: int, *, checkpointing: str = "none") -> int:
    import torch
    from torch.utils.checkpoint import set_checkpoint_early_stop
    from torch.utils.flop_counter import FlopCounterMode

    model.train()
    if checkpointing == "full":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ids = torch.randint(0, model.config.vocab_size, (BATCH, seq_len), generator=torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False)
    # Early stop skips recomputing a block's last matmul; the count models a whole block rerun.
    with counter, set_checkpoint_early_stop(False):
        model(input_ids=ids, labels=ids).loss.backward()
    return counter.get_total_flops()


def _cpu_kernel(model: Any, attn: str) -> str:
    """The attention kernel PyTorch runs on the CPU in training, as FlopCounterMode sees it."""
    if attn == "eager":
        return "matmul"
    # SDPA's CPU flash kernel has no flop formula; with dropout on, SDPA falls back to its math
    # path, which is plain bmm.
    dropout = getattr(model.config, "attn_pdrop", 0.0) or getattr(model.config, "attention_dropout", 0.0)
    # Falcon-7B style multi-query attention hands SDPA one k/v head expanded over all query heads
    # (modeling_falcon.py), which the CPU flash kernel does not take: SDPA runs its math path.
    # Multi-head latent attention (DeepSeek) has value heads narrower than query/key heads, which
    # the flash kernel requires equal: math path again.
    spec = from_hf_config(model.config.to_dict())
    multi_query = spec.family == "falcon" and spec.num_kv_heads == 1
    return "matmul" if dropout or multi_query or spec.value_head_dim != spec.head_dim else "uncounted"


# Gemma 2 has no SDPA path in transformers (attention-logit softcapping): eager only.
_KERNEL_CASES = [(name, attn) for name in sorted(ALL_CONFIGS) for attn in ("eager", "sdpa")
                 if (ALL_CONFIGS[name]["model_type"], attn) != ("gemma2", "sdpa")]


@pytest.mark.parametrize("seq_len", [32, 128])
@pytest.mark.parametrize(("name", "attn"), _KERNEL_CASES)
def test_counted_flops_equal_flop_counter(name: str, seq_len: int, attn: str) -> None:
    cfg = ALL_CONFIGS[name]
    model = build_hf_model(cfg, device="cpu", attn_implementation=attn, experts_implementation="eager")
    expected = counted_flops_per_step(from_hf_config(cfg), seq_len, BATCH, attention=_cpu_kernel(model, attn))
    assert expected == _measure(model, seq_len)


@pytest.mark.parametrize("name", ["gpt2", "llama", "mixtral", "gemma", "opt-proj", "qwen2_moe", "deepseek_v3"])
def test_full_checkpointing_reruns_each_block_forward(name: str) -> None:
    cfg = ALL_CONFIGS[name]
    model = build_hf_model(cfg, device="cpu", attn_implementation="eager", experts_implementation="eager")
    spec = from_hf_config(cfg)
    measured = _measure(model, 64, checkpointing="full")
    assert measured == counted_flops_per_step(spec, 64, BATCH, "full", attention="matmul")
    assert measured > counted_flops_per_step(spec, 64, BATCH, "none", attention="matmul")


def test_grouped_mm_experts_are_invisible_to_the_flop_counter() -> None:
    # transformers' default MoE kernel (grouped_mm) has no FlopCounterMode formula: a profiler
    # based MFU would miss every expert matmul. The count says so rather than guessing.
    cfg = TINY_CONFIGS["mixtral"]
    model = build_hf_model(cfg, device="cpu", attn_implementation="eager", experts_implementation="grouped_mm")
    spec = from_hf_config(cfg)
    measured = _measure(model, 32)
    assert measured == counted_flops_per_step(spec, 32, BATCH, attention="matmul", experts="uncounted")
    assert measured < counted_flops_per_step(spec, 32, BATCH, attention="matmul")


def test_model_flops_convention_matches_the_mfu_formula() -> None:
    # 6N + 12 L d s with N all parameters (embeddings included): llama-2-7b at s = 4096.
    spec = load_model("llama-2-7b")
    n = 6_738_415_616
    assert model_flops_per_token(spec, 4096) == 6 * n + 12 * 32 * 4096 * 4096
    # MoE: only the active parameters count.
    moe = load_model("mixtral-8x7b")
    assert model_flops_per_token(moe, 2048) == 6 * count_parameters(moe).active + 12 * 32 * 4096 * 2048


def test_gemma_attention_width_is_heads_times_head_dim() -> None:
    spec = load_model("gemma-7b")  # 16 heads x 256 = 4096, wider than d = 3072
    attention = model_flops_per_token(spec, 1024) - 6 * count_parameters(spec).total
    assert attention == 12 * 28 * 4096 * 1024


def test_recompute_adds_what_checkpointing_reruns() -> None:
    spec = load_model("llama-2-7b")
    s, layers, p = 2048, spec.num_layers, count_parameters(spec)
    base = model_flops_per_token(spec, s)
    assert hardware_flops_per_token(spec, s, "none") == base
    assert hardware_flops_per_token(spec, s, "selective") == base + 4 * layers * 4096 * s
    assert hardware_flops_per_token(spec, s, "full") == base + 2 * layers * p.per_layer + 4 * layers * 4096 * s
    # Full recompute costs about a third more: 8N vs 6N (Korthikanti et al. 2022, section 5).
    assert 1.30 < hardware_flops_per_token(spec, s, "full") / base < 1.34


def test_flops_result_scales_per_step() -> None:
    spec = load_model("gpt2")
    result = flops(spec, 1024, 8 * 1024, "selective")
    assert result.model_per_step == 8 * 1024 * result.model_per_token
    assert result.hardware_per_token > result.model_per_token
    assert result.counted_per_token * 1024 == counted_flops_per_step(spec, 1024, 1, "selective")
    # Against 6N + 12Lds, the executed count adds the fused kernel's score recompute (2 s d a
    # layer) and charges nothing for the position table lookup, norms and biases.
    p = count_parameters(spec)
    recompute = 2 * spec.num_layers * 1024 * spec.hidden_size
    uncharged = 6 * (spec.max_position_embeddings * spec.hidden_size + p.norms_and_biases)
    assert result.counted_per_token - result.model_per_token == recompute - uncharged


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"seq_len": 0}, "--seq-len"), ({"checkpointing": "some"}, "--checkpointing"),
     ({"tokens_per_step": -1}, "--global-batch")],
)
def test_bad_input_names_the_flag(kwargs: dict[str, Any], key: str) -> None:
    args = {"model": load_model("gpt2"), "seq_len": 128, "tokens_per_step": 1024, "checkpointing": "none"} | kwargs
    with pytest.raises(UsageError) as err:
        flops(**args)
    assert err.value.key == key


def test_fused_kernel_multiples_follow_torchs_sdpa_formulas() -> None:
    # No GPU here, so check the "fused" weights against the formulas FlopCounterMode registers
    # for the flash / memory-efficient / cuDNN kernels, on a GQA shape.
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    from trainplan.planner._flops import ATTENTION_KERNELS

    b, heads, kv_heads, s, head_dim = 2, 8, 2, 96, 16
    q, kv = (b, heads, s, head_dim), (b, kv_heads, s, head_dim)
    core = b * s * 4 * s * heads * head_dim  # 4 s (h d_head) per token, full square
    fwd, bwd = ATTENTION_KERNELS["fused"]
    assert sdpa_flop_count(q, kv, kv) == fwd * core
    assert sdpa_backward_flop_count(q, q, kv, kv) == bwd * core
