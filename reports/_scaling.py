"""Scaling trade-offs from the planner, and loss against training compute from the trials.

Everything here is the planner's estimate (``trainplan.planner.plan``) for layouts around the
target's: the GPU count and ZeRO stage vary with the micro-batch fixed and the accumulation
chosen to keep the global batch (rounded up: ``Layout.with_global_batch_at_least``); then the
micro-batch varies on the target's GPU count at the target's global batch (the accumulation takes
up the rest, as ``Layout.with_global_batch`` states).

Log axes get explicit ranges: plotly.js places annotations on a log axis in log10 units, so an
``add_hline`` label at "80 GiB" stretched the memory axis to 1e80.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainplan.errors import UsageError
from trainplan.reports._records import StudyRecord
from trainplan.reports._style import CATEGORY_STYLE, GIB, new_figure
from trainplan.reports._target import Target

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = [
    "BreakdownInfo", "get_breakdown_info", "get_breakdown_plot", "ComputeInfo", "GpuScalingInfo", "MicroBatchInfo", "get_compute_info", "get_compute_plot",
    "get_gpu_scaling_info", "get_memory_plot", "get_microbatch_info", "get_microbatch_plot", "get_time_cost_plot",
]

GPU_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128)
MICRO_BATCHES = (1, 2, 4, 8, 16, 32, 64)
_ZERO_COLORS = ("#0072B2", "#009E73", "#E69F00", "#CC79A7")
"""Line colour per ZeRO stage (indexed by the stage of ``trainplan.planner.ZERO_STAGES``)."""
FLAT = 0.01
"""Throughput that varies less than this (relative) across micro-batches is called flat."""


def log_range(values: list[float], pad: float = 1.25) -> list[float]:
    """An explicit log-axis range (log10 units) around ``values``, padded by ``pad`` each side."""
    positive = [v for v in values if v and v > 0]
    if not positive:
        return [0.0, 1.0]
    return [math.log10(min(positive) / pad), math.log10(max(positive) * pad)]


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuScalingInfo:
    """Planner estimates per (GPU count, ZeRO stage)."""

    gpu_name: str
    """Target GPU's catalog name."""
    gpu_memory_bytes: int
    """Its memory (the line every per-GPU figure is judged against)."""
    rows: list[dict[str, Any]]
    """``gpus, zero, micro_batch, grad_accum, global_batch, memory_bytes, fits, tokens_per_s, hours, cost_usd``."""


def _plan_row(target: Target, **changes: Any) -> dict[str, Any] | None:
    from trainplan.planner import plan

    layout = target.layout.with_(**changes)
    try:
        p = plan(target.model, layout, target.gpu, tokens=target.tokens)
    except UsageError:  # an impossible combination (e.g. ZeRO-2 with pipeline stages)
        return None
    return {"gpus": layout.gpus, "zero": layout.zero, "micro_batch": layout.micro_batch,
            "grad_accum": layout.grad_accum, "global_batch": layout.global_batch,
            "memory_bytes": int(p.memory.total), "fits": bool(p.fits), "tokens_per_s": float(p.perf.tokens_per_s),
            "hours": float(p.hours), "cost_usd": float(p.cost_usd)}


def get_gpu_scaling_info(target: Target) -> GpuScalingInfo:
    from trainplan.planner import ZERO_STAGES

    base = target.layout
    rows = []
    for gpus in GPU_COUNTS:
        if gpus % (base.tp * base.pp * base.cp):
            continue
        accum = base.with_(gpus=gpus).with_global_batch_at_least(base.global_batch).grad_accum
        for zero in ZERO_STAGES:
            row = _plan_row(target, gpus=gpus, zero=zero, grad_accum=accum,
                            offload=base.offload if zero else "none")
            if row:
                rows.append(row)
    return GpuScalingInfo(gpu_name=target.gpu.key, gpu_memory_bytes=target.gpu.memory_bytes, rows=rows)


def get_memory_plot(info: GpuScalingInfo) -> go.Figure:
    import plotly.graph_objects as go

    fig = new_figure(f"Memory per GPU against GPU count ({info.gpu_name})", xaxis="GPUs", yaxis="GiB per GPU")
    for zero in sorted({r["zero"] for r in info.rows}):
        rows = [r for r in info.rows if r["zero"] == zero]
        fig.add_trace(go.Scatter(x=[r["gpus"] for r in rows], y=[r["memory_bytes"] / GIB for r in rows],
                                 mode="lines+markers", name=f"ZeRO-{zero}", line={"color": _ZERO_COLORS[zero]}))
    gpus = sorted({r["gpus"] for r in info.rows}) or [1]
    capacity = info.gpu_memory_bytes / GIB
    # A trace, not add_hline: its label would sit at y=10^capacity on this log axis.
    fig.add_trace(go.Scatter(x=[gpus[0], gpus[-1]], y=[capacity, capacity], mode="lines",
                             name=f"{info.gpu_name} memory", line={"color": "#D55E00", "dash": "dash"}))
    fig.update_xaxes(type="log", tickvals=list(GPU_COUNTS), ticktext=[str(g) for g in GPU_COUNTS])
    # Log: small models sit orders of magnitude under the GPU's memory.
    fig.update_yaxes(type="log", range=log_range([r["memory_bytes"] / GIB for r in info.rows] + [capacity]))
    return fig


def get_time_cost_plot(info: GpuScalingInfo) -> go.Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("time to train (hours)", "cost (USD)"))
    fig.update_layout(new_figure(f"Time and cost against GPU count ({info.gpu_name}; hollow: does not fit)").layout)
    for zero in sorted({r["zero"] for r in info.rows}):
        rows = [r for r in info.rows if r["zero"] == zero]
        symbols = ["circle" if r["fits"] else "circle-open" for r in rows]
        for col, key in ((1, "hours"), (2, "cost_usd")):
            fig.add_trace(go.Scatter(x=[r["gpus"] for r in rows], y=[r[key] for r in rows], mode="lines+markers",
                                     name=f"ZeRO-{zero}", legendgroup=f"z{zero}", showlegend=col == 1,
                                     marker={"symbol": symbols, "size": 8}, line={"color": _ZERO_COLORS[zero]}),
                          row=1, col=col)
    fig.update_xaxes(type="log", title_text="GPUs", gridcolor="#e5e5e5")
    fig.update_yaxes(type="log", gridcolor="#e5e5e5")
    return fig


@dataclass(frozen=True, slots=True, kw_only=True)
class MicroBatchInfo:
    """Planner throughput and memory per micro-batch on the target's GPU count, ZeRO stage and global batch."""

    gpus: int
    """GPU count held fixed."""
    zero: int
    """ZeRO stage held fixed."""
    global_batch: int
    """Global batch held fixed: each micro-batch that divides it, with the accumulation making up the rest."""
    gpu_memory_bytes: int
    """Memory of the target GPU."""
    rows: list[dict[str, Any]]
    """Rows as in :class:`GpuScalingInfo`, one per micro-batch."""

    @property
    def flat(self) -> bool:
        """The planner predicts (nearly) the same tokens/s for every micro-batch: one GPU, or
        nothing per micro-batch to amortise; memory is then all the micro-batch changes."""
        speeds = [r["tokens_per_s"] for r in self.rows]
        return len(speeds) < 2 or max(speeds) - min(speeds) <= FLAT * max(speeds)


def get_microbatch_info(target: Target) -> MicroBatchInfo:
    base = target.layout
    rows = []
    for mb in MICRO_BATCHES:
        try:
            layout = base.with_(micro_batch=mb).with_global_batch(base.global_batch)
        except UsageError:  # this micro-batch does not divide the global batch
            continue
        if row := _plan_row(target, micro_batch=mb, grad_accum=layout.grad_accum):
            rows.append(row)
    return MicroBatchInfo(gpus=base.gpus, zero=base.zero, global_batch=base.global_batch,
                          gpu_memory_bytes=target.gpu.memory_bytes, rows=rows)


def get_microbatch_plot(info: MicroBatchInfo) -> go.Figure:
    import plotly.graph_objects as go

    title = f"Throughput and memory against micro-batch ({info.gpus} GPUs, ZeRO-{info.zero}, global batch {info.global_batch})"
    if info.flat:
        title += "<br><sub>the planner predicts the same tokens/s for every micro-batch here (nothing per micro-batch " \
                 "to amortise); memory is what changes</sub>"
    fig = new_figure(title, xaxis="micro-batch (sequences per GPU)", yaxis="tokens/s (all GPUs)",
                     margin={"l": 60, "r": 60, "t": 80, "b": 50})
    x = [r["micro_batch"] for r in info.rows]
    fig.add_trace(go.Scatter(x=x, y=[r["tokens_per_s"] for r in info.rows], name="tokens/s", mode="lines+markers",
                             line={"color": "#0072B2"}))
    fig.add_trace(go.Scatter(x=x, y=[r["memory_bytes"] / GIB for r in info.rows], name="GiB per GPU",
                             mode="lines+markers", line={"color": "#009E73"}, yaxis="y2"))
    fig.add_trace(go.Scatter(x=[x[0], x[-1]] if x else [], y=[info.gpu_memory_bytes / GIB] * (2 if x else 0),
                             name="GPU memory", mode="lines", line={"color": "#D55E00", "dash": "dash"}, yaxis="y2"))
    fig.update_layout(yaxis2={"title": {"text": "GiB per GPU"}, "overlaying": "y", "side": "right",
                              "rangemode": "tozero"})
    if info.flat and info.rows:  # a flat line at a readable scale, not an axis zoomed onto rounding noise
        fig.update_yaxes(range=[0, 1.2 * max(r["tokens_per_s"] for r in info.rows)])
    fig.update_xaxes(type="log", tickvals=list(MICRO_BATCHES), ticktext=[str(m) for m in MICRO_BATCHES])
    return fig


@dataclass(frozen=True, slots=True, kw_only=True)
class ComputeInfo:
    """Loss of each trial against the training compute it spent."""

    flops_per_token: float | None
    """Model FLOPs per training token (planner; 6N + attention, see the planner's FLOPs module)."""
    rows: list[dict[str, Any]]
    """``trial, category, tokens, compute_flops, loss`` for trials with a loss."""
    message: str
    """Why there is no data (empty otherwise)."""


def get_compute_info(study: StudyRecord, target: Target | None) -> ComputeInfo:
    if target is None:
        return ComputeInfo(flops_per_token=None, rows=[], message="no model to count FLOPs for")
    from trainplan.planner import plan

    p = plan(target.model, target.layout, target.gpu, tokens=target.tokens)
    per_token = float(p.flops.model_per_token)
    rows = []
    for t in study.trials:
        tokens = t.tokens if t.tokens is not None else (t.curve[-1].tokens if t.curve else None)
        loss = t.values[0] if t.values and study.objective_names[0] == "eval_loss" else t.best_eval_loss
        if tokens and loss is not None:
            rows.append({"trial": t.number, "category": t.category, "tokens": tokens,
                         "compute_flops": tokens * per_token, "loss": loss})
    return ComputeInfo(flops_per_token=per_token, rows=rows, message="" if rows else "no trial logged a loss")


def get_compute_plot(info: ComputeInfo) -> go.Figure:
    import plotly.graph_objects as go

    fig = new_figure("Loss against training compute (trials)", xaxis="training FLOPs", yaxis="eval loss")
    for cat in dict.fromkeys(r["category"] for r in info.rows):
        rows = [r for r in info.rows if r["category"] == cat]
        fig.add_trace(go.Scatter(x=[r["compute_flops"] for r in rows], y=[r["loss"] for r in rows], mode="markers",
                                 name=cat, text=[f"trial {r['trial']}" for r in rows],
                                 marker={"color": CATEGORY_STYLE[cat]["color"], "size": 9}))
    fig.update_xaxes(type="log")
    return fig


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakdownInfo:
    """Where one plan's per-GPU memory goes."""

    gpu_name: str
    """The plan's GPU."""
    gpu_memory_bytes: int
    """Its memory."""
    rows: list[dict[str, Any]]
    """``part, bytes`` in the planner's order (weights, gradients, optimizer states, ...)."""


def get_breakdown_info(plan: Any) -> BreakdownInfo:
    """From a planner ``Plan`` (its ``to_dict()`` memory block)."""
    d = plan.to_dict()["memory"]
    rows = [{"part": k.removesuffix("_bytes"), "bytes": v} for k, v in d["per_gpu"].items() if k != "total_bytes"]
    return BreakdownInfo(gpu_name=plan.gpu.key, gpu_memory_bytes=int(d["gpu_capacity_bytes"]), rows=rows)


def get_breakdown_plot(info: BreakdownInfo) -> go.Figure:
    import plotly.graph_objects as go

    fig = new_figure("Memory per GPU by part", xaxis="GiB", height=max(260, 60 + 30 * len(info.rows)))
    rows = info.rows[::-1]
    fig.add_trace(go.Bar(x=[r["bytes"] / GIB for r in rows], y=[r["part"].replace("_", " ") for r in rows],
                         orientation="h", marker={"color": "#0072B2"}))
    fig.add_vline(x=info.gpu_memory_bytes / GIB, line={"color": "#D55E00", "dash": "dash"},
                  annotation_text=f"{info.gpu_name} memory")
    return fig
