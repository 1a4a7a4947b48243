"""Optuna plumbing: samplers, pruners, storages and the claim lock that keeps the budget exact.

Storage resolution, written once: no storage -> ``sqlite:///<run folder>/study.db``; a string with
``://`` -> an Optuna RDB URL (PostgreSQL, MySQL, SQLite); a path ending in ``.log``/``.jsonl`` (or
prefixed ``journal:``) -> a journal file; any other path -> a SQLite file. RDB storages get
Optuna's heartbeat (``heartbeat_interval``, ``grace_period``) with
``RetryHeartbeatStaleTrialCallback``, so a trial left RUNNING by a dead worker is failed and queued
again (https://optuna.readthedocs.io/en/stable/reference/generated/optuna.storages.RDBStorage.html).
Journal storages have no heartbeat in Optuna; trials there write a ``beat`` attribute instead
(:func:`heartbeat_writer`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainplan.errors import UsageError
from trainplan.search._records import store_beat

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from trainplan.search._sweep import SweepSpec

__all__ = ["claim_lock", "existing_storage_file", "heartbeat_writer", "make_pruner", "make_sampler", "open_storage", "storage_url"]


def make_sampler(sweep: SweepSpec, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler the sweep names, seeded with ``sampler.seed + seed_offset`` (the offset: trials
    already in a resumed study). Constraints (planner memory, OOM, divergence) reach TPE and GP
    through ``Trial.set_constraint`` (Optuna >= 5 reads them from the trial)."""
    import dataclasses

    import optuna

    cfg = sweep.sampler
    # Not the grid's: its seed shuffles the grid ids, and every worker and resume must map an id to
    # the same point (an offset seed made a second ladder worker rerun points and lose others).
    if seed_offset and cfg.seed is not None and cfg.type != "grid":
        cfg = dataclasses.replace(cfg, seed=cfg.seed + seed_offset)
    if cfg.type == "tpe":
        # constant_liar keeps parallel workers from proposing the same point (Optuna TPE docs).
        return optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=cfg.n_startup_trials,
                                          multivariate=True, constant_liar=True)
    if cfg.type == "gp":
        return optuna.samplers.GPSampler(seed=cfg.seed, n_startup_trials=cfg.n_startup_trials)
    if cfg.type == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=cfg.seed, n_startup_trials=cfg.n_startup_trials,
                                            consider_pruned_trials=True)
    if cfg.type == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    return _grid_sampler_class()({p.name: list(p.choices) for p in sweep.space}, seed=cfg.seed)


@functools.cache
def _grid_sampler_class() -> type:
    """Optuna's grid sampler without its ``study.stop()`` at exhaustion, which works only inside
    ``Study.optimize``; the search caps the budget at the grid size instead (``_study._claim``)."""
    import optuna

    class GridSampler(optuna.samplers.GridSampler):
        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            return None

    return GridSampler


def _first_rung_tokens(sweep: SweepSpec) -> int:
    """Tokens of the base trial's evaluation nearest a quarter of its run (at least the first).

    Learning curves cross early: warm-up and learning-rate differences reorder trials during the
    first eighth of a run. Measured on the default task (benchmarks/search_efficiency.py), a rung
    at the first of 8 evaluations pruned the trial that ended best in 2 of 2 seeds.
    """
    from trainplan.search._space import resolve_trial

    spec = resolve_trial(sweep, {})
    evals = max(1, spec.steps // spec.eval_every)
    return spec.eval_every * max(1, evals // 4) * spec.tokens_per_step


def make_pruner(sweep: SweepSpec) -> optuna.pruners.BasePruner:
    """The pruner the sweep names. Steps are training tokens, so rungs compare equal data.

    The first rung defaults to the base trial's evaluation nearest a quarter of its tokens, not
    Optuna's "auto" estimate, which waits for a finished trial and never records rungs for the
    trials before it. The study's first ``pruner.n_startup_trials`` trials are never pruned.
    """
    import optuna

    cfg = sweep.pruner
    min_resource = cfg.min_resource or _first_rung_tokens(sweep)
    if cfg.type == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=cfg.n_startup_trials,
                                           n_warmup_steps=0, interval_steps=1, n_min_trials=1)
    if cfg.type == "successive_halving":
        rungs = optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource,
                                                       reduction_factor=cfg.reduction_factor)
    elif cfg.type == "hyperband":
        rungs = optuna.pruners.HyperbandPruner(min_resource=min_resource, reduction_factor=cfg.reduction_factor)
    else:
        return optuna.pruners.NopPruner()
    return _startup_guard(rungs, cfg.n_startup_trials) if cfg.n_startup_trials else rungs


def _startup_guard(pruner: optuna.pruners.BasePruner, n_startup: int) -> optuna.pruners.BasePruner:
    """``pruner`` that lets the study's first ``n_startup`` trials run to the end.

    Successive halving promotes only the best trial at a rung until ``2 * reduction_factor`` have
    reached it (optuna/pruners/_successive_halving.py, ``_is_trial_promotable_to_next_rung``), so
    the second trial of a study survives only if it beats the first. The guarded trials still go
    through the wrapped pruner, which records their rung values: they set the bar for later trials
    instead of being judged against each other, and the sampler learns from whole curves.

    The default sweep guards one trial. On one worker that is the same as none for successive
    halving (the first trial is alone at its rungs); with parallel workers it is not. On the
    built-in task a second guarded trial found the same best loss for more tokens
    (benchmarks/results/search_efficiency.md).
    """
    import optuna

    class StartupGuard(optuna.pruners.BasePruner):
        def __init__(self) -> None:
            self.wrapped, self.n_startup_trials = pruner, n_startup

        def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
            decision = self.wrapped.prune(study, trial)  # always asked: it records the rung values
            return decision and trial.number >= self.n_startup_trials

    return StartupGuard()


def _journal_path(storage: str) -> Path | None:
    if storage.startswith("journal:"):
        return Path(storage.removeprefix("journal:"))
    if "://" not in storage and storage.endswith((".log", ".jsonl", ".journal")):
        return Path(storage)
    return None


def storage_url(storage: str | None, run_dir: Path) -> str:
    """The storage string after the default and plain-path rules (see the module docstring)."""
    if storage is None:
        return f"sqlite:///{(run_dir / 'study.db').resolve()}"
    if "://" in storage or _journal_path(storage) is not None:
        return storage
    return f"sqlite:///{Path(storage).resolve()}"


def existing_storage_file(url: str, key: str = "--storage") -> None:
    """Refuse a SQLite or journal file that does not exist: a reader (``report``, ``trials``)
    opening it would create an empty storage and report on nothing."""
    journal = _journal_path(url)
    path = journal if journal is not None else (
        Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None)
    if path is not None and str(path) != ":memory:" and not path.is_file():
        raise UsageError(key, f"no study storage at {path}; run `trainplan search` first or pass an existing --storage")


def open_storage(storage: str | None, run_dir: Path, sweep: SweepSpec) -> optuna.storages.BaseStorage:
    """Open (creating if needed) the study's storage with heartbeats where the backend has them."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    import warnings

    # Heartbeats with ask/tell and the retry callback are deliberate; Optuna flags them as
    # experimental on every call, which would bury the progress bar.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    url = storage_url(storage, run_dir)
    journal = _journal_path(url)
    if journal is not None:
        journal.parent.mkdir(parents=True, exist_ok=True)
        # The open-lock works on NFS too, where symlink locks may not (Optuna journal docs).
        backend = JournalFileBackend(str(journal), lock_obj=JournalFileOpenLock(str(journal)))
        return optuna.storages.JournalStorage(backend)
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several workers write one SQLite file: wait for the lock instead of failing at once.
        engine_kwargs = {"connect_args": {"timeout": 30}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=sweep.heartbeat_s,
            grace_period=3 * sweep.heartbeat_s,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=sweep.max_retries),
        )
    except Exception as exc:  # bad URL, missing driver, refused connection: the user's to fix
        from trainplan.safe import mask_url, redact

        message = f"cannot open {mask_url(url)!r}: {type(exc).__name__}: {redact(str(exc))}"
        raise UsageError("--storage", message.splitlines()[0]) from None


def heartbeat_writer(storage: optuna.storages.BaseStorage, sweep: SweepSpec) -> Callable[[int], None] | None:
    """How a running trial says it is alive, given its trial id: Optuna's heartbeat where the
    storage has one (RDB); otherwise (journal files, which machines share over NFS) a ``beat``
    user attribute holding the wall-clock time, which ``reclaim_silent_trials`` reads. None when
    ``heartbeat_s`` is 0."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    if not sweep.heartbeat_s:
        return None
    if is_heartbeat_enabled(storage):
        return storage.record_heartbeat  # type: ignore[attr-defined]
    return functools.partial(store_beat, storage)


_thread_lock = threading.Lock()


@contextlib.contextmanager
def claim_lock(storage: optuna.storages.BaseStorage, url: str, study_name: str) -> Iterator[None]:
    """Serialize "count the trials, then create one" across threads, processes and machines, so
    ``n_trials`` is never exceeded: a PostgreSQL/MySQL advisory lock on the study's database, or an
    ``flock`` beside a SQLite or journal file (the same machine shares it)."""
    with _thread_lock:
        key = zlib.crc32(f"trainplan:{study_name}".encode())
        if url.startswith(("postgresql", "postgres")):
            from sqlalchemy import text

            engine = getattr(storage, "_backend", storage).engine  # Optuna wraps RDB in a cache
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
            return
        if url.startswith("mysql"):
            from sqlalchemy import text

            engine = getattr(storage, "_backend", storage).engine  # Optuna wraps RDB in a cache
            with engine.connect() as conn:
                conn.execute(text("SELECT GET_LOCK(:k, 600)"), {"k": str(key)})
                try:
                    yield
                finally:
                    conn.execute(text("SELECT RELEASE_LOCK(:k)"), {"k": str(key)})
            return
        journal = _journal_path(url)
        path = journal if journal is not None else (Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None)
        if path is None or str(path) == ":memory:":
            yield
            return
        with open(f"{path}.claim.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
