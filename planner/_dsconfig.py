"""A ready DeepSpeed config for a layout and a set of optimizer hyperparameters.

Keys follow the DeepSpeed configuration reference (https://www.deepspeed.ai/docs/config-json/):
batch sizes, ``zero_optimization`` (stage, offload_optimizer, offload_param), ``bf16``/``fp16``,
``gradient_clipping``, an AdamW ``optimizer`` and a Warmup* ``scheduler``.

:func:`hyperparams_from_deepspeed_config` reads a (possibly hand-edited) config back into
:class:`Hyperparams`, so the runner takes every optimizer setting from the one file the engine
uses, or refuses the file with the key at fault. :func:`plan_deepspeed_config` is the config of a
planned run: its own step count, warm-up and learning rate, and a ``trainplan`` key naming where
each came from.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from trainplan.errors import UsageError
from trainplan.planner._layout import Layout

__all__ = [
    "ALLREDUCE_BUCKET_SIZE", "Hyperparams", "PLAN_WARMUP_FRACTION", "REDUCE_BUCKET_SIZE", "SCHEDULES",
    "STAGE3_MAX_LIVE_PARAMETERS", "STAGE3_PARAM_PERSISTENCE_THRESHOLD", "STAGE3_PREFETCH_BUCKET_SIZE",
    "deepspeed_config", "hyperparams_from_deepspeed_config", "plan_deepspeed_config", "zero_optimization",
]

SCHEDULES = ("cosine", "linear", "constant")

# DeepSpeed's bucket sizes, in elements (https://www.deepspeed.ai/docs/config-json/, ZeRO section):
# the ds_config written here and the planner's memory model (_memory.py) read the same numbers.
REDUCE_BUCKET_SIZE = 500_000_000
"""``zero_optimization.reduce_bucket_size`` (ZeRO 1-3; DeepSpeed's default)."""
ALLREDUCE_BUCKET_SIZE = 500_000_000
"""The engine's gradient all-reduce bucket at ZeRO 0/1 (``allreduce_bucket_size`` default)."""
STAGE3_PREFETCH_BUCKET_SIZE = 50_000_000
"""``stage3_prefetch_bucket_size``: parameters gathered ahead of use."""
STAGE3_PARAM_PERSISTENCE_THRESHOLD = 100_000
"""``stage3_param_persistence_threshold``: smaller parameters stay whole on every rank."""
STAGE3_MAX_LIVE_PARAMETERS = 1_000_000_000
"""``stage3_max_live_parameters``: cap on gathered parameters alive at once."""

PLAN_WARMUP_FRACTION = 0.01
"""Warm-up of a planned run when none is given: 1% of its steps (at least one step)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Hyperparams:
    """Optimizer and schedule settings of a training run."""

    lr: float = 3e-4
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak (cosine and linear schedules)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW beta1, beta2."""
    eps: float = 1e-8
    """AdamW epsilon."""
    weight_decay: float = 0.1
    """Decoupled weight decay."""
    warmup_steps: int = 0
    """Linear warm-up steps from zero."""
    schedule: str = "cosine"
    """After warm-up: ``cosine`` or ``linear`` decay to min_lr_ratio, or ``constant``."""
    total_steps: int = 1000
    """Optimizer steps of the run (the schedule's horizon)."""
    grad_clip: float = 1.0
    """Global gradient-norm clip; 0 disables it."""

    def validate(self, prefix: str = "--") -> Hyperparams:
        def bad(key: str, msg: str) -> UsageError:
            return UsageError(f"{prefix}{key}", msg)

        if not self.lr > 0:
            raise bad("lr", f"must be > 0, got {self.lr}")
        if not all(0 <= b < 1 for b in self.betas):
            raise bad("beta2" if self.betas[0] < 1 else "beta1", f"betas must lie in [0, 1), got {self.betas}")
        if self.weight_decay < 0:
            raise bad("weight-decay", f"must be >= 0, got {self.weight_decay}")
        if self.total_steps < 1:
            raise bad("steps", f"must be a positive integer, got {self.total_steps}")
        if not 0 <= self.warmup_steps <= self.total_steps:
            raise bad("warmup-steps", f"must lie in [0, steps={self.total_steps}], got {self.warmup_steps}")
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"{self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        if self.grad_clip < 0:
            raise bad("grad-clip", f"must be >= 0, got {self.grad_clip}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise bad("min-lr-ratio", f"must lie in [0, 1], got {self.min_lr_ratio}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def zero_optimization(layout: Layout) -> dict[str, Any]:
    """The ``zero_optimization`` section of :func:`deepspeed_config` (what the memory model reads)."""
    zero: dict[str, Any] = {"stage": layout.zero}
    if layout.zero >= 1:
        zero.update(overlap_comm=layout.zero >= 2, contiguous_gradients=True, reduce_bucket_size=REDUCE_BUCKET_SIZE)
    if layout.zero == 3:
        zero.update(stage3_prefetch_bucket_size=STAGE3_PREFETCH_BUCKET_SIZE,
                    stage3_param_persistence_threshold=STAGE3_PARAM_PERSISTENCE_THRESHOLD,
                    stage3_max_live_parameters=STAGE3_MAX_LIVE_PARAMETERS, stage3_gather_16bit_weights_on_model_save=True)
    if layout.offload != "none":
        target = {"device": layout.offload, "pin_memory": True}
        if layout.offload == "nvme":
            target["nvme_path"] = "/local_nvme"
        zero["offload_optimizer"] = dict(target)
        if layout.zero == 3:
            zero["offload_param"] = dict(target)
    return zero


def deepspeed_config(layout: Layout, hp: Hyperparams | None = None) -> dict[str, Any]:
    """The ``ds_config.json`` for ``layout`` trained with ``hp``."""
    hp = hp or Hyperparams()
    # DeepSpeed 0.19 rejects warmup_num_steps=0; one step of warm-up is the nearest it allows.
    if hp.schedule == "cosine":
        scheduler = {"type": "WarmupCosineLR", "params": {
            "total_num_steps": hp.total_steps, "warmup_num_steps": max(hp.warmup_steps, 1),
            "warmup_min_ratio": 0.0, "cos_min_ratio": hp.min_lr_ratio, "warmup_type": "linear"}}
    elif hp.schedule == "linear":
        scheduler = {"type": "WarmupDecayLR", "params": {
            "total_num_steps": hp.total_steps, "warmup_num_steps": max(hp.warmup_steps, 1),
            "warmup_min_lr": 0.0, "warmup_max_lr": hp.lr, "warmup_type": "linear"}}
    else:
        scheduler = {"type": "WarmupLR", "params": {
            "warmup_num_steps": max(hp.warmup_steps, 1), "warmup_min_lr": 0.0, "warmup_max_lr": hp.lr,
            "warmup_type": "linear"}}
    config: dict[str, Any] = {
        "train_batch_size": layout.global_batch,
        "train_micro_batch_size_per_gpu": layout.micro_batch,
        "gradient_accumulation_steps": layout.grad_accum,
        "gradient_clipping": hp.grad_clip,
        "zero_optimization": zero_optimization(layout),
        "optimizer": {"type": "AdamW", "params": {
            "lr": hp.lr, "betas": list(hp.betas), "eps": hp.eps, "weight_decay": hp.weight_decay}},
        "scheduler": scheduler,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if layout.optimizer != "adamw":
        # DeepSpeed has no built-in SGD/Adafactor config type: pass the optimizer object to
        # deepspeed.initialize(optimizer=...) instead; the scheduler then needs it too.
        del config["optimizer"], config["scheduler"]
    if layout.precision == "bf16":
        config["bf16"] = {"enabled": True}
    elif layout.precision == "fp16":
        config["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16}
    if layout.checkpointing != "none":
        config["activation_checkpointing"] = {"partition_activations": False, "contiguous_memory_optimization": False}
    return config


_SCHEDULERS = {"WarmupCosineLR": "cosine", "WarmupDecayLR": "linear", "WarmupLR": "constant"}


def hyperparams_from_deepspeed_config(config: dict[str, Any], like: Hyperparams, *,
                                      where: str = "ds_config.json") -> Hyperparams:
    """The :class:`Hyperparams` a DeepSpeed ``config`` trains with, read back from its optimizer,
    scheduler and clipping; ``like`` supplies what the file does not say (its own values when the
    file says the same).

    A config is read back whole or refused: the result's :func:`deepspeed_config` must give the
    file's ``optimizer``, ``scheduler`` and ``gradient_clipping`` exactly, so a setting this module
    cannot express (another optimizer or scheduler type, a scheduler peak that disagrees with the
    optimizer's ``lr``) raises :class:`UsageError` naming ``where`` and the key.
    """
    def bad(key: str, msg: str) -> UsageError:
        return UsageError(f"{where}:{key}", msg)

    optimizer, scheduler = config.get("optimizer"), config.get("scheduler")
    if not isinstance(optimizer, dict) or optimizer.get("type") != "AdamW":
        raise bad("optimizer.type", f"{(optimizer or {}).get('type')!r}: the runner trains with AdamW only")
    if not isinstance(scheduler, dict) or scheduler.get("type") not in _SCHEDULERS:
        raise bad("scheduler.type", f"{(scheduler or {}).get('type')!r} is not one of {', '.join(_SCHEDULERS)}")
    opt, sched = dict(optimizer.get("params") or {}), dict(scheduler.get("params") or {})
    values: dict[str, Any] = {"schedule": _SCHEDULERS[scheduler["type"]]}
    try:
        for key in ("lr", "eps", "weight_decay"):
            if key in opt:
                values[key] = float(opt[key])
        if "betas" in opt:
            values["betas"] = tuple(float(b) for b in opt["betas"])
        if "gradient_clipping" in config:
            values["grad_clip"] = float(config["gradient_clipping"])
        if "total_num_steps" in sched:
            values["total_steps"] = int(sched["total_num_steps"])
        if "warmup_num_steps" in sched:
            # deepspeed_config writes max(warmup, 1): a file saying 1 where the spec says 0 is the same.
            warmup = int(sched["warmup_num_steps"])
            values["warmup_steps"] = like.warmup_steps if warmup == 1 and like.warmup_steps == 0 else warmup
        if "cos_min_ratio" in sched:
            values["min_lr_ratio"] = float(sched["cos_min_ratio"])
    except (TypeError, ValueError) as exc:
        raise bad("optimizer", f"unreadable value: {exc}") from None
    hp = replace(like, **values)
    if values["schedule"] != "cosine" and "warmup_max_lr" in sched and "lr" not in opt:
        hp = replace(hp, lr=float(sched["warmup_max_lr"]))
    hp.validate(prefix=f"{where}:")
    _check_read_back(config, deepspeed_config(Layout(), hp), bad)
    return hp


def _check_read_back(config: dict[str, Any], rebuilt: dict[str, Any], bad: Any) -> None:
    """Refuse ``config`` unless ``rebuilt`` (its reading, written again) gives its optimizer,
    scheduler and clipping exactly: whatever did not survive the reading would be half applied."""
    clip = rebuilt["gradient_clipping"]
    if config.get("gradient_clipping", clip) != clip:
        raise bad("gradient_clipping", f"{config.get('gradient_clipping')!r} cannot be read back (expected {clip})")
    for section in ("optimizer", "scheduler"):
        params = config[section].get("params") or {}
        for key, expected in rebuilt[section]["params"].items():
            got = params.get(key, expected)
            if (list(got) if isinstance(got, (list, tuple)) else got) != expected:
                raise bad(f"{section}.params.{key}", f"{got!r} disagrees with the rest of the file (which implies "
                                                     f"{expected!r}); edit both or neither")
        extra = sorted(set(params) - set(rebuilt[section]["params"]))
        if extra:
            raise bad(f"{section}.params.{extra[0]}", "is not a setting trainplan can apply; remove it")


def plan_deepspeed_config(plan: Any, hp: Hyperparams | None = None,
                          sources: dict[str, str] | None = None) -> dict[str, Any]:
    """The ``ds_config.json`` of a planned run (``plan``: a :class:`~trainplan.planner.Plan`, typed
    loosely because the plan module imports this one): the plan's own step count as the schedule's horizon,
    a warm-up of :data:`PLAN_WARMUP_FRACTION` of it, and ``hp``'s learning rate (``Hyperparams``'
    default when not given). The ``trainplan.sources`` key names where each of the three came from
    (DeepSpeed reads only the keys it knows)."""
    given = hp is not None
    hp = hp or Hyperparams()
    steps = plan.steps
    warmup = max(1, math.ceil(PLAN_WARMUP_FRACTION * steps))
    hp = replace(hp, total_steps=steps, warmup_steps=min(warmup, steps))
    tokens = "--tokens" if plan.tokens_source == "--tokens" else "the compute-optimal tokens (Chinchilla)"
    named = {
        "total_num_steps": f"the plan: {plan.tokens:,.0f} tokens from {tokens} / "
                           f"{plan.layout.tokens_per_step:,} tokens per step, rounded up = {steps:,} steps",
        "warmup_num_steps": f"{PLAN_WARMUP_FRACTION:.0%} of the plan's {steps:,} steps, rounded up = {hp.warmup_steps:,}",
        "lr": ("given" if given else "trainplan's default peak learning rate (Hyperparams.lr); "
               "not tuned for this model: search it or edit it") + f" = {hp.lr:g}",
        **(sources or {}),
    }
    return {**deepspeed_config(plan.layout, hp), "trainplan": {"sources": named}}
