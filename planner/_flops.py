"""FLOPs of training a :class:`ModelSpec`: the MFU convention, with recompute, and an exact count.

Three figures, all per token of training (forward + backward) unless a name says per step:

``model``
    ``6 N + 12 L (h d_head) s`` with N all parameters, embeddings included (active ones for an
    MoE), L blocks, h d_head the attention width and s the sequence length. 6N is one multiply-add
    per parameter forward and two backward (Kaplan et al. 2020, "Scaling Laws for Neural Language
    Models", section 2.1); 12 L (h d_head) s is the attention score and value matmuls, forward and
    backward, over the full s x s square (Chowdhery et al. 2022, "PaLM", appendix B: not halved
    for the causal mask). It is the convention behind the MFU that llm-foundry and torchtitan
    report, and the figure design.md fixes for MFU.
``hardware``
    ``model`` plus the recompute that activation checkpointing adds: ``full`` reruns every block's
    forward, 2 N_blocks + 4 L (h d_head) s (the embedding and LM head are outside the checkpointed
    blocks; Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters
    Using Megatron-LM", section 5.1, recompute the layers but not the logit layer); ``selective``
    reruns only the attention core, 4 L (h d_head) s (Korthikanti et al. 2022, "Reducing
    Activation Recomputation in Large Transformer Models", section 4.2 and Table 4).
``counted``
    The matmul FLOPs the Hugging Face model really executes, as
    ``torch.utils.flop_counter.FlopCounterMode`` counts them (2 m n k per matmul; a linear layer's
    backward is two matmuls of the forward's size; biases, norms, softmax and the embedding lookup
    are not counted). Attention costs depend on the kernel, see :data:`ATTENTION_KERNELS`.

For a spec counted on the meta device (``source == "meta-device"``: an architecture without
formulas here) N is the measured parameter count and ``counted`` is FlopCounterMode's own count of
a forward + backward at the plan's sequence length, run by :mod:`trainplan.planner._meta` (which
imports torch; the analytic families never do).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from trainplan.errors import UsageError
from trainplan.planner._layout import CHECKPOINTING
from trainplan.planner._model import ModelSpec
from trainplan.planner._params import blocks, count_parameters, ends_matmul_per_token

__all__ = [
    "ATTENTION_KERNELS",
    "EXPERT_KERNELS",
    "FlopCounts",
    "counted_flops_per_step",
    "flops",
    "hardware_flops_per_token",
    "model_flops_per_token",
]

# How FlopCounterMode sees the attention core (QK^T and AV) of one layer, in multiples of its
# forward 4 s (h d_head) per token. "matmul": eager attention, or SDPA's math fallback (taken e.g.
# on the CPU when attention dropout is on): two bmm forward, four backward. "fused": the
# flash/memory-efficient/cuDNN SDPA kernels, whose registered backward formula also recomputes
# the scores (five bmm-sized products: torch/utils/flop_counter.py, sdpa_backward_flop_count);
# the formula ignores is_causal ("We aren't accounting for causal attention here"). "uncounted":
# a kernel with no registered formula, counted as 0 -- the CPU flash kernel
# aten._scaled_dot_product_flash_attention_for_cpu (torch 2.13).
ATTENTION_KERNELS: dict[str, tuple[float, float]] = {
    "matmul": (1.0, 2.0),  # (forward, backward) multiples of the forward cost
    "fused": (1.0, 2.5),
    "uncounted": (0.0, 0.0),
}

# How the MoE experts are seen: "matmul" for transformers' eager and batched_mm implementations
# (each token's k experts run as linear/bmm: exactly T*k rows, whatever the routing);
# "uncounted" for grouped_mm (aten._grouped_mm has no FlopCounterMode formula, torch 2.13).
EXPERT_KERNELS = ("matmul", "uncounted")


@dataclass(frozen=True, slots=True, kw_only=True)
class FlopCounts:
    """FLOPs of training one model at one sequence length; see the module docstring."""

    seq_len: int
    """Tokens per sequence s."""
    tokens_per_step: int
    """Tokens one optimizer step processes (all ranks)."""
    checkpointing: str
    """Activation checkpointing the hardware and counted figures include."""
    model_per_token: int
    """6N + 12 L (h d_head) s: the MFU numerator per token."""
    hardware_per_token: int
    """``model_per_token`` plus the checkpointing recompute."""
    counted_per_token: int
    """Matmul FLOPs executed with a fused SDPA kernel (what FlopCounterMode reports on a GPU)."""
    model_per_step: int
    """``model_per_token * tokens_per_step``."""
    hardware_per_step: int
    """``hardware_per_token * tokens_per_step``."""
    counted_per_step: int
    """``counted_per_token * tokens_per_step``."""


def _check(seq_len: int, checkpointing: str) -> None:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
        raise UsageError("--seq-len", f"must be a positive integer, got {seq_len!r}")
    if checkpointing not in CHECKPOINTING:
        raise UsageError("--checkpointing", f"{checkpointing!r} is not one of {', '.join(CHECKPOINTING)}")


def _attention_core_forward(model: ModelSpec, seq_len: int) -> int:
    """QK^T and AV of one layer for one query token: 2 s h d_qk + 2 s h d_v, full square.

    ``4 s (h d_head)`` where value and key heads are equally wide; multi-head latent attention
    (DeepSeek) scores with d_qk = nope + rope dims and mixes values of v_head_dim.
    """
    return 2 * seq_len * model.num_heads * (model.head_dim + model.value_head_dim)


def model_flops_per_token(model: ModelSpec, seq_len: int) -> int:
    """6 N + 12 L (h d_head) s, N all (active) parameters; see the module docstring."""
    _check(seq_len, "none")
    n = count_parameters(model).active
    return 6 * n + 3 * model.num_layers * _attention_core_forward(model, seq_len)


def _active_block_params(model: ModelSpec) -> int:
    """Parameters of all blocks one token uses (what full checkpointing reruns, 2 FLOPs each)."""
    if model.source != "analytic":
        p = count_parameters(model)
        return p.layers - (p.total - p.active)  # the unused routed experts all sit in blocks
    return sum(b.total - b.unused for b in blocks(model))


def hardware_flops_per_token(model: ModelSpec, seq_len: int, checkpointing: str = "none") -> int:
    """``model_flops_per_token`` plus the forward work checkpointing recomputes."""
    _check(seq_len, checkpointing)
    flops = model_flops_per_token(model, seq_len)
    core = model.num_layers * _attention_core_forward(model, seq_len)
    if checkpointing == "selective":
        return flops + core
    if checkpointing == "full":
        return flops + 2 * _active_block_params(model) + core
    return flops


def _linear_forward(model: ModelSpec) -> tuple[int, int, int]:
    """Matmul FLOPs per token of all blocks' dense linears, their routed experts, and the ends.

    A linear layer's forward is 2 FLOPs per weight per token. An MoE block runs its router
    Linear(d, E) and shared expert for every token, then k routed experts (Fedus et al. 2021,
    "Switch Transformers", section 2: compute scales with experts per token, not experts). The
    ends are the LM head (a V x d matmul even when tied) and OPT's embedding projections.
    """
    every = blocks(model)
    routed = sum(2 * model.experts_per_token * b.expert for b in every if b.routed)
    dense = sum(2 * b.matmul_per_token for b in every) - routed
    return dense, routed, 2 * ends_matmul_per_token(model)


def _meta_counted_per_token(model: ModelSpec, seq_len: int, checkpointing: str, attention: str, experts: str) -> int:
    """Counted training FLOPs per token of a meta-device spec (see the module docstring): what
    FlopCounterMode measured with eager attention, with the chosen kernel's multiples swapped in."""
    from trainplan.planner._meta import meta_flops  # imports torch

    if experts != "matmul":
        raise UsageError("experts", f"the meta-device count runs batched_mm experts (matmul); got {experts!r}")
    m = meta_flops(model, seq_len)
    fwd_mult, bwd_mult = ATTENTION_KERNELS[attention]
    core = model.num_layers * _attention_core_forward(model, seq_len) * seq_len  # per sequence
    # Eager attention was counted as (1 + 2) x core; swap in the chosen kernel's multiples.
    total = m.forward + m.backward + round((fwd_mult + bwd_mult - 3) * core)
    if checkpointing == "full":
        total += m.blocks_forward + round((fwd_mult - 1) * core)
    elif checkpointing == "selective" and attention == "matmul":
        total += core
    return total // seq_len


def counted_flops_per_step(
    model: ModelSpec,
    seq_len: int,
    batch: int,
    checkpointing: str = "none",
    *,
    attention: str = "fused",
    experts: str = "matmul",
) -> int:
    """Matmul FLOPs of one forward + backward over ``batch`` sequences, as FlopCounterMode counts.

    Args:
        model: the model.
        seq_len: tokens per sequence.
        batch: sequences in the step (micro-batch x accumulation x data-parallel ranks).
        checkpointing: ``none``; ``full`` reruns each block's forward in backward (Hugging Face
            ``gradient_checkpointing_enable()``, counted without PyTorch's early stop, which
            skips a block's last matmul when nothing saved depends on its output:
            ``torch.utils.checkpoint.set_checkpoint_early_stop``); ``selective`` reruns the
            attention core, which a fused kernel's backward already does (Dao et al. 2022,
            "FlashAttention", section 3.1), so it adds only for ``matmul`` attention.
        attention: attention kernel, a key of :data:`ATTENTION_KERNELS`.
        experts: MoE expert kernel, one of :data:`EXPERT_KERNELS`.
    """
    _check(seq_len, checkpointing)
    if attention not in ATTENTION_KERNELS:
        raise UsageError("attention", f"{attention!r} is not one of {', '.join(ATTENTION_KERNELS)}")
    if experts not in EXPERT_KERNELS:
        raise UsageError("experts", f"{experts!r} is not one of {', '.join(EXPERT_KERNELS)}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0:
        raise UsageError("--micro-batch", f"must be a positive integer, got {batch!r}")
    if model.source != "analytic":
        return _meta_counted_per_token(model, seq_len, checkpointing, attention, experts) * seq_len * batch
    dense, routed, head = _linear_forward(model)
    if experts == "uncounted":
        routed = 0
    fwd_mult, bwd_mult = ATTENTION_KERNELS[attention]
    core = _attention_core_forward(model, seq_len)
    # Forward + backward: every linear three times its forward, the attention core per kernel.
    layers = model.num_layers
    per_token = 3 * (dense + routed) + layers * round((fwd_mult + bwd_mult) * core) + 3 * head
    if checkpointing == "full":
        per_token += dense + routed + layers * round(fwd_mult * core)
    elif checkpointing == "selective" and attention == "matmul":
        per_token += layers * core
    return per_token * seq_len * batch


@lru_cache(maxsize=1024)  # pure; --recommend asks the same few questions thousands of times
def flops(model: ModelSpec, seq_len: int, tokens_per_step: int, checkpointing: str = "none") -> FlopCounts:
    """All three FLOP figures for training ``model`` at ``seq_len``, per token and per step."""
    _check(seq_len, checkpointing)
    if isinstance(tokens_per_step, bool) or not isinstance(tokens_per_step, int) or tokens_per_step <= 0:
        raise UsageError("--global-batch", f"tokens per step must be a positive integer, got {tokens_per_step!r}")
    model_tok = model_flops_per_token(model, seq_len)
    hardware_tok = hardware_flops_per_token(model, seq_len, checkpointing)
    # One sequence's count divided by its tokens: every term is per token, so this is exact.
    counted_tok = counted_flops_per_step(model, seq_len, 1, checkpointing) // seq_len
    return FlopCounts(
        seq_len=seq_len,
        tokens_per_step=tokens_per_step,
        checkpointing=checkpointing,
        model_per_token=model_tok,
        hardware_per_token=hardware_tok,
        counted_per_token=counted_tok,
        model_per_step=model_tok * tokens_per_step,
        hardware_per_step=hardware_tok * tokens_per_step,
        counted_per_step=counted_tok * tokens_per_step,
    )
