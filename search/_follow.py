"""Following one launched search trial: tail its metrics, report to the pruner, keep its
heartbeat, and stop its whole process group when the pruner, the overfitting rule or the user
says so.

:func:`follow_trial` returns what it saw (:class:`Followed`); recording it with the study is
search/_trial.py's job.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainplan.search._overfit import overfit_at
from trainplan.search._records import curve_row

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from trainplan.runners import TrialHandle, TrialSpec
    from trainplan.search._guard import OrphanGuard
    from trainplan.search._sweep import SweepSpec

__all__ = ["Followed", "follow_trial"]

# A pruned trial trains on until its stop arrives: at ~16k tokens/s on the built-in task each
# 0.1 s of reaction costs ~1.6k tokens, so the metrics are read often; the /proc scan for CPU
# samples (a fallback, see cpu_seconds below) runs less often.
_POLL_S = 0.1
_CPU_SAMPLE_S = 0.5
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@dataclass(frozen=True, slots=True, kw_only=True)
class Followed:
    """What the search saw of a trial from launch to its end."""

    result: dict[str, Any]
    """The trial's ``result.json`` (the runner's record, completed by the launcher)."""
    curve: list[list[Any]]
    """Learning curve rows, in the order logged."""
    cpu_seconds: float
    """User + system CPU-seconds of every process of the trial (a lower bound, see below)."""
    pruned: bool
    """The pruner (or the overfitting rule) stopped the trial."""
    overfit_stop: bool
    """The overfitting rule stopped it (``overfit`` says where)."""
    interrupted: bool
    """The search was interrupted while the trial ran."""
    overfit: dict[str, Any] | None
    """Where eval loss began to rise while train loss fell (search/_overfit.py), or None."""


def follow_trial(handle: TrialHandle, trial: optuna.Trial, sweep: SweepSpec, spec: TrialSpec,
                 guard: OrphanGuard | None, stop: threading.Event,
                 heartbeat: Callable[[int], None] | None) -> Followed:
    """Watch ``handle`` until the trial ends, is pruned or ``stop`` is set; the trial's processes
    are gone when this returns."""
    # _guard is imported where used: `python -m trainplan.search._guard` (the watchdog) must not find
    # it already imported by the package.
    from trainplan.search._guard import session_cpu_ticks

    pgid = handle.pid
    can_prune = len(sweep.objectives) == 1 and sweep.pruner.type != "none"
    curve: list[list[Any]] = []
    cpu: dict[int, int] = {}
    pruned = interrupted = overfit_stop = False
    overfit: dict[str, Any] | None = None
    last_beat = last_sample = 0.0
    try:
        while True:
            finished = handle.poll() is not None
            if time.monotonic() - last_sample >= _CPU_SAMPLE_S:
                cpu.update(session_cpu_ticks([pgid]))
                last_sample = time.monotonic()
            for rec in handle.new_metrics():
                curve.append(curve_row(rec))
                loss = rec.get("eval_loss")
                # Not at the last evaluation: a rung falling there (e.g. reduction factor 2 from a
                # quarter) must not mark a trial that trained to the end as pruned.
                if can_prune and not pruned and finite(loss) and 0 < (rec.get("tokens") or 0) < spec.total_tokens:
                    trial.report(float(loss), step=int(rec["tokens"]))
                    pruned = trial.should_prune()
                if overfit is None and finite(loss):
                    overfit = overfit_at(curve, sweep.overfit.window)
            if overfit is not None and sweep.overfit.stop and not finished and not pruned:
                pruned = overfit_stop = True
            if pruned or finished:
                break
            if stop.is_set():
                interrupted = True
                break
            if heartbeat is not None and time.monotonic() - last_beat >= sweep.heartbeat_s:
                heartbeat(trial._trial_id)
                last_beat = time.monotonic()
            time.sleep(_POLL_S)
    finally:
        if handle.poll() is None:
            handle.stop(5.0)
        result = handle.finalize()
        if guard is not None:
            guard.release(pgid)
    cpu.update(session_cpu_ticks([pgid]))
    for rec in handle.new_metrics():  # the lines written after the last poll
        curve.append(curve_row(rec))
    # Two lower bounds of the trial's CPU time; the larger is kept. Sampling misses what a process
    # used after its last sample; the launcher's wait4 total misses ranks that a stop killed before
    # anyone waited for them. For a trial that ends by itself, it is exact.
    cpu_seconds = max(sum(cpu.values()) / _CLK_TCK, handle.reaped_cpu_s or 0.0)
    return Followed(result=result, curve=curve, cpu_seconds=cpu_seconds, pruned=pruned, overfit_stop=overfit_stop,
                    interrupted=interrupted, overfit=overfit or overfit_at(curve, sweep.overfit.window))
