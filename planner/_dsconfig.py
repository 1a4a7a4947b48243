"""A ready DeepSpeed config for a layout and a set of optimizer hyperparameters.

Keys follow the DeepSpeed configuration reference (https://www.deepspeed.ai/docs/config-json/):
batch sizes, ``zero_optimization`` (stage, offload_optimizer, offload_param), ``bf16``/``fp16``,
``gradient_clipping``, an AdamW ``optimizer`` and a Warmup* ``scheduler``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from trainplan.errors import UsageError
from trainplan.planner._layout import Layout

__all__ = ["Hyperparams", "SCHEDULES", "deepspeed_config"]

SCHEDULES = ("cosine", "linear", "constant")


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


def deepspeed_config(layout: Layout, hp: Hyperparams | None = None) -> dict[str, Any]:
    """The ``ds_config.json`` for ``layout`` trained with ``hp``."""
    hp = hp or Hyperparams()
    zero: dict[str, Any] = {"stage": layout.zero}
    if layout.zero >= 1:
        zero.update(overlap_comm=layout.zero >= 2, contiguous_gradients=True, reduce_bucket_size=int(5e8))
    if layout.zero == 3:
        zero.update(stage3_prefetch_bucket_size=int(5e7), stage3_param_persistence_threshold=int(1e5),
                    stage3_max_live_parameters=int(1e9), stage3_gather_16bit_weights_on_model_save=True)
    if layout.offload != "none":
        target = {"device": layout.offload, "pin_memory": True}
        if layout.offload == "nvme":
            target["nvme_path"] = "/local_nvme"
        zero["offload_optimizer"] = dict(target)
        if layout.zero == 3:
            zero["offload_param"] = dict(target)
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
        "zero_optimization": zero,
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
