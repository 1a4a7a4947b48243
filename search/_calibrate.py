"""The search calibrating as it goes (sweep key ``calibrate: true``; issue 13).

After each finished trial the calibration is refitted from the study's trials (those whose folder
is on this machine) and written to ``<run dir>/calibration.json``, where ``trainplan report`` shows
it. Once one exists, each sampled configuration is screened on the calibrated device (the one the
trials run on) against the *upper* end of the calibrated peak memory's 90% prediction interval.
Too few or too alike trials are not an error here: the search screens with the planner alone until
the trials identify the constants. On the CPU the fit uses this machine's kernel timings when
``trainplan calibrate`` has kept them (runners/_cpubench.py), as ``calibrate`` does; the search never
times them itself, since its next trials may be running beside.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainplan.errors import UsageError

if TYPE_CHECKING:
    import optuna

    from trainplan.planner import Calibration
    from trainplan.runners import TrialSpec
    from trainplan.search._sweep import SweepSpec

__all__ = ["CALIBRATION_FILE", "calibrated_screen", "current_calibration", "refit_calibration"]

CALIBRATION_FILE = "calibration.json"


def current_calibration(sweep: SweepSpec, run_dir: Path) -> Calibration | None:
    """The run folder's calibration when the sweep asks for one and it exists and is readable."""
    path = run_dir / CALIBRATION_FILE
    if not getattr(sweep, "calibrate", False) or not path.is_file():
        return None
    from trainplan.planner import load_calibration

    try:
        return load_calibration(path)
    except UsageError:  # half-written by another worker, or an older version: screen without it
        return None


def refit_calibration(study: optuna.Study, sweep: SweepSpec, run_dir: Path) -> Calibration | None:
    """Refit from the study's trials and write ``calibration.json`` (when the sweep asks for it)."""
    if not getattr(sweep, "calibrate", False):
        return None
    from trainplan.planner import fit
    from trainplan.runners._result import write_json
    from trainplan.search._points import study_points

    from trainplan.runners._cpubench import with_cpu_kernels

    points = study_points(study)
    if points and all(p.get("device", {}).get("kind") == "cpu" for p in points):
        # this machine's kernel timings when `trainplan calibrate` has kept them (as it fits): never
        # timed here, where the next trials may already be running beside
        points, _ = with_cpu_kernels(points, measure=False)
    try:
        cal = fit(points, key="calibrate")
    except UsageError:
        return None  # not enough (or too alike) trials yet
    write_json(run_dir / CALIBRATION_FILE, cal.to_dict())  # atomic: workers read it while it changes
    return cal


def calibrated_screen(spec: TrialSpec, cal: Calibration) -> dict[str, Any]:
    """The screening record (``search._trial.screen``'s keys) on the calibrated device: fits when
    the upper end of the calibrated peak memory's 90% interval fits the rank's share of memory."""
    from trainplan.planner import load_model, plan

    profile = cal.profile(spec.layout.gpus)
    result = plan(load_model(spec.model), spec.layout, profile, tokens=spec.total_tokens)
    c = cal.apply(result, strict=False)  # screening needs the memory; tokens/s flags what is outside the data
    out = {**result.to_dict(), "calibrated": json.loads(json.dumps(c.to_dict()))}
    return {"fits": c.memory_bytes.high <= profile.memory_bytes, "memory_bytes": int(c.memory_bytes.high),
            "allocated_bytes": int(c.memory_bytes.value),
            "capacity_bytes": int(profile.memory_bytes), "tokens_per_s": float(c.tokens_per_s.value), "plan": out}
