"""Preparing one search trial: sample it, resolve its spec, screen it with the planner.

Nothing is launched here. :func:`prepare_trial` records who owns the trial and its configuration
before anything can die, then returns the resolved spec and the planner's estimate, or why the
configuration is rejected (an invalid combination, or one the planner says cannot fit).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainplan.errors import UsageError
from trainplan.search._calibrate import calibrated_screen, current_calibration
from trainplan.search._records import write_estimate, write_setup, write_worker
from trainplan.search._space import resolve_trial, suggest

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from trainplan.runners import TrialSpec
    from trainplan.search._sweep import SweepSpec

__all__ = ["Prepared", "prepare_trial", "screen"]

_GIB = 2**30


def screen(spec: TrialSpec, sweep: SweepSpec) -> dict[str, Any]:
    """The planner's verdict on ``spec`` for the sweep's GPU: ``fits``, ``memory_bytes``,
    ``capacity_bytes``, ``tokens_per_s`` (the ``estimate`` record) and the plan as JSON.

    When the planner cannot estimate the trial (a model family it does not model, a planner
    error) ``fits`` is None and ``plan["error"]`` (plan.json) says why: the trial runs unscreened,
    as the runner does.
    """
    from trainplan.planner import load_gpu, load_model, plan

    gpu = load_gpu(sweep.hardware.gpu)
    if sweep.hardware.memory_gib is not None:
        # the sweep states the memory a trial has: it replaces the card's nvidia-smi figure too
        gpu = dataclasses.replace(gpu, memory_gib=sweep.hardware.memory_gib, usable_mib=None)
    try:
        result = plan(load_model(spec.model), spec.layout, gpu, tokens=spec.total_tokens)
        # fits compares the nvidia-smi figure (memory.total) with the card's usable bytes; a trial
        # measures max_memory_allocated, so that estimate is kept beside it for the report.
        return {"fits": bool(result.fits), "memory_bytes": int(result.memory.total),
                "allocated_bytes": int(result.memory.allocated),
                "capacity_bytes": int(result.usable_bytes), "tokens_per_s": float(result.perf.tokens_per_s),
                "plan": result.to_dict()}
    except Exception as exc:  # noqa: BLE001 - an unscreened trial beats no trial; the reason is kept
        return {"fits": None, "memory_bytes": None, "allocated_bytes": None, "capacity_bytes": int(gpu.memory_bytes),
                "tokens_per_s": None, "plan": {"error": f"{type(exc).__name__}: {exc}"}}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    """A sampled trial, ready to launch unless ``rejected`` says why not."""

    trial_dir: Path
    """The trial's folder (``trials/trial-NNNN`` in the run folder)."""
    worker: dict[str, Any]
    """Who runs the trial (host, pid, process start time), as recorded in its ``worker`` attribute."""
    spec: TrialSpec | None
    """The resolved trial spec; None when the configuration is invalid."""
    estimate: dict[str, Any] | None
    """The planner's verdict (:func:`screen`); None when the configuration is invalid."""
    rejected: str | None
    """Why the trial is not launched (it is then infeasible); None when it is launched."""


def prepare_trial(trial: optuna.Trial, sweep: SweepSpec, run_dir: Path) -> Prepared:
    """Sample ``trial``, resolve and screen it, and record its setup attributes."""
    # _guard is imported where used: `python -m trainplan.search._guard` (the watchdog) must not find
    # it already imported by the package.
    from trainplan.search._guard import process_start_ticks

    trial_dir = run_dir / "trials" / f"trial-{trial.number:04d}"
    trial_dir.mkdir(parents=True, exist_ok=True)
    # Who owns this trial, recorded before anything can die: a restart on this host reclaims it.
    worker = {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start_ticks(os.getpid()), "pgid": None}
    write_worker(trial, worker)
    values = suggest(trial, sweep)
    try:
        spec = resolve_trial(sweep, values)
    except UsageError as exc:
        write_setup(trial, trial_dir=trial_dir, params=values, spec=None)
        return Prepared(trial_dir=trial_dir, worker=worker, spec=None, estimate=None,
                        rejected=f"invalid configuration: {exc}")
    write_setup(trial, trial_dir=trial_dir, params=values, spec=spec)
    cal = current_calibration(sweep, run_dir)  # sweep key calibrate: true (search/_calibrate.py)
    estimate = calibrated_screen(spec, cal) if cal is not None else screen(spec, sweep)
    (trial_dir / "plan.json").write_text(json.dumps(estimate["plan"], indent=2) + "\n")
    write_estimate(trial, estimate)
    rejected = None
    if estimate["fits"] is False:
        spec.to_json(trial_dir / "spec.json")  # so the user can see what was rejected
        card = sweep.hardware.gpu if cal is None else cal.device["name"] + " (calibrated, upper bound)"
        rejected = (f"planner: needs {estimate['memory_bytes'] / _GIB:.2f} GiB per GPU, "
                    f"{card} has {estimate['capacity_bytes'] / _GIB:.2f} GiB")
    return Prepared(trial_dir=trial_dir, worker=worker, spec=spec, estimate=estimate, rejected=rejected)
