"""Learning curves of every trial: eval and train loss against steps, tokens or wall-clock.

``get_curves_info`` ranks the trials and gathers their curves as plain lists; ``get_curves_plot``
draws eval loss (top) and train loss (bottom) with the category styles, a top-K dropdown (plotly
``updatemenus``: no page script needed) and per-point ``customdata`` holding tokens and seconds, so
the page's x-axis selector (``CURVES_JS``) can swap the axis without a second copy of the data.

A trial whose curve overfits (eval loss rising while train loss falls over the sweep's
``overfit.window`` evaluations: the rule of ``search/_overfit.py``, the same one the search applied
while the trial ran) carries the detection record, and the figure marks the evaluation where it was
detected with a red cross.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainplan.reports._records import StudyRecord, TrialRecord
from trainplan.reports._style import CATEGORY_STYLE, new_figure

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["CURVES_JS", "CurveSeries", "CurvesInfo", "X_AXES", "get_curves_info", "get_curves_plot"]

X_AXES = {"step": "optimizer steps", "tokens": "training tokens", "elapsed_s": "wall-clock (s)"}
TOP_K_CHOICES = (5, 10, 20, 50)
_OVERFIT_COLOR = "#D62728"


@dataclass(frozen=True, slots=True, kw_only=True)
class CurveSeries:
    """The curve of one trial, as columns."""

    number: int
    """Trial number."""
    category: str
    """Display category (best, completed, pruned, failed, ...)."""
    rank: int | None
    """0 for the best score, None when the trial has no score (no eval and no value)."""
    step: list[int]
    """Optimizer steps of every logged point."""
    tokens: list[float]
    """Tokens seen at every logged point."""
    elapsed_s: list[float]
    """Seconds since the trial started at every logged point."""
    train_loss: list[float | None]
    """Train loss per logged point (None where missing)."""
    eval_index: list[int]
    """Indices into the columns above where the trial evaluated."""
    eval_loss: list[float]
    """Eval loss at ``eval_index``."""
    overfit: dict[str, Any] | None = None
    """Where the curve was detected overfitting (``search._overfit.overfit_at``'s record: step,
    tokens, window, eval and train loss over the window, best eval loss), None when it was not."""
    overfit_index: int | None = None
    """Index into the columns above of the evaluation where overfitting was detected."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CurvesInfo:
    """All curves of a study and the default top-K filter."""

    series: tuple[CurveSeries, ...]
    """One entry per trial with at least one logged point, by trial number."""
    top_k: int | None
    """Trials shown when the page opens (None: all)."""

    def rows(self) -> list[dict[str, Any]]:
        """One row per logged point (the figure's CSV)."""
        out = []
        for s in self.series:
            evals = dict(zip(s.eval_index, s.eval_loss))
            for i, step in enumerate(s.step):
                out.append({"trial": s.number, "category": s.category, "rank": s.rank, "step": step,
                            "tokens": s.tokens[i], "elapsed_s": s.elapsed_s[i],
                            "train_loss": s.train_loss[i], "eval_loss": evals.get(i),
                            "overfit_detected": i == s.overfit_index})
        return out

    def visible(self, k: int | None) -> list[int]:
        """Trial numbers shown under a top-``k`` filter (best trials always shown)."""
        return [s.number for s in self.series
                if k is None or s.category == "best" or (s.rank is not None and s.rank < k)]


def _ranks(study: StudyRecord) -> dict[int, int]:
    sign = -1.0 if study.directions and study.directions[0] == "maximize" else 1.0
    scored = [t for t in study.trials if t.score is not None]
    ordered = sorted(scored, key=lambda t: (sign * t.score, t.number))  # type: ignore[operator]
    return {t.number: i for i, t in enumerate(ordered)}


def _overfit_window(study: StudyRecord) -> int:
    section = study.sweep.get("overfit") if isinstance(study.sweep, dict) else None
    window = section.get("window") if isinstance(section, dict) else None
    return window if isinstance(window, int) and window >= 1 else 3  # OverfitConfig's default


def _series(t: TrialRecord, rank: int | None, window: int = 3) -> CurveSeries:
    from trainplan.search._overfit import overfit_at

    c = t.curve
    evals = [(i, p.eval_loss) for i, p in enumerate(c) if p.eval_loss is not None]
    overfit = overfit_at([[p.step, p.tokens, p.elapsed_s, p.train_loss, p.eval_loss] for p in c], window)
    at = next((i for i, _ in evals if c[i].step == overfit["step"]), None) if overfit else None
    return CurveSeries(
        number=t.number, category=t.category, rank=rank, step=[p.step for p in c],
        tokens=[p.tokens for p in c], elapsed_s=[p.elapsed_s for p in c],
        train_loss=[p.train_loss for p in c], eval_index=[i for i, _ in evals], eval_loss=[v for _, v in evals],
        overfit=overfit, overfit_index=at,
    )


def get_curves_info(study: StudyRecord, top_k: int | None = None) -> CurvesInfo:
    """Curves of every trial that logged something, ranked by score (see ``TrialRecord.score``)."""
    ranks, window = _ranks(study), _overfit_window(study)
    series = tuple(_series(t, ranks.get(t.number), window) for t in study.trials if t.curve)
    return CurvesInfo(series=series, top_k=top_k if top_k and top_k < len(series) else None)


def _trace(s: CurveSeries, idx: list[int], y: list[float | None], row: int, shown: bool) -> dict[str, Any]:
    import numpy as np

    style = CATEGORY_STYLE[s.category]
    # float32 halves the page weight; plotting needs no more than 7 significant digits.
    custom = np.array([[s.tokens[i], s.elapsed_s[i]] for i in idx], dtype=np.float32).reshape(-1, 2)
    return {
        "type": "scatter", "mode": "lines+markers" if len(idx) < 30 else "lines",
        "x": np.array([s.step[i] for i in idx], dtype=np.int32),
        "y": np.array([np.nan if v is None else v for v in y], dtype=np.float32),
        "customdata": custom, "name": f"trial {s.number}", "legendgroup": s.category,
        "line": {"color": style["color"], "width": style["width"], "dash": style["dash"]},
        "opacity": style["opacity"], "visible": shown, "meta": s.number,
        **({} if row == 1 else {"xaxis": "x2", "yaxis": "y2"}),
    }


def get_curves_plot(info: CurvesInfo) -> go.Figure:
    """Eval loss (top) and train loss (bottom) of every trial; a top-K dropdown on the figure."""
    import plotly.graph_objects as go

    fig = new_figure("Learning curves (eval loss above, train loss below)", height=720,
                     margin={"l": 60, "r": 20, "t": 90, "b": 50})
    shown = set(info.visible(info.top_k))
    traces: list[dict[str, Any]] = []
    owners: list[int] = []
    for s in info.series:
        traces.append(_trace(s, s.eval_index, list(s.eval_loss), 1, s.number in shown))
        traces.append(_trace(s, list(range(len(s.step))), s.train_loss, 2, s.number in shown))
        owners += [s.number, s.number]
        if s.overfit_index is not None and s.overfit is not None:
            o = s.overfit
            mark = _trace(s, [s.overfit_index], [o["eval_loss_to"]], 1, s.number in shown)
            mark.update(mode="markers", marker={"symbol": "x", "size": 11, "color": _OVERFIT_COLOR},
                        hovertemplate=(f"trial {s.number}: overfitting since step {o['step']}<br>eval loss "
                                       f"{o['eval_loss_from']:.4f} -> {o['eval_loss_to']:.4f} over {o['window']} evaluations"
                                       f"<br>train loss {o['train_loss_from']:.4f} -> {o['train_loss_to']:.4f}"
                                       "<extra></extra>"))
            traces.append(mark)
            owners.append(s.number)
    # Legend: one entry per category present, drawn by an empty trace.
    present = [c for c in CATEGORY_STYLE if any(s.category == c for s in info.series)]
    for cat in present:
        style = CATEGORY_STYLE[cat]
        traces.append({"type": "scatter", "x": [None], "y": [None], "mode": "lines", "name": style["label"],
                       "legendgroup": cat, "showlegend": True, "hoverinfo": "skip",
                       "line": {"color": style["color"], "width": 2, "dash": style["dash"]}})
    if any(s.overfit_index is not None for s in info.series):
        traces.append({"type": "scatter", "x": [None], "y": [None], "mode": "markers", "showlegend": True,
                       "name": "overfitting detected (eval rising while train falls)", "hoverinfo": "skip",
                       "marker": {"symbol": "x", "size": 11, "color": _OVERFIT_COLOR}})
    n_legend = len(traces) - len(owners)
    fig.add_traces([go.Scatter(**{k: v for k, v in t.items() if k != "type"}) for t in traces])
    # What every trial trace shares lives once in the template, not 2 x trials times in the page.
    fig.update_layout(template={"data": {"scatter": [{
        "showlegend": False, "marker": {"size": 4},
        "hovertemplate": ("trial %{meta}<br>step %{x}<br>tokens %{customdata[0]:.4s}<br>%{customdata[1]:.1f} s"
                          "<br>loss %{y:.4f}<extra></extra>")}]}})
    fig.update_layout(
        xaxis={"domain": [0, 1], "anchor": "y", "matches": "x2", "showticklabels": False},
        yaxis={"domain": [0.53, 1.0], "title": {"text": "eval loss"}, "gridcolor": "#e5e5e5"},
        xaxis2={"domain": [0, 1], "anchor": "y2", "title": {"text": X_AXES["step"]}, "gridcolor": "#e5e5e5"},
        yaxis2={"domain": [0.0, 0.47], "title": {"text": "train loss"}, "gridcolor": "#e5e5e5"},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0.0},
    )
    buttons = []
    # The page's own --top-k is one of the choices, so the dropdown always names what is shown.
    choices = sorted({*TOP_K_CHOICES, *([info.top_k] if info.top_k else [])})
    for k in (None, *[k for k in choices if k < len(info.series)]):
        keep = set(info.visible(k))
        buttons.append({"label": "all trials" if k is None else f"top {k}", "method": "restyle",
                        "args": [{"visible": [n in keep for n in owners] + [True] * n_legend}]})
    if len(buttons) > 1:
        active = next((i for i, b in enumerate(buttons) if b["label"] == f"top {info.top_k}"), 0)
        fig.update_layout(updatemenus=[{"buttons": buttons, "active": active, "x": 1.0, "y": 1.1,
                                        "xanchor": "right", "yanchor": "bottom", "direction": "down"}])
    return fig


# Swaps every trace's x between steps and the customdata columns (tokens, seconds). Bound to a
# <select data-curves-for="<div id>"> the page places above the figure; kept tiny on purpose.
# plotly.py writes numpy arrays as base64 typed-array specs ({dtype, bdata, shape}, the format of
# https://github.com/plotly/plotly.js/pull/7015); gd.data keeps the spec, so decode it here.
CURVES_JS = """
(function () {
  var TYPES = {f4: Float32Array, f8: Float64Array, i4: Int32Array, i2: Int16Array, u4: Uint32Array};
  function values(v) {
    if (!v || Array.isArray(v) || ArrayBuffer.isView(v)) return v || [];
    var raw = atob(v.bdata), bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return new TYPES[v.dtype](bytes.buffer);
  }
  document.querySelectorAll('select[data-curves-for]').forEach(function (sel) {
    sel.addEventListener('change', function () {
      var gd = document.getElementById(sel.getAttribute('data-curves-for'));
      var col = {step: -1, tokens: 0, elapsed_s: 1}[sel.value];
      var xs = [], idx = [];
      gd.data.forEach(function (tr, i) {
        if (tr.meta === undefined) return;
        if (tr._step === undefined) tr._step = Array.from(values(tr.x));
        var cd = values(tr.customdata);
        xs.push(col < 0 ? tr._step : tr._step.map(function (_, j) { return cd[2 * j + col]; }));
        idx.push(i);
      });
      Plotly.restyle(gd, {x: xs}, idx);
      Plotly.relayout(gd, {'xaxis2.title.text': sel.options[sel.selectedIndex].text});
    });
  });
})();
"""
