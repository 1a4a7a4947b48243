"""The progress bar: trials done / pruned / failed and the best value so far, on stderr.

It reads the storage, not the worker threads, so trials run by other machines in the same study
show up too. Rendering only: the numbers come from :func:`trainplan.search._records.status_counts`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainplan.search._records import FAILED_STATUSES, status_counts

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from trainplan.search._sweep import SweepSpec

__all__ = ["SearchProgress"]

_FAILED = (*FAILED_STATUSES, "infeasible")  # the bar counts screened-out trials as failed too


class SearchProgress:
    """A rich progress bar over the study's trials (a no-op when disabled)."""

    def __init__(self, study: optuna.Study, sweep: SweepSpec, *, enabled: bool = True) -> None:
        self._study, self._sweep, self._enabled = study, sweep, enabled
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> SearchProgress:
        if self._enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                console=Console(stderr=True), transient=False)
            self._progress.__enter__()
            self._task = self._progress.add_task(f"search {self._sweep.study_name}",
                                                 total=self._sweep.budget.n_trials, detail="")
            self.refresh()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def refresh(self) -> None:
        if self._progress is None:
            return
        counts = status_counts(self._study)
        done = sum(v for k, v in counts.items() if k not in ("running", "waiting"))
        failed = sum(counts.get(k, 0) for k in _FAILED)
        detail = (f"completed {counts.get('completed', 0)}  pruned {counts.get('pruned', 0)}  "
                  f"failed {failed}  running {counts.get('running', 0)}")
        best = self._best()
        if best is not None:
            detail += f"  best {best}"
        self._progress.update(self._task, completed=done, detail=detail)

    def _best(self) -> str | None:
        import optuna

        complete = self._study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not complete:
            return None
        if len(self._study.directions) > 1:
            return f"{len(self._study.best_trials)} on the Pareto front"
        return f"{self._sweep.objectives[0]}={self._study.best_value:.4f} (#{self._study.best_trial.number})"
