"""``trainplan plan --recommend``: enumerate layouts, keep those that fit, rank them.

The global batch (sequences per optimizer step) is held fixed, since it changes the optimisation,
not only the speed; every candidate reaches it with its own micro-batch x accumulation x data
parallelism (:meth:`Layout.with_global_batch`, the one rule). A candidate is kept only when
:meth:`Layout.problems` finds nothing wrong with it (the same rules ``plan`` validates); those that
do not fit in memory are counted, not shown.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import product
from typing import Any

from trainplan.errors import UsageError
from trainplan.planner._catalog import GPUSpec
from trainplan.planner._dsconfig import plan_deepspeed_config
from trainplan.planner._layout import ZERO_STAGES, Layout
from trainplan.planner._model import ModelSpec
from trainplan.planner._plan import Plan, plan

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

    def to_dict(self, requested: Plan, top: int) -> dict[str, Any]:
        """The recommendation as JSON (``plan --recommend --format json``): the search's counts,
        the ``requested`` plan, the ``top`` ranked plans and the best one's ``ds_config.json``."""
        return {"kind": "recommendation", "optimize": self.optimize, "evaluated": self.evaluated,
                "feasible": self.feasible, "min_gpus": self.min_gpus, "requested": requested.to_dict(),
                "top": [p.to_dict() for p in self.ranked[:top]],
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
) -> Recommendation:
    """Plan every candidate layout and rank those that fit by ``optimize``."""
    if optimize not in OBJECTIVES:
        raise UsageError("--optimize", f"{optimize!r} is not one of {', '.join(OBJECTIVES)}")
    space = space or LayoutSpace()
    if space.max_gpus < 1:
        raise UsageError("--max-gpus", f"must be a positive integer, got {space.max_gpus}")
    feasible: list[Plan] = []
    evaluated = 0
    for layout in candidate_layouts(model, base, global_batch, space):
        evaluated += 1
        p = plan(model, layout, gpu, tokens=tokens, mfu=mfu, price=price)
        if p.fits:
            feasible.append(p)
    feasible.sort(key=lambda p: _key(p, optimize))
    return Recommendation(
        ranked=feasible, optimize=optimize, evaluated=evaluated, feasible=len(feasible),
        min_gpus=min((p.layout.gpus for p in feasible), default=None),
        rejected_reasons={"does not fit in GPU memory": evaluated - len(feasible)},
    )
