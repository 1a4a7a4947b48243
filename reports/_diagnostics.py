"""Search diagnostics: history, importances, parallel coordinates, slices, timeline, Pareto front.

The same views as ``optuna.visualization`` (and the same split: ``_get_X_info`` for data,
``_get_X_plot`` for the figure; https://github.com/optuna/optuna/tree/master/optuna/visualization),
computed from the report's records so pruned, failed and infeasible trials keep their category
colours and the data can be written out as CSV.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainplan.reports._records import StudyRecord
from trainplan.reports._style import CATEGORY_STYLE, new_figure, plain

if TYPE_CHECKING:
    import optuna
    import plotly.graph_objects as go

__all__ = [
    "HistoryInfo", "ImportanceInfo", "ParetoInfo", "ScatterInfo", "TimelineInfo",
    "get_history_info", "get_history_plot", "get_importance_info", "get_importance_plot",
    "get_parallel_plot", "get_pareto_info", "get_pareto_plot", "get_scatter_info", "get_slice_plot",
    "get_timeline_info", "get_timeline_plot",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryInfo:
    """Objective value of every completed trial, in trial order, with the best so far."""

    objective: str
    """Name of the objective drawn (the first one)."""
    direction: str
    """``minimize`` or ``maximize``."""
    numbers: list[int]
    """Completed trial numbers."""
    values: list[float]
    """Their objective values."""
    categories: list[str]
    """Their display categories."""
    best_so_far: list[float]
    """Running best of ``values``."""

    def rows(self) -> list[dict[str, Any]]:
        return [{"trial": n, "value": v, "category": c, "best_so_far": b}
                for n, v, c, b in zip(self.numbers, self.values, self.categories, self.best_so_far)]


def get_history_info(study: StudyRecord) -> HistoryInfo:
    done = [t for t in study.trials if t.values]
    pick = max if study.directions[0] == "maximize" else min
    best: list[float] = []
    for t in done:
        best.append(t.values[0] if not best else pick(best[-1], t.values[0]))  # type: ignore[index]
    return HistoryInfo(objective=study.objective_names[0], direction=study.directions[0],
                       numbers=[t.number for t in done], values=[t.values[0] for t in done],  # type: ignore[index]
                       categories=[t.category for t in done], best_so_far=best)


def get_history_plot(info: HistoryInfo) -> go.Figure:
    import plotly.graph_objects as go

    name = plain(info.objective)
    fig = new_figure(f"Optimization history ({info.direction} {name})", xaxis="trial", yaxis=name)
    for cat in dict.fromkeys(info.categories):
        idx = [i for i, c in enumerate(info.categories) if c == cat]
        fig.add_trace(go.Scatter(x=[info.numbers[i] for i in idx], y=[info.values[i] for i in idx], mode="markers",
                                 name=cat, marker={"color": CATEGORY_STYLE[cat]["color"], "size": 8}))
    fig.add_trace(go.Scatter(x=info.numbers, y=info.best_so_far, mode="lines", name="best so far",
                             line={"color": "#000", "shape": "hv"}))
    return fig


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportanceInfo:
    """Parameter importances of the first objective, or why there are none."""

    importances: dict[str, float]
    """Parameter -> importance (sums to 1), most important first."""
    message: str
    """Shown instead of a figure when importances cannot be computed (empty otherwise)."""

    def rows(self) -> list[dict[str, Any]]:
        return [{"param": k, "importance": v} for k, v in self.importances.items()]


def get_importance_info(study: optuna.Study) -> ImportanceInfo:
    """PED-ANOVA importances (Watanabe et al. 2023, arXiv:2304.10255): deterministic, no sklearn."""
    import optuna
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    params = {p for t in done for p in t.params}
    if len(done) < 2 or not params:
        return ImportanceInfo(importances={}, message=f"needs 2 completed trials with parameters, found {len(done)}")
    target = None
    if len(study.directions) > 1:  # the first objective; PED-ANOVA ranks low target values as good
        sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
        target = lambda t: sign * t.values[0]  # noqa: E731
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the "low target values" note, handled above
            out = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), target=target)
    except (ValueError, RuntimeError) as exc:  # e.g. every parameter constant
        return ImportanceInfo(importances={}, message=f"cannot compute importances: {exc}")
    return ImportanceInfo(importances={k: float(v) for k, v in out.items()}, message="")


def get_importance_plot(info: ImportanceInfo) -> go.Figure:
    import plotly.graph_objects as go

    names = list(info.importances)[::-1]
    fig = new_figure("Parameter importances (PED-ANOVA)", xaxis="importance", height=max(260, 60 + 28 * len(names)))
    fig.add_trace(go.Bar(x=[info.importances[n] for n in names], y=[plain(n) for n in names], orientation="h",
                         marker={"color": "#0072B2"}, text=[f"{info.importances[n]:.2f}" for n in names]))
    return fig


@dataclass(frozen=True, slots=True, kw_only=True)
class ScatterInfo:
    """Parameters against the objective for completed trials (parallel coordinates and slices)."""

    objective: str
    """Objective drawn (the first one)."""
    params: list[str]
    """Parameter names, sorted."""
    log_params: list[str]
    """Parameters drawn on a log axis."""
    numbers: list[int]
    """Completed trial numbers."""
    columns: dict[str, list[Any]]
    """Parameter -> value per trial (None where the trial did not sample it)."""
    values: list[float]
    """Objective value per trial."""
    categories: list[str]
    """Display category per trial."""

    def rows(self) -> list[dict[str, Any]]:
        return [{"trial": n, **{p: self.columns[p][i] for p in self.params}, self.objective: self.values[i],
                 "category": self.categories[i]} for i, n in enumerate(self.numbers)]


def get_scatter_info(study: StudyRecord) -> ScatterInfo:
    done = [t for t in study.trials if t.values]
    params = sorted({p for t in done for p in t.params})
    return ScatterInfo(objective=study.objective_names[0], params=params,
                       log_params=[p for p in params if p in study.log_params], numbers=[t.number for t in done],
                       columns={p: [t.params.get(p) for t in done] for p in params},
                       values=[t.values[0] for t in done], categories=[t.category for t in done])  # type: ignore[index]


def _dimension(name: str, values: list[Any], log: bool) -> dict[str, Any]:
    import math

    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values if v is not None) and not (
            log and any(v is not None and v <= 0 for v in values)):
        if log:  # parcoords has no log axis: plot log10 with readable tick labels
            logs = [math.log10(v) if v is not None else None for v in values]
            lo, hi = math.floor(min(x for x in logs if x is not None)), math.ceil(max(x for x in logs if x is not None))
            ticks = list(range(lo, hi + 1))
            return {"label": plain(name), "values": logs, "tickvals": ticks, "ticktext": [f"1e{t}" for t in ticks]}
        return {"label": plain(name), "values": values}
    choices = sorted({str(v) for v in values})
    return {"label": plain(name), "values": [choices.index(str(v)) for v in values],
            "tickvals": list(range(len(choices))), "ticktext": [plain(c) for c in choices]}


PARCOORDS_TOP = 110
"""Top margin (px) of the parallel-coordinates figure: title (~30 px) plus the axis labels and
their top tick labels (~60 px) that plotly.js draws above the plot area."""


def get_parallel_plot(info: ScatterInfo) -> go.Figure:
    import plotly.graph_objects as go

    # The axis labels sit above the plot area: the top margin holds them under the title, not on it.
    fig = new_figure("Parallel coordinates (completed trials)", margin={"l": 60, "r": 60, "t": PARCOORDS_TOP, "b": 40})
    if not info.numbers:
        return fig
    dims = [{"label": plain(info.objective), "values": info.values}]
    dims += [_dimension(p, info.columns[p], p in info.log_params) for p in info.params]
    fig.add_trace(go.Parcoords(dimensions=dims, line={"color": info.values, "colorscale": "Viridis_r",
                                                      "showscale": True}))
    return fig


def get_slice_plot(info: ScatterInfo) -> go.Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    n = max(1, len(info.params))
    fig = make_subplots(rows=1, cols=n, shared_yaxes=True, horizontal_spacing=min(0.05, 0.4 / n))
    fig.update_layout(new_figure("Slices: objective against each parameter").layout, showlegend=False)
    for i, p in enumerate(info.params, start=1):
        x = [plain(str(v)) if isinstance(v, (str, bool)) else v for v in info.columns[p]]
        fig.add_trace(go.Scatter(x=x, y=info.values, mode="markers", name=p, text=[f"trial {k}" for k in info.numbers],
                                 marker={"color": [CATEGORY_STYLE[c]["color"] for c in info.categories], "size": 7}),
                      row=1, col=i)
        fig.update_xaxes(title_text=plain(p), type="log" if p in info.log_params else None, row=1, col=i,
                         gridcolor="#e5e5e5")
    fig.update_yaxes(title_text=plain(info.objective), row=1, col=1)
    return fig


@dataclass(frozen=True, slots=True, kw_only=True)
class TimelineInfo:
    """When each trial ran."""

    numbers: list[int]
    """Trial numbers that started."""
    start: list[str]
    """ISO start time per trial."""
    duration_s: list[float]
    """Seconds per trial (up to the last end for trials still running)."""
    categories: list[str]
    """Display category per trial."""

    def rows(self) -> list[dict[str, Any]]:
        return [{"trial": n, "start": s, "duration_s": d, "category": c}
                for n, s, d, c in zip(self.numbers, self.start, self.duration_s, self.categories)]


def get_timeline_info(study: StudyRecord) -> TimelineInfo:
    started = [t for t in study.trials if t.start is not None]
    last = max((t.end for t in started if t.end), default=None)
    return TimelineInfo(
        numbers=[t.number for t in started], start=[t.start.isoformat() for t in started],  # type: ignore[union-attr]
        duration_s=[t.duration_s if t.duration_s is not None else
                    max(0.0, ((last or t.start) - t.start).total_seconds()) for t in started],  # type: ignore[operator]
        categories=[t.category for t in started])


def get_timeline_plot(info: TimelineInfo) -> go.Figure:
    import plotly.graph_objects as go

    fig = new_figure("Trial timeline", xaxis="time", yaxis="trial", height=max(300, min(900, 80 + 14 * len(info.numbers))))
    for cat in dict.fromkeys(info.categories):
        idx = [i for i, c in enumerate(info.categories) if c == cat]
        fig.add_trace(go.Bar(base=[info.start[i] for i in idx], x=[info.duration_s[i] * 1000 for i in idx],
                             y=[info.numbers[i] for i in idx], orientation="h", name=cat,
                             marker={"color": CATEGORY_STYLE[cat]["color"]},
                             hovertemplate="trial %{y}<br>%{base}<br>%{x:.0f} ms<extra></extra>"))
    fig.update_xaxes(type="date")
    return fig


@dataclass(frozen=True, slots=True, kw_only=True)
class ParetoInfo:
    """The first two objectives of every completed trial and which are non-dominated."""

    objectives: tuple[str, str]
    """Names of the two objectives drawn."""
    directions: tuple[str, str]
    """Their directions."""
    numbers: list[int]
    """Completed trial numbers."""
    points: list[tuple[float, float]]
    """(objective 0, objective 1) per trial."""
    on_front: list[bool]
    """The trial is Pareto-optimal (Optuna's ``best_trials``)."""

    def rows(self) -> list[dict[str, Any]]:
        a, b = self.objectives
        return [{"trial": n, a: p[0], b: p[1], "pareto": f} for n, p, f in zip(self.numbers, self.points, self.on_front)]


def get_pareto_info(study: StudyRecord) -> ParetoInfo | None:
    """None for single-objective studies."""
    if not study.multi_objective:
        return None
    done = [t for t in study.trials if t.values]
    return ParetoInfo(objectives=(study.objective_names[0], study.objective_names[1]),
                      directions=(study.directions[0], study.directions[1]), numbers=[t.number for t in done],
                      points=[(t.values[0], t.values[1]) for t in done],  # type: ignore[index]
                      on_front=[t.number in study.best_numbers for t in done])


def get_pareto_plot(info: ParetoInfo) -> go.Figure:
    import plotly.graph_objects as go

    a, b = (plain(o) for o in info.objectives)
    fig = new_figure(f"Pareto front ({info.directions[0]} {a}, {info.directions[1]} {b})", xaxis=a, yaxis=b)
    for front, name, color in ((False, "dominated", "#0072B2"), (True, "Pareto-optimal", "#D55E00")):
        idx = [i for i, f in enumerate(info.on_front) if f == front]
        pts = sorted((info.points[i], info.numbers[i]) for i in idx)
        fig.add_trace(go.Scatter(x=[p[0][0] for p in pts], y=[p[0][1] for p in pts], name=name,
                                 mode="lines+markers" if front else "markers", text=[f"trial {p[1]}" for p in pts],
                                 marker={"color": color, "size": 9}, line={"shape": "hv", "color": color}))
    return fig
