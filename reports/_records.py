"""The study as plain typed records: what every view of the report reads.

Everything the report shows comes from an Optuna study whose trials carry the user attributes of
the search (docs/protocol.md, "Search records"). This module reads them once, sorts the trials by
number and classifies each into one display category, so the views compute from plain values and
never touch Optuna again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # optuna is imported where a study is read, never at package import
    import optuna

__all__ = ["CATEGORIES", "CurvePoint", "StudyRecord", "TrialRecord", "read_study"]

# Display categories, in legend order. "failed" covers every runner failure (oom, diverged,
# crashed, terminated, timeout); "infeasible" is a configuration the planner screened out.
CATEGORIES = ("best", "completed", "pruned", "failed", "infeasible", "running")
_FAILED = {"oom", "diverged", "crashed", "terminated", "timeout", "failed", "fail"}


@dataclass(frozen=True, slots=True, kw_only=True)
class CurvePoint:
    """One logged step of a trial's learning curve (the search's ``curve`` attribute)."""

    step: int
    """Optimizer steps done."""
    tokens: float
    """Training tokens seen, all ranks."""
    elapsed_s: float
    """Wall-clock seconds since the trial started."""
    train_loss: float | None
    """Training loss at this step (None when not logged)."""
    eval_loss: float | None
    """Eval loss, only where the trial evaluated."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialRecord:
    """One Optuna trial with the search's measurements."""

    number: int
    """Optuna trial number (stable order of the report)."""
    state: str
    """Optuna state name: COMPLETE, PRUNED, FAIL, RUNNING, WAITING."""
    status: str
    """The search's status (completed, pruned, oom, diverged, crashed, terminated, timeout, infeasible)."""
    category: str
    """Display category, one of ``CATEGORIES``."""
    reason: str
    """Why the trial failed, was pruned or was screened out (empty when completed)."""
    params: dict[str, Any]
    """Sampled hyperparameters."""
    values: tuple[float, ...] | None
    """Objective values of a completed trial."""
    curve: tuple[CurvePoint, ...]
    """Learning curve, in step order."""
    tokens: float | None
    """Training tokens seen."""
    tokens_per_s: float | None
    """Measured training throughput."""
    peak_mem_bytes: float | None
    """Measured peak memory per rank."""
    elapsed_s: float | None
    """Training wall-clock seconds (the runner's own figure)."""
    gpu_hours: float | None
    """GPU-hours the trial spent."""
    estimate: dict[str, Any]
    """The planner's numbers for the trial's layout (memory_bytes, tokens_per_s, fits)."""
    config: dict[str, Any]
    """The resolved trial config (model, layout, hyperparameters, steps)."""
    trial_dir: str
    """The trial's folder (spec.json, cmd.txt, metrics.jsonl, logs)."""
    start: datetime | None
    """When Optuna started the trial."""
    end: datetime | None
    """When the trial finished (None while running)."""

    @property
    def duration_s(self) -> float | None:
        if self.start is None or self.end is None:
            return None
        return (self.end - self.start).total_seconds()

    @property
    def best_eval_loss(self) -> float | None:
        losses = [p.eval_loss for p in self.curve if p.eval_loss is not None]
        return min(losses) if losses else None

    @property
    def score(self) -> float | None:
        """First objective value, else the best eval loss seen (ranks pruned trials too)."""
        if self.values:
            return self.values[0]
        return self.best_eval_loss


@dataclass(frozen=True, slots=True, kw_only=True)
class StudyRecord:
    """A study, its search metadata and its trials sorted by number."""

    name: str
    """Study name (user supplied: escape before showing)."""
    directions: tuple[str, ...]
    """``minimize``/``maximize`` per objective."""
    objective_names: tuple[str, ...]
    """Objective names, from the study's ``objectives`` attribute (default ``value``, ``value_1``...)."""
    sweep: dict[str, Any]
    """The resolved sweep file."""
    command: tuple[str, ...]
    """The argv that ran the sweep."""
    environment: dict[str, Any]
    """Versions and host of the sweep."""
    trials: tuple[TrialRecord, ...]
    """Every trial, by number."""
    best_numbers: tuple[int, ...] = field(default=())
    """The best trial (one objective) or the Pareto-optimal trials (several)."""
    log_params: tuple[str, ...] = field(default=())
    """Parameters sampled on a log scale (their axes are drawn logarithmic)."""
    categorical_params: tuple[str, ...] = field(default=())
    """Parameters sampled from a list of choices."""

    @property
    def multi_objective(self) -> bool:
        return len(self.directions) > 1

    @property
    def best(self) -> TrialRecord | None:
        """The best trial; for several objectives, the Pareto trial best on the first objective."""
        best = [t for t in self.trials if t.number in self.best_numbers]
        if not best:
            return None
        sign = -1.0 if self.directions[0] == "maximize" else 1.0
        return min(best, key=lambda t: (sign * t.values[0], t.number))  # type: ignore[index]

    def by_category(self, category: str) -> list[TrialRecord]:
        return [t for t in self.trials if t.category == category]


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _curve(raw: Any) -> tuple[CurvePoint, ...]:
    points = []
    for row in raw or ():
        if not isinstance(row, (list, tuple)) or len(row) < 5:
            continue
        step = _num(row[0])
        if step is None:
            continue
        points.append(CurvePoint(step=int(step), tokens=_num(row[1]) or 0.0, elapsed_s=_num(row[2]) or 0.0,
                                 train_loss=_num(row[3]), eval_loss=_num(row[4])))
    return tuple(sorted(points, key=lambda p: p.step))


def _classify(state: str, status: str, best: bool) -> str:
    if best:
        return "best"
    if status == "infeasible":
        return "infeasible"
    if state == "PRUNED" or status == "pruned":
        return "pruned"
    if state == "FAIL" or status in _FAILED:
        return "failed"
    if state == "COMPLETE":
        return "completed"
    return "running"


def _trial(t: optuna.trial.FrozenTrial, best: bool) -> TrialRecord:
    attrs = t.user_attrs
    state = t.state.name
    default_status = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "crashed"}.get(state, state.lower())
    status = str(attrs.get("status") or default_status)
    values = tuple(float(v) for v in t.values) if state == "COMPLETE" and t.values else None
    return TrialRecord(
        number=t.number, state=state, status=status, category=_classify(state, status, best),
        reason=str(attrs.get("reason") or t.system_attrs.get("fail_reason") or ""),
        params=dict(sorted(t.params.items())), values=values, curve=_curve(attrs.get("curve")),
        tokens=_num(attrs.get("tokens")), tokens_per_s=_num(attrs.get("tokens_per_s")),
        peak_mem_bytes=_num(attrs.get("peak_mem_bytes")), elapsed_s=_num(attrs.get("elapsed_s")),
        gpu_hours=_num(attrs.get("gpu_hours")), estimate=dict(attrs.get("estimate") or {}),
        config=dict(attrs.get("config") or {}), trial_dir=str(attrs.get("trial_dir") or ""),
        start=t.datetime_start, end=t.datetime_complete,
    )


def read_study(study: optuna.Study) -> StudyRecord:
    """Read ``study`` into a :class:`StudyRecord` (trials sorted by number, categories set)."""
    from optuna.trial import TrialState

    directions = tuple(d.name.lower() for d in study.directions)
    attrs = study.user_attrs
    objectives = attrs.get("objectives") or {}
    names = objectives.get("names") if isinstance(objectives, dict) else objectives
    if not names or len(names) != len(directions):
        names = ["value"] + [f"value_{i}" for i in range(1, len(directions))]
    frozen = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    complete = [t for t in frozen if t.state == TrialState.COMPLETE and t.values]
    best_numbers: tuple[int, ...] = ()
    if complete:
        # Optuna's own definition of best (single) or non-dominated (multi-objective).
        best_numbers = tuple(sorted(t.number for t in study.best_trials)) if len(directions) > 1 \
            else (study.best_trial.number,)
    command = attrs.get("command") or ()
    dists = {name: d for t in frozen for name, d in t.distributions.items()}
    return StudyRecord(
        name=study.study_name, directions=directions, objective_names=tuple(str(n) for n in names),
        sweep=dict(attrs.get("sweep") or {}),
        command=tuple(str(c) for c in command) if isinstance(command, (list, tuple)) else (str(command),),
        environment=dict(attrs.get("environment") or {}),
        trials=tuple(_trial(t, t.number in best_numbers) for t in frozen), best_numbers=best_numbers,
        log_params=tuple(sorted(n for n, d in dists.items() if getattr(d, "log", False))),
        categorical_params=tuple(sorted(n for n, d in dists.items() if hasattr(d, "choices"))),
    )
