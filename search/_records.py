"""The search's trial record: its statuses, the user-attribute keys it is stored under, the one
typed reading of them (:class:`TrialRecord`), and its export (``trainplan trials``) via pandas.
The study's own attributes (sweep, command, environment, objectives) are named and read here too
(:class:`StudyAttrs`): this module is the one place that spells a stored key.

Everything comes from the Optuna storage alone (the user attributes the search stored with each
trial, docs/protocol.md "Search records"), so a table or a report can be made on any machine that
can reach the storage. The report reads trials through :func:`read_trial` too, so both agree on
every default.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainplan.errors import UsageError
from trainplan.runners import STATUSES as RUNNER_STATUSES

if TYPE_CHECKING:  # pragma: no cover
    import optuna
    import pandas as pd
    from optuna.storages import BaseStorage

    from trainplan.runners import TrialSpec

__all__ = [
    "ATTR_KEYS", "CURVE_COLUMNS", "CurvePoint", "ESTIMATE_KEYS", "EXPORT_FORMATS", "FAILED_STATUSES", "STUDY_ATTR_KEYS",
    "StudyAttrs", "TRIAL_STATUSES", "TrialOutcome", "TrialRecord", "best_row", "budget_count", "curve_row",
    "export_trials", "last_beat", "read_study_attrs", "read_trial", "spent_gpu_hours", "status_counts", "store_beat",
    "store_status", "superseded_numbers", "trial_config", "trial_folder", "trial_records", "trial_status",
    "trial_worker", "trials_frame", "write_attrs", "write_estimate", "write_overfit", "write_setup", "write_status",
    "write_study_attrs", "write_worker",
]

EXPORT_FORMATS = ("csv", "parquet", "json")

FAILED_STATUSES = tuple(s for s in RUNNER_STATUSES if s != "completed")
"""A runner trial that ended without completing: oom, diverged, crashed, terminated, timeout."""
TRIAL_STATUSES = ("completed", "pruned", *FAILED_STATUSES, "infeasible")
"""Every status a search trial records: the runner's, ``pruned`` (the search stopped it) and
``infeasible`` (the planner screened it out, never launched)."""
ATTR_KEYS = ("status", "reason", "trial_dir", "curve", "tokens", "tokens_per_s", "peak_mem_bytes", "elapsed_s",
             "gpu_hours", "cpu_seconds", "overfit", "estimate", "config", "worker", "beat")
"""The user attributes a search trial carries (docs/protocol.md, "Search records")."""
STUDY_ATTR_KEYS = ("sweep", "command", "environment", "objectives")
"""The user attributes a search study carries: the resolved sweep (storage password masked), the
argv that ran it, versions and host, and the objectives' names and directions."""
ESTIMATE_KEYS = ("memory_bytes", "allocated_bytes", "tokens_per_s", "fits")
"""The planner figures kept in a trial's ``estimate`` attribute."""
CURVE_COLUMNS = ("step", "tokens", "elapsed_s", "train_loss", "eval_loss")
"""One row of the ``curve`` attribute: these ``metrics.jsonl`` keys, in this order."""
_STATE_STATUS = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "crashed"}


def curve_row(record: dict[str, Any]) -> list[Any]:
    """The ``curve`` row of one ``metrics.jsonl`` record."""
    return [record.get(key) for key in CURVE_COLUMNS]


def write_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """Store ``attrs`` on ``trial``; a key outside :data:`ATTR_KEYS` is a programming error."""
    unknown = set(attrs) - set(ATTR_KEYS)
    if unknown:
        raise ValueError(f"not a search trial attribute: {sorted(unknown)}")
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def write_status(trial: optuna.Trial, status: str, reason: str) -> None:
    """Store how ``trial`` ended (``status``) and why (``reason``)."""
    write_attrs(trial, {"status": status, "reason": reason})


def store_status(storage: BaseStorage, trial_id: int, status: str, reason: str) -> None:
    """:func:`write_status` for a trial known by its storage id (one a dead worker left)."""
    storage.set_trial_user_attr(trial_id, "status", status)
    storage.set_trial_user_attr(trial_id, "reason", reason)


def store_beat(storage: BaseStorage, trial_id: int) -> None:
    """Record that the trial known by its storage id is alive now (the ``beat`` attribute, for
    storages without Optuna's heartbeat; :func:`last_beat` reads it)."""
    storage.set_trial_user_attr(trial_id, "beat", round(time.time(), 1))


def write_worker(trial: optuna.Trial, worker: dict[str, Any]) -> None:
    """Store who runs ``trial`` (host, pid, start ticks; later its process group): a restart on
    that host reclaims the trial if the worker died."""
    write_attrs(trial, {"worker": worker})


def write_setup(trial: optuna.Trial, *, trial_dir: Path, params: dict[str, Any], spec: TrialSpec | None) -> None:
    """Store the trial's folder and its configuration: the sampled ``params``, and the resolved
    ``spec`` when there is one."""
    config: dict[str, Any] = {"params": params}
    if spec is not None:
        config.update(spec.to_dict())
    write_attrs(trial, {"trial_dir": str(trial_dir), "config": config})


def write_estimate(trial: optuna.Trial, estimate: dict[str, Any]) -> None:
    """Store the planner's figures for the trial (:data:`ESTIMATE_KEYS` of ``estimate``)."""
    write_attrs(trial, {"estimate": {k: estimate.get(k) for k in ESTIMATE_KEYS}})


def write_overfit(trial: optuna.Trial, overfit: dict[str, Any] | None) -> None:
    """Store where the trial began to overfit (search/_overfit.py), or None."""
    write_attrs(trial, {"overfit": overfit})


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialOutcome:
    """What the search measured of one trial: the part of its record written when it ends."""

    status: str
    """One of :data:`TRIAL_STATUSES`."""
    reason: str
    """Why it failed, was pruned or was screened out (empty when completed)."""
    curve: list[list[Any]]
    """Learning curve rows (:data:`CURVE_COLUMNS`)."""
    tokens: int
    """Training tokens seen."""
    tokens_per_s: float | None
    """Measured training throughput."""
    peak_mem_bytes: float | None
    """Measured peak memory per rank."""
    elapsed_s: float
    """Training wall-clock seconds (the runner's own figure)."""
    gpu_hours: float
    """``elapsed_s`` times the trial's ranks, in hours."""
    cpu_seconds: float
    """User + system CPU-seconds of every process of the trial."""

    @classmethod
    def infeasible(cls, reason: str) -> TrialOutcome:
        """A trial screened out before launch: nothing ran, nothing was spent."""
        return cls(status="infeasible", reason=reason, curve=[], tokens=0, tokens_per_s=None, peak_mem_bytes=None,
                   elapsed_s=0, gpu_hours=0, cpu_seconds=0)

    def write(self, trial: optuna.Trial) -> None:
        write_attrs(trial, {f: getattr(self, f) for f in self.__dataclass_fields__})


def trial_worker(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """Who ran ``t`` (:func:`write_worker`); empty when not recorded."""
    return dict(t.user_attrs.get("worker") or {})


def trial_folder(t: optuna.trial.FrozenTrial) -> str | None:
    """The folder ``t`` ran in, as recorded (None before it was prepared)."""
    return t.user_attrs.get("trial_dir")


def trial_config(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The configuration ``t`` ran (:func:`write_setup`: sampled params and the resolved spec);
    empty when not recorded (or not an object: a study another tool wrote)."""
    config = t.user_attrs.get("config")
    return dict(config) if isinstance(config, dict) else {}


def last_beat(t: optuna.trial.FrozenTrial) -> float | None:
    """Wall-clock time of ``t``'s last heartbeat on storages without Optuna's own, else its start."""
    beat = t.user_attrs.get("beat") or (t.datetime_start.timestamp() if t.datetime_start else None)
    return None if beat is None else float(beat)


def spent_gpu_hours(trials: list[optuna.trial.FrozenTrial]) -> float:
    """GPU-hours (CPU rank-hours for CPU trials) the ``trials`` used, the budget's measure."""
    return sum(float(t.user_attrs.get("gpu_hours") or 0) for t in trials)


def best_row(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A best trial as a plain dict (``trainplan search``'s summary): number, values, params,
    folder and the measured and estimated figures, as stored."""
    row = {"number": t.number, "values": list(t.values), "params": dict(t.params), "trial_dir": trial_folder(t)}
    row.update({k: t.user_attrs.get(k) for k in ("tokens", "tokens_per_s", "peak_mem_bytes", "elapsed_s",
                                                 "gpu_hours", "cpu_seconds", "estimate")})
    return row


def trial_status(t: optuna.trial.FrozenTrial, superseded: bool = False) -> str:
    """The recorded status; else ``retried`` (a dead worker's trial queued again), else the Optuna
    state's (``crashed`` for FAIL: a failure nobody classified)."""
    status = t.user_attrs.get("status")
    if status:
        return str(status)
    if superseded:
        return "retried"
    return _STATE_STATUS.get(t.state.name, t.state.name.lower())


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
    """One Optuna trial with the search's measurements, read by :func:`read_trial`."""

    number: int
    """Optuna trial number."""
    state: str
    """Optuna state name: COMPLETE, PRUNED, FAIL, RUNNING, WAITING."""
    status: str
    """One of :data:`TRIAL_STATUSES`, or ``retried``/``running``/``waiting`` (:func:`trial_status`)."""
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
    cpu_seconds: float | None
    """User + system CPU-seconds of every process of the trial."""
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
    retry_of: int | None = None
    """The trial a dead worker left, that this one retries."""

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
        if not isinstance(row, (list, tuple)) or len(row) < len(CURVE_COLUMNS):
            continue
        step = _num(row[0])
        if step is None:
            continue
        points.append(CurvePoint(step=int(step), tokens=_num(row[1]) or 0.0, elapsed_s=_num(row[2]) or 0.0,
                                 train_loss=_num(row[3]), eval_loss=_num(row[4])))
    return tuple(sorted(points, key=lambda p: p.step))


def read_trial(t: optuna.trial.FrozenTrial, superseded: bool = False) -> TrialRecord:
    """The typed record of ``t``: the one reading of the search's attributes and their defaults."""
    attrs = t.user_attrs
    state = t.state.name
    return TrialRecord(
        number=t.number, state=state, status=trial_status(t, superseded),
        reason=str(attrs.get("reason") or t.system_attrs.get("fail_reason") or ""),
        params=dict(sorted(t.params.items())),
        values=tuple(float(v) for v in t.values) if state == "COMPLETE" and t.values else None,
        curve=_curve(attrs.get("curve")), tokens=_num(attrs.get("tokens")),
        tokens_per_s=_num(attrs.get("tokens_per_s")), peak_mem_bytes=_num(attrs.get("peak_mem_bytes")),
        elapsed_s=_num(attrs.get("elapsed_s")), gpu_hours=_num(attrs.get("gpu_hours")),
        cpu_seconds=_num(attrs.get("cpu_seconds")), estimate=dict(attrs.get("estimate") or {}),
        config=trial_config(t), trial_dir=str(trial_folder(t) or ""),
        start=t.datetime_start, end=t.datetime_complete, retry_of=t.system_attrs.get("failed_trial"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class StudyAttrs:
    """A search study's own attributes (:data:`STUDY_ATTR_KEYS`), read by :func:`read_study_attrs`."""

    sweep: dict[str, Any]
    """The resolved sweep file (empty for a study trainplan did not create)."""
    command: tuple[str, ...]
    """The argv that ran the sweep, masked."""
    environment: dict[str, Any]
    """Versions and host of the sweep."""
    objective_names: tuple[str, ...]
    """One name per objective: the recorded names, else ``value`` (one objective) or ``value_0``,
    ``value_1``... (several)."""


def write_study_attrs(study: optuna.Study, *, sweep: dict[str, Any], command: list[str],
                      environment: dict[str, Any], objectives: dict[str, Any]) -> None:
    """Store the search's description on ``study`` (:data:`STUDY_ATTR_KEYS`)."""
    for key, value in zip(STUDY_ATTR_KEYS, (sweep, command, environment, objectives)):
        study.set_user_attr(key, value)


def read_study_attrs(study: optuna.Study) -> StudyAttrs:
    """The typed reading of ``study``'s attributes, with the one set of defaults."""
    attrs = study.user_attrs
    count = len(study.directions)
    objectives = attrs.get("objectives") or {}
    names = objectives.get("names") if isinstance(objectives, dict) else objectives
    if not isinstance(names, (list, tuple)) or len(names) != count:
        names = ["value"] if count == 1 else [f"value_{i}" for i in range(count)]
    command = attrs.get("command") or ()
    sweep, environment = attrs.get("sweep"), attrs.get("environment")
    return StudyAttrs(
        sweep=dict(sweep) if isinstance(sweep, dict) else {},
        command=tuple(str(c) for c in command) if isinstance(command, (list, tuple)) else (str(command),),
        environment=dict(environment) if isinstance(environment, dict) else {},
        objective_names=tuple(str(n) for n in names),
    )


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
    """One flat dict per trial (a :class:`TrialRecord` flattened): number, state, status, values,
    params, measured and estimated figures, trial folder and the learning curve (a list;
    JSON-encoded by the CSV/Parquet export)."""
    rows = []
    names = read_study_attrs(study).objective_names
    trials = study.get_trials(deepcopy=False)
    gone = superseded_numbers(trials)
    for t in trials:
        rec = read_trial(t, t.number in gone)
        row: dict[str, Any] = {"number": rec.number, "state": rec.state, "status": rec.status, "reason": rec.reason}
        for i, name in enumerate(names):
            row[name] = rec.values[i] if rec.values else None
        row.update({f"param_{k}": v for k, v in rec.params.items()})
        row.update(tokens=rec.tokens, tokens_per_s=rec.tokens_per_s, peak_mem_bytes=rec.peak_mem_bytes,
                   elapsed_s=rec.elapsed_s, gpu_hours=rec.gpu_hours, cpu_seconds=rec.cpu_seconds)
        row["est_memory_bytes"] = rec.estimate.get("memory_bytes")
        row["est_allocated_bytes"] = rec.estimate.get("allocated_bytes")
        row["est_tokens_per_s"] = rec.estimate.get("tokens_per_s")
        row["fits"] = rec.estimate.get("fits")
        row["trial_dir"] = rec.trial_dir or None
        row["retry_of"] = rec.retry_of
        row["datetime_start"] = rec.start.isoformat() if rec.start else None
        row["datetime_complete"] = rec.end.isoformat() if rec.end else None
        row["curve"] = [[getattr(p, c) for c in CURVE_COLUMNS] for p in rec.curve]
        rows.append(row)
    return rows


def status_counts(study: optuna.Study) -> dict[str, int]:
    """Trials by status (completed, pruned, infeasible, oom, ...), retried ones counted once."""
    trials = study.get_trials(deepcopy=False)
    gone = superseded_numbers(trials)
    counts: dict[str, int] = {}
    for t in trials:
        if t.number not in gone:
            key = trial_status(t)
            counts[key] = counts.get(key, 0) + 1
    return counts


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
