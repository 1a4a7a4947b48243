"""Calibration points from a study: each trial's folder, read the way ``trainplan calibrate RUN_DIR``
reads it (runners/_points.py). Pruned trials count: their steps were measured too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["study_points"]


def study_points(study: Any, skipped: list[str] | None = None, timing: str = "wall") -> list[dict[str, Any]]:
    """Points of every trial of ``study`` (an ``optuna.Study``) whose folder is on this machine."""
    from trainplan.runners._points import trial_point
    from trainplan.search._records import trial_folder, trial_status

    points = []
    for t in study.get_trials(deepcopy=False):
        folder = trial_folder(t)
        if not folder or not Path(folder).is_dir():
            if skipped is not None and trial_status(t) != "infeasible":
                skipped.append(f"trial {t.number}: its folder {folder} is not on this machine")
            continue
        point, why = trial_point(folder, timing)
        if point is not None:
            points.append({**point, "id": f"trial-{t.number}"})
        elif skipped is not None:
            skipped.append(f"trial {t.number}: {why}")
    return points
