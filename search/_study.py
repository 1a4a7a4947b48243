"""The sweep: a study, K worker threads each driving one trial process at a time, resume, budget.

Running the same command again continues the study: finished trials are kept and never rerun,
RUNNING trials of a dead worker are failed and queued again (Optuna's heartbeat on RDB storages;
on a journal file, which has none, trainplan's own ``beat`` attribute; on this machine also at
once, by checking the worker's pid), and the budget counts every trial of the study across restarts
and machines. Several machines join one study by running the same command against the same
storage.
"""

from __future__ import annotations

import math
import os
import platform
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainplan.errors import UsageError
from trainplan.safe import mask_argv, mask_url, redact
from trainplan.search._calibrate import refit_calibration
from trainplan.search._optuna import claim_lock, make_pruner, make_sampler, open_storage, storage_url
from trainplan.search._progress import SearchProgress
from trainplan.search._records import (  # status_counts: counts live with the statuses; re-exported
    best_row, budget_count, last_beat, spent_gpu_hours, status_counts, store_status, trial_folder, trial_worker,
    write_status, write_study_attrs,
)
from trainplan.search._trial import run_trial_for

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from trainplan.search._sweep import SweepSpec

__all__ = ["SearchResult", "best_trials", "open_study", "reclaim_dead_local_trials", "reclaim_silent_trials",
           "run_search", "search_dir", "status_counts", "worker_devices"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchResult:
    """What a finished (or stopped) sweep reports."""

    study_name: str
    """The Optuna study."""
    storage: str
    """Where it lives (URL or journal file)."""
    run_dir: Path
    """Folder holding the trial folders (and the default SQLite file)."""
    counts: dict[str, int] = field(default_factory=dict)
    """Trials by status (completed, pruned, infeasible, oom, ...)."""
    best: list[dict[str, Any]] = field(default_factory=list)
    """The best trial (one objective) or the Pareto front: number, values, params, record."""


def search_dir(sweep: SweepSpec, root: Path | None = None) -> Path:
    """``<runs>/search-<study>``: a stable folder, so the same command finds its study again."""
    from trainplan.paths import runs_root

    return (root or runs_root()) / f"search-{sweep.study_name}"


def _environment() -> dict[str, Any]:
    versions = {}
    for dist in ("trainplan", "optuna", "torch", "deepspeed", "transformers"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"host": socket.gethostname(), "python": platform.python_version(),
            "platform": platform.platform(), "cpus": os.cpu_count(), "versions": versions}


def open_study(sweep: SweepSpec, run_dir: Path, command: list[str] | None = None) -> optuna.Study:
    """Create or load the sweep's study and store the study-level records."""
    import optuna

    run_dir.mkdir(parents=True, exist_ok=True)
    storage = open_storage(sweep.storage, run_dir, sweep)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=sweep.study_name, load_if_exists=True,
                                directions=sweep.directions, sampler=make_sampler(sweep),
                                pruner=make_pruner(sweep))
    done = len(study.get_trials(deepcopy=False))
    if done:
        # A resumed study: a sampler seeded as on the first run would replay its suggestions
        # (TPE's and random's start-up draws come from the seed alone), so offset it by the trials
        # already there; the first run, and every rerun with the same history, stay reproducible.
        study.sampler = make_sampler(sweep, seed_offset=done)
    have = [d.name.lower() for d in study.directions]
    if have != sweep.directions:
        raise UsageError("objectives", f"study {sweep.study_name!r} exists with directions {have}; "
                                       f"these objectives need {sweep.directions} (use another study_name)")
    # Reports get shared: a storage password never goes into the study (trainplan.safe).
    record = sweep.to_dict()
    if record.get("storage"):
        record["storage"] = mask_url(record["storage"])
    write_study_attrs(study, sweep=record, command=mask_argv(command or sys.argv), environment=_environment(),
                      objectives={"names": list(sweep.objectives), "directions": sweep.directions})
    return study


def reclaim_dead_local_trials(study: optuna.Study, sweep: SweepSpec, run_dir: Path | None = None) -> list[int]:
    """Fail and requeue RUNNING trials whose worker ran on this host and is gone; end what is left
    of their processes, verified (and, given ``run_dir``, only trials whose folder lies in it).
    Returns the numbers reclaimed."""
    import optuna

    from trainplan.search._guard import kill_trial_processes, process_start_ticks  # where used: search/_follow.py

    host, out = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial_worker(t)
        if not worker or worker.get("host") != host:
            continue
        if process_start_ticks(worker["pid"]) == worker.get("start"):
            continue  # the worker lives
        # The stored record is not trusted: only processes that verifiably are this trial's (the
        # leader's start time, the trial's own spec path on each command line) are ended.
        folder = trial_folder(t)
        if run_dir is not None and folder and not _inside(folder, run_dir):
            folder = None  # a record naming another run's folder is not this search's to end
        kill_trial_processes(worker, folder)
        if _fail_and_retry(study, sweep, t, "its worker died; retried"):
            out.append(t.number)
    return out


def _inside(folder: str, run_dir: Path) -> bool:
    return Path(os.path.realpath(folder)).is_relative_to(os.path.realpath(run_dir))


def reclaim_silent_trials(study: optuna.Study, sweep: SweepSpec, now: float | None = None) -> list[int]:
    """Fail and requeue RUNNING trials of other hosts whose ``beat`` attribute (wall-clock seconds,
    written every ``heartbeat_s`` by :func:`trainplan.search._optuna.heartbeat_writer` where the
    storage has no heartbeat of its own, i.e. journal files) is older than 3 heartbeats. Their
    processes, on another machine, are not touched. Machines sharing a journal need clocks that
    agree to well within that grace (NTP does). Returns the numbers reclaimed."""
    import optuna
    from optuna.storages._heartbeat import is_heartbeat_enabled

    if not sweep.heartbeat_s or is_heartbeat_enabled(study._storage):
        return []
    now = time.time() if now is None else now
    host, out = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial_worker(t)
        if worker.get("host") == host:
            continue  # this host knows for sure (reclaim_dead_local_trials)
        beat = last_beat(t)
        if beat is None or now - float(beat) <= 3 * sweep.heartbeat_s:
            continue
        reason = f"its worker on {worker.get('host', 'an unknown host')} went silent for {now - float(beat):.0f} s; retried"
        if _fail_and_retry(study, sweep, t, reason):
            out.append(t.number)
    return out


def _fail_and_retry(study: optuna.Study, sweep: SweepSpec, t: optuna.trial.FrozenTrial, reason: str) -> bool:
    """Mark a RUNNING trial failed with ``reason`` and queue its parameters again (within
    ``max_retries``); False when another worker got there first."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    try:  # attributes first: a finished trial can no longer be written
        store_status(study._storage, t._trial_id, "terminated", reason)
        if not study._storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # another worker reclaimed it first
    RetryHeartbeatStaleTrialCallback(max_retry=sweep.max_retries)(study, study._storage.get_trial(t._trial_id))
    return True


def _claim(study: optuna.Study, sweep: SweepSpec, url: str, run_dir: Path | None = None) -> optuna.Trial | None | bool:
    """A trial to run, ``None`` when the budget is spent, ``False`` to wait (others still run)."""
    import optuna

    states = optuna.trial.TrialState
    with claim_lock(study._storage, url, sweep.study_name):
        # Local first: it knows the worker died (not just went quiet) and records why.
        reclaim_dead_local_trials(study, sweep, run_dir)
        reclaim_silent_trials(study, sweep)
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        if any(t.state == states.WAITING for t in trials):
            return study.ask()  # a retried trial: its budget slot is already counted
        limit = sweep.budget.n_trials
        if sweep.sampler.type == "grid":  # a grid has only so many points; it never repeats one
            limit = min(limit, math.prod(len(p.choices) for p in sweep.space))
        spent = spent_gpu_hours(trials)
        over_hours = sweep.budget.max_gpu_hours is not None and spent >= sweep.budget.max_gpu_hours
        if budget_count(trials) < limit and not over_hours:
            return study.ask()
        # Budget spent; a trial still RUNNING elsewhere may yet die and be queued again.
        return False if any(t.state == states.RUNNING for t in trials) and not over_hours else None


def worker_devices(index: int, sweep: SweepSpec) -> dict[str, str] | None:
    """The launch environment of worker ``index`` when several share a machine: its own slice of
    the visible GPUs (``CUDA_VISIBLE_DEVICES``, which the deepspeed launcher's local ranks index
    into; inert on a CPU machine) and its share of the cores (``OMP_NUM_THREADS``, unless the user
    set it). Without the share every rank of every worker takes all the cores: three two-thread
    trials side by side on 2 cores trained at 100-123 tokens/s each, one alone at about 1,900
    (measured, tests/_proc.py).
    One worker leaves the environment alone; the trial divides the cores among its own ranks."""
    if sweep.workers == 1:
        return None
    per = sweep.hardware.gpus_per_trial
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = visible.split(",") if visible else [str(i) for i in range(sweep.workers * per)]
    mine = devices[index * per:(index + 1) * per]
    if len(mine) < per:
        raise UsageError("--workers", f"{sweep.workers} workers x {per} GPUs per trial exceed the "
                                      f"{len(devices)} visible GPUs ({visible})")
    env = {"CUDA_VISIBLE_DEVICES": ",".join(mine)}
    if "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // (sweep.workers * per)))
    return env


def _worker(study: optuna.Study, sweep: SweepSpec, run_dir: Path, url: str, guard: Any,
            stop: threading.Event, deadline: float | None, errors: list[BaseException], index: int) -> None:
    try:
        env = worker_devices(index, sweep)
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            trial = _claim(study, sweep, url, run_dir)
            if trial is None:
                return
            if trial is False:
                stop.wait(min(sweep.heartbeat_s, 5))
                continue
            try:
                run_trial_for(study, trial, sweep, run_dir, guard, stop, env)
                refit_calibration(study, sweep, run_dir)  # sweep key calibrate: true
            except BaseException as exc:
                _fail_unfinished(study, trial, exc)
                raise
    except BaseException as exc:  # surfaced by run_search; the other workers stop too
        errors.append(exc)
        stop.set()


def _fail_unfinished(study: optuna.Study, trial: optuna.Trial, exc: BaseException) -> None:
    """A bug or an interrupt in the search itself: record it rather than leave the trial RUNNING."""
    import optuna

    try:
        if study._storage.get_trial(trial._trial_id).state == optuna.trial.TrialState.RUNNING:
            write_status(trial, "terminated" if isinstance(exc, KeyboardInterrupt) else "crashed",
                         redact(f"search error: {type(exc).__name__}: {exc}")[:500])
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    except Exception:  # the storage itself failed: the heartbeat will reclaim the trial
        pass


def best_trials(study: optuna.Study) -> list[dict[str, Any]]:
    """The best trial (one objective) or the Pareto front, as plain dicts."""
    import optuna

    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        return []
    chosen = [study.best_trial] if len(study.directions) == 1 else study.best_trials
    return [best_row(t) for t in chosen]


STOP_WAIT_S = 120.0
"""How long an interrupted search waits for its workers to stop their trials and record them
(a trial's stop grace is 5 s; on a loaded machine its ranks take longer to exit)."""


def run_search(sweep: SweepSpec, *, run_dir: Path | None = None, command: list[str] | None = None,
               progress: bool = True) -> SearchResult:
    """Run (or resume) the sweep until its budget is spent; returns the counts and the best."""
    from trainplan.runners import adopt_orphans
    from trainplan.search._guard import OrphanGuard  # where used: see search/_follow.py

    run_dir = run_dir or search_dir(sweep)
    run_dir.mkdir(parents=True, exist_ok=True)
    study = open_study(sweep, run_dir, command)
    url = storage_url(sweep.storage, run_dir)
    deadline = time.monotonic() + sweep.budget.timeout_s if sweep.budget.timeout_s else None
    stop, errors = threading.Event(), []
    adopt_orphans()  # a stopped trial's ranks come back here to be waited for: exact CPU-seconds
    guard = OrphanGuard()
    # Each worker says it is done through an Event: a Thread.join that Ctrl-C interrupts can leave
    # a live thread marked stopped (seen here on CPython 3.11: is_alive() False while the worker
    # was still stopping its trial), and the search then exited with the trial left RUNNING.
    dones = [threading.Event() for _ in range(sweep.workers)]

    def work(i: int) -> None:
        try:
            _worker(study, sweep, run_dir, url, guard, stop, deadline, errors, i)
        finally:
            dones[i].set()

    threads = [threading.Thread(target=work, name=f"trainplan-worker-{i}", daemon=True, args=(i,))
               for i in range(sweep.workers)]
    bar = SearchProgress(study, sweep, enabled=progress)
    try:
        with bar:
            for i, thread in enumerate(threads):
                thread.start()
                if i + 1 < len(threads):
                    time.sleep(0.5)  # stagger: the first proposals are not all drawn at once
            while not all(done.is_set() for done in dones):
                for done in dones:
                    done.wait(timeout=1.0)
                bar.refresh()
            bar.refresh()
    except KeyboardInterrupt:
        if threading.current_thread() is threading.main_thread():
            from trainplan.cli._signals import ignore_signals

            ignore_signals()  # a second Ctrl-C must not cut the workers' cleanup short
        stop.set()  # each worker stops its trial's process group and records it as terminated
        for done in dones:
            done.wait(timeout=STOP_WAIT_S)
        raise
    finally:
        stop.set()
        guard.close()
    if errors:
        raise errors[0]
    return SearchResult(study_name=sweep.study_name, storage=mask_url(url) or url, run_dir=run_dir,
                        counts=status_counts(study), best=best_trials(study))
