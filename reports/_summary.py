"""The decision: best configuration, recommended layout on the target, and planner vs measurement.

``get_summary_info`` gathers the best trial's metrics, how to rerun it (its ``cmd.txt`` and
``ds_config.json``), and the planner's fastest and cheapest data-parallel layouts for the target
GPU with the exact launch command, ``spec.json`` and ``ds_config.json`` of the full run.
``get_estimate_info`` puts the planner's estimate of every trial beside what the trial measured.

When a scale-up target is given (``trainplan scale``'s decision), the summary is about that run:
:class:`TargetDecision` holds its hyperparameters, layout, GPUs, time, cost and predicted loss, and
the best trial of the small study is shown in a section of its own.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainplan.errors import UsageError
from trainplan.reports._records import CATEGORIES, StudyRecord
from trainplan.reports._style import CATEGORY_STYLE, GIB, new_figure
from trainplan.reports._target import Target
from trainplan.runners._result import ran_on_cpu

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["EstimateInfo", "LayoutChoice", "SummaryInfo", "TargetDecision", "get_estimate_info", "get_estimate_plot",
           "get_summary_info", "layout_choice", "target_decision", "target_decision_html"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LayoutChoice:
    """One planned layout for the full run, ready to launch."""

    label: str
    """``fastest``, ``cheapest`` or ``planned``."""
    plan: dict[str, Any]
    """The planner's ``Plan.to_dict()``."""
    launch_command: str
    """The deepspeed launch of the full run (``spec.json`` and ``ds_config.json`` beside it)."""
    spec: dict[str, Any]
    """The run's ``spec.json``: the best trial's config with this layout and the full step count."""
    ds_config: dict[str, Any]
    """The run's ``ds_config.json``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SummaryInfo:
    """Everything the decision summary shows."""

    study_name: str
    """Study name (escape before showing)."""
    counts: dict[str, int]
    """Trials per display category."""
    objectives: dict[str, str]
    """Objective name -> direction."""
    best_number: int | None
    """The best trial (None before any trial completed)."""
    best_params: dict[str, Any] = field(default_factory=dict)
    """Its sampled hyperparameters."""
    best_metrics: dict[str, float | None] = field(default_factory=dict)
    """Objective values and measurements (tokens, tokens_per_s, peak_mem_bytes, elapsed_s, and
    gpu_hours, or cpu_rank_hours for a trial that ran on the CPU)."""
    best_trial_dir: str = ""
    """Its folder."""
    best_command: str = ""
    """Its ``cmd.txt`` (how to rerun it by hand), when readable."""
    best_ds_config: dict[str, Any] = field(default_factory=dict)
    """Its ``ds_config.json``, when readable."""
    choices: list[LayoutChoice] = field(default_factory=list)
    """Recommended layouts on the target GPU (fastest first)."""
    message: str = ""
    """Why there is no recommendation (empty otherwise)."""
    target: TargetDecision | None = None
    """The scale-up target's decision, when one is given: then the summary is about it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetDecision:
    """The run the user will pay for, as ``trainplan scale`` decided it (predictions and estimates)."""

    model: str
    """Target model (preset, config path or hub id)."""
    non_embedding_params: float
    """N of the fits."""
    tokens: float
    """Training tokens of the target run."""
    mode: str
    """``fitted`` (power laws across the ladder's sizes) or ``anchored`` (one size, priors' exponents)."""
    hyperparams_from: str
    """Where the spec's LR and batch come from: ``fit``, ``step_law`` or ``deepseek``."""
    lr: float
    """Peak learning rate written to the spec."""
    lr_fit: dict[str, float]
    """The fit's LR at the target: value, low, high (95% bootstrap)."""
    global_batch: int
    """Sequences per optimizer step."""
    seq_len: int
    batch_tokens: int
    """Global batch in tokens."""
    steps: int
    warmup_steps: int
    predicted_loss: dict[str, float]
    """Final eval loss: value, low, high (a prediction from the ladder's data and tokenizer)."""
    predicted_loss_tokens: float
    """Tokens the loss is predicted at (the target's, unless the notes say otherwise)."""
    gpu: str
    """Catalog key of the target GPU."""
    gpus: int
    nodes: int
    zero: int
    micro_batch: int
    grad_accum: int
    checkpointing: str
    hours: float
    """Wall-clock hours to the token budget (planner estimate)."""
    gpu_hours: float
    cost_usd: float
    memory_per_gpu_bytes: int
    """Planner estimate (the nvidia-smi figure)."""
    tokens_per_s: float
    mfu: float
    epochs: float | None = None
    """Passes over the unique data (``--dataset-tokens``), None when not given."""
    launch_command: str = ""
    """``cmd.txt`` beside the decision, when readable."""
    folder: str = ""
    """Where ``spec.json``, ``ds_config.json`` and ``cmd.txt`` of the target are."""
    notes: list[str] = field(default_factory=list)
    """The fit's notes and warnings (extrapolation, anchoring, priors used)."""


def target_decision(d: dict[str, Any], folder: Path | None = None) -> TargetDecision:
    """A :class:`TargetDecision` from ``ScaleDecision.to_dict()`` (``scale.json``); ``folder`` holds its files."""
    t, lay = d["target"], d["layout"]
    ll = lay["layout"]
    return TargetDecision(
        model=str(t["model"]), non_embedding_params=float(t["non_embedding_params"]), tokens=float(t["tokens"]),
        mode=str(d["mode"]), hyperparams_from=str(t["hyperparams_from"]), lr=float(t["lr"]),
        lr_fit=dict(d["fit"]["target"]["lr"]), global_batch=int(t["global_batch"]), seq_len=int(t["seq_len"]),
        batch_tokens=int(t["global_batch"]) * int(t["seq_len"]), steps=int(t["steps"]),
        warmup_steps=int(t["warmup_steps"]), predicted_loss=dict(t["predicted_loss"]),
        predicted_loss_tokens=float(t["predicted_loss_tokens"]), gpu=str(lay["gpu"]["key"]), gpus=int(ll["gpus"]),
        nodes=int(ll["nodes"]), zero=int(ll["zero"]), micro_batch=int(ll["micro_batch"]),
        grad_accum=int(ll["grad_accum"]), checkpointing=str(ll["checkpointing"]), hours=float(lay["time"]["hours"]),
        gpu_hours=float(lay["time"]["gpu_hours"]), cost_usd=float(lay["cost"]["usd"]),
        memory_per_gpu_bytes=int(lay["memory"]["per_gpu"]["total_bytes"]),
        tokens_per_s=float(lay["throughput"]["tokens_per_s"]), mfu=float(lay["throughput"]["mfu"]),
        epochs=float(d["data"]["epochs"]) if d.get("data") else None,
        launch_command=_read(folder / "cmd.txt") if folder else "", folder=str(folder or ""),
        notes=[str(n) for n in d.get("notes") or []],
    )


def target_decision_html(t: TargetDecision) -> str:
    """The decision summary's table for the target run (renders ``t``; computes nothing)."""
    import html

    from trainplan.reports._style import fmt_bytes, fmt_num, fmt_seconds

    e = html.escape
    loss = t.predicted_loss
    at = "" if t.predicted_loss_tokens == t.tokens else f" at {fmt_num(t.predicted_loss_tokens)} tokens (see the notes)"
    rows = (
        ("model", f"{t.model}: {fmt_num(t.non_embedding_params)} non-embedding parameters"),
        ("tokens", f"{fmt_num(t.tokens)} in {t.steps:,} steps, {t.warmup_steps:,} warm-up"),
        ("peak LR", f"{t.lr:.3g} (from {t.hyperparams_from}; the fit gives {t.lr_fit['value']:.3g} "
                    f"[{t.lr_fit['low']:.3g}, {t.lr_fit['high']:.3g}], 95% bootstrap)"),
        ("global batch", f"{t.global_batch:,} sequences of {t.seq_len} = {fmt_num(t.batch_tokens)} tokens"),
        *([("data", f"{t.epochs:.3g} epochs of the unique tokens (--dataset-tokens; the data-constrained law of Muennighoff et al. 2023)")]
          if t.epochs is not None else []),
        ("predicted final loss", f"{loss['value']:.4f} [{loss['low']:.4f}, {loss['high']:.4f}]{at} (prediction, {t.mode})"),
        ("GPUs", f"{t.gpus} x {t.gpu} on {t.nodes} node(s)"),
        ("layout", f"ZeRO-{t.zero}, micro-batch {t.micro_batch} x grad accum {t.grad_accum}, "
                   f"checkpointing {t.checkpointing}; {fmt_bytes(t.memory_per_gpu_bytes)} per GPU (estimate)"),
        ("time", f"{fmt_seconds(t.hours * 3600)}, {fmt_num(t.gpu_hours)} GPU-hours at {fmt_num(t.tokens_per_s)} "
                 f"tokens/s, MFU {t.mfu:.1%} (estimate)"),
        ("cost", f"${t.cost_usd:,.0f} (estimate, catalog price)"),
    )
    body = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    parts = [f"<h3>The target run: {e(t.model)}</h3>", f"<table>{body}</table>"]
    parts += [f'<p class="empty">{e(n)}</p>' for n in t.notes]
    if t.launch_command:
        parts += [f"<p>Its <code>spec.json</code> and <code>ds_config.json</code> are in <code>{e(t.folder)}</code>; "
                  "from there run:</p>", f"<pre>{e(t.launch_command)}</pre>"]
    return "".join(parts)


def _launch_command(layout: Any) -> str:
    # The runner builds every launch command (runners.build_command); this one runs elsewhere.
    from trainplan.runners import build_command

    return shlex.join(build_command("spec.json", gpus=min(layout.gpus, layout.gpus_per_node), master_port=None,
                                    hostfile="hostfile" if layout.nodes > 1 else None, nodes=layout.nodes,
                                    portable=True))


def layout_choice(label: str, plan: Any, target: Target) -> LayoutChoice:
    """A :class:`LayoutChoice` for a planner ``Plan`` of the target's model."""
    from dataclasses import replace

    from trainplan.planner import deepspeed_config

    hp = replace(target.hyperparams, total_steps=plan.steps,
                 warmup_steps=min(plan.steps, round(target.hyperparams.warmup_steps * plan.steps
                                                   / max(1, target.hyperparams.total_steps))))
    # "params" is the search's record of the sampled values, not a TrialSpec key.
    spec = {**{k: v for k, v in target.spec.items() if k != "params"}, "layout": plan.layout.to_dict(), "steps": plan.steps,
            # as many evaluations over the full run as the trial made over its own
            **({"eval_every": max(1, round(target.spec["eval_every"] * plan.steps / max(1, target.spec.get("steps") or 1)))}
               if isinstance(target.spec.get("eval_every"), int) else {}),
            "hyperparams": {**hp.to_dict(), "betas": list(hp.betas)}, "gpu": target.gpu.key}
    try:
        # The runner derives the config it really uses from the spec (it adjusts the scheduler).
        from trainplan.runners import TrialSpec

        ds_config = TrialSpec.from_dict(spec).ds_config()
    except UsageError:  # a spec from a foreign sweep the runner would not take: the planner's config
        ds_config = deepspeed_config(plan.layout, hp)
    return LayoutChoice(label=label, plan=plan.to_dict(), launch_command=_launch_command(plan.layout), spec=spec,
                        ds_config=ds_config)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _read_object(path: Path) -> dict[str, Any]:
    """A JSON object file, or {} when it is missing, not JSON or not an object (a hand-edited file)."""
    try:
        value = json.loads(_read(path) or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def get_summary_info(study: StudyRecord, target: Target | str, decision: TargetDecision | None = None) -> SummaryInfo:
    """``target`` is the resolved target of the swept model or the sentence saying why there is none;
    ``decision`` the scale-up target's (the summary is then about it)."""
    best = study.best
    counts = {c: n for c in CATEGORIES if (n := len(study.by_category(c)))}
    objectives = dict(zip(study.objective_names, study.directions))
    if best is None:
        return SummaryInfo(study_name=study.name, counts=counts, objectives=objectives, best_number=None,
                           message=target if isinstance(target, str) else "no completed trial", target=decision)
    metrics: dict[str, float | None] = dict(zip(study.objective_names, best.values or ()))
    metrics.update(tokens=best.tokens, tokens_per_s=best.tokens_per_s, peak_mem_bytes=best.peak_mem_bytes,
                   elapsed_s=best.elapsed_s)
    folder = Path(best.trial_dir) if best.trial_dir else None
    # A trial whose ranks ran on the CPU spent rank-hours, not GPU-hours (the runner's one rule).
    metrics["cpu_rank_hours" if ran_on_cpu(folder) else "gpu_hours"] = best.gpu_hours
    choices: list[LayoutChoice] = []
    message = target if isinstance(target, str) else ""
    if isinstance(target, Target):
        from trainplan.planner import recommend
        from trainplan.runners import launchable_space

        # Recommend what the runner can launch (data parallel, checkpointing none or full).
        rec = recommend(target.model, target.gpu, target.layout, global_batch=target.layout.global_batch,
                        tokens=target.tokens, optimize="time", space=launchable_space())
        ranked = rec.ranked
        if ranked:
            cheapest = min(ranked, key=lambda p: (p.cost_usd, p.hours, p.layout.gpus))
            choices.append(layout_choice("fastest", ranked[0], target))
            if cheapest is not ranked[0]:
                choices.append(layout_choice("cheapest", cheapest, target))
        else:
            message = f"no data-parallel layout of up to 64 {target.gpu.key} GPUs fits this model"
    return SummaryInfo(
        study_name=study.name, counts=counts, objectives=objectives, best_number=best.number,
        best_params=dict(best.params), best_metrics=metrics, best_trial_dir=best.trial_dir,
        best_command=_read(folder / "cmd.txt") if folder else "",
        best_ds_config=_read_object(folder / "ds_config.json") if folder else {}, choices=choices, message=message,
        target=decision,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class EstimateInfo:
    """Planner estimate beside measurement, per trial that measured something."""

    rows: list[dict[str, Any]]
    """``trial, category, est_memory_bytes, peak_mem_bytes, est_tokens_per_s, tokens_per_s``."""


def get_estimate_info(study: StudyRecord) -> EstimateInfo:
    rows = []
    for t in study.trials:
        # the trial measures max_memory_allocated: compare it with the planner's estimate of that
        # (older studies recorded only the fits figure, memory_bytes)
        est_mem = t.estimate.get("allocated_bytes") or t.estimate.get("memory_bytes")
        est_tps = t.estimate.get("tokens_per_s")
        if t.peak_mem_bytes is None and t.tokens_per_s is None and est_mem is None:
            continue
        rows.append({"trial": t.number, "category": t.category, "est_memory_bytes": est_mem,
                     "peak_mem_bytes": t.peak_mem_bytes, "est_tokens_per_s": est_tps, "tokens_per_s": t.tokens_per_s})
    return EstimateInfo(rows=rows)


def get_estimate_plot(info: EstimateInfo) -> go.Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("memory per rank (GiB)", "throughput (tokens/s)"))
    fig.update_layout(new_figure("Planner estimate (x) against measurement (y); the diagonal is a perfect estimate").layout)
    for col, (est, meas, scale) in enumerate((("est_memory_bytes", "peak_mem_bytes", GIB),
                                              ("est_tokens_per_s", "tokens_per_s", 1.0)), start=1):
        pts = [r for r in info.rows if r[est] is not None and r[meas] is not None]
        for cat in dict.fromkeys(r["category"] for r in pts):
            sel = [r for r in pts if r["category"] == cat]
            fig.add_trace(go.Scatter(x=[r[est] / scale for r in sel], y=[r[meas] / scale for r in sel], mode="markers",
                                     name=cat, legendgroup=cat, showlegend=col == 1, text=[f"trial {r['trial']}" for r in sel],
                                     marker={"color": CATEGORY_STYLE[cat]["color"], "size": 8}), row=1, col=col)
        if pts:
            hi = max(max(r[est], r[meas]) for r in pts) / scale
            fig.add_trace(go.Scatter(x=[0, hi], y=[0, hi], mode="lines", showlegend=False, hoverinfo="skip",
                                     line={"color": "#888", "dash": "dot"}), row=1, col=col)
    fig.update_xaxes(title_text="planner estimate", gridcolor="#e5e5e5")
    fig.update_yaxes(title_text="measured", gridcolor="#e5e5e5")
    return fig
