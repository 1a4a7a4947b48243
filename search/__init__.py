"""Optuna studies over real runner trials: search space, sampling, pruning from learning curves,
feasibility from the planner, storage, workers and resume (``trainplan search``/``trials``).

Importing this package is light: optuna, pandas and the runner load inside the functions that use
them.
"""

from __future__ import annotations

from trainplan.search._optuna import claim_lock, make_pruner, make_sampler, open_storage, storage_url
from trainplan.search._records import (
    ATTR_KEYS, EXPORT_FORMATS, FAILED_STATUSES, TRIAL_STATUSES, TrialRecord, budget_count, export_trials, read_trial,
    trial_records, trials_frame,
)
from trainplan.search._space import BASE_EXTRAS, resolve_trial, suggest
from trainplan.search._study import (
    SearchResult,
    best_trials,
    open_study,
    reclaim_dead_local_trials,
    run_search,
    search_dir,
    status_counts,
    worker_devices,
)
from trainplan.search._sweep import (
    OBJECTIVES,
    PARAMS,
    PRUNERS,
    SAMPLERS,
    Budget,
    Hardware,
    ParamSpec,
    PrunerConfig,
    SamplerConfig,
    SweepSpec,
    default_sweep_path,
)
from trainplan.search._sweepfile import load_sweep, sweep_from_dict
from trainplan.search._trial import run_trial_for, screen

__all__ = [
    "ATTR_KEYS", "BASE_EXTRAS", "Budget", "EXPORT_FORMATS", "FAILED_STATUSES", "Hardware", "OBJECTIVES", "PARAMS", "PRUNERS", "ParamSpec",
    "PrunerConfig", "SAMPLERS", "SamplerConfig", "SearchResult", "SweepSpec", "TRIAL_STATUSES", "TrialRecord", "best_trials", "budget_count",
    "claim_lock", "default_sweep_path", "export_trials", "load_sweep", "make_pruner", "make_sampler",
    "open_storage", "open_study", "read_trial", "reclaim_dead_local_trials", "resolve_trial", "run_search", "run_trial_for",
    "screen", "search_dir", "status_counts", "storage_url", "suggest", "sweep_from_dict", "trial_records",
    "trials_frame", "worker_devices",
]
