"""Step time, throughput and MFU of a layout: compute at an assumed efficiency plus the
communication that does not overlap with it.

Every figure here is an estimate from a simple model whose assumptions are stated below and in
``Perf.assumptions``; ``trainplan run`` measures the real thing.

- Compute: hardware FLOPs per step / (GPUs x peak x efficiency). The default efficiency (the
  share of peak the matmuls reach) is the GPU's ``compute_efficiency`` from the catalog (fitted
  for A100 and H100 to published MFUs: llm-foundry, torchtitan, Megatron-LM, Llama 3), lowered
  for narrow models whose matmuls are too small to fill the GPU: x (d/4096)**0.15 below
  d=4096 (0.90 at d=2048, 0.78 at d=768); ``--mfu`` overrides it.
- Data-parallel collectives use ring algorithms: an all-reduce moves 2(n-1)/n of the buffer per
  GPU, a reduce-scatter or all-gather (n-1)/n (Patarasuk & Yuan 2009). ZeRO stages 1-2 move what an
  all-reduce moves; stage 3 moves 1.5x that, once per micro-batch (Rajbhandari et al. 2020, Sec. 7).
  A fixed share of it overlaps with the backward pass (DeepSpeed's overlap_comm buckets).
- Tensor parallelism: 4 all-reduces of the b x s x d activations per layer per micro-batch
  (2 forward, 2 backward; Narayanan et al. 2021, Sec. 3.2), on the node's links, not overlapped.
- Pipeline bubble: (p - 1) / m of the ideal compute time with m micro-batches (Narayanan et al.
  2021, Sec. 2.2, 1F1B schedule).
- CPU offload: gradients down and parameters up over PCIe each step, and the optimizer step on the
  host at an assumed CPU-Adam rate (ZeRO-Offload, Ren et al. 2021, Sec. 5), not overlapped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from trainplan.planner._catalog import GPUSpec
from trainplan.planner._layout import Layout
from trainplan.planner._model import ModelSpec

__all__ = ["Perf", "default_efficiency", "estimate_perf"]

OVERLAP = 0.7
"""Share of data-parallel communication hidden behind the backward pass (assumption)."""
PCIE_GBPS = 25.0
"""Host <-> GPU copy bandwidth under offload, GB/s per GPU (PCIe 4 x16, measured ~25 of 32)."""
CPU_ADAM_PARAMS_PER_S = 2.0e9
"""Parameters a node's CPU-Adam updates per second (assumption; ZeRO-Offload reports ~1 s/B on 1 node)."""
NVME_GBPS = 6.0
"""NVMe read+write bandwidth per node, GB/s (assumption)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Perf:
    """Estimated timing of one optimizer step."""

    compute_s: float
    """Forward, backward and recompute at the assumed efficiency."""
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
    """compute + exposed communication + bubble + offload."""
    tokens_per_s: float
    """Training tokens per second, all GPUs."""
    mfu: float
    """Model FLOPs utilisation: model FLOPs per second / (GPUs x peak)."""
    hfu: float
    """Hardware FLOPs utilisation, recompute counted."""
    efficiency: float
    """The compute efficiency assumed (share of peak the matmuls reach)."""


def default_efficiency(model: ModelSpec, gpu: GPUSpec) -> float:
    """Share of peak FLOP/s the matmuls reach, by GPU and model width (see module docstring)."""
    return round(gpu.compute_efficiency * min(1.0, model.hidden_size / 4096) ** 0.15, 3)


def _ring(n: int, factor: float, nbytes: float, gbps: float) -> float:
    """Seconds for a ring collective moving factor*(n-1)/n of ``nbytes`` per GPU."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    return factor * (n - 1) / n * nbytes / (gbps * 1e9)


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
    eff = efficiency if efficiency is not None else default_efficiency(model, gpu)
    peak = gpu.peak_flops(layout.precision)
    compute = hardware_flops_per_step / (layout.gpus * peak * eff)

    # Data parallel: gradients and (ZeRO-3) parameters of this GPU's model shard.
    shard = params_total / (layout.tp * layout.pp)
    elem = 4 if layout.precision == "fp32" else 2
    gbytes = shard * elem
    spans_nodes = layout.gpus > layout.gpus_per_node
    dp_bw = gpu.inter_node_gbps if spans_nodes else gpu.intra_node_gbps
    if layout.zero <= 1:
        dp_comm = _ring(layout.dp, 2, gbytes, dp_bw)  # one all-reduce at the step boundary
    elif layout.zero == 2:
        # reduce-scatter every micro-batch, all-gather of updated parameters once a step
        dp_comm = layout.grad_accum * _ring(layout.dp, 1, gbytes, dp_bw) + _ring(layout.dp, 1, gbytes, dp_bw)
    else:
        # two parameter all-gathers (forward, backward) and a reduce-scatter per micro-batch
        dp_comm = layout.grad_accum * _ring(layout.dp, 3, gbytes, dp_bw)
    backward = compute * 2 / 3
    dp_exposed = dp_comm * (1 - OVERLAP) + max(0.0, dp_comm * OVERLAP - backward)

    # Tensor parallel: activations b*s*d in the compute dtype, 4 all-reduces per layer per micro-batch.
    act_bytes = layout.micro_batch * layout.seq_len * model.hidden_size * elem
    layers_here = math.ceil(model.num_layers / layout.pp)
    tp_comm = layout.grad_accum * layers_here * 4 * _ring(layout.tp, 2, act_bytes, gpu.intra_node_gbps)

    bubble = compute * (layout.pp - 1) / layout.grad_accum if layout.pp > 1 else 0.0

    offload = 0.0
    if layout.offload != "none":
        per_gpu_params = shard / layout.dp
        # fp32 grads down, 16-bit params up, then the host's Adam over this node's partitions.
        offload = per_gpu_params * (4 + elem) / (PCIE_GBPS * 1e9)
        offload += per_gpu_params * min(layout.gpus, layout.gpus_per_node) / CPU_ADAM_PARAMS_PER_S
        if layout.offload == "nvme":
            offload += per_gpu_params * 16 * min(layout.gpus, layout.gpus_per_node) / (NVME_GBPS * 1e9)

    step = compute + dp_exposed + tp_comm + bubble + offload
    return Perf(
        compute_s=compute, dp_comm_s=dp_comm, dp_comm_exposed_s=dp_exposed, tp_comm_s=tp_comm,
        bubble_s=bubble, offload_s=offload, step_time_s=step,
        tokens_per_s=layout.tokens_per_step / step,
        mfu=model_flops_per_step / (step * layout.gpus * peak),
        hfu=hardware_flops_per_step / (step * layout.gpus * peak),
        efficiency=eff,
    )
