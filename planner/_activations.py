"""Activation and logits bytes per GPU, as each training stack's kernels hold them.

Two accountings of one transformer block, per token:

``eager`` (the ``deepspeed`` framework: a Hugging Face model run by a DeepSpeed engine)
    What the Hugging Face modeling code saves for backward op by op, read off
    ``saved_tensors_hooks`` on real models (tests/planner/test_activations.py): RMSNorm keeps an
    fp32 copy of its input, SwiGLU four intermediates, eager attention the fp32 softmax.
``fused`` (``megatron`` and ``fsdp``: Megatron-LM/Transformer Engine, torchtitan)
    Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
    Sec. 4.1, eq. 1: a GPT block saves s*b*h*(34 + 5*a*s/h) bytes in 16-bit: the two norm inputs
    (4sbh), the inputs of the QKV and first MLP linears (4sbh), Q, K, V and the out-projection input
    (8sbh), the MLP's GeLU input and second-linear input (16sbh), two 1-byte dropout masks (2sbh) and
    the attention scores (softmax output 2as^2b, its dropout mask as^2b and output 2as^2b). Fused
    norms keep fp32 mean/rstd per token; flash attention drops the scores and keeps an fp32
    log-sum-exp per head (Dao 2022, "FlashAttention-2", Sec. 3.1); a fused SwiGLU keeps the gate and
    up outputs (the input of ``bias_swiglu``) and the down projection its input: 3 x intermediate.

Context parallelism (``Layout.cp``) gives each GPU 1/cp of every sequence's tokens.
Tensor and sequence parallelism (Korthikanti et al. 2022, Sec. 4.2.2, eq. 2 and 4): TP splits
everything inside attention and MLP by t; the norm inputs, linear inputs and dropout masks
(10sbh) stay whole unless sequence parallelism splits them too. Checkpointing (Sec. 4.2.3, 5):
``full`` keeps each block's input (2sbh, /t with sequence parallelism) and rebuilds one block in
backward; ``selective`` recomputes the attention core (scores); ``selective-op`` is torchtitan's
per-op policy (torchtitan/models/llama3/infra/parallelize.py, ``_apply_ac_to_transformer_block``:
``_save_list`` keeps every other ``aten.mm`` output, counted within a block, and the SDPA
outputs). Pipeline 1F1B keeps p micro-batches of a stage in flight on the first stage; the
interleaved schedule with v chunks, L/p * p * (1 + (p - 1)/(p v)) layers' worth (Korthikanti et
al. 2022, Sec. 4.2.3, eq. 5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trainplan.planner._layout import Layout
from trainplan.planner._model import ModelSpec

__all__ = ["ActivationBytes", "activation_bytes", "logits_bytes", "op_recompute_flops_per_token"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivationBytes:
    """What autograd saves for backward on one GPU, split the way the tests measure it."""

    per_layer: int
    """Bytes one block saves for one micro-batch (full checkpointing: only the block input)."""
    layers: int
    """Blocks on this GPU (its pipeline stage, all its chunks when interleaved)."""
    other: int
    """Per micro-batch, outside the blocks: token ids and shifted labels, rotary cos/sin tables,
    embedding dropout mask, the final norm, and a checkpointed 4-D mask (GPT-2 eager)."""
    head: int = 0
    """Per micro-batch, on the last pipeline stage only: the final norm's saved input and output
    (the LM head's input). The first stage of a pipeline holds the embedding instead."""
    in_flight: float
    """Micro-batches whose activations are alive at once on the first stage: p under 1F1B
    (Narayanan et al. 2021, Sec. 2.2), p (1 + (p-1)/(p v)) interleaved, else 1."""
    recompute: int
    """Checkpointing: one block's activations rebuilt during backward (peak, not saved in forward)."""
    logits_saved: int
    """Per micro-batch, the fp32 log-softmax cross-entropy saves (counted under ``logits``)."""

    @property
    def forward(self) -> int:
        """Saved by the end of the forward pass: what ``saved_tensors_hooks`` sees, logits aside."""
        if self.in_flight == 1:
            return self.layers * self.per_layer + self.other + self.head
        return int(self.in_flight * (self.layers * self.per_layer + self.other))

    @property
    def total(self) -> int:
        """Peak activation bytes: saved tensors plus one recomputed block."""
        return self.forward + self.recompute

    @property
    def last_stage(self) -> int:
        """Saved by the last pipeline stage at its loss: one micro-batch (the whole model if pp = 1)."""
        return self.forward if self.in_flight == 1 else self.layers * self.per_layer + self.other + self.head


def _dropout(cfg: Mapping[str, Any], *keys: str) -> float:
    """The largest dropout probability ``cfg`` sets under ``keys``, 0 where it sets none (a plain loop:
    ``--recommend`` asks it a few times for every layout)."""
    p = 0.0
    for key in keys:
        value = cfg.get(key)
        if value:
            p = max(p, float(value))
    return p


def _eager_block(model: ModelSpec, layout: Layout, e: int, mask_bytes: int, *, selective: bool) -> float:
    """Bytes one block saves per token as the Hugging Face modeling code of the family runs it:
    every linear saves its input, SiLU/GeLU theirs, multiplies both operands."""
    cfg, fam, t = model.hf_config, model.family, layout.tp
    d, s = model.hidden_size, layout.seq_len
    q, kv, heads = model.q_size / t, model.kv_size / t, model.num_heads / t
    inner = model.intermediate_size / t
    gpt2, neox = fam == "gpt2", fam == "gpt_neox"
    if model.norm == "rmsnorm":
        # RMSNorm upcasts: fp32 input and rsqrt kept, then the normed lp copy and the output.
        norm = 4 * (d + 1) + 2 * d * e
    else:
        norm = 2 * d * e + 8  # F.layer_norm saves input, mean and rstd (fp32); the linear its output
    norms = 2 * norm
    if neox and cfg.get("use_parallel_residual", True):
        norms -= d * e  # both norms read the same block input
    p_attn = _dropout(cfg, "attn_pdrop", "attention_dropout")
    p_hidden = _dropout(cfg, "resid_pdrop", "hidden_dropout")
    if layout.attention == "eager":
        # k^T and q copies made by matmul, v, the output fed to o_proj (GQA repeats k/v to q size);
        # the score matrix: softmax output in fp32 (plus its lp copy) except GPT-2 (model dtype).
        softmax = e if gpt2 else (4 if e == 4 else 4 + e)
        scores = heads * s * (softmax + (mask_bytes + e if p_attn > 0 else 0))
        attn = 4 * q * e + (0 if selective else scores)
    else:
        # SDPA/flash save q, k, v, the output and an fp32 log-sum-exp per head (Dao 2022, Sec. 3.1);
        # GPT-NeoX also copies q/k/v in its partial rotary and the output for the dense layer.
        attn = (5 * q * e if neox else (2 * q + 2 * kv) * e) + 4 * heads
    if model.is_moe:
        k = model.experts_per_token
        # Router softmax (fp32) and top-k indices (int64); per routed copy: gathered input,
        # gate/up output, SiLU output, product, routing weight, expert output.
        mlp = 4 * (model.num_experts / 1 + 1 + k) + 32 * k + k * ((2 * d + 4 * inner) * e + 4)
    elif model.gated_mlp:
        mlp = 4 * inner * e  # gate out, up out, act out, act * up
    elif gpt2:
        mlp = 5 * inner * e  # gelu_new in Python: fc out, pow/tanh/add/mul intermediates, gelu out
    else:
        mlp = 2 * inner * e  # exact GeLU: fc_in out, gelu out
    masks = 2 * d * mask_bytes if p_hidden > 0 else 0
    return norms + attn + mlp + masks


def _fused_block(model: ModelSpec, layout: Layout, e: int, *, selective: bool) -> float:
    """Bytes one block saves per token under fused kernels (Korthikanti et al. 2022, eq. 1-4)."""
    cfg, t = model.hf_config, layout.tp
    d, s = model.hidden_size, layout.seq_len
    q, kv, heads, inner = model.q_size / t, model.kv_size / t, model.num_heads / t, model.intermediate_size / t
    whole = 1 / t if layout.sequence_parallel else 1.0  # what TP alone leaves unsplit
    stats = 4 if model.norm == "rmsnorm" else 8  # fp32 rstd (and mean) per token
    norms = 2 * (d * e + stats) * whole  # the two norm inputs
    linear_inputs = 2 * d * e * _gathered_input_share(layout)  # normed outputs into QKV and the first MLP linear
    attn = (q + kv + kv + q) * e  # Q, K, V, out-projection input
    p_attn = _dropout(cfg, "attn_pdrop", "attention_dropout")
    if layout.attention == "eager":
        # softmax output (2as^2b); with dropout also its 1-byte mask and output (Korthikanti eq. 1)
        attn += 0 if selective else heads * s * (e + (1 + e if p_attn > 0 else 0))
    else:
        attn += 4 * heads  # flash/SDPA log-sum-exp (fp32)
    k = model.experts_per_token if model.is_moe else 1
    mlp = k * (3 if model.gated_mlp else 2) * inner * e
    if model.is_moe:
        mlp += k * d * e * whole + 4 * model.num_experts  # routed copies of the input, router probabilities
    masks = 2 * d * whole if _dropout(cfg, "resid_pdrop", "hidden_dropout") > 0 else 0
    return norms + linear_inputs + attn + mlp + masks


def _op_selective_block(model: ModelSpec, layout: Layout, e: int) -> float:
    """torchtitan per-op SAC, per token: the block input, the odd-numbered matmul outputs of the
    block (Llama order wq, wk, wv, wo, w1, w3, w2: wq, wv, w1, w2 kept) and SDPA's output and lse."""
    t = layout.tp
    d, q, heads = model.hidden_size, model.q_size / t, model.num_heads / t
    whole = 1 / t if layout.sequence_parallel else 1.0
    outs = _mm_outputs(model, t)
    kept = sum(outs[0::2])
    return (d * whole + kept + q) * e + 4 * heads


def _mm_outputs(model: ModelSpec, t: int) -> list[float]:
    """Output widths of a block's matmuls in forward order (per TP rank)."""
    d, q, kv, inner = model.hidden_size, model.q_size / t, model.kv_size / t, model.intermediate_size / t
    mlp = [inner, inner, d] if model.gated_mlp else [inner, d]
    return [q, kv, kv, d, *mlp]


def op_recompute_flops_per_token(model: ModelSpec) -> int:
    """Forward matmul FLOPs per token that ``selective-op`` reruns: the even-numbered matmuls of
    each block (wk, wo, w3 in a Llama block; 2 FLOPs per weight), see :func:`_op_selective_block`."""
    d, q, kv, inner = model.hidden_size, model.q_size, model.kv_size, model.intermediate_size
    ins = [d, d, d, q, *([d, d, inner] if model.gated_mlp else [d, inner])]
    outs = _mm_outputs(model, 1)
    k = model.experts_per_token if model.is_moe else 1
    rerun = sum(2 * i * o * (k if j >= 4 else 1) for j, (i, o) in enumerate(zip(ins, outs)) if j % 2 == 1)
    return int(model.num_layers * rerun)


def _fused(layout: Layout) -> bool:
    return layout.framework != "deepspeed"


def _gathered_input_share(layout: Layout) -> float:
    """Share of a column-parallel linear's input (the all-gathered sequence) one TP rank keeps.

    Megatron's sequence parallelism saves the sequence-sharded input and all-gathers it again in
    backward (Korthikanti et al. 2022, Sec. 4.2.2; megatron/core/tensor_parallel/layers.py,
    ``LinearWithGradAccumulationAndAsyncCommunication``: ``ctx.save_for_backward(input, ...)``
    before the gather): 1/t. DTensor's (``fsdp``: torchtitan's ``PrepareModuleInput`` redistributes
    ``Shard(1)`` to ``Replicate()`` before ``wq/wk/wv`` and ``w1/w3``, torchtitan/parallelisms/
    parallelize_llama.py @ 9dec370, lines 179 and 188) hands the linear the gathered tensor, which
    ``F.linear`` saves whole: 1.
    """
    if not layout.sequence_parallel or layout.framework == "fsdp":
        return 1.0
    return 1 / layout.tp


def activation_bytes(model: ModelSpec, layout: Layout, *, mask_bytes: int = 1) -> ActivationBytes:
    """Activation bytes of ``layout`` (see :class:`ActivationBytes` and the module docstring).

    ``mask_bytes`` is the size of one dropout-mask element: 1 on CUDA (``native_dropout`` keeps a
    bool mask), 4 on the CPU in fp32 (the mask is kept in the input dtype). Under SDPA on a GPU,
    attention dropout happens inside the kernel and saves no mask.
    """
    e = 2 if layout.mixed else 4
    tokens = layout.micro_batch * layout.seq_len // layout.cp  # context parallelism splits the sequence
    cfg = model.hf_config
    ckpt = layout.checkpointing
    d = model.hidden_size
    if _fused(layout):
        none_block = _fused_block(model, layout, e, selective=False)
        block = _fused_block(model, layout, e, selective=True) if ckpt == "selective" else none_block
        whole = 1 / layout.tp if layout.sequence_parallel else 1.0
        # The final norm's input, and its output as the LM head's (all-gathered under DTensor SP).
        final_norm = (d * e + (4 if model.norm == "rmsnorm" else 8)) * whole + d * e * _gathered_input_share(layout)
        other = tokens * 16  # int64 ids and labels
    else:
        none_block = _eager_block(model, layout, e, mask_bytes, selective=False)
        block = _eager_block(model, layout, e, mask_bytes, selective=True) if ckpt == "selective" else none_block
        final_norm = 4 * (d + 1) + 2 * d * e if model.norm == "rmsnorm" else 2 * d * e + 8
        other = tokens * 16  # int64 token ids and shifted labels
        if not model.learned_positions:
            rotary = model.head_dim * float(cfg.get("rotary_pct", 1.0)) if model.family == "gpt_neox" else model.head_dim
            other += int(2 * layout.seq_len * rotary * e)  # cos and sin, shared by every block
        if _dropout(cfg, "embd_pdrop") > 0:
            other += tokens * d * mask_bytes
        if ckpt == "full" and model.family == "gpt2" and layout.attention == "eager":
            other += layout.micro_batch * layout.seq_len ** 2 * e  # the 4-D causal mask is a checkpoint input
    if ckpt == "full":
        whole = 1 / layout.tp if (layout.sequence_parallel and _fused(layout)) else 1.0
        per_layer = int(tokens * d * e * whole)
    elif ckpt == "selective-op":
        per_layer = int(tokens * _op_selective_block(model, layout, e))
    else:
        per_layer = int(tokens * block)
    stage_layers = math.ceil(model.num_layers / layout.pp)
    p, v = layout.pp, layout.pp_interleave
    in_flight = 1.0 if p == 1 else (float(p) if v == 1 else p * (1 + (p - 1) / (p * v)))
    return ActivationBytes(
        per_layer=per_layer, layers=stage_layers, other=int(other), head=int(tokens * final_norm), in_flight=in_flight,
        recompute=int(tokens * none_block) if ckpt in ("full", "selective-op") else 0,
        logits_saved=tokens * math.ceil(model.vocab_size / layout.tp) * 4,
    )


def logits_bytes(model: ModelSpec, layout: Layout) -> int:
    """Peak LM-head and loss buffers for one micro-batch on the last stage.

    - ``deepspeed`` (Hugging Face ``ForCausalLMLoss``): the loss upcasts the lp logits to fp32 and
      cross-entropy saves its fp32 log-softmax (forward: e + 4 + 4); the caller keeps only the loss
      (trainplan's runner ``engine(...).loss``, HF Trainer's ``compute_loss``), so nothing holds the
      lp logits in backward, which has the saved log-softmax and the fp32 gradients of it and of
      the logits: 12 (measured on an H100: the checkpointed 1.5B row peaks below e + 12).
    - ``fsdp`` (torchtitan ``cross_entropy_loss``: ``pred.float()``, then ``del pred`` before
      backward): log-softmax output and the two fp32 gradients in backward: 12 (forward: e + 8).
      With TP, torchtitan's default ``loss_parallel`` (on unless ``--training.disable_loss_parallel``;
      parallel_dims.py ``loss_parallel_enabled``) runs DTensor's vocab-sharded log-softmax and
      NLL (torch/distributed/tensor/parallel/loss.py): forward ``_log_softmax`` keeps the lp
      logits, their fp32 copy, ``shifted = x - max`` and ``exp(shifted)`` or the result at once
      (e + 12); backward ``_nll_loss_and_log_softmax_backward`` computes
      ``(grad_input + exp(x)) * grad_output`` beside the saved log-softmax: the saved result,
      ``zeros_like`` grad_input, the sum and the product, 16 (the lp logits deleted by then).
    - ``megatron`` and ``megatron-deepspeed`` (``vocab_parallel_cross_entropy`` on ``logits.float()``): the softmax is made
      in place in the fp32 copy and the gradient in place in it (megatron/core/tensor_parallel/
      cross_entropy.py); the lp logits (forward) or their lp gradient (backward) beside: 4 + e.
      Under DeepSpeed-Ulysses (``megatron-deepspeed`` with ``cp`` > 1) the loss is
      ``vocab_sequence_parallel_cross_entropy`` (megatron/core/sequence_parallel/cross_entropy.py),
      not in place: ``softmax`` (fp32, saved) and ``softmax.log()`` (fp32, for ``nll_loss``) beside
      the fp32 copy and the lp logits: e + 12 in forward.
    - ``fused`` loss (flash-attn's ``CrossEntropyLoss``, the default ``fused_crossentropy`` of
      llm-foundry's MPT, llmfoundry/models/mpt/modeling_mpt.py): one kernel reads the lp logits
      and keeps an fp32 log-sum-exp per row; backward writes their lp gradient: 2e.
    - ``chunked`` loss (fused linear cross-entropy, e.g. Liger's): logits exist one chunk at a
      time, about b*s*d elements (chunk = tokens / ceil(V / d)), fp32 with their gradient, plus
      the hidden-state gradient it keeps (e per element): b*s*d*(8 + e).
    """
    e = 2 if layout.mixed else 4
    tokens = layout.micro_batch * layout.seq_len // layout.cp
    if layout.loss == "chunked":
        return int(tokens * model.hidden_size * (8 + e))
    if layout.loss == "fused":
        return tokens * math.ceil(model.vocab_size / layout.tp) * 2 * e
    per_elem = {"deepspeed": 12, "fsdp": 16 if layout.tp > 1 else 12, "megatron": 4 + e,
                "megatron-deepspeed": e + 12 if layout.cp > 1 else 4 + e}[layout.framework]
    return tokens * math.ceil(model.vocab_size / layout.tp) * per_elem
