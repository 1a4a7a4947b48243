"""Reading a sweep file: parse, merge the command line's overrides, validate.

:func:`load_sweep` is the one place that reads and validates a sweep (schema: search/_sweep.py);
every error names the key at fault (``space.lr.low``) and what is allowed. Precedence, written
once: command line > sweep file > defaults (the CLI passes its flags as ``overrides``). The base
trial is resolved once here (search/_space.py), so a bad base key fails before any trial starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainplan.errors import UsageError, close_matches
from trainplan.planner import SCHEDULES, load_gpu
from trainplan.search._ladder import parse_ladder, resolve_ladder_paths
from trainplan.search._space import resolve_trial
from trainplan.search._sweep import (
    OBJECTIVES, PARAMS, PRUNERS, SAMPLERS, Budget, Hardware, LadderSize, OverfitConfig, ParamSpec, PrunerConfig, SamplerConfig,
    SweepSpec, default_sweep_path,
)

__all__ = ["load_sweep", "sweep_from_dict"]


def _section(raw: Mapping[str, Any], key: str, cls: type) -> Any:
    value = raw.get(key) or {}
    if not isinstance(value, Mapping):
        raise UsageError(key, f"must be a mapping, got {type(value).__name__}")
    known = set(cls.__dataclass_fields__)
    for k in value:
        if k not in known:
            raise UsageError(f"{key}.{k}", "unknown key" + close_matches(str(k), known))
    return cls(**value)


def _param(name: str, raw: Any) -> ParamSpec:
    key = f"space.{name}"
    if name not in PARAMS:
        raise UsageError(key, f"not a searchable parameter; allowed: {', '.join(PARAMS)}" + close_matches(name, PARAMS))
    if not isinstance(raw, Mapping):
        raise UsageError(key, "must be a mapping with low/high (a range) or choices")
    allowed = {"low", "high", "log", "step", "choices"}
    for k in raw:
        if k not in allowed:
            raise UsageError(f"{key}.{k}", f"unknown key; allowed: {', '.join(sorted(allowed))}")
    kind, lo, hi, lo_ok, hi_ok = PARAMS[name]
    choices = raw.get("choices")
    if choices is not None:
        if "low" in raw or "high" in raw:
            raise UsageError(key, "give either choices or low/high, not both")
        if not isinstance(choices, list) or not choices:
            raise UsageError(f"{key}.choices", "must be a non-empty list")
        values = choices
    else:
        if kind == "choice":
            raise UsageError(key, "takes choices only (a list)")
        if "low" not in raw or "high" not in raw:
            raise UsageError(key, "a range needs both low and high")
        values = [raw["low"], raw["high"]]
    for i, value in enumerate(values):
        where = f"{key}.choices[{i}]" if choices is not None else f"{key}.{'low' if i == 0 else 'high'}"
        if name == "schedule":
            if value not in SCHEDULES:
                raise UsageError(where, f"{value!r} is not one of {', '.join(SCHEDULES)}")
            continue
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not numeric or (kind in ("int", "choice") and int(value) != value):
            raise UsageError(where, f"must be {'an integer' if kind != 'float' else 'a number'}, got {value!r}")
        if value < lo or value > hi or (value == lo and not lo_ok) or (value == hi and not hi_ok):
            low_s, high_s = ("[" if lo_ok else "(") + f"{lo:g}", f"{hi:g}" + ("]" if hi_ok else ")")
            raise UsageError(where, f"{value!r} is outside the allowed range {low_s}, {high_s}")
    if choices is None and values[0] > values[1]:
        raise UsageError(f"{key}.low", f"{values[0]} exceeds high {values[1]}")
    log = bool(raw.get("log", False))
    if log and choices is None and values[0] <= 0:
        raise UsageError(f"{key}.low", "a log range needs low > 0")
    if kind == "int" and choices is None:
        values = [int(v) for v in values]
    return ParamSpec(name=name, low=None if choices else values[0], high=None if choices else values[1],
                     log=log, step=raw.get("step"), choices=tuple(choices or ()))


def load_sweep(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> SweepSpec:
    """Read and validate a sweep file (default: the packaged one); ``overrides`` are CLI values
    for top-level keys (``study_name``, ``storage``, ``workers``) or ``budget.n_trials``-style keys."""
    import yaml

    path = Path(path) if path is not None else default_sweep_path()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise UsageError("--sweep", f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise UsageError("--sweep", f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise UsageError("--sweep", f"{path} must hold a mapping at the top level")
    if isinstance(raw.get("ladder"), list):  # ladder models given relative to the sweep file
        raw["ladder"] = resolve_ladder_paths(raw["ladder"], path.parent)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        head, _, tail = dotted.partition(".")
        if tail:
            raw[head] = {**(raw.get(head) or {}), tail: value}
        else:
            raw[head] = value
    return sweep_from_dict(raw)


def sweep_from_dict(raw: Mapping[str, Any]) -> SweepSpec:
    """Validate a sweep given as a dict (the parsed YAML)."""
    known = set(SweepSpec.__dataclass_fields__)
    for key in raw:
        if key not in known:
            raise UsageError(str(key), "unknown sweep key" + close_matches(str(key), known))
    space_raw = raw.get("space") or {}
    if not isinstance(space_raw, Mapping):
        raise UsageError("space", "must be a mapping of parameter name -> range or choices")
    space = tuple(_param(str(name), spec) for name, spec in space_raw.items())
    ladder: tuple[LadderSize, ...] = ()
    if raw.get("ladder"):
        ladder, size_param = parse_ladder(raw)
        space += (size_param,)
    names = {p.name for p in space}
    if {"steps", "tokens"} <= names:
        raise UsageError("space.tokens", "search steps or tokens, not both")
    objectives = raw.get("objectives", ["eval_loss"])
    objectives = [objectives] if isinstance(objectives, str) else list(objectives or [])
    if not objectives or len(set(objectives)) != len(objectives):
        raise UsageError("objectives", "must be a non-empty list of distinct names")
    for obj in objectives:
        if obj not in OBJECTIVES:
            raise UsageError("objectives", f"{obj!r} is not one of {', '.join(OBJECTIVES)}" + close_matches(str(obj), OBJECTIVES))
    hardware = _section(raw, "hardware", Hardware)
    budget = _section(raw, "budget", Budget)
    sampler = _section(raw, "sampler", SamplerConfig)
    overfit = _section(raw, "overfit", OverfitConfig)
    if not isinstance(overfit.window, int) or isinstance(overfit.window, bool) or overfit.window < 1:
        raise UsageError("overfit.window", f"must be a positive integer, got {overfit.window!r}")
    if not isinstance(overfit.stop, bool):
        raise UsageError("overfit.stop", f"must be true or false, got {overfit.stop!r}")
    pruner_given = "type" in (raw.get("pruner") or {})
    pruner = _section(raw, "pruner", PrunerConfig)
    if len(objectives) > 1:
        # Optuna's pruners judge one intermediate value; Trial.report refuses multi-objective.
        if pruner_given and pruner.type != "none":
            raise UsageError("pruner.type", f"{pruner.type!r} needs a single objective; use none with several objectives")
        pruner = PrunerConfig(type="none")
    _check_sections(hardware, budget, sampler, pruner, space)
    base = raw.get("base") or {}
    if not isinstance(base, Mapping):
        raise UsageError("base", "must be a mapping of trial spec keys")
    spec = SweepSpec(
        study_name=str(raw.get("study_name", "default")), base=dict(base), hardware=hardware, space=space,
        objectives=tuple(objectives), budget=budget, sampler=sampler, pruner=pruner,
        workers=raw.get("workers", 1), storage=raw.get("storage"),
        heartbeat_s=raw.get("heartbeat_s", 10), max_retries=raw.get("max_retries", 2), ladder=ladder,
        overfit=overfit,
        calibrate=raw.get("calibrate", False),
    )
    if not isinstance(spec.calibrate, bool):
        raise UsageError("calibrate", f"must be true or false, got {spec.calibrate!r}")
    for key, value in (("workers", spec.workers), ("heartbeat_s", spec.heartbeat_s)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UsageError(key, f"must be a positive integer, got {value!r}")
    if not isinstance(spec.max_retries, int) or spec.max_retries < 0:
        raise UsageError("max_retries", f"must be a non-negative integer, got {spec.max_retries!r}")
    if not spec.study_name:
        raise UsageError("study_name", "must not be empty")
    # Resolving the base trial checks the base keys and the hardware against the trial spec.
    resolve_trial(spec, {})
    for size in ladder:  # every size's trial must resolve too (its model, its tokens)
        resolve_trial(spec, {"size": size.name})
    return spec


def _check_sections(hardware: Hardware, budget: Budget, sampler: SamplerConfig, pruner: PrunerConfig,
                    space: tuple[ParamSpec, ...]) -> None:
    try:
        load_gpu(hardware.gpu)
    except UsageError as exc:
        raise UsageError("hardware.gpu", exc.message) from None
    if hardware.memory_gib is not None and not hardware.memory_gib > 0:
        raise UsageError("hardware.memory_gib", f"must be > 0, got {hardware.memory_gib}")
    if not isinstance(hardware.gpus_per_trial, int) or hardware.gpus_per_trial < 1:
        raise UsageError("hardware.gpus_per_trial", f"must be a positive integer, got {hardware.gpus_per_trial!r}")
    if not isinstance(budget.n_trials, int) or budget.n_trials < 1:
        raise UsageError("budget.n_trials", f"must be a positive integer, got {budget.n_trials!r}")
    for key, value in (("budget.timeout_s", budget.timeout_s), ("budget.max_gpu_hours", budget.max_gpu_hours)):
        if value is not None and not (isinstance(value, (int, float)) and value > 0):
            raise UsageError(key, f"must be a positive number, got {value!r}")
    if sampler.type not in SAMPLERS:
        raise UsageError("sampler.type", f"{sampler.type!r} is not one of {', '.join(SAMPLERS)}" + close_matches(sampler.type, SAMPLERS))
    if sampler.type == "grid" and any(not p.choices for p in space):
        bad = next(p.name for p in space if not p.choices)
        raise UsageError(f"space.{bad}", "the grid sampler needs choices for every parameter, not a range")
    if not isinstance(sampler.n_startup_trials, int) or sampler.n_startup_trials < 0:
        raise UsageError("sampler.n_startup_trials", f"must be a non-negative integer, got {sampler.n_startup_trials!r}")
    if pruner.type not in PRUNERS:
        raise UsageError("pruner.type", f"{pruner.type!r} is not one of {', '.join(PRUNERS)}" + close_matches(pruner.type, PRUNERS))
    if not isinstance(pruner.reduction_factor, int) or pruner.reduction_factor < 2:
        raise UsageError("pruner.reduction_factor", f"must be an integer >= 2, got {pruner.reduction_factor!r}")
    if not isinstance(pruner.n_startup_trials, int) or pruner.n_startup_trials < 0:
        raise UsageError("pruner.n_startup_trials", f"must be a non-negative integer, got {pruner.n_startup_trials!r}")
    if pruner.min_resource is not None and (not isinstance(pruner.min_resource, int) or pruner.min_resource < 1):
        raise UsageError("pruner.min_resource", f"must be a positive number of tokens, got {pruner.min_resource!r}")
    for p in space:
        if p.name == "global_batch":
            for v in p.choices or (p.low, p.high):
                if v % hardware.gpus_per_trial:
                    raise UsageError("space.global_batch", f"{v} is not a multiple of hardware.gpus_per_trial={hardware.gpus_per_trial}")
