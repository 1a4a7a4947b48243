"""Per-GPU memory of a training layout, term by term, as a DeepSpeed 0.19 engine (or the stack
``Layout.framework`` names) really holds it.

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
3          e/Nd                   e/Nd + 4 min(1/Nd, G/N): lp partition, fp32 of one  4/Nd
                                  optimizer sub-group (G = ``sub_group_size``, 1e9)
=========  =====================  ==================================================  ==========

(e = 2 under fp16/bf16, 4 in fp32; moments 8/Nd for AdamW, Nd = 1 at stage 0.) Unlike the paper,
DeepSpeed keeps an fp32 master partition even in fp32 training at stages 1-3, and at stage 3 both
gradient partitions coexist at the step, so stage 3 costs 20/Nd bytes, not 16/Nd (while a rank's
partition is within one 1e9-element sub-group; above it the fp32 part stops growing), and stage 0
mixed costs 18 bytes, not 16. ZeRO-3's reduce bucket (``reduce_bucket_size`` elements of
gradient dtype) is allocated whole, whatever the model size: 1 GB at the default 5e8 in bf16.

PHASES. On the DeepSpeed engine the planner configures (``deepspeed`` framework, no pipeline stages,
no offload) the gradient column is not held all step long: the peak is the largest of the step's
phases, each with the bytes alive in it (DeepSpeed 0.19.8, deepspeed/runtime/...; measured on an
H100, benchmarks/results/gpu_trials: within 0.5% of ``max_memory_allocated`` on all ten trials):

- weights, fp32 master and moments are in every phase (FP16_Optimizer makes the moments at init,
  fp16/fused_optimizer.py 125-133; ZeRO-1/2 at the first step, after which they stay);
- loss (end of forward): activations and loss buffers, and gradients only where a buffer outlives
  the step: the engine sets every ``p.grad`` to None after the step (engine.py 3495-3500, and
  fused_optimizer.py 313-314), ZeRO-1/2 free theirs in the step, but ZeRO-3 allocates
  ``grad_partitions_flat_buffer`` (e per partition element) at init and keeps it (stage3.py
  786-800); with gradient accumulation the lp gradients (ZeRO-1: all, ZeRO-2: the partition) stay
  from one micro-batch to the next;
- backward: the lp gradients appear as the blocks' saved tensors are freed, so the sum moves
  linearly from all activations to all gradients (plus the block checkpointing rebuilds); ZeRO-1/2's
  ipg buckets (``reduce_bucket_size`` elements, two under ``overlap_comm``, at any world size) live
  from the first gradient hook to the epilogue (stage_1_and_2.py 2284-2287, 3256-3280, 924-932, 1061);
- optimizer step (no activations): ZeRO-0 in bf16/fp16 runs FP16_Optimizer (engine.py 2294-2323:
  gradients accumulate in the model dtype unless ``data_types.grad_accum_dtype`` says otherwise,
  so bf16 takes the DDP_BFLOAT16 path, not BF16_Optimizer), whose step makes an fp32 copy of every
  lp gradient and concatenates them before freeing either (fused_optimizer.py 283-291): e + 4 + 4
  bytes a parameter at once; fp32 steps in place. ZeRO-1/2 free the gradients outside the
  partition, concatenate the partition and cast it to fp32 (stage_1_and_2.py 3102-3118): 2e + 4
  per partition element. ZeRO-3 does the same per optimizer sub-group beside its kept buffer
  (stage3.py 2683-2699): e per partition element + (e + 4) x min(partition, sub_group_size);
- ZeRO-0 gradient all-reduce (dp > 1): the lp gradients and the flattened bucket, after backward;
- evaluation (trainplan's runner, default loss: ``_evaluate`` in runners/_loop.py runs the model at
  the micro-batch under ``no_grad``): states, the loss's lp logits, fp32 copy and log-softmax
  (e + 8 a logit) and the key/value cache the Hugging Face model fills (``use_cache`` defaults to
  on): 2 x kv_heads x head_dim values a token a layer. It sets the peak of checkpointed runs.

Other stacks (``Layout.framework``) differ in these bytes only:

- ``fsdp`` (FSDP2 as torchtitan runs it, ``MixedPrecisionPolicy(param_dtype=bf16,
  reduce_dtype=fp32)``): the sharded parameters *are* the fp32 master (4/Nd), fp32 sharded
  gradients (4/Nd), moments 8/Nd: 16/Nd and no separate master; the unsharded lp parameters of the
  layer in use and of the one prefetched (2 blocks x e) and one block's unsharded gradients in lp
  and fp32 (e + 4) in flight (torch/distributed/fsdp/_fully_shard/_fsdp_param_group.py). ZeRO 2
  here means ``reshard_after_forward=False`` (all lp parameters kept from forward to backward),
  as torchtitan also does under pipeline parallelism, where unsharded fp32 gradients accumulate
  over the micro-batches too (+ e + 4 bytes a parameter of the stage);
  ZeRO 0-1 means DDP: fp32 weights and gradients and a second fp32 copy of the gradients in its
  buckets (``gradient_as_bucket_view=False``, torch/nn/parallel/distributed.py).
- ``megatron`` (Megatron-LM/Core): lp weights (e), an fp32 ``main_grad`` buffer for every
  parameter (4), fp32 master and moments (12): 18 bytes, or 6 + 12/Nd with the distributed
  optimizer (ZeRO >= 1 here), as Megatron's docs tabulate (docs/source/api-guide/
  dist_optimizer.md); the gradient buckets are views into ``main_grad``, so no extra buffers.

Activations and logits are counted in ``_activations.py`` (eager HF kernels for ``deepspeed``,
fused kernels after Korthikanti et al. 2022 for the others).

Elsewhere (other stacks, pipeline stages, offload, ``bf16-pure``) the states are summed as in the
table, and the peak is taken where the activations coexist, not as their sum: at the end of the forward pass the
saved activations meet the logits and loss buffers; later in backward they meet the block that
checkpointing rebuilds (the logits are gone by then); under pipeline parallelism the first stage
holds p micro-batches of activations and no logits, the last one micro-batch and the logits. The
largest of these is ``max_allocated`` (what ``torch.cuda.max_memory_allocated`` reports); the
caching allocator reserves ``FRAGMENTATION`` more, as far as the card has room for it (it releases
cached blocks rather than fail an allocation), and the process holds the CUDA context on top:
``total`` is what ``nvidia-smi`` shows, and ``fits`` compares it with the GPU's usable memory, so
a layout fits when its live tensors and the context do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from trainplan.planner._activations import ActivationBytes, activation_bytes, logits_bytes
from trainplan.planner._dsconfig import ALLREDUCE_BUCKET_SIZE, zero_optimization
from trainplan.planner._layout import Layout
from trainplan.planner._model import ModelSpec
from trainplan.planner._params import ParamCounts, count_parameters

__all__ = ["ActivationBytes", "MemoryEstimate", "activation_bytes", "estimate_memory", "local_parameters",
           "logits_bytes"]

CUDA_CONTEXT_BYTES = 1 << 30
"""CUDA context, cuBLAS/cuDNN workspaces and NCCL's own buffers: seen by nvidia-smi, not by
``torch.cuda.max_memory_allocated`` (assumption, fitted to no run: ~0.5 GiB context with lazy
module loading on A100/H100, plus NCCL channel buffers and workspaces)."""
FRAGMENTATION = 0.10
"""Share of the allocated bytes the caching allocator reserves but cannot reuse, where the card has
room for it (``estimate_memory``'s ``capacity_bytes``). Chosen, as before, on the 35 measured
peak-memory rows of tests/planner/data/published_runs.json (29 report reserved or nvidia-smi memory),
re-run once the DeepSpeed peak became phase by phase (issue 14; before, the summed states
over-counted DeepSpeed's allocated bytes and hid a too-small share): 0.05 puts 30 of 35 within
tolerance, 0.08 31, 0.10 33 (mean error +0.2%), 0.12 and 0.15 33 too (+1.6%, +3.7%); the smallest of
the best is taken. Independent check, not fitted: on the ten H100 trials (DeepSpeed 0.19.8,
benchmarks/results/gpu_trials) ``max_memory_reserved`` exceeds ``max_memory_allocated`` by 8-31%;
0.10 leaves the reserved estimate -5.8% off on average there (-16.5% to +1.9%). No row's fits answer
depends on it (the cap)."""
ZERO3_SUB_GROUP_SIZE = 1_000_000_000
"""``zero_optimization.sub_group_size`` (DeepSpeed's default, deepspeed/runtime/zero/config.py;
the planner's ds_config leaves it unset). ZeRO-3 steps the optimizer one sub-group of at most this
many partition elements at a time, and only then makes that sub-group's fp32 gradient
(stage3.py ``step``: ``_prepare_fp32_grad_for_sub_group`` flattens the lp gradient partition to
fp32, ``_release_sub_group`` drops it before the next): the lp gradient partition is whole, the
fp32 one never exceeds 4 x sub_group_size bytes."""
NVME_STAGING_BYTES = 4 * int(1e8) * 4
"""Pinned host buffers for NVMe swapping: DeepSpeed's default aio ``buffer_count`` 4-5 x
``buffer_size`` 1e8 fp32 elements (https://www.deepspeed.ai/docs/config-json/#parameter-offloading)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryEstimate:
    """Bytes one GPU (and its share of the host) holds at the training-step peak."""

    weights: int
    """Model parameters in training precision (ZeRO-3: this rank's partition + persistent small ones)."""
    gradients: int
    """Gradient buffers at the peak: on the DeepSpeed engine those alive in the peak's phase, with the
    optimizer step's transient fp32 copies when the peak is there (module docstring, PHASES);
    elsewhere their peak, backward or optimizer step (the module table)."""
    optimizer: int
    """Optimizer moments: AdamW 8 bytes/param, SGD momentum 4, Adafactor factored rows+columns."""
    master_weights: int
    """fp32 copy of the parameters the optimizer updates (mixed precision, and fp32 at ZeRO >= 1)."""
    activations: int
    """Activation bytes alive at the peak: saved for backward (all micro-batches in flight on
    this GPU) plus, when the peak falls in backward, the block checkpointing rebuilds; 0 at the
    optimizer step; at an evaluation peak, the key/value cache."""
    logits: int
    """LM-head output and loss buffers alive at the peak (0 when the peak is not at the loss)."""
    comm_buffers: int
    """DeepSpeed reduce/all-reduce buckets and, at ZeRO-3, the gathered (live + prefetched) layers."""
    overhead: int
    """CUDA context and workspaces plus allocator fragmentation: not in ``max_memory_allocated``."""
    cpu_bytes: int = 0
    """Host memory per GPU under offload (states moved there, pinned staging buffers)."""
    nvme_bytes: int = 0
    """NVMe bytes per GPU under NVMe offload."""
    logits_peak: int = 0
    """LM-head and loss buffers at the loss (last stage), whether or not that is the GPU's peak."""
    peak_phase: str = ""
    """Where the peak falls: ``loss`` (end of forward), ``backward`` (a rebuilt block), on the DeepSpeed
    engine also ``optimizer step``, ``evaluation`` or ``gradient all-reduce``, and, under pipeline
    parallelism, on which stage."""

    _EXTRA = ("cpu_bytes", "nvme_bytes", "logits_peak", "peak_phase")

    @property
    def model_states(self) -> int:
        """Weights, gradients, optimizer moments and master weights on the GPU."""
        return self.weights + self.gradients + self.optimizer + self.master_weights

    @property
    def allocated(self) -> int:
        """Peak of ``torch.cuda.max_memory_allocated``: the tensors alive at the peak."""
        return self.model_states + self.activations + self.logits + self.comm_buffers

    @property
    def reserved(self) -> int:
        """Peak of ``torch.cuda.max_memory_reserved``: allocated plus allocator fragmentation."""
        return self.total - CUDA_CONTEXT_BYTES

    @property
    def total(self) -> int:
        """What ``nvidia-smi`` shows for the process (reserved + CUDA context): ``fits`` uses it."""
        return self.allocated + self.overhead

    def breakdown(self) -> dict[str, int]:
        """GPU terms by name, in display order; they sum to ``total``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self._EXTRA}


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
    if layout.precision == "bf16-pure":
        return _pure_states(n, layout)
    if layout.framework == "fsdp":
        return _fsdp_states(n, layout)
    if layout.framework == "megatron":
        return _megatron_states(n, layout)
    nd, zero = shard_degree(layout), layout.zero
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
        grads, master = e * part + 4 * min(part, ZERO3_SUB_GROUP_SIZE), 4 * part
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


_STATES = {
    "deepspeed": "DeepSpeed engine, peak phase by phase: lp weights, fp32 master and moments always; no "
                 "gradients at the loss (ZeRO-3: its lp partition buffer); at the optimizer step ZeRO-0 mixed "
                 "holds e + 8 B/param of gradient copies, ZeRO-1/2 2e + 4 per partition element, ZeRO-3 e/Nd "
                 "+ (e + 4) x one 1e9-element sub-group; evaluation: no-grad logits and the KV cache",
    "megatron-deepspeed": "DeepSpeed engine states summed (ZeRO-0 mixed 18 B/param; ZeRO-3 20/Nd), Megatron "
                          "kernels and loss",
    "fsdp": "FSDP2: sharded fp32 params are the master, 16/Nd, no separate master; DDP (ZeRO 0-1) "
            "fp32 weights and gradients plus bucket copies",
    "megatron": "Megatron: lp weights + fp32 main_grad + fp32 master and moments, 18 B/param, or "
                "6 + 12/Nd with the distributed optimizer",
}


def framework_profile(layout: Layout) -> dict[str, str]:
    """Which bytes this layout's stack holds differently, in words (the plan's JSON repeats it)."""
    kernels = ("Hugging Face eager modeling code (fp32 norm copies, four SwiGLU intermediates)"
               if layout.framework == "deepspeed" else
               "fused kernels (norm inputs + fp32 stats, SwiGLU input + output; Korthikanti et al. 2022)")
    loss = {"default": {"deepspeed": "HF: fp32 upcast and log-softmax, then two fp32 grads (12 B/logit)",
                        "fsdp": ("DTensor loss_parallel: saved log-softmax and three fp32 backward temporaries "
                                 "(16 B/logit)" if layout.tp > 1 else "fp32 log-softmax and two fp32 grads (12 B/logit)"),
                        "megatron": "vocab-parallel, in place in one fp32 copy (4 + e B/logit)",
                        "megatron-deepspeed": ("Ulysses vocab_sequence_parallel_cross_entropy: fp32 copy, softmax and "
                                               "its log beside the lp logits (e + 12 B/logit)" if layout.cp > 1 else
                                               "vocab-parallel, in place in one fp32 copy (4 + e B/logit)")}[layout.framework],
            "fused": "one kernel on the lp logits: logits + gradient (2e B/logit)",
            "chunked": "chunked/fused linear cross-entropy: about b*s*d*(8 + e) bytes"}[layout.loss]
    states = "bf16-pure: bf16 weights, gradients and moments, no master (8 B/param)" \
        if layout.precision == "bf16-pure" else _STATES[layout.framework]
    return {"framework": layout.framework, "model_states": states, "activations": kernels, "loss": loss}


def shard_degree(layout: Layout) -> int:
    """GPUs ZeRO/FSDP/the distributed optimizer shard states over: data x context parallel
    (torchtitan's FSDP mesh folds cp into dp_shard; DeepSpeed Ulysses shards over all its ranks)."""
    return layout.dp * layout.cp


def _pure_states(n: int, layout: Layout) -> dict[str, int]:
    """``bf16-pure`` (torchtune's default): bf16 weights, gradients and AdamW moments, no master:
    2 + 2 + 4 bytes, each part divided by Nd where the stage (or FSDP) shards it."""
    nd, zero = shard_degree(layout), layout.zero
    part = math.ceil(n / nd)
    opt_pp = _optimizer_bytes_per_param(layout) / 2  # moments in the parameters' dtype
    states = dict(weights=2 * (part if zero == 3 else n), gradients=2 * (part if zero >= 2 else n),
                  optimizer=int(opt_pp * (part if zero >= 1 else n)), master_weights=0, cpu_bytes=0, nvme_bytes=0)
    if layout.offload != "none":  # parameters (ZeRO-3/FSDP), gradients and moments on the host
        states.update(_host(layout, states["optimizer"], 0, states["gradients"] + (states["weights"] if zero == 3 else 0)))
        states.update(optimizer=0, gradients=0, weights=0 if zero == 3 else states["weights"])
    return states


def _host(layout: Layout, opt: int, master: int, grads: int) -> dict[str, int]:
    """Offloaded optimizer states (fp32 master, moments, fp32 gradients) on the host or NVMe."""
    host = opt + master + grads
    if layout.offload == "cpu":
        return dict(cpu_bytes=host, nvme_bytes=0)
    return dict(cpu_bytes=NVME_STAGING_BYTES, nvme_bytes=host)


def _fsdp_states(n: int, layout: Layout) -> dict[str, int]:
    """FSDP2 / DDP bytes (module docstring): 16/Nd fully sharded, no separate master."""
    nd, e = shard_degree(layout), (2 if layout.mixed else 4)
    opt_pp = _optimizer_bytes_per_param(layout)
    if layout.zero <= 1:  # DDP: fp32 params and grads; bucket copies counted under comm_buffers
        return dict(weights=4 * n, gradients=4 * n, optimizer=int(opt_pp * n), master_weights=0,
                    cpu_bytes=0, nvme_bytes=0)
    part = math.ceil(n / nd)
    # Under pipeline parallelism torchtitan keeps the lp parameters unsharded from forward to
    # backward (reshard_after_forward=False, "to avoid per-microbatch all-gathers") and the
    # pipeline stage defers the gradient reduce-scatter to the last micro-batch
    # (torch.distributed.pipelining, backward_maybe_with_nosync), so FSDP2 accumulates unsharded
    # gradients in reduce_dtype, fp32 (_fsdp_param.py, unsharded_accumulated_grad).
    unsharded = layout.mixed and (layout.zero == 2 or layout.pp > 1)
    weights = 4 * part + (e * n if unsharded else 0)
    grads = 4 * part + (4 * n if layout.pp > 1 else 0)
    states = dict(weights=weights, gradients=grads, optimizer=int(opt_pp * part), master_weights=0,
                  cpu_bytes=0, nvme_bytes=0)
    if layout.offload != "none":
        # CPUOffloadPolicy: sharded parameters, gradients and optimizer states live on the host.
        states.update(_host(layout, states["optimizer"], 4 * part, 4 * part))
        states.update(weights=weights - 4 * part, gradients=grads - 4 * part, optimizer=0)
    return states


def _megatron_states(n: int, layout: Layout) -> dict[str, int]:
    """Megatron bytes (module docstring): 18 per parameter, or 6 + 12/Nd distributed."""
    nd, e = shard_degree(layout), (2 if layout.mixed else 4)
    opt_pp = _optimizer_bytes_per_param(layout)
    shard = n if layout.zero == 0 else math.ceil(n / nd)
    master = 4 * shard if layout.mixed else 0
    states = dict(weights=e * n, gradients=4 * n, optimizer=int(opt_pp * shard), master_weights=master,
                  cpu_bytes=0, nvme_bytes=0)
    if layout.offload != "none":  # optimizer CPU offload: master and moments move to the host
        states.update(_host(layout, states["optimizer"], master, 0))
        states.update(optimizer=0, master_weights=0)
    return states


def _bucket(zero_cfg: Mapping[str, Any], n: int, first_touch: bool) -> int:
    """Elements of DeepSpeed's gradient reduce bucket (``reduce_bucket_size``, allocated whole by
    ``torch.empty``) that count: all of them on a GPU, whose allocator hands out the whole block; on
    the CPU only the pages a step writes become resident (first touch), and a step writes at most the
    rank's ``n`` gradient elements into it."""
    size = int(zero_cfg["reduce_bucket_size"])
    return min(size, n) if first_touch else size


def _comm_buffers(params: ParamCounts, n: int, layout: Layout, first_touch: bool = False) -> int:
    """Buckets the engine allocates, sized from the very ds_config the runner uses."""
    e = 2 if layout.mixed else 4
    block = params.per_layer // layout.tp
    if layout.framework == "megatron":
        return 0  # gradient buckets are views into the main_grad buffer
    if layout.framework == "fsdp":
        if layout.zero <= 1:
            return 4 * n if shard_degree(layout) > 1 else 0  # DDP's bucket copies of the gradients
        # Unsharded lp parameters of the current and the prefetched block (zero 3; zero 2 keeps
        # all of them, counted as weights), one block's unsharded gradients in lp and fp32.
        return (2 * block * e if layout.zero == 3 else 0) + block * (e + 4)
    zero_cfg = zero_optimization(layout)
    e = 2 if layout.mixed else 4
    if layout.zero == 3:
        # stage3.py allocates the gradient reduce bucket whole (measured: 5e8 x 2 bytes in bf16),
        # and gathers one block plus the prefetch bucket ahead of use, capped by max_live.
        bucket = _bucket(zero_cfg, n, first_touch) * e
        live = min(block + int(zero_cfg["stage3_prefetch_bucket_size"]),
                   int(zero_cfg["stage3_max_live_parameters"]), n)
        return bucket + live * e
    if shard_degree(layout) == 1:
        return 0  # nothing to reduce across ranks
    if layout.zero == 2:
        # overlap_comm + contiguous_gradients: the ipg bucket of reduce_bucket_size elements.
        return min(int(zero_cfg["reduce_bucket_size"]), n) * e
    # Stage 0/1 all-reduce flattens the gradients in buckets of up to 5e8 elements
    # (engine.allreduce_bucket_size default) before reducing.
    return min(ALLREDUCE_BUCKET_SIZE, n) * e


def estimate_memory(model: ModelSpec, layout: Layout, *, capacity_bytes: int | None = None,
                    params: ParamCounts | None = None, first_touch: bool = False) -> MemoryEstimate:
    """Per-GPU bytes of training ``model`` laid out as ``layout`` (module docstring).

    ``capacity_bytes`` (the GPU memory a process may hold; ``plan`` passes the usable memory less
    its margin) caps what the caching allocator keeps cached beyond the live tensors: when a
    ``cudaMalloc`` fails, PyTorch's allocator frees its unused cached blocks and retries
    (c10/cuda/CUDACachingAllocator.cpp, ``malloc``: ``release_available_cached_blocks``, then
    ``release_cached_blocks``; counted as ``num_alloc_retries``), so near the card's limit the
    reserved memory shrinks towards the allocated one instead of the run failing. Without a
    capacity the full ``FRAGMENTATION`` share is added (what an unconstrained run reserves).
    ``params`` is ``count_parameters(model)`` when the caller has it (``--recommend`` asks once per model).
    ``first_touch``: count DeepSpeed's gradient buckets as a CPU's resident set sees them (:func:`_bucket`),
    for trials measured on the CPU (planner/_calibration.py, ``expected_peak_bytes``).
    """
    params = count_parameters(model) if params is None else params
    n, vectors = local_parameters(params, layout)
    states = _model_states(n, vectors, layout)
    act = activation_bytes(model, layout)
    logits = logits_bytes(model, layout)
    comm = _comm_buffers(params, n, layout, first_touch)
    if _phased(layout):
        return _phase_peak(model, n, comm, layout, states, act, logits, capacity_bytes, first_touch)
    # Candidate peaks as (activations, logits, phase); the largest is the GPU's peak.
    inner = "first stage, 1F1B steady state" if layout.pp > 1 else "backward"
    candidates = [
        (act.last_stage, logits, ("last stage, " if layout.pp > 1 else "") + "loss"),
        (act.total, 0, inner),
    ]
    acts, logit_peak, phase = max(candidates, key=lambda c: c[0] + c[1])
    allocated = (states["weights"] + states["gradients"] + states["optimizer"] + states["master_weights"]
                 + acts + logit_peak + comm)
    return MemoryEstimate(activations=acts, logits=logit_peak, comm_buffers=comm,
                          overhead=_overhead(allocated, capacity_bytes), logits_peak=logits, peak_phase=phase, **states)


def _overhead(allocated: int, capacity_bytes: int | None) -> int:
    """CUDA context plus the allocator's cached share, capped by ``capacity_bytes`` (see ``estimate_memory``)."""
    cached = int(FRAGMENTATION * allocated)
    if capacity_bytes is not None:
        cached = max(0, min(cached, capacity_bytes - CUDA_CONTEXT_BYTES - allocated))
    return CUDA_CONTEXT_BYTES + cached


# The DeepSpeed engine, phase by phase ---------------------------------------------------------
def _phased(layout: Layout) -> bool:
    """Whether the peak is taken phase by phase (``_phase_peak``): the Hugging Face model on a DeepSpeed
    engine the planner configures itself (``deepspeed_config``: no ``data_types``, so gradients accumulate
    in the model's dtype), on the GPU, without pipeline stages, in fp32/fp16/bf16 with an fp32 master.
    Those are the paths read in DeepSpeed 0.19 and measured on an H100 (benchmarks/results/gpu_trials).
    Pipeline stages (DeepSpeed's BF16_Optimizer keeps fp32 gradient accumulators there), offload,
    ``bf16-pure`` and the other stacks keep the summed terms of the module table."""
    return (layout.framework == "deepspeed" and layout.pp == 1 and layout.offload == "none"
            and layout.precision != "bf16-pure")


def _partition(n: int, layout: Layout) -> int:
    nd = shard_degree(layout)
    return math.ceil(n / (2 * nd)) * 2 if layout.zero in (1, 2) else math.ceil(n / nd)


def _phase_gradients(n: int, layout: Layout) -> dict[str, int]:
    """Gradient bytes (buffers and the optimizer step's flattening temporaries) alive in each phase of
    a DeepSpeed 0.19 step, per ZeRO stage (``PHASES`` in the module docstring cites the lines)."""
    e = 2 if layout.mixed else 4
    zero, part = layout.zero, _partition(n, layout)
    accum = layout.grad_accum > 1  # gradients kept from one micro-batch's backward to the next forward
    if zero == 0:
        # p.grad in the model dtype, set to None after each step (engine.zero_grad); at the step,
        # FP16_Optimizer (fp16, and bf16 without fp32 accumulation) makes an fp32 copy of every
        # gradient and concatenates them: e + 4 + 4 per parameter at once. fp32 steps in place.
        step = (e + 8) * n if layout.mixed else e * n
        return dict(forward=e * n if accum else 0, backward=e * n, step=step)
    if zero in (1, 2):
        # ZeRO-1 keeps every lp gradient until the step, ZeRO-2 its partition (grads_in_partition);
        # the step frees the others, concatenates the partition (e) and casts it to fp32 (4; no copy
        # when it already is fp32).
        held = e * n if zero == 1 else e * part
        step = (2 * e + (4 if layout.mixed else 0)) * part
        return dict(forward=held if accum else 0, backward=held, step=step)
    # ZeRO-3: grad_partitions_flat_buffer (e per partition element) is allocated at init and stays;
    # the step concatenates one sub-group's partition (e) and casts it to fp32 (4).
    group = min(part, ZERO3_SUB_GROUP_SIZE)
    return dict(forward=e * part, backward=e * part,
                step=e * part + (e + (4 if layout.mixed else 0)) * group)


def _phase_comm(comm: int, layout: Layout, n: int, first_touch: bool) -> dict[str, int]:
    """Which phases ``_comm_buffers``' buckets (``comm`` bytes) live in."""
    if layout.zero == 3:
        # The reduce bucket is allocated at init and kept; the gathered layers only around their use.
        bucket = _bucket(zero_optimization(layout), n, first_touch) * (2 if layout.mixed else 4)
        return dict(forward=comm, backward=comm, step=min(bucket, comm), reduce=0)
    if layout.zero in (1, 2):
        # setup_buckets, on every gradient hook whatever the world size, allocates reduce_bucket_size
        # elements (two buffers under overlap_comm) that live until the backward epilogue.
        zero_cfg = zero_optimization(layout)
        ipg = _bucket(zero_cfg, n, first_touch) * (2 if zero_cfg.get("overlap_comm") else 1) \
            * (2 if layout.mixed else 4) if zero_cfg.get("contiguous_gradients") else 0
        return dict(forward=0, backward=max(comm, ipg), step=0, reduce=0)
    return dict(forward=0, backward=0, step=0, reduce=comm)  # all-reduce after backward, before the step


def eval_bytes(model: ModelSpec, layout: Layout) -> tuple[int, int]:
    """Held-out evaluation under ``torch.no_grad`` at the micro-batch (trainplan's runner, the
    Hugging Face model): the loss keeps the lp logits, their fp32 copy and the fp32 log-softmax
    at once (e + 4 + 4 bytes a logit; 8 in fp32, where ``.float()`` copies nothing), and the model,
    whose ``use_cache`` defaults to on, fills a key/value cache for every layer
    (transformers ``DynamicCache``: 2 x kv_heads x head_dim values a token a layer, in the weights'
    dtype). Nothing is saved for backward. Returns ``(cache, loss buffers)``."""
    e = 2 if layout.mixed else 4
    tokens = layout.micro_batch * layout.seq_len // layout.cp
    vocab = math.ceil(model.vocab_size / layout.tp)
    per_logit = e + 8 if layout.mixed else 8
    kv = model.num_layers * 2 * math.ceil(model.num_kv_heads / layout.tp) * model.head_dim * e
    return tokens * kv, tokens * vocab * per_logit


def _phase_peak(model: ModelSpec, n: int, comm_bytes: int, layout: Layout, states: dict[str, int],
                act: ActivationBytes, logits: int, capacity_bytes: int | None, first_touch: bool = False) -> MemoryEstimate:
    """The largest of the step's phases (module docstring, ``PHASES``); ``comm_bytes`` is ``_comm_buffers``."""
    grads, comm = _phase_gradients(n, layout), _phase_comm(comm_bytes, layout, n, first_touch)
    # Backward makes the blocks' gradients as it frees their saved tensors, last block first, so their
    # sum moves linearly from (all activations, the gradients already there) to (none, all of them);
    # the block checkpointing rebuilds comes on top.
    made = grads["backward"] - grads["forward"]
    bwd_grads, bwd_act = (grads["backward"], 0) if made > act.forward else (grads["forward"], act.forward)
    # (phase, gradients, activations, logits, comm): weights, moments and master are in every phase.
    phases = [
        ("loss", grads["forward"], act.last_stage, logits, comm["forward"]),
        ("backward", bwd_grads, bwd_act + act.recompute, 0, comm["backward"]),
        ("optimizer step", grads["step"], 0, 0, comm["step"]),
    ]
    if layout.loss == "default":  # what trainplan's runner launches: it evaluates at the micro-batch
        phases.append(("evaluation", 0, *eval_bytes(model, layout), comm["forward"]))
    if comm["reduce"]:
        phases.append(("gradient all-reduce", grads["backward"], 0, 0, comm["reduce"]))
    phase, g, a, lg, c = max(phases, key=lambda ph: ph[1] + ph[2] + ph[3] + ph[4])
    fixed = states["weights"] + states["optimizer"] + states["master_weights"]
    allocated = fixed + g + a + lg + c
    return MemoryEstimate(weights=states["weights"], gradients=g, optimizer=states["optimizer"],
                          master_weights=states["master_weights"], activations=a, logits=lg, comm_buffers=c,
                          overhead=_overhead(allocated, capacity_bytes), cpu_bytes=states["cpu_bytes"],
                          nvme_bytes=states["nvme_bytes"], logits_peak=logits, peak_phase=phase)
