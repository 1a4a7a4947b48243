"""Scale-up views: loss against compute with the fitted frontier and the target, the optimal LR and
batch against N with the fit, its interval and the priors, and the target's decision.

Data functions take plain values (the ladder's points, the planner's fit, the scale decision as a
dict); plot functions draw them and compute nothing new. Compute here is ``6 N D`` with N the
non-embedding parameters (the N of the fits), said on the axis.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainplan.reports._style import new_figure

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

__all__ = ["ScaleupInfo", "add_scaleup_section", "build_scale_report", "get_batch_plot", "get_loss_compute_plot",
           "get_lr_plot", "get_scaleup_info"]

_CURVE_POINTS = 12
_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleupInfo:
    """Everything the scale-up figures show, as plain values."""

    mode: str
    """``fitted``, ``anchored``, or ``none`` (too few trials; ``message`` says what to run)."""
    message: str = ""
    points: list[dict[str, Any]] = field(default_factory=list)
    """Every completed trial: size, n_params, tokens, compute, lr, batch_tokens, loss."""
    optima: list[dict[str, Any]] = field(default_factory=list)
    """Per size: its near-optimal LR/batch and best loss."""
    curve: list[dict[str, Any]] = field(default_factory=list)
    """The fit along N (at the ladder's path tokens, ``D = k N^g``; one budget: that budget): n, tokens,
    compute, lr/batch/loss value, low, high."""
    priors: list[dict[str, Any]] = field(default_factory=list)
    """Step Law at each point of ``curve``: n, lr, batch_tokens."""
    target: dict[str, Any] | None = None
    """The scale decision (``ScaleDecision.to_dict()``) when a target was given."""
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        return self.points


def get_scaleup_info(points: list[Any], decision: dict[str, Any] | None = None, *,
                     tolerance: float = 0.02, n_boot: int = 200) -> ScaleupInfo:
    """The fit along N from the smallest size to the target (or the largest size), with intervals."""
    from trainplan.errors import UsageError
    from trainplan.planner._hyperfit import Point, fit_ladder, ladder_path
    from trainplan.planner._hyperlaws import step_law

    plain = [Point(size=p.size, n_params=p.n_params, tokens=p.tokens, lr=p.lr, batch_tokens=p.batch_tokens,
                   loss=p.loss) for p in points]
    rows = [{"size": p.size, "n_params": p.n_params, "tokens": p.tokens, "compute": 6 * p.n_params * p.tokens,
             "lr": p.lr, "batch_tokens": p.batch_tokens, "loss": p.loss} for p in plain]
    if not plain:
        return ScaleupInfo(mode="none", message="no completed trials", target=decision)
    n_lo = min(p.n_params for p in plain)
    n_hi = max([p.n_params for p in plain] + ([decision["fit"]["target"]["non_embedding_params"]] if decision else []))
    curve, priors = [], []
    fit = None
    try:
        # the tokens the sizes trained along (grows with N when the ladder's budgets do)
        ln_k, g, _ = ladder_path(fit_ladder(plain, n_lo, max(p.tokens for p in plain), tolerance=tolerance,
                                            n_boot=0).optima)
        for i in range(_CURVE_POINTS):
            n = n_lo * (n_hi / n_lo) ** (i / (_CURVE_POINTS - 1)) if n_hi > n_lo else n_lo
            d_fit = math.exp(ln_k + g * math.log(n))
            fit = fit_ladder(plain, n, d_fit, tolerance=tolerance, n_boot=n_boot)
            curve.append({"n": n, "tokens": d_fit, "compute": 6 * n * d_fit,
                          **{f"{k}_{part}": getattr(getattr(fit, k), part)
                             for k in ("lr", "batch_tokens", "loss") for part in ("value", "low", "high")}})
            prior = step_law(n, d_fit)
            priors.append({"n": n, "lr": prior.lr, "batch_tokens": prior.batch_tokens})
    except UsageError as exc:
        return ScaleupInfo(mode="none", message=exc.message, points=rows, target=decision)
    assert fit is not None
    optima = [{k: getattr(o, k) for k in ("size", "n_params", "tokens", "lr", "batch_tokens", "loss", "trials",
                                          "near_optimal")} | {"compute": 6 * o.n_params * o.tokens} for o in fit.optima]
    notes = list(decision["notes"]) if decision else [n for n in fit.notes if "outside the fitted range" not in n]
    return ScaleupInfo(mode=fit.mode, points=rows, optima=optima, curve=curve, priors=priors, target=decision,
                       notes=notes)


def _band(fig: go.Figure, xs: list[float], lo: list[float], hi: list[float], name: str) -> None:
    import plotly.graph_objects as go

    fig.add_trace(go.Scatter(x=xs + xs[::-1], y=hi + lo[::-1], fill="toself", fillcolor="rgba(0,114,178,0.15)",
                             line={"width": 0}, name=name, hoverinfo="skip"))


def _sizes_trace(fig: go.Figure, info: ScaleupInfo, x: str, y: str) -> None:
    import plotly.graph_objects as go

    for i, o in enumerate(info.optima):
        fig.add_trace(go.Scatter(x=[o[x]], y=[o[y]], mode="markers", name=f"{o['size']} (near-optimal of "
                                 f"{o['near_optimal']}/{o['trials']})", marker={"size": 11, "color": _COLORS[i % 6]}))


def _target_trace(fig: go.Figure, x: float, value: float, low: float, high: float, label: str) -> None:
    import plotly.graph_objects as go

    fig.add_trace(go.Scatter(x=[x], y=[value], mode="markers", name=label, marker={"symbol": "star", "size": 16,
                             "color": "#D55E00"}, error_y={"type": "data", "symmetric": False,
                                                          "array": [high - value], "arrayminus": [value - low]}))


def get_loss_compute_plot(info: ScaleupInfo) -> go.Figure:
    import plotly.graph_objects as go

    fig = new_figure("Final eval loss against compute: trials, fitted frontier, target",
                     xaxis="compute 6·N·D (N non-embedding), FLOPs", yaxis="final eval loss (nats/token)")
    fig.update_xaxes(type="log")
    fig.add_trace(go.Scatter(x=[p["compute"] for p in info.points], y=[p["loss"] for p in info.points],
                             mode="markers", name="trials (measured)", marker={"color": "#999", "size": 6}))
    c = info.curve
    if c:
        xs = [r["compute"] for r in c]
        _band(fig, xs, [r["loss_low"] for r in c], [r["loss_high"] for r in c], "95% interval, one run (fit + trial noise)")
        fig.add_trace(go.Scatter(x=xs, y=[r["loss_value"] for r in c], mode="lines", name="fit L = E + A N^-alpha",
                                 line={"color": "#0072B2"}))
    _sizes_trace(fig, info, "compute", "loss")
    if info.target:
        t = info.target["target"]
        loss = t["predicted_loss"]
        _target_trace(fig, 6 * t["non_embedding_params"] * t["predicted_loss_tokens"], loss["value"], loss["low"], loss["high"],
                      f"target {t['model']} (predicted)")
    return fig


def _hyper_plot(info: ScaleupInfo, key: str, title: str, yaxis: str, prior_key: str) -> go.Figure:
    import plotly.graph_objects as go

    fig = new_figure(title, xaxis="non-embedding parameters N", yaxis=yaxis)
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    fig.add_trace(go.Scatter(x=[p["n_params"] for p in info.points], y=[p[key] for p in info.points], mode="markers",
                             name="trials swept", marker={"color": "#bbb", "size": 5}))
    c = info.curve
    if c:
        xs = [r["n"] for r in c]
        _band(fig, xs, [r[f"{key}_low"] for r in c], [r[f"{key}_high"] for r in c], "95% bootstrap interval")
        fig.add_trace(go.Scatter(x=xs, y=[r[f"{key}_value"] for r in c], mode="lines", name=f"fit ({info.mode})",
                                 line={"color": "#0072B2"}))
        fig.add_trace(go.Scatter(x=xs, y=[p[prior_key] for p in info.priors], mode="lines",
                                 name="Step Law prior (arXiv:2503.04715)", line={"color": "#999", "dash": "dash"}))
    _sizes_trace(fig, info, "n_params", key)
    if info.target:
        iv = info.target["fit"]["target"][key]
        _target_trace(fig, info.target["fit"]["target"]["non_embedding_params"], iv["value"], iv["low"], iv["high"],
                      "target (predicted)")
    return fig


def get_lr_plot(info: ScaleupInfo) -> go.Figure:
    return _hyper_plot(info, "lr", "Optimal peak learning rate against N", "peak learning rate", "lr")


def get_batch_plot(info: ScaleupInfo) -> go.Figure:
    return _hyper_plot(info, "batch_tokens", "Optimal global batch against N", "global batch (tokens)", "batch_tokens")


def _decision_html(d: dict[str, Any]) -> str:
    from trainplan.reports._html import pre_json

    e = html.escape
    t, lay = d["target"], d["layout"]
    ll = lay["layout"]
    rows = [
        ("target", f"{t['model']}: {t['non_embedding_params']:,.0f} non-embedding parameters, {t['tokens']:.4g} tokens"),
        ("peak LR", f"{t['lr']:.3g} in the spec (from {t['hyperparams_from']}); fit {d['fit']['target']['lr']['value']:.3g} "
                    f"[{d['fit']['target']['lr']['low']:.3g}, {d['fit']['target']['lr']['high']:.3g}]"),
        ("global batch", f"{t['global_batch']:,} sequences of {t['seq_len']} ({t['batch_rounding']})"),
        ("steps, warm-up", f"{t['steps']:,}, {t['warmup_steps']:,}"),
        ("predicted final loss", f"{t['predicted_loss']['value']:.4f} [{t['predicted_loss']['low']:.4f}, "
                                 f"{t['predicted_loss']['high']:.4f}] at {t['predicted_loss_tokens']:.4g} tokens"),
        ("layout (estimate)", f"{ll['gpus']} x {lay['gpu']['name']}, ZeRO-{ll['zero']}, micro {ll['micro_batch']} x "
                              f"accum {ll['grad_accum']}, checkpointing {ll['checkpointing']}"),
        ("time, cost (estimate)", f"{lay['time']['hours']:,.1f} h, {lay['time']['gpu_hours']:,.0f} GPU-hours, "
                                  f"${lay['cost']['usd']:,.0f}"),
        *[(f"prior: {p['law']}", f"LR {p['lr']:.3g}, batch {p['batch_tokens']:,.0f} tokens ({p['source']})")
          for p in d["priors"]],
    ]
    body = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    return f"<h3>The target's decision ({e(d['mode'])})</h3><table>{body}</table>" + pre_json({"notes": d["notes"]})


def add_scaleup_section(page: Any, parts: list[str], info: ScaleupInfo) -> None:
    """Append the scale-up figures (and the decision, when a target is given) to ``parts``."""
    e = html.escape
    if info.mode == "none":
        parts.append(f'<p class="empty">Scale-up: {e(info.message)}.</p>')
        return
    if info.target:
        parts.append(_decision_html(info.target))
    parts.extend(f'<p class="empty">{e(n)}</p>' for n in info.notes)
    parts.append(page.figure("scaleup-loss-compute", get_loss_compute_plot(info), info))
    parts.append(page.figure("scaleup-lr", get_lr_plot(info), info))
    parts.append(page.figure("scaleup-batch", get_batch_plot(info), info))


def build_scale_report(points: list[Any], decision: dict[str, Any], out_path: str | Path) -> Path:
    """A page about the target run (``trainplan scale --report PATH``)."""
    from trainplan.reports._html import Page

    out_path = Path(out_path)
    page = Page(title=f"trainplan scale: {decision['target']['model']}",
                subtitle=f"{len(points)} completed ladder trials; {decision['mode']}; predictions, not measurements",
                out_dir=out_path.parent)
    info = get_scaleup_info(points, decision, tolerance=decision["fit"]["tolerance"])
    add_scaleup_section(page, page.section("scaleup", "Scale-up: the target run"), info)
    return page.write(out_path.name)


def ladder_info(study: optuna.Study, decision: dict[str, Any] | None = None) -> ScaleupInfo | None:
    """The scale-up view of a ladder study (with the target's point when ``decision``, a
    ``trainplan scale`` decision, is given), or None for a study that is not a ladder."""
    from trainplan.search._records import read_study_attrs

    if not read_study_attrs(study).sweep.get("ladder"):
        return None
    from trainplan.search._ladder import ladder_points

    if decision is None:
        return get_scaleup_info(ladder_points(study))
    return get_scaleup_info(ladder_points(study), decision, tolerance=decision["fit"]["tolerance"])
