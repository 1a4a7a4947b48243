"""Trial records as plain rows, and their export (``trainplan trials``) via pandas.

Everything comes from the Optuna storage alone (the user attributes the search stored with each
trial), so a table or a report can be made on any machine that can reach the storage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainplan.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    import pandas as pd

__all__ = ["EXPORT_FORMATS", "budget_count", "export_trials", "superseded_numbers", "trial_records", "trials_frame"]

EXPORT_FORMATS = ("csv", "parquet", "json")


def superseded_numbers(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of trials failed by a dead worker and queued again (each retry lists its chain)."""
    out: set[int] = set()
    for t in trials:
        out.update(t.system_attrs.get("retry_history", []))
    return out


def budget_count(trials: list[optuna.trial.FrozenTrial]) -> int:
    """Trials that use the ``n_trials`` budget: all, except those replaced by their retry."""
    gone = superseded_numbers(trials)
    return sum(1 for t in trials if t.number not in gone)


def trial_records(study: optuna.Study) -> list[dict[str, Any]]:
    """One flat dict per trial: number, state, status, values, params, measured and estimated
    figures, trial folder and the learning curve (a list; JSON-encoded by the CSV/Parquet export)."""
    rows = []
    names = study.user_attrs.get("objectives", {}).get("names") or (
        ["value"] if len(study.directions) == 1 else [f"value_{i}" for i in range(len(study.directions))])
    trials = study.get_trials(deepcopy=False)
    gone = superseded_numbers(trials)
    for t in trials:
        attrs = t.user_attrs
        row: dict[str, Any] = {
            "number": t.number, "state": t.state.name,
            "status": attrs.get("status", "retried" if t.number in gone else t.state.name.lower()),
            "reason": attrs.get("reason", ""),
        }
        for i, name in enumerate(names):
            row[name] = t.values[i] if t.values else None
        row.update({f"param_{k}": v for k, v in t.params.items()})
        for key in ("tokens", "tokens_per_s", "peak_mem_bytes", "elapsed_s", "gpu_hours", "cpu_seconds"):
            row[key] = attrs.get(key)
        estimate = attrs.get("estimate") or {}
        row["est_memory_bytes"] = estimate.get("memory_bytes")
        row["est_tokens_per_s"] = estimate.get("tokens_per_s")
        row["fits"] = estimate.get("fits")
        row["trial_dir"] = attrs.get("trial_dir")
        row["retry_of"] = t.system_attrs.get("failed_trial")
        row["datetime_start"] = t.datetime_start.isoformat() if t.datetime_start else None
        row["datetime_complete"] = t.datetime_complete.isoformat() if t.datetime_complete else None
        row["curve"] = attrs.get("curve", [])
        rows.append(row)
    return rows


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(trial_records(study))


def export_trials(study: optuna.Study, path: str | Path, fmt: str | None = None) -> Path:
    """Write the trial table to ``path`` as CSV, Parquet or JSON (from ``fmt`` or the suffix)."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in EXPORT_FORMATS:
        raise UsageError("--format", f"{fmt!r} is not one of {', '.join(EXPORT_FORMATS)} (or give --output with that suffix)")
    frame = trials_frame(study)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        frame.to_json(path, orient="records", indent=2)
        return path
    # Columnar formats hold the curve as JSON text: a list of mixed numbers and nulls per cell.
    frame["curve"] = [json.dumps(c) for c in frame.get("curve", [])]
    if fmt == "csv":  # text cells that a spreadsheet would run as formulas are neutralised
        from trainplan.safe import csv_cell

        frame.map(csv_cell).to_csv(path, index=False)
    else:
        try:
            frame.to_parquet(path, index=False)
        except ImportError as exc:
            raise UsageError("--format", f"parquet needs pyarrow: pip install pyarrow ({exc})") from None
    return path
