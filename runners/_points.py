"""Calibration points from trial folders: what ``trainplan calibrate RUN_DIR...`` hands the planner.

A point is a plain dict (planner/_calibration.py ``fit``): ``id``, ``model`` (the HF config fields
the trial trained), ``layout``, ``tokens_per_s`` (the median of the per-step figures in
``metrics.jsonl``, the first step's warm-up left out: one slow step from a neighbour's load moves a
mean, not a median), ``peak_mem_bytes``, ``device`` and ``stack`` from ``result.json``. Pure Python.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from trainplan.errors import UsageError
from trainplan.planner import Layout
from trainplan.runners._result import read_metrics

__all__ = ["TIMINGS", "USABLE", "median_tokens_per_s", "trial_point", "trial_points"]

USABLE = ("completed", "terminated", "timeout")
"""Statuses whose steps measured speed and memory: a pruned (terminated) trial's steps count too."""


TIMINGS = ("wall", "cpu")
"""``wall``: tokens/s by the clock. ``cpu``: contention-free tokens/s, each step's tokens over rank 0's
CPU-seconds divided by its threads (``cpu_s`` in metrics.jsonl): on a machine shared with other
work, what the step would take with the cores to itself (it undercounts time spent waiting)."""


def median_tokens_per_s(records: Iterable[dict[str, Any]], timing: str = "wall", threads: int = 1) -> float | None:
    """Median per-step tokens/s of the records after step 1 (step 1 pays for warm-up)."""
    rows = [r for r in records if isinstance(r, dict) and isinstance(r.get("step"), int) and r["step"] >= 2
            and _positive(r.get("tokens_per_s")) and _positive(r.get("tokens"))]
    if timing == "cpu":
        steps = [(b["tokens"] - a["tokens"], b.get("cpu_s")) for a, b in zip(rows, rows[1:])]
        speeds = [t / (c / threads) for t, c in steps if t > 0 and _positive(c)]
    else:
        speeds = [r["tokens_per_s"] for r in rows]
    return statistics.median(speeds) if speeds else None


def _positive(value: Any) -> bool:
    """A measured figure that can be used: a finite number above 0 (not NaN, inf, a string...)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf


def _model_config(model: str) -> dict[str, Any]:
    from trainplan.planner import load_model
    from trainplan.runners._spec import is_checkpoint

    if is_checkpoint(model):
        return json.loads((Path(model).expanduser() / "config.json").read_text())
    return dict(load_model(model).hf_config)


def trial_point(trial_dir: str | Path, timing: str = "wall") -> tuple[dict[str, Any] | None, str]:
    """The point of one trial folder, or None and why it cannot be used."""
    d = Path(trial_dir)
    try:
        result = json.loads((d / "result.json").read_text())
        spec = json.loads((d / "spec.json").read_text())
        records, _ = read_metrics(d / "metrics.jsonl")
    except (OSError, ValueError) as exc:  # ValueError: JSON errors and non-UTF-8 bytes alike
        return None, f"{d}: no readable result.json/spec.json/metrics.jsonl ({exc})"
    if not (isinstance(result, dict) and isinstance(spec, dict) and isinstance(spec.get("layout"), dict)):
        return None, f"{d}: result.json and spec.json (with its layout) must each hold one JSON object"
    if result.get("status") not in USABLE:
        return None, f"{d}: status {result.get('status')}, measured nothing usable"
    if not isinstance(result.get("device"), dict):
        return None, f"{d}: result.json records no device (a trial from before trainplan recorded it; rerun it)"
    try:
        Layout(**spec["layout"]).validate()
    except (UsageError, TypeError) as exc:
        return None, f"{d}: spec.json's layout cannot be planned ({exc})"
    threads = result["device"].get("threads_per_rank")
    tps = median_tokens_per_s(records, timing, threads if isinstance(threads, int) and threads >= 1 else 1)
    if not tps or not _positive(result.get("peak_mem_bytes")):
        what = "CPU-seconds per step (cpu_s)" if timing == "cpu" else "tokens/s"
        return None, f"{d}: no {what} after step 1 or no peak memory measured"
    try:
        model = _model_config(spec["model"])
    except (UsageError, OSError, KeyError) as exc:
        return None, f"{d}: cannot resolve the model {spec.get('model')!r} ({exc})"
    layout = {k: v for k, v in spec["layout"].items()}
    return {"id": d.name, "source": str(d), "model": model, "model_name": Path(str(spec["model"])).stem,
            "layout": layout, "tokens_per_s": float(tps), "peak_mem_bytes": int(result["peak_mem_bytes"]),
            "device": result["device"], "stack": result.get("stack") or {}, "timing": timing}, ""


def trial_points(paths: Iterable[str | Path], skipped: list[str] | None = None,
                 timing: str = "wall") -> list[dict[str, Any]]:
    """Points of every trial folder under ``paths`` (a trial folder, or a folder holding trial
    folders at any depth, such as a search run folder). Unusable trials go to ``skipped``. A trial
    reached twice (a folder given twice, or a run folder and one of its trials) is read once."""
    points, seen = [], set()
    for path in paths:
        p = Path(path)
        if not p.is_dir():
            raise UsageError("RUN_DIR", f"{p} is not a folder")
        dirs = [p] if (p / "result.json").is_file() else sorted(r.parent for r in p.rglob("result.json"))
        if not dirs:
            raise UsageError("RUN_DIR", f"{p} holds no trial (no result.json under it)")
        for d in dirs:
            if (key := d.resolve()) in seen:
                continue
            seen.add(key)
            point, why = trial_point(d, timing)
            if point is not None:
                points.append(point)
            elif skipped is not None:
                skipped.append(why)
    return points
