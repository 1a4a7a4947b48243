"""From the search space to one resolved trial: Optuna suggestions, then a ``TrialSpec``.

:func:`suggest` asks an Optuna trial for every searched parameter; :func:`resolve_trial` merges
those values over the sweep's base trial and derives what follows from them (gradient
accumulation from the global batch, steps from a token budget, warm-up steps from a fraction, the
eval interval from the evaluations per trial). The same function validates the base trial when the
sweep is loaded, so a bad base key fails before any trial starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trainplan.errors import UsageError
from trainplan.runners import TrialSpec
from trainplan.search._ladder import ladder_size
from trainplan.search._sweep import PARAMS

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from trainplan.planner import Layout
    from trainplan.search._sweep import SweepSpec

__all__ = ["BASE_EXTRAS", "resolve_trial", "suggest"]

BASE_EXTRAS = ("tokens", "global_batch", "warmup_fraction", "evals_per_trial")
"""Base-trial keys the search adds to the ``TrialSpec`` keys; each derives a spec field."""


def suggest(trial: optuna.trial.BaseTrial, sweep: SweepSpec) -> dict[str, Any]:
    """Ask ``trial`` for every parameter of the sweep's space; returns name -> value."""
    values: dict[str, Any] = {}
    for p in sweep.space:
        if p.choices:
            values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif PARAMS[p.name][0] == "int":
            step = int(p.step or 1)
            values[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), step=step, log=p.log and step == 1)
        else:
            values[p.name] = trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log,
                                                 step=None if p.log else p.step)
    return values


def _largest_divisor_at_most(n: int, cap: int) -> int:
    return max(d for d in range(1, min(n, max(cap, 1)) + 1) if n % d == 0)


def _with_global_batch(layout: Layout, global_batch: int, where: str) -> Layout:
    """The sampled micro-batch is a cap: the largest divisor of the per-rank batch not above it is
    used, then the planner's one rule (``Layout.with_global_batch``) sets the accumulation."""
    if global_batch < 1 or global_batch % layout.dp:
        raise UsageError(where, f"{global_batch} is not a positive multiple of the {layout.dp} data-parallel ranks")
    micro = _largest_divisor_at_most(global_batch // layout.dp, layout.micro_batch)
    return layout.with_(micro_batch=micro).with_global_batch(global_batch, flag=where)


def resolve_trial(sweep: SweepSpec, values: Mapping[str, Any]) -> TrialSpec:
    """The ``TrialSpec`` of one configuration: base trial, overridden by ``values``, derived.

    Rules (documented in the sweep file's header too):
    - ``global_batch``: the requested micro-batch is a cap; the largest divisor of the per-rank
      batch not above it is used, and :meth:`~trainplan.planner.Layout.with_global_batch` (the one
      global-batch rule) sets the accumulation, so every sampled global batch is trainable. A
      global batch that is not a multiple of the ranks is refused (the sweep file is checked for
      this when loaded).
    - ``tokens`` sets ``steps = round(tokens / tokens_per_step)`` (at least 1): trials of different
      batches then train on the same data.
    - ``warmup_fraction`` sets ``warmup_steps = round(fraction * steps)``, at least 1 (DeepSpeed).
    - ``evals_per_trial`` sets ``eval_every = steps // evals_per_trial`` (at least 1).
    """
    base, merged = _merge(sweep, values)
    try:
        spec = TrialSpec.from_dict(base)
    except UsageError as exc:
        raise UsageError(f"base.{exc.key.lstrip('-').replace('-', '_')}", exc.message) from None
    spec = spec.with_(**_derived(spec, sweep, merged, values))
    try:
        return spec.validate()
    except UsageError as exc:
        key = exc.key.lstrip("-").replace("-", "_")
        where = f"space.{key}" if key in values else f"base.{key}"
        raise UsageError(where, exc.message) from None


def _merge(sweep: SweepSpec, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The trial spec keys (base trial, the sampled layout keys, the ladder size's model) and the
    values the search derives fields from (``BASE_EXTRAS`` and the sampled ones): base < values."""
    base = dict(sweep.base)
    merged = {k: base.pop(k) for k in BASE_EXTRAS if k in base}
    layout = dict(base.pop("layout", {}) or {})
    hyper = dict(base.pop("hyperparams", {}) or {})
    if "steps" in base and "tokens" in merged:
        raise UsageError("base.tokens", "give steps or tokens, not both")
    merged.update(values)
    if "size" in merged:  # a ladder sweep: the size names the model and its token budget
        size = ladder_size(sweep, merged.pop("size"))
        base["model"] = size.model
        if size.tokens is not None:
            merged["tokens"] = size.tokens
            base.pop("steps", None)
    if "steps" in values:
        merged.pop("tokens", None)
    if "tokens" in values:
        base.pop("steps", None)
    layout["gpus"] = sweep.hardware.gpus_per_trial
    for key in ("micro_batch", "zero"):
        if key in merged:
            layout[key] = int(merged[key])
    return {**base, "layout": layout, "hyperparams": hyper}, merged


def _derived(spec: TrialSpec, sweep: SweepSpec, merged: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The spec fields that follow from ``merged``: layout, steps, hyperparameters, eval interval."""
    lay = spec.layout
    if "global_batch" in merged:
        lay = _with_global_batch(lay, int(merged["global_batch"]),
                                 "space.global_batch" if "global_batch" in values else "base.global_batch")
    steps = spec.steps
    if "steps" in merged:
        steps = int(merged["steps"])
    elif "tokens" in merged:
        steps = max(1, round(int(merged["tokens"]) / lay.tokens_per_step))
    hp = spec.hyperparams
    hp_changes: dict[str, Any] = {"total_steps": steps}
    for key in ("lr", "weight_decay", "schedule", "grad_clip"):
        if key in merged:
            hp_changes[key] = merged[key]
    if "beta2" in merged:
        hp_changes["betas"] = (hp.betas[0], float(merged["beta2"]))
    warmup = hp.warmup_steps
    if "warmup_fraction" in merged:
        warmup = round(float(merged["warmup_fraction"]) * steps)
    # DeepSpeed's WarmupCosineLR refuses warmup_num_steps 0 (deepspeed/runtime/lr_schedules.py).
    hp_changes["warmup_steps"] = min(max(warmup, 1), steps)
    changes: dict[str, Any] = {"layout": lay, "steps": steps, "hyperparams": dataclasses.replace(hp, **hp_changes),
                               "gpu": spec.gpu or sweep.hardware.gpu}
    if "dropout" in merged:
        changes["dropout"] = float(merged["dropout"])
    if "evals_per_trial" in merged:
        evals = merged["evals_per_trial"]
        if not isinstance(evals, int) or evals < 1:
            raise UsageError("base.evals_per_trial", f"must be a positive integer, got {evals!r}")
        changes["eval_every"] = max(1, steps // evals)
    return changes
