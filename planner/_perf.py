"""Step time, throughput and MFU of a layout: compute at an assumed efficiency plus the
communication that does not overlap with it.

Every figure here is an estimate from a simple model whose assumptions are stated below and in
the constants' docstrings; ``trainplan run`` measures the real thing.

- Compute: the matmuls (hardware FLOPs less the attention core) at
  ``compute_efficiency / (1 + MEMORY_BOUND_WIDTH x B / d)``, B the GPU's machine balance (peak
  FLOP/s over HBM bytes/s) and d the hidden size. ``compute_efficiency`` is the share of peak that
  the matmuls of a very wide model reach: the GPU's measured maximum achievable matmul FLOPS
  (MAMF) times the share of it a tuned training stack keeps (``planner/data/gpus.json`` says which
  runs fitted it). The second factor is the time of the memory-bound work beside the matmuls
  (norms, activations, residuals, dropout, casts: bytes that grow with d per token, while matmul
  FLOPs grow with d**2): it weighs more on narrow models and on GPUs whose FLOP/s outgrew their
  HBM, e.g. 0.79 of the wide-model figure at d = 2048 on an A100 80GB (B = 153), 0.66 on an H100
  SXM (B = 295), 0.74 on an H200 (B = 206). ``--mfu`` overrides both factors and the attention's.
- The attention core (QK^T and AV, 12 L (h d_head) s per token over the full s x s square, the
  MFU convention; 16 with recompute under ``selective``/``full`` checkpointing) runs at the GPU's
  ``attention_efficiency`` under flash/SDPA, counted over the same full square: the kernel skips
  the masked half (Dao 2023, "FlashAttention-2", Sec. 3.1.1) but reaches a lower share of peak
  than GEMMs, and a lower one on Hopper than on Ampere (FlashAttention-2 reaches 50-73% of A100
  peak forward, Dao 2023 Sec. 4.1; 35% of H100 peak, Shah et al. 2024, "FlashAttention-3",
  abstract). Eager attention is taken at the same efficiency (a simplification: its batched GEMMs
  compute the whole square, at a GEMM's rate), plus the score matrix it streams through HBM for
  mask, softmax and dropout (``EAGER_SCORE_BYTES``), memory-bound time added on top.
- Data-parallel collectives are ring collectives: an all-reduce moves 2(n-1)/n of the buffer per
  GPU, a reduce-scatter or all-gather (n-1)/n (Patarasuk & Yuan 2009), sized from this GPU's share
  of the model, at NCCL's bus bandwidth: NVLink inside a node, and across nodes the NICs that the
  group's GPUs on one node own together (one ring per NIC), each at its measured efficiency. What overlaps depends on how long the compute it hides behind takes: each
  collective is exposed by max(floor x comm, comm - window), the window being the compute it runs
  beside (ZeRO-3/FSDP: parameter all-gather beside forward, all-gather and reduce-scatter beside
  backward, every micro-batch, Rajbhandari et al. 2020, Sec. 7; ZeRO-1/2 and Megatron's
  distributed optimizer: the gradient reduction beside the last micro-batch's backward; FSDP
  under a pipeline schedule: one gather and one reduce-scatter a step, see ``estimate_perf``).
  Inside a node the bus bandwidth is the catalog's measured NCCL figure where it has one (H100:
  360 GB/s), else the link rate x ``NVLINK_EFFICIENCY``.
- Tensor parallelism: 4 all-reduces (or all-gather + reduce-scatter pairs under sequence
  parallelism, the same bytes) of the b x s x d activations per layer per micro-batch, 2 more when
  full checkpointing reruns the forward (Korthikanti et al. 2022, Sec. 4.2.2 and Table 2), on the
  node's links, not overlapped.
- Pipeline: bubble (p - 1) / (v m) of the ideal compute with m micro-batches and v chunks per
  stage (Narayanan et al. 2021, Sec. 2.2.2, interleaved 1F1B); point-to-point sends of the b x s x
  d activations and gradients at every stage boundary, v times per micro-batch when interleaved,
  divided by t with the scatter/gather optimization (Sec. 4.1), over the inter-node network.
- Context parallelism splits each sequence over cp GPUs (activations and TP/PP messages / cp);
  its own ring-attention or all-to-all traffic is not modelled.
- CPU offload: gradients down and parameters up over PCIe each step, and the optimizer step on the
  host at an assumed CPU-Adam rate (ZeRO-Offload, Ren et al. 2021, Sec. 5), not overlapped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainplan.planner._catalog import GPUSpec
from trainplan.planner._flops import _attention_core_forward
from trainplan.planner._layout import Layout
from trainplan.planner._model import ModelSpec

__all__ = ["Perf", "default_efficiency", "estimate_perf"]

MEMORY_BOUND_WIDTH = 3.5
"""Width, in units of the GPU's machine balance (FLOP per HBM byte), at which the memory-bound work
of a block would take as long again as its matmuls: the matmul efficiency is divided by
1 + MEMORY_BOUND_WIDTH x balance / d. Fitted, jointly with the catalog's ``compute_efficiency`` and
``attention_efficiency`` of A100 and H100, to the 61 throughput rows of
tests/planner/data/published_runs.json; what pins it are the narrow llm-foundry MPT rows (125M-3B
on A100 40/80 GB, 760M-3B on H100) against the wide ones (7B-70B). Rows within tolerance: 38 with
no such term, 46 / 48 / 50 / 46 / 37 at 2.1 / 2.8 / 3.5 / 4.2 / 5.6 (below 2.8 the Megatron-LM
1.7B row of the older set, published_measurements.json, leaves its 30% band). As bytes (for a
GPT block's 72 d**2 matmul FLOPs per token, forward and backward, at the A100's 0.687): ~180 d bf16
elements read or written per token and layer, the order of an unfused block's elementwise traffic."""
EXPOSED_FLOOR = 0.15
"""Share of every overlapped collective that stays exposed however long the compute beside it:
the first gather / last bucket of a pass and the slowdown of kernels sharing SMs and HBM with
NCCL (assumption, not fitted: over the 61 throughput rows of tests/planner/data/published_runs.json
any value from 0 to 0.4 puts 40-43 rows within tolerance, so the data cannot pin it down)."""
EAGER_SCORE_BYTES = 24
"""HBM bytes per attention-score element per layer of a training step under eager attention:
scores written and read for the mask and softmax, fp32 softmax out, its lp copy, and as much again
in backward (count from the Hugging Face eager path; assumption on the traffic, not fitted)."""
PCIE_GBPS = 25.0
"""Host <-> GPU copy bandwidth under offload, GB/s per GPU (PCIe 4 x16, measured ~25 of 32)."""
CPU_ADAM_PARAMS_PER_S = 2.0e9
"""Parameters a node's CPU-Adam updates per second (assumption; ZeRO-Offload reports ~1 s/B on 1 node)."""
NVME_GBPS = 6.0
"""NVMe read+write bandwidth per node, GB/s (assumption)."""
NVLINK_EFFICIENCY = 0.78
"""NCCL bus bandwidth reached inside an NVLink node, as a share of the link's per-direction rate:
232.5 GB/s all-reduce busbw on 8 x A100 SXM (300 GB/s) in NVIDIA/nccl issue #1048 (0.775)."""
NETWORK_EFFICIENCY = 0.86
"""NCCL bus bandwidth reached across nodes, as a share of the node's aggregate NIC rate: 86 of
100 GB/s on 2 x (8 A100, 4 x HDR 200G) in NVIDIA/nccl issue #1048; 84.8 (peak 96) of 100 GB/s on
3 such nodes in NVIDIA/nccl-tests issue #119."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Perf:
    """Estimated timing of one optimizer step."""

    compute_s: float
    """Forward, backward and recompute at the assumed efficiency (attention as its kernel runs it)."""
    dp_comm_s: float
    """Data-parallel / ZeRO collectives, total (before overlap)."""
    dp_comm_exposed_s: float
    """The part of dp_comm_s not hidden behind compute."""
    tp_comm_s: float
    """Tensor-parallel all-reduces (not overlapped)."""
    bubble_s: float
    """Pipeline bubble."""
    offload_s: float
    """Host transfers and the CPU optimizer step under offload."""
    step_time_s: float
    """compute + exposed communication + bubble + pipeline sends + offload."""
    tokens_per_s: float
    """Training tokens per second, all GPUs."""
    mfu: float
    """Model FLOPs utilisation: model FLOPs per second / (GPUs x peak)."""
    hfu: float
    """Hardware FLOPs utilisation, recompute counted."""
    efficiency: float
    """The compute efficiency assumed (share of peak the matmuls reach)."""
    pp_p2p_s: float = 0.0
    """Pipeline point-to-point sends of activations and gradients (not overlapped)."""


def default_efficiency(model: ModelSpec, gpu: GPUSpec, precision: str = "bf16") -> float:
    """Share of peak FLOP/s the block matmuls reach, by GPU and model width (module docstring):
    ``compute_efficiency / (1 + MEMORY_BOUND_WIDTH x (peak / HBM bandwidth) / d)``."""
    if gpu.hbm_gbps <= 0:  # a recorded device profile: no bandwidth known, its efficiency calibrated
        return gpu.compute_efficiency
    balance = gpu.peak_flops(precision) / (gpu.hbm_gbps * 1e9)  # FLOPs per byte of HBM traffic
    return round(gpu.compute_efficiency / (1 + MEMORY_BOUND_WIDTH * balance / model.hidden_size), 3)


def _passes(layout: Layout) -> int:
    """Forward-equivalent passes per micro-batch: forward + backward (2x), one more forward when
    checkpointing reruns it (``selective`` and ``full``; torchtitan's per-op policy keeps the
    attention output, Korthikanti et al. 2022 Sec. 4.2)."""
    return 4 if layout.checkpointing in ("selective", "full") else 3


def _attention_core_flops(model: ModelSpec, layout: Layout) -> float:
    """Attention-core FLOPs of one step, all GPUs: QK^T and AV over the full square, ``_passes`` times."""
    return _passes(layout) * model.num_layers * _attention_core_forward(model, layout.seq_len) * layout.tokens_per_step


def _ring(n: int, factor: float, nbytes: float, gbps: float) -> float:
    """Seconds for a ring collective moving factor*(n-1)/n of ``nbytes`` per GPU."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    return factor * (n - 1) / n * nbytes / (gbps * 1e9)


def _group_bandwidth(layout: Layout, gpu: GPUSpec, group: int, stride: int) -> float:
    """NCCL bus bandwidth, GB/s, of a ring over ``group`` GPUs spaced ``stride`` apart in rank order.

    Inside a node the ring runs over NVLink. Across nodes NCCL runs one ring per NIC (channel), each
    leaving the node once, so the ring's bus bandwidth is the NICs the group's members on one node
    own together, not one GPU's NIC (the nccl-tests issues of ``NETWORK_EFFICIENCY``: 4 NICs x 25
    GB/s give ~86-96 GB/s busbw), capped by NVLink.
    """
    per_node = max(1, min(group, layout.gpus_per_node // stride))
    if group * stride <= layout.gpus_per_node:
        return _nvlink(gpu)
    return min(_nvlink(gpu), per_node * gpu.inter_node_gbps * NETWORK_EFFICIENCY)


def _nvlink(gpu: GPUSpec) -> float:
    """NCCL bus bandwidth inside a node, GB/s: the catalog's measured figure where it has one."""
    return gpu.intra_node_busbw_gbps or gpu.intra_node_gbps * NVLINK_EFFICIENCY


def _exposed(comm: float, window: float) -> float:
    """What a collective of ``comm`` seconds leaves on the critical path beside ``window`` of compute."""
    return max(EXPOSED_FLOOR * comm, comm - window)


def _eager_attention_s(model: ModelSpec, layout: Layout, gpu: GPUSpec, passes: int) -> float:
    """Memory-bound seconds per step on one GPU that eager attention adds to the matmuls: the
    score matrix (heads x s x s per sequence and layer) through HBM; ``passes`` 4 with recompute."""
    if layout.attention != "eager" or gpu.hbm_gbps <= 0:
        return 0.0
    sequences = layout.micro_batch * layout.grad_accum  # per data-parallel rank and step
    scores = model.num_heads / layout.tp * layout.seq_len ** 2 * math.ceil(model.num_layers / layout.pp) * sequences
    return scores * EAGER_SCORE_BYTES * (passes / 3) / (gpu.hbm_gbps * 1e9)


def estimate_perf(
    model: ModelSpec,
    layout: Layout,
    gpu: GPUSpec,
    *,
    params_total: int,
    model_flops_per_step: float,
    hardware_flops_per_step: float,
    efficiency: float | None = None,
) -> Perf:
    """Estimate step time and throughput of ``layout`` on ``gpu`` (see module docstring)."""
    eff = efficiency if efficiency is not None else default_efficiency(model, gpu, layout.precision)
    # the attention core at the GPU's attention efficiency (the matmuls' where the catalog has none)
    att_eff = eff if efficiency is not None else gpu.attention_efficiency or eff
    peak = gpu.peak_flops(layout.precision)
    passes = _passes(layout)
    attn = min(_attention_core_flops(model, layout), hardware_flops_per_step)
    compute = (hardware_flops_per_step - attn) / (layout.gpus * peak * eff) + attn / (layout.gpus * peak * att_eff) \
        + _eager_attention_s(model, layout, gpu, passes)
    micro = compute / layout.grad_accum  # one micro-batch, forward + backward (+ recompute)
    fwd_share = 1 / passes
    forward, backward = micro * fwd_share, micro * (1 - fwd_share)

    # Data parallel: this GPU's model shard (parameters e bytes; gradient reduction in e, or fp32
    # under FSDP2's reduce_dtype and Megatron's fp32 main_grad).
    shard = params_total / (layout.tp * layout.pp)
    elem = 4 if layout.precision == "fp32" else 2
    grad_elem = 4 if layout.framework in ("fsdp", "megatron") else elem
    m, nd = layout.grad_accum, layout.dp * layout.cp  # ZeRO/FSDP shard over data x context parallel
    dp_bw = _group_bandwidth(layout, gpu, nd, layout.tp)
    sharded = layout.zero == 3 or (layout.framework == "fsdp" and layout.zero >= 2)
    fsdp_pipeline = sharded and layout.framework == "fsdp" and layout.pp > 1
    if fsdp_pipeline:
        # FSDP2 under torch.distributed.pipelining: parameters stay gathered across micro-batches
        # (torchtitan: reshard_after_forward=False with PP) and gradients are reduce-scattered
        # after the last micro-batch only (stage.py backward_maybe_with_nosync sets
        # requires_gradient_sync and reshard_after_backward False before it): one all-gather
        # beside the first forward, one reduce-scatter beside the last backward.
        gather, scatter = _ring(nd, 1, shard * elem, dp_bw), _ring(nd, 1, shard * grad_elem, dp_bw)
        dp_comm = gather + scatter
        dp_exposed = _exposed(gather, forward) + _exposed(scatter, backward)
    elif sharded:
        gather = _ring(nd, 1, shard * elem, dp_bw)  # one parameter all-gather
        scatter = _ring(nd, 1, shard * grad_elem, dp_bw)
        dp_comm = m * (2 * gather + scatter)
        dp_exposed = m * (_exposed(gather, forward) + _exposed(gather + scatter, backward))
    elif layout.zero == 2 and layout.framework == "deepspeed":
        # reduce-scatter every micro-batch beside its backward, all-gather of updated parameters
        # after the step (not overlapped)
        scatter, gather = _ring(nd, 1, shard * grad_elem, dp_bw), _ring(nd, 1, shard * elem, dp_bw)
        dp_comm = m * scatter + gather
        dp_exposed = m * _exposed(scatter, backward) + gather
    elif layout.zero >= 1 and layout.framework == "megatron":
        # distributed optimizer: reduce-scatter beside the last backward, all-gather beside the
        # next step's first forward (overlap_grad_reduce / overlap_param_gather)
        scatter, gather = _ring(nd, 1, shard * grad_elem, dp_bw), _ring(nd, 1, shard * elem, dp_bw)
        dp_comm = scatter + gather
        dp_exposed = _exposed(scatter, backward) + _exposed(gather, forward)
    else:
        dp_comm = _ring(nd, 2, shard * grad_elem, dp_bw)  # one all-reduce at the step boundary
        dp_exposed = _exposed(dp_comm, backward)

    # Tensor parallel: activations b*s*d in the compute dtype.
    act_bytes = layout.micro_batch * layout.seq_len // layout.cp * model.hidden_size * elem
    layers_here = math.ceil(model.num_layers / layout.pp)
    per_layer = 6 if layout.checkpointing == "full" else 4
    tp_comm = m * layers_here * per_layer * _ring(layout.tp, 2, act_bytes, _nvlink(gpu))

    p, v = layout.pp, layout.pp_interleave
    bubble = compute * (p - 1) / (v * m) if p > 1 else 0.0
    p2p = 0.0
    if p > 1:
        link = gpu.inter_node_gbps * NETWORK_EFFICIENCY if layout.tp * p > layout.gpus_per_node \
            else _nvlink(gpu)
        p2p = m * v * 2 * (act_bytes / layout.tp) / (link * 1e9)

    offload = 0.0
    if layout.offload != "none":
        per_gpu_params = shard / nd
        # fp32 grads down, 16-bit params up, then the host's Adam over this node's partitions.
        offload = per_gpu_params * (4 + elem) / (PCIE_GBPS * 1e9)
        offload += per_gpu_params * min(layout.gpus, layout.gpus_per_node) / CPU_ADAM_PARAMS_PER_S
        if layout.offload == "nvme":
            offload += per_gpu_params * 16 * min(layout.gpus, layout.gpus_per_node) / (NVME_GBPS * 1e9)

    step = compute + dp_exposed + tp_comm + bubble + p2p + offload
    return Perf(
        compute_s=compute, dp_comm_s=dp_comm, dp_comm_exposed_s=dp_exposed, tp_comm_s=tp_comm,
        bubble_s=bubble, offload_s=offload, step_time_s=step, pp_p2p_s=p2p,
        tokens_per_s=layout.tokens_per_step / step,
        mfu=model_flops_per_step / (step * layout.gpus * peak),
        hfu=hardware_flops_per_step / (step * layout.gpus * peak),
        efficiency=eff,
    )
