"""The sweep's schema: what to search, how, for how long, and where the study lives.

A sweep is one YAML file (``search/data/default_sweep.yaml`` is the default), read into the typed
:class:`SweepSpec` defined here. Reading and validating it is search/_sweepfile.py's job
(:func:`~trainplan.search._sweepfile.load_sweep`); this module imports nothing of the search, so
every other search module can use the schema.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from trainplan.planner import ZERO_STAGES

__all__ = [
    "Budget", "Hardware", "LadderSize", "OBJECTIVES", "OverfitConfig", "PARAMS", "ParamSpec", "PrunerConfig", "PRUNERS",
    "SAMPLERS", "SamplerConfig", "SweepSpec", "default_sweep_path",
]

OBJECTIVES: dict[str, str] = {
    "eval_loss": "minimize",
    "gpu_hours": "minimize",
    "tokens_per_s": "maximize",
    "peak_mem_bytes": "minimize",
}
"""Objective name -> Optuna direction; the name is also the trial record key it is read from."""

SAMPLERS = ("tpe", "gp", "cmaes", "random", "grid")
PRUNERS = ("successive_halving", "hyperband", "median", "none")

# name -> (kind, low bound, high bound, low bound allowed, high bound allowed). ``kind`` "float" and
# "int" take a range or choices; "choice" takes choices only (schedule, ZeRO stage).
PARAMS: dict[str, tuple[str, float, float, bool, bool]] = {
    "lr": ("float", 0.0, math.inf, False, False),
    "global_batch": ("int", 1, math.inf, True, False),
    "micro_batch": ("int", 1, math.inf, True, False),
    "steps": ("int", 1, math.inf, True, False),
    "tokens": ("int", 1, math.inf, True, False),
    "weight_decay": ("float", 0.0, math.inf, True, False),
    "dropout": ("float", 0.0, 1.0, True, False),
    "warmup_fraction": ("float", 0.0, 1.0, True, True),
    "schedule": ("choice", 0, 0, True, True),
    "beta2": ("float", 0.0, 1.0, True, False),
    "grad_clip": ("float", 0.0, math.inf, True, False),
    "zero": ("choice", min(ZERO_STAGES), max(ZERO_STAGES), True, True),
}
"""The searchable parameters and their allowed ranges."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ParamSpec:
    """One searched parameter: a range (``low``/``high``) or a list of ``choices``."""

    name: str
    """Parameter name, one of :data:`PARAMS`."""
    low: float | None = None
    """Lower bound of a range."""
    high: float | None = None
    """Upper bound of a range."""
    log: bool = False
    """Sample the range uniformly in log space (learning rates)."""
    step: float | None = None
    """Discretization step of a range (``None``: continuous floats, step 1 for ints)."""
    choices: tuple[Any, ...] = ()
    """Categorical values; when given, ``low``/``high`` must not be."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Hardware:
    """The GPU the trials are screened and accounted for (even when they run on a CPU)."""

    gpu: str = "a100-80gb"
    """GPU catalog name (``trainplan gpus``) for planner screening and GPU-hours."""
    memory_gib: float | None = None
    """Override of the GPU's memory, e.g. to screen for a smaller card or a partitioned one: the
    memory a trial can hold (it replaces the card's nvidia-smi figure, and fits is judged against it
    less the fit margin)."""
    gpus_per_trial: int = 1
    """GPUs (ranks, on a CPU machine) each trial runs on."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    """When the study stops; every limit counts across restarts and workers."""

    n_trials: int = 10
    """Trials in the study, all states (infeasible ones too: they cost no compute but end the
    study when the whole space is infeasible). Trials retried after a dead worker count once."""
    timeout_s: float | None = None
    """Wall-clock seconds of this command; no new trial starts after it."""
    max_gpu_hours: float | None = None
    """Cap on the GPU-hours of all trials of the study; no new trial starts past it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplerConfig:
    """The Optuna sampler proposing configurations."""

    type: str = "tpe"
    """``tpe`` (default), ``gp``, ``cmaes``, ``random`` or ``grid`` (choices only)."""
    seed: int | None = 0
    """Sampler seed, so a sweep proposes the same configurations again."""
    n_startup_trials: int = 4
    """Random trials before the model-based samplers start modelling (TPE, GP, CMA-ES)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PrunerConfig:
    """The Optuna pruner judging learning curves (eval loss against tokens seen)."""

    type: str = "successive_halving"
    """``successive_halving`` (default), ``hyperband``, ``median`` or ``none``."""
    reduction_factor: int = 3
    """Successive halving / Hyperband: keep the best 1/rf of the trials at each rung."""
    min_resource: int | None = None
    """Tokens before the first rung (``None``: the base trial's first evaluation)."""
    n_startup_trials: int = 1
    """Trials that run to the end before any is pruned (successive halving and Hyperband: the
    study's first N trials; median: Optuna's count of finished trials)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OverfitConfig:
    """Overfitting detection in every trial (search/_overfit.py states the rule)."""

    window: int = 3
    """Evaluations over which eval loss must rise while train loss falls."""
    stop: bool = False
    """Stop a trial once it overfits (recorded as pruned, the reason naming it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LadderSize:
    """One model size of a ladder sweep: every size gets the same LR/batch search in one study."""

    name: str
    """Short label, the value of the study's fixed ``size`` dimension (e.g. ``w64``)."""
    model: str
    """Preset name or ``config.json`` (a relative path is read from the sweep file's folder)."""
    tokens: int | None = None
    """Training tokens of this size's trials (``None``: the base trial's)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepSpec:
    """A validated sweep: the base trial, the space, objectives, budget, sampler, pruner, storage."""

    study_name: str = "default"
    """Optuna study name; runs of the same command join (resume) the same study."""
    base: Mapping[str, Any] = field(default_factory=dict)
    """The base trial: ``TrialSpec`` keys plus ``tokens``, ``global_batch``, ``warmup_fraction``
    and ``evals_per_trial``; searched parameters override it."""
    hardware: Hardware = field(default_factory=Hardware)
    """GPU for screening and accounting, and GPUs per trial."""
    space: tuple[ParamSpec, ...] = ()
    """The searched parameters."""
    objectives: tuple[str, ...] = ("eval_loss",)
    """What the study optimizes; several give a Pareto front (and no pruning)."""
    budget: Budget = field(default_factory=Budget)
    """Trial count, timeout and GPU-hour cap."""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    """How configurations are proposed."""
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    """How hopeless trials are stopped early."""
    workers: int = 1
    """Trials run at once by this command, each on its own ranks and master port."""
    storage: str | None = None
    """Optuna storage URL or journal file (``*.log``/``*.jsonl``); ``None``: SQLite in the run folder."""
    heartbeat_s: int = 10
    """Seconds between a running trial's heartbeats; a trial silent for 3 heartbeats is retried."""
    max_retries: int = 2
    """Times a trial left RUNNING by a dead worker is retried."""
    overfit: OverfitConfig = field(default_factory=OverfitConfig)
    """Overfitting detection: recorded on every trial (``overfit`` attribute); optional early stop."""
    ladder: tuple[LadderSize, ...] = ()
    """Model sizes of a ladder sweep (``trainplan scale`` fits across them); the study gets a
    ``size`` dimension with one choice per size, so the grid sampler runs every size on the
    same LR/batch grid (search/_ladder.py)."""
    calibrate: bool = False
    """Refit ``calibration.json`` in the run folder after each trial and screen with its memory's
    upper bound (search/_calibrate.py)."""

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.objectives]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["base"] = dict(self.base)
        out["space"] = {p["name"]: {k: (list(v) if k == "choices" else v) for k, v in p.items()
                                    if k != "name" and v is not None and v != () and (k != "log" or v)}
                        for p in out["space"] if not (self.ladder and p["name"] == "size")}
        out["ladder"] = [{k: v for k, v in r.items() if v is not None} for r in out["ladder"]]
        out["objectives"] = list(self.objectives)
        return out


def default_sweep_path() -> Path:
    """The packaged default sweep file."""
    return Path(str(resources.files("trainplan.search").joinpath("data", "default_sweep.yaml")))
