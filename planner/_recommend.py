"""``trainplan plan --recommend``: enumerate layouts, keep those that fit, rank them.

The global batch (sequences per optimizer step) is held fixed, since it changes the optimisation,
not only the speed; every candidate reaches it with its own micro-batch x accumulation x data
parallelism (:meth:`Layout.with_global_batch`, the one rule). A candidate is kept only when
:meth:`Layout.problems` finds nothing wrong with it (the same rules ``plan`` validates); those that
do not fit in memory are counted, not shown.

With a :class:`~trainplan.planner.Calibration` (``plan --recommend --calibration FILE``) each
candidate is planned on the calibrated device's profile for its rank count, kept when the upper end
of its calibrated peak memory's 90% interval fits the rank's memory, and ranked by its calibrated
step time; a candidate whose tokens/s needs a term the trials did not identify (e.g. ZeRO-3 across
ranks with no such trial) is dropped and counted with the run that would identify it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from itertools import product
from typing import TYPE_CHECKING, Any

from trainplan.errors import UsageError
from trainplan.planner._catalog import GPUSpec
from trainplan.planner._dsconfig import plan_deepspeed_config
from trainplan.planner._layout import ZERO_STAGES, Layout
from trainplan.planner._model import ModelSpec
from trainplan.planner._plan import Plan, Planner, plan

if TYPE_CHECKING:
    from trainplan.planner._calibration import Calibrated, Calibration

__all__ = ["LayoutSpace", "Recommendation", "OBJECTIVES", "candidate_layouts", "recommend"]

OBJECTIVES = ("time", "cost", "gpus")


@dataclass(frozen=True, slots=True, kw_only=True)
class LayoutSpace:
    """The choices ``--recommend`` enumerates."""

    max_gpus: int = 64
    """Largest GPU count tried (powers of two up to a node, then whole nodes)."""
    zero: tuple[int, ...] = ZERO_STAGES
    """ZeRO stages tried."""
    offload: tuple[str, ...] = ("none", "cpu")
    """Offload targets tried (nvme is only chosen when asked for with --offload)."""
    tp: tuple[int, ...] = (1, 2, 4, 8)
    """Tensor-parallel degrees tried."""
    pp: tuple[int, ...] = (1, 2, 4, 8)
    """Pipeline degrees tried."""
    micro_batch: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    """Micro-batches tried."""
    checkpointing: tuple[str, ...] = ("none", "selective", "full")
    """Activation checkpointing modes tried."""

    def gpu_counts(self, gpus_per_node: int) -> list[int]:
        counts = [g for g in (1, 2, 4, 8, 16, 32) if g <= min(gpus_per_node, self.max_gpus)]
        counts += range(2 * gpus_per_node, self.max_gpus + 1, gpus_per_node)
        if gpus_per_node <= self.max_gpus and gpus_per_node not in counts:
            counts.append(gpus_per_node)
        return sorted(set(counts))


@dataclass(frozen=True, slots=True, kw_only=True)
class Recommendation:
    """The ranked feasible layouts and what was searched."""

    ranked: list[Plan]
    """Feasible plans, best first by ``optimize``."""
    optimize: str
    """Ranking objective: time, cost or gpus."""
    evaluated: int
    """Candidate layouts planned."""
    feasible: int
    """Candidates that fit in memory."""
    min_gpus: int | None = None
    """Fewest GPUs any feasible layout needs."""
    rejected_reasons: dict[str, int] = field(default_factory=dict)
    """Why candidates were dropped, with counts."""
    calibrated: list[Calibrated] | None = None
    """With a calibration: each ranked plan's calibrated figures (intervals, and the uncalibrated
    estimate), in ``ranked`` order. The ranked plans' throughput, time and cost are then the
    calibrated ones (their ``perf`` replaced); ``calibrated[i].*.uncalibrated`` keeps the planner's."""

    def top_dicts(self, n: int) -> list[dict[str, Any]]:
        """The ``--format json`` objects of the best ``n`` plans; with a calibration each carries its
        ``calibrated`` figures (value, 90% interval, uncalibrated estimate)."""
        out = [p.to_dict() for p in self.ranked[:n]]
        if self.calibrated is not None:
            for d, c in zip(out, self.calibrated):
                d["calibrated"] = {**c.to_dict(), "interval": "90% prediction interval",
                                   "note": "throughput, time and cost in this object are the calibrated figures; "
                                           "the planner's are each figure's 'uncalibrated'"}
        return out

    def to_dict(self, requested: Plan, top: int) -> dict[str, Any]:
        """The recommendation as JSON (``plan --recommend --format json``): the search's counts,
        the ``requested`` plan, the ``top`` ranked plans and the best one's ``ds_config.json``."""
        return {"kind": "recommendation", "optimize": self.optimize, "evaluated": self.evaluated,
                "feasible": self.feasible, "min_gpus": self.min_gpus, "requested": requested.to_dict(),
                "top": self.top_dicts(top),
                "ds_config": plan_deepspeed_config(self.ranked[0]) if self.ranked else None}


def candidate_layouts(model: ModelSpec, base: Layout, global_batch: int, space: LayoutSpace) -> Iterator[Layout]:
    """Every layout of ``space`` that reaches ``global_batch`` and has no :meth:`Layout.problems` for ``model``."""
    settings: dict[tuple[int, int], list[tuple[int, str, str]]] = {}
    for gpus, tp, pp in product(space.gpu_counts(base.gpus_per_node), space.tp, space.pp):
        shape = base.with_(gpus=gpus, tp=tp, pp=pp, zero=0, offload="none")
        if shape.problems(model):  # most (gpus, tp, pp) fail here, before anything else is tried
            continue
        if (tp, pp) not in settings:  # a pre-filter only: every layout yielded is checked whole below
            settings[tp, pp] = [(z, o, c) for z, o, c in product(space.zero, space.offload, space.checkpointing)
                                if not shape.with_(zero=z, offload=o, checkpointing=c).problems(model)]
        for mb in space.micro_batch:
            if global_batch % (mb * shape.dp):
                continue
            sized = shape.with_(micro_batch=mb).with_global_batch(global_batch)
            if pp > 1 and sized.grad_accum < pp:  # too few micro-batches to fill the pipeline
                continue
            for zero, offload, ckpt in settings[tp, pp]:
                layout = sized.with_(zero=zero, offload=offload, checkpointing=ckpt)
                if not layout.problems(model):
                    yield layout


def _key(p: Plan, optimize: str) -> tuple[float, ...]:
    if optimize == "cost":
        return (p.cost_usd, p.hours, p.layout.gpus)
    if optimize == "gpus":
        return (p.layout.gpus, p.hours, p.cost_usd)
    return (p.hours, p.cost_usd, p.layout.gpus)


def recommend(
    model: ModelSpec,
    gpu: GPUSpec,
    base: Layout,
    *,
    global_batch: int,
    tokens: float | None = None,
    optimize: str = "time",
    space: LayoutSpace | None = None,
    mfu: float | None = None,
    price: float | None = None,
    calibration: Calibration | None = None,
) -> Recommendation:
    """Plan every candidate layout and rank those that fit by ``optimize`` (calibrated figures with
    ``calibration``: see the module docstring; ``gpu`` is then the calibrated device's profile)."""
    if calibration is not None:
        return _recommend_calibrated(model, base, calibration, global_batch=global_batch, tokens=tokens,
                                     optimize=optimize, space=space)
    if optimize not in OBJECTIVES:
        raise UsageError("--optimize", f"{optimize!r} is not one of {', '.join(OBJECTIVES)}")
    space = space or LayoutSpace()
    if space.max_gpus < 1:
        raise UsageError("--max-gpus", f"must be a positive integer, got {space.max_gpus}")
    planner = Planner(model, gpu, tokens=tokens, mfu=mfu, price=price)
    feasible: list[Plan] = []
    evaluated = 0
    for layout in candidate_layouts(model, base, global_batch, space):  # each already checked whole
        evaluated += 1
        memory = planner.memory(layout)
        if planner.fits(memory):  # most do not: their FLOPs, throughput and time are never asked for
            feasible.append(planner.plan(layout, memory))
    feasible.sort(key=lambda p: _key(p, optimize))
    return Recommendation(
        ranked=feasible, optimize=optimize, evaluated=evaluated, feasible=len(feasible),
        min_gpus=min((p.layout.gpus for p in feasible), default=None),
        rejected_reasons={"does not fit in GPU memory": evaluated - len(feasible)},
    )


def _calibrated_plan(p: Plan, c: Calibrated) -> Plan:
    """``p`` with its throughput replaced by the calibrated one (so time and cost follow)."""
    t = c.step_time_s.value
    perf = replace(p.perf, step_time_s=t, tokens_per_s=c.tokens_per_s.value, efficiency=c.efficiency,
                   mfu=p.perf.mfu * p.perf.step_time_s / t, hfu=p.perf.hfu * p.perf.step_time_s / t)
    return replace(p, perf=perf)


def _recommend_calibrated(model: ModelSpec, base: Layout, cal: Calibration, *, global_batch: int,
                          tokens: float | None, optimize: str, space: LayoutSpace | None) -> Recommendation:
    if optimize not in OBJECTIVES:
        raise UsageError("--optimize", f"{optimize!r} is not one of {', '.join(OBJECTIVES)}")
    space = space or LayoutSpace()
    if space.max_gpus < 1:
        raise UsageError("--max-gpus", f"must be a positive integer, got {space.max_gpus}")
    kept: list[tuple[Plan, Calibrated]] = []
    evaluated, rejected = 0, {"calibrated peak memory (90% upper bound) does not fit": 0}
    for layout in candidate_layouts(model, base, global_batch, space):
        evaluated += 1
        profile = cal.profile(layout.gpus)
        p = plan(model, layout, profile, tokens=tokens)
        if why := cal.refusal(p):
            reason = f"tokens/s not calibrated: {why[0]}"
            rejected[reason] = rejected.get(reason, 0) + 1
            continue
        c = cal.apply(p, key="--recommend")
        if c.memory_bytes.high > p.usable_bytes:
            rejected["calibrated peak memory (90% upper bound) does not fit"] += 1
            continue
        kept.append((_calibrated_plan(p, c), c))
    kept.sort(key=lambda pc: _key(pc[0], optimize))
    return Recommendation(
        ranked=[p for p, _ in kept], optimize=optimize, evaluated=evaluated, feasible=len(kept),
        min_gpus=min((p.layout.gpus for p, _ in kept), default=None), rejected_reasons=rejected,
        calibrated=[c for _, c in kept],
    )
