"""The study as plain typed records: what every view of the report reads.

Everything the report shows comes from an Optuna study whose trials carry the user attributes of
the search (docs/protocol.md, "Search records"). This module reads them once, sorts the trials by
number and classifies each into one display category, so the views compute from plain values and
never touch Optuna again.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from trainplan.search._records import FAILED_STATUSES, CurvePoint, read_study_attrs, read_trial
from trainplan.search._records import TrialRecord as _SearchRecord

if TYPE_CHECKING:  # optuna is imported where a study is read, never at package import
    import optuna

__all__ = ["CATEGORIES", "CurvePoint", "StudyRecord", "TrialRecord", "read_study"]

# Display categories, in legend order. "failed" covers every runner failure (FAILED_STATUSES);
# "infeasible" is a configuration the planner screened out.
CATEGORIES = ("best", "completed", "pruned", "failed", "infeasible", "running")


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialRecord(_SearchRecord):
    """The search's typed trial record (:func:`trainplan.search._records.read_trial`) with the
    report's display category."""

    category: str
    """Display category, one of ``CATEGORIES``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StudyRecord:
    """A study, its search metadata and its trials sorted by number."""

    name: str
    """Study name (user supplied: escape before showing)."""
    directions: tuple[str, ...]
    """``minimize``/``maximize`` per objective."""
    objective_names: tuple[str, ...]
    """Objective names, from the study's ``objectives`` attribute (defaults: ``read_study_attrs``)."""
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


def _classify(state: str, status: str, best: bool) -> str:
    if best:
        return "best"
    if status == "infeasible":
        return "infeasible"
    if state == "PRUNED" or status == "pruned":
        return "pruned"
    if state == "FAIL" or status in FAILED_STATUSES:
        return "failed"
    if state == "COMPLETE":
        return "completed"
    return "running"


def _trial(t: optuna.trial.FrozenTrial, best: bool) -> TrialRecord:
    base = read_trial(t)
    return TrialRecord(**{f.name: getattr(base, f.name) for f in fields(_SearchRecord)},
                       category=_classify(base.state, base.status, best))


def read_study(study: optuna.Study) -> StudyRecord:
    """Read ``study`` into a :class:`StudyRecord` (trials sorted by number, categories set)."""
    from optuna.trial import TrialState

    directions = tuple(d.name.lower() for d in study.directions)
    attrs = read_study_attrs(study)
    frozen = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    complete = [t for t in frozen if t.state == TrialState.COMPLETE and t.values]
    best_numbers: tuple[int, ...] = ()
    if complete:
        # Optuna's own definition of best (single) or non-dominated (multi-objective).
        best_numbers = tuple(sorted(t.number for t in study.best_trials)) if len(directions) > 1 \
            else (study.best_trial.number,)
    dists = {name: d for t in frozen for name, d in t.distributions.items()}
    return StudyRecord(
        name=study.study_name, directions=directions, objective_names=attrs.objective_names,
        sweep=attrs.sweep, command=attrs.command, environment=attrs.environment,
        trials=tuple(_trial(t, t.number in best_numbers) for t in frozen), best_numbers=best_numbers,
        log_params=tuple(sorted(n for n, d in dists.items() if getattr(d, "log", False))),
        categorical_params=tuple(sorted(n for n, d in dists.items() if hasattr(d, "choices"))),
    )
