"""One plan: a model on a layout on a GPU, with every estimate the planner makes.

:func:`plan` is the single entry point that ties the pieces together (parameters, FLOPs, memory,
step time, scaling law); :class:`Plan` holds the results as plain values, derives time and cost,
and renders itself as the ``--format json`` object documented in the README.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from trainplan import __version__
from trainplan.errors import UsageError
from trainplan.planner._activations import op_recompute_flops_per_token
from trainplan.planner._catalog import GPUSpec
from trainplan.planner._flops import FlopCounts, flops
from trainplan.planner._hyperlaws import HyperSuggestion, suggest_hyperparams
from trainplan.planner._layout import Layout
from trainplan.planner._memory import MemoryEstimate, estimate_memory, framework_profile
from trainplan.planner._model import ModelSpec
from trainplan.planner._params import ParamCounts, count_parameters
from trainplan.planner._perf import Perf, estimate_perf
from trainplan.planner._scaling import ScalingPrediction, chinchilla

__all__ = ["FIT_MARGIN", "Plan", "Planner", "plan"]

FIT_MARGIN = 0.02
"""Share of the GPU's reported memory (nvidia-smi's total) a layout must leave free to count as
fitting. Memory the driver keeps out of a process's reach: an A100-SXM4-40GB reports 40960 MiB in
nvidia-smi but 40339 MiB to ``cudaMemGetInfo`` (1.5%; deviceQuery output in
bottlerocket-os/bottlerocket PR #3873), rounded up."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """Estimates for training ``model`` with ``layout`` on ``gpu`` to ``tokens`` tokens."""

    model: ModelSpec
    layout: Layout
    gpu: GPUSpec
    params: ParamCounts
    flops: FlopCounts
    memory: MemoryEstimate
    perf: Perf
    scaling: ScalingPrediction
    tokens: float
    """Training tokens the time and cost are computed for."""
    tokens_source: str
    """``"--tokens"`` or ``"compute-optimal"`` (the scaling law's tokens for this model size)."""
    price_per_hour: float
    """USD per GPU-hour used for the cost."""

    # Derived ---------------------------------------------------------------------------------
    @property
    def usable_bytes(self) -> int:
        """What ``fits`` compares ``memory.total`` (the nvidia-smi estimate) with: the GPU's
        reported memory less ``FIT_MARGIN``."""
        return _usable_bytes(self.gpu)

    @property
    def fits(self) -> bool:
        return _fits(self.memory, self.usable_bytes)

    @property
    def headroom_bytes(self) -> int:
        return self.usable_bytes - self.memory.total

    @property
    def steps(self) -> int:
        return math.ceil(self.tokens / self.layout.tokens_per_step)

    @property
    def hours(self) -> float:
        return self.steps * self.perf.step_time_s / 3600

    @property
    def gpu_hours(self) -> float:
        return self.hours * self.layout.gpus

    @property
    def cost_usd(self) -> float:
        return self.gpu_hours * self.price_per_hour

    def to_dict(self) -> dict[str, Any]:
        """The ``trainplan plan --format json`` object (schema in README.md)."""
        m, lay, mem = self.model, self.layout, self.memory
        return {
            "trainplan_version": __version__,
            "kind": "estimate",
            "model": {"name": m.name, "family": m.family, "hidden_size": m.hidden_size,
                      "num_layers": m.num_layers, "num_heads": m.num_heads,
                      "num_kv_heads": m.num_kv_heads, "vocab_size": m.vocab_size,
                      "num_experts": m.num_experts},
            "gpu": {"key": self.gpu.key, "name": self.gpu.name, "memory_bytes": self.gpu.memory_bytes,
                    "peak_tflops": self.gpu.peak_flops(lay.precision) / 1e12},
            "layout": {**lay.to_dict(), "dp": lay.dp, "nodes": lay.nodes,
                       "global_batch": lay.global_batch, "tokens_per_step": lay.tokens_per_step},
            "parameters": asdict(self.params),
            "flops": asdict(self.flops),
            "memory": {
                "per_gpu": {**{f"{k}_bytes": v for k, v in mem.breakdown().items()},
                            "total_bytes": mem.total},
                "cpu_bytes_per_node": mem.cpu_bytes * min(lay.gpus, lay.gpus_per_node),
                "nvme_bytes_per_node": mem.nvme_bytes * min(lay.gpus, lay.gpus_per_node),
                "max_allocated_bytes": mem.allocated,
                "reserved_bytes": mem.reserved,
                "nvidia_smi_bytes": mem.total,
                "logits_peak_bytes": mem.logits_peak,
                "peak_phase": mem.peak_phase,
                "framework": lay.framework,
                "profile": framework_profile(lay),
                "gpu_capacity_bytes": self.gpu.memory_bytes,
                "usable_bytes": self.usable_bytes,
                "fit_margin": FIT_MARGIN,
                "headroom_bytes": self.headroom_bytes,
            },
            "fits": self.fits,
            "throughput": {
                "tokens_per_s": self.perf.tokens_per_s,
                "tokens_per_s_per_gpu": self.perf.tokens_per_s / lay.gpus,
                "step_time_s": self.perf.step_time_s, "mfu": self.perf.mfu, "hfu": self.perf.hfu,
                "assumed_compute_efficiency": self.perf.efficiency,
                "compute_s": self.perf.compute_s, "dp_comm_s": self.perf.dp_comm_s,
                "dp_comm_exposed_s": self.perf.dp_comm_exposed_s, "tp_comm_s": self.perf.tp_comm_s,
                "pipeline_bubble_s": self.perf.bubble_s, "pp_p2p_s": self.perf.pp_p2p_s,
                "offload_s": self.perf.offload_s,
            },
            "time": {"tokens": self.tokens, "tokens_source": self.tokens_source, "steps": self.steps,
                     "hours": self.hours, "gpu_hours": self.gpu_hours},
            "cost": {"usd": self.cost_usd, "price_per_gpu_hour": self.price_per_hour},
            "scaling": {**asdict(self.scaling), "law": "Chinchilla, Besiroglu et al. 2024 refit"},
            "hyperparams": {"kind": "prior", "suggested": [s.to_dict(lay.seq_len) for s in self.suggested_hyperparams()]},
        }

    def suggested_hyperparams(self) -> list[HyperSuggestion]:
        """Peak LR and global batch from the published laws (priors; planner/_hyperlaws.py)."""
        return suggest_hyperparams(n_layer=self.model.num_layers, d_model=self.model.hidden_size,
                                   seq_len=self.layout.seq_len, non_embedding_params=self.params.non_embedding,
                                   tokens=self.tokens)


def _usable_bytes(gpu: GPUSpec) -> int:
    """Memory a layout may use on ``gpu``: its reported memory less ``FIT_MARGIN`` (what ``fits`` compares
    the nvidia-smi estimate with, and the capacity the memory estimate's allocator cache is capped by)."""
    return int(gpu.usable_bytes * (1 - FIT_MARGIN))


def _fits(memory: MemoryEstimate, usable: int) -> bool:
    """The fit rule: the nvidia-smi estimate within the usable memory."""
    return memory.total <= usable


def plan(
    model: ModelSpec,
    layout: Layout,
    gpu: GPUSpec,
    *,
    tokens: float | None = None,
    mfu: float | None = None,
    price: float | None = None,
) -> Plan:
    """Estimate everything for one layout; ``layout`` is validated against ``model`` first.

    Args:
        tokens: training tokens (default: the compute-optimal tokens for the model size).
        mfu: compute efficiency to assume (share of peak FLOP/s the matmuls reach).
        price: USD per GPU-hour (default: the catalog's).
    """
    layout.validate(model)
    return Planner(model, gpu, tokens=tokens, mfu=mfu, price=price).plan(layout)


class Planner:
    """What every plan of ``model`` on ``gpu`` shares, checked and computed once: the options, the
    parameter counts, the scaling-law prediction and the usable memory. :func:`plan` makes one plan
    through it; ``--recommend`` thousands (``planner/_recommend.py``), asking for the memory first and
    planning the rest only for the layouts that fit."""

    __slots__ = ("model", "gpu", "mfu", "price", "params", "scaling", "tokens", "tokens_source", "usable_bytes")

    def __init__(self, model: ModelSpec, gpu: GPUSpec, *, tokens: float | None = None, mfu: float | None = None,
                 price: float | None = None) -> None:
        if tokens is not None and tokens <= 0:
            raise UsageError("--tokens", f"must be positive, got {tokens:g}")
        if mfu is not None and not 0 < mfu <= 1:
            raise UsageError("--mfu", f"must lie in (0, 1], got {mfu}")
        if price is not None and price < 0:
            raise UsageError("--price", f"must be >= 0, got {price}")
        self.model, self.gpu, self.mfu = model, gpu, mfu
        self.params = count_parameters(model)
        self.scaling = chinchilla(self.params.active, tokens)
        self.tokens = tokens if tokens is not None else self.scaling.compute_optimal_tokens
        self.tokens_source = "--tokens" if tokens is not None else "compute-optimal"
        self.price = gpu.price_per_hour if price is None else price
        self.usable_bytes = _usable_bytes(gpu)

    def memory(self, layout: Layout) -> MemoryEstimate:
        """Per-GPU memory of ``layout``, a layout sound for the model (``Layout.problems`` empty)."""
        return estimate_memory(self.model, layout, capacity_bytes=self.usable_bytes, params=self.params)

    def fits(self, memory: MemoryEstimate) -> bool:
        """:attr:`Plan.fits` of a layout with this ``memory``, before the rest of its plan is made."""
        return _fits(memory, self.usable_bytes)

    def plan(self, layout: Layout, memory: MemoryEstimate | None = None) -> Plan:
        """Every estimate for ``layout``, a layout sound for the model (``Layout.problems`` empty);
        ``memory`` is its :meth:`memory` when the caller has it already."""
        model, params = self.model, self.params
        fl = flops(model, layout.seq_len, layout.tokens_per_step, layout.checkpointing)
        if layout.checkpointing == "selective-op":  # every other matmul of each block rerun (torchtitan)
            extra = op_recompute_flops_per_token(model)
            fl = replace(fl, hardware_per_token=fl.hardware_per_token + extra,
                         hardware_per_step=(fl.hardware_per_token + extra) * layout.tokens_per_step)
        perf = estimate_perf(
            model, layout, self.gpu, params_total=params.total,
            model_flops_per_step=fl.model_per_step, hardware_flops_per_step=fl.hardware_per_step,
            efficiency=self.mfu,
        )
        return Plan(
            model=model, layout=layout, gpu=self.gpu, params=params, flops=fl,
            memory=memory if memory is not None else self.memory(layout),
            perf=perf, scaling=self.scaling, tokens=self.tokens, tokens_source=self.tokens_source,
            price_per_hour=self.price,
        )
