"""Per-GPU memory of a training layout, term by term, as a DeepSpeed 0.19 engine really holds it.

Model states follow the ZeRO paper's accounting (Rajbhandari et al. 2020, "ZeRO", Sec. 3.1 and
5: 2 + 2 + K bytes per parameter for mixed-precision Adam, K = 12, the partitioned parts divided
by the data-parallel degree Nd), corrected to the buffers DeepSpeed's own optimizers keep. These
were read from deepspeed/runtime/{fp16/fused_optimizer.py, zero/stage_1_and_2.py,
zero/stage3.py} and measured on real engines (``tests/planner/test_memory_states.py``: within 1%):

=========  =====================  ==================================================  ==========
ZeRO       weights                gradients (peak of backward / optimizer step)       master
=========  =====================  ==================================================  ==========
0 fp32     4                      4 (``p.grad``)                                      0
0 mixed    2 (one flat buffer)    4: FP16_Optimizer flattens them to fp32 for step    4
1          e                      max(e: full grads in backward, 4/Nd: fp32 part.)    4/Nd
2          e                      4/Nd (fp32 partition; lp partition freed by then)   4/Nd
3          e/Nd                   (e + 4)/Nd: lp flat partition *and* fp32 partition  4/Nd
=========  =====================  ==================================================  ==========

(e = 2 under fp16/bf16, 4 in fp32; moments 8/Nd for AdamW, Nd = 1 at stage 0.) Unlike the paper,
DeepSpeed keeps an fp32 master partition even in fp32 training at stages 1-3, and at stage 3 both
gradient partitions coexist at the step, so stage 3 costs 20/Nd bytes, not 16/Nd, and stage 0
mixed costs 18 bytes, not 16. ZeRO-3's reduce bucket (``reduce_bucket_size`` elements of
gradient dtype) is allocated whole, whatever the model size: 1 GB at the default 5e8 in bf16.

Activations are counted tensor by tensor from what the Hugging Face modeling code of each family
saves for backward (see :func:`activation_bytes`), in the spirit of Korthikanti et al. 2022,
"Reducing Activation Recomputation in Large Transformer Models", Sec. 4 (their GPT block:
s*b*h*(34 + 5*a*s/h) bytes in fp16 without recompute, with dropout masks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from trainplan.planner._dsconfig import ALLREDUCE_BUCKET_SIZE, deepspeed_config
from trainplan.planner._layout import Layout
from trainplan.planner._model import ModelSpec
from trainplan.planner._params import ParamCounts, count_parameters

__all__ = ["ActivationBytes", "MemoryEstimate", "activation_bytes", "estimate_memory", "local_parameters",
           "logits_bytes"]

CUDA_CONTEXT_BYTES = 1 << 30
"""CUDA context, cuBLAS/cuDNN workspaces and NCCL's own buffers: seen by nvidia-smi, not by
``torch.cuda.max_memory_allocated`` (assumption: ~0.5 GiB context + workspaces on H100/A100)."""
FRAGMENTATION = 0.05
"""Share of the allocated bytes the caching allocator reserves but cannot reuse (assumption)."""
NVME_STAGING_BYTES = 4 * int(1e8) * 4
"""Pinned host buffers for NVMe swapping: DeepSpeed's default aio ``buffer_count`` 4-5 x
``buffer_size`` 1e8 fp32 elements (https://www.deepspeed.ai/docs/config-json/#parameter-offloading)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryEstimate:
    """Bytes one GPU (and its share of the host) holds at the training-step peak."""

    weights: int
    """Model parameters in training precision (ZeRO-3: this rank's partition + persistent small ones)."""
    gradients: int
    """Gradient buffers at their peak, backward or optimizer step (see the module table)."""
    optimizer: int
    """Optimizer moments: AdamW 8 bytes/param, SGD momentum 4, Adafactor factored rows+columns."""
    master_weights: int
    """fp32 copy of the parameters the optimizer updates (mixed precision, and fp32 at ZeRO >= 1)."""
    activations: int
    """Tensors autograd saves for backward, for all micro-batches in flight on this GPU."""
    logits: int
    """LM-head output and cross-entropy buffers: low-precision logits, the fp32 log-softmax the
    loss saves, and two fp32 gradient buffers in backward."""
    comm_buffers: int
    """DeepSpeed reduce/all-reduce buckets and, at ZeRO-3, the gathered (live + prefetched) layers."""
    overhead: int
    """CUDA context and workspaces plus allocator fragmentation: not in ``max_memory_allocated``."""
    cpu_bytes: int = 0
    """Host memory per GPU under offload (states moved there, pinned staging buffers)."""
    nvme_bytes: int = 0
    """NVMe bytes per GPU under NVMe offload."""

    @property
    def model_states(self) -> int:
        """Weights, gradients, optimizer moments and master weights on the GPU."""
        return self.weights + self.gradients + self.optimizer + self.master_weights

    @property
    def allocated(self) -> int:
        """What ``torch.cuda.max_memory_allocated`` would report at the peak."""
        return self.total - self.overhead

    @property
    def total(self) -> int:
        """Everything on the GPU: compare with its memory to know whether the layout fits."""
        return self.model_states + self.activations + self.logits + self.comm_buffers + self.overhead

    def breakdown(self) -> dict[str, int]:
        """GPU terms by name, in display order (``cpu_bytes``/``nvme_bytes`` excluded)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("cpu_bytes", "nvme_bytes")}


def local_parameters(params: ParamCounts, layout: Layout) -> tuple[int, int]:
    """``(parameters, of which vectors)`` one GPU owns before ZeRO: TP shards, PP splits.

    Megatron-style TP splits the block matrices (and the column-parallel biases) and the
    vocabulary-parallel embedding and LM head by ``tp`` (Shoeybi et al. 2019, Sec. 3); norms and
    row-parallel biases stay whole. PP gives each stage ``ceil(L / pp)`` blocks; the first stage
    also holds the embedding, the last the final norm and LM head: the larger of the two is taken.
    """
    tp = layout.tp
    per_layer = math.ceil(params.per_layer_tp_sharded / tp) + params.per_layer_tp_replicated
    layers = math.ceil((params.total - params.embedding - params.lm_head - params.final_norm)
                       / params.per_layer) if params.per_layer else 0
    stage_layers = math.ceil(layers / layout.pp)
    embedding, head = math.ceil(params.embedding / tp), math.ceil(params.lm_head / tp) + params.final_norm
    ends = embedding + head if layout.pp == 1 else max(embedding, head)
    vectors = stage_layers * params.per_layer_vector + params.final_norm
    return stage_layers * per_layer + ends, vectors


def _optimizer_bytes_per_param(layout: Layout) -> float:
    # AdamW: exp_avg + exp_avg_sq in fp32 (Loshchilov & Hutter 2019); SGD: one momentum buffer.
    # Adafactor factors the second moment of an r x c matrix into r + c floats (Shazeer & Stern
    # 2018, Sec. 3) and keeps no first moment by default: about 4 (r + c) / (r c) bytes a param,
    # taken here as 0.05 bytes/param for d >= 1k-wide layers (an assumption, < 1% of the states).
    return {"adamw": 8.0, "sgd": 4.0, "adafactor": 0.05}[layout.optimizer]


def _model_states(n: int, vectors: int, layout: Layout) -> dict[str, int]:
    """GPU and host bytes of weights, gradients, moments and master copy (module table)."""
    nd, zero = layout.dp, layout.zero
    e = 2 if layout.mixed else 4
    if zero in (1, 2):
        # The flat buffer is padded to a multiple of 2 * Nd elements (stage_1_and_2.py,
        # nccl_start_alignment_factor) and split evenly.
        part = math.ceil(n / (2 * nd)) * 2
    else:
        part = math.ceil(n / nd)  # stage 3 partitions each tensor; the padding is < 1 element each
    opt = int(_optimizer_bytes_per_param(layout) * (n if zero == 0 else part))
    if zero == 0:
        weights, grads, master = e * n, 4 * n, (4 * n if layout.mixed else 0)
    elif zero == 1:
        weights, grads, master = e * n, max(e * n, 4 * part), 4 * part
    elif zero == 2:
        weights, grads, master = e * n, 4 * part, 4 * part
    else:
        # Parameters at or below stage3_param_persistence_threshold (1e5 elements: norms and
        # biases of real models) stay whole on every rank besides their partition.
        weights = e * part + e * vectors
        grads, master = (e + 4) * part, 4 * part
    cpu = nvme = 0
    if layout.offload != "none":
        # ZeRO-Offload (Ren et al. 2021, Sec. 4): fp32 master, moments and fp32 gradient partition
        # live on the host; the GPU keeps the low-precision weights and gradient partition.
        host = opt + master + 4 * part
        gpu_grads = e * part if zero >= 2 else e * n
        grads, opt, master = gpu_grads, 0, 0
        if zero == 3:  # offload_param: the parameter partitions move too
            host += e * part
            weights = e * vectors
        if layout.offload == "cpu":
            cpu = host
        else:
            nvme, cpu = host, NVME_STAGING_BYTES
    return dict(weights=weights, gradients=grads, optimizer=opt, master_weights=master,
                cpu_bytes=cpu, nvme_bytes=nvme)


def _comm_buffers(params: ParamCounts, n: int, layout: Layout) -> int:
    """Buckets the engine allocates, sized from the very ds_config the runner uses."""
    zero_cfg = deepspeed_config(layout)["zero_optimization"]
    e = 2 if layout.mixed else 4
    if layout.zero == 3:
        # stage3.py allocates the gradient reduce bucket whole (measured: 5e8 x 2 bytes in bf16),
        # and gathers one block plus the prefetch bucket ahead of use, capped by max_live.
        bucket = int(zero_cfg["reduce_bucket_size"]) * e
        live = min(params.per_layer // layout.tp + int(zero_cfg["stage3_prefetch_bucket_size"]),
                   int(zero_cfg["stage3_max_live_parameters"]), n)
        return bucket + live * e
    if layout.dp == 1:
        return 0  # nothing to reduce across ranks
    if layout.zero == 2:
        # overlap_comm + contiguous_gradients: the ipg bucket of reduce_bucket_size elements.
        return min(int(zero_cfg["reduce_bucket_size"]), n) * e
    # Stage 0/1 all-reduce flattens the gradients in buckets of up to 5e8 elements
    # (engine.allreduce_bucket_size default) before reducing.
    return min(ALLREDUCE_BUCKET_SIZE, n) * e


@dataclass(frozen=True, slots=True, kw_only=True)
class ActivationBytes:
    """What autograd saves for backward on one GPU, split the way the tests measure it."""

    per_layer: int
    """Bytes one block saves for one micro-batch (full checkpointing: only the block input)."""
    layers: int
    """Blocks on this GPU (its pipeline stage)."""
    other: int
    """Per micro-batch, outside the blocks: token ids and shifted labels, rotary cos/sin tables,
    embedding dropout mask, the final norm, and a checkpointed 4-D mask (GPT-2 eager)."""
    in_flight: int
    """Micro-batches whose activations are alive at once: pp on the first stage under 1F1B
    (Narayanan et al. 2021, Sec. 2.2), else 1."""
    recompute: int
    """Full checkpointing: one block's activations rebuilt during backward (peak, not saved in forward)."""
    logits_saved: int
    """Per micro-batch, the fp32 log-softmax cross-entropy saves (counted under ``logits``)."""

    @property
    def forward(self) -> int:
        """Saved by the end of the forward pass: what ``saved_tensors_hooks`` sees, logits aside."""
        return self.in_flight * (self.layers * self.per_layer + self.other)

    @property
    def total(self) -> int:
        """Peak activation bytes: saved tensors plus one recomputed block."""
        return self.forward + self.recompute


def _dropout(cfg: dict, *keys: str) -> float:
    return max((float(cfg.get(k) or 0.0) for k in keys), default=0.0)


def _block_bytes_per_token(model: ModelSpec, layout: Layout, e: int, mask_bytes: int, *,
                           selective: bool) -> float:
    """Bytes one block saves per token, op by op, as the HF modeling code of the family runs.

    Read off ``saved_tensors_hooks`` on real models (tests/planner/test_activations.py) and the
    modeling code: every linear saves its input, SiLU/GeLU theirs, multiplies both operands.
    """
    cfg, fam, t = dict(model.hf_config), model.family, layout.tp
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


def activation_bytes(model: ModelSpec, layout: Layout, *, mask_bytes: int = 1) -> ActivationBytes:
    """Activation bytes of ``layout`` (see :class:`ActivationBytes`).

    ``mask_bytes`` is the size of one dropout-mask element: 1 on CUDA (``native_dropout`` keeps a
    bool mask), 4 on the CPU in fp32 (the mask is kept in the input dtype). Under SDPA on a GPU,
    attention dropout happens inside the kernel and saves no mask.
    """
    e = 2 if layout.mixed else 4
    tokens = layout.micro_batch * layout.seq_len
    cfg = dict(model.hf_config)
    full = layout.checkpointing == "full"
    block = _block_bytes_per_token(model, layout, e, mask_bytes, selective=layout.checkpointing == "selective")
    d = model.hidden_size
    final_norm = 4 * (d + 1) + 2 * d * e if model.norm == "rmsnorm" else 2 * d * e + 8
    other = tokens * (16 + final_norm)  # int64 token ids and shifted labels
    if not model.learned_positions:
        rotary = model.head_dim * float(cfg.get("rotary_pct", 1.0)) if model.family == "gpt_neox" else model.head_dim
        other += int(2 * layout.seq_len * rotary * e)  # cos and sin, shared by every block
    if _dropout(cfg, "embd_pdrop") > 0:
        other += tokens * d * mask_bytes
    if full and model.family == "gpt2" and layout.attention == "eager":
        other += layout.micro_batch * layout.seq_len ** 2 * e  # the 4-D causal mask is a checkpoint input
    layers = math.ceil(model.num_layers / layout.pp)
    per_layer = tokens * d * e if full else int(tokens * block)
    return ActivationBytes(
        per_layer=per_layer, layers=layers, other=int(other), in_flight=layout.pp,
        recompute=int(tokens * block) if full else 0,
        logits_saved=tokens * math.ceil(model.vocab_size / layout.tp) * 4,
    )


def logits_bytes(model: ModelSpec, layout: Layout) -> int:
    """Peak LM-head and loss buffers for one micro-batch on the last stage.

    Hugging Face's ``ForCausalLMLoss`` upcasts the logits to fp32 and cross-entropy saves its
    fp32 log-softmax; backward then holds the fp32 gradients of the log-softmax and of the
    logits while the lp logits the model returned are still referenced: e + 4 + 4 + 4 bytes each.
    """
    e = 2 if layout.mixed else 4
    return layout.micro_batch * layout.seq_len * math.ceil(model.vocab_size / layout.tp) * (e + 12)


def estimate_memory(model: ModelSpec, layout: Layout) -> MemoryEstimate:
    """Per-GPU bytes of training ``model`` laid out as ``layout`` under DeepSpeed."""
    params = count_parameters(model)
    n, vectors = local_parameters(params, layout)
    states = _model_states(n, vectors, layout)
    act = activation_bytes(model, layout)
    # Pipeline stages other than the last hold no logits; the estimate keeps the worst GPU, so it
    # adds the last stage's logits to the first stage's activations (conservative for pp > 1).
    logits = logits_bytes(model, layout)
    comm = _comm_buffers(params, n, layout)
    allocated = (states["weights"] + states["gradients"] + states["optimizer"] + states["master_weights"]
                 + act.total + logits + comm)
    overhead = CUDA_CONTEXT_BYTES + int(FRAGMENTATION * allocated)
    return MemoryEstimate(activations=act.total, logits=logits, comm_buffers=comm, overhead=overhead, **states)
