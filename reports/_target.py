"""The run the report plans for: the best trial's model and settings on the target hardware.

The sweep trains a small budget on whatever hardware it had; the decision is about the full run
on the target GPU. The target takes the model, layout and hyperparameters of the best trial, the
GPU named by ``--gpu`` (default: the sweep's ``hardware.gpu``) and the token budget named by
``--tokens`` (default: the planner's compute-optimal tokens for the model).

A scale-up target (another, larger model) is what ``trainplan scale`` decided: its ``scale.json``
(beside the study, in ``<run-dir>/target/`` by default) is read back by :func:`read_scale_decision`;
the report's decision summary is then about that run, and the best trial moves to its own section.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainplan.errors import UsageError
from trainplan.reports._records import StudyRecord, TrialRecord

if TYPE_CHECKING:
    from trainplan.planner import GPUSpec, Hyperparams, Layout, ModelSpec

__all__ = ["SCALE_DECISION_FILE", "Target", "read_scale_decision", "resolve_target", "target_gpu_name"]

SCALE_DECISION_FILE = "target/scale.json"
"""Where ``trainplan scale --run-dir R`` writes its decision by default, relative to R (the report's folder)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """What the planner views and the recommendation are computed for."""

    model: ModelSpec
    """The model the sweep trained."""
    layout: Layout
    """The best trial's layout (the planner varies GPUs, ZeRO stage and micro-batch around it)."""
    hyperparams: Hyperparams
    """The best trial's optimizer settings (written into the recommended ds_config)."""
    gpu: GPUSpec
    """Target hardware."""
    tokens: float | None
    """Token budget of the full run; None means the compute-optimal tokens for the model."""
    spec: dict[str, Any] = field(default_factory=dict)
    """The best trial's resolved config (becomes the recommended run's spec.json)."""


def target_gpu_name(study: StudyRecord, gpu: str | None) -> str | None:
    """``--gpu`` if given, else the sweep's ``hardware.gpu``."""
    if gpu:
        return gpu
    hardware = study.sweep.get("hardware") or {}
    return str(hardware["gpu"]) if isinstance(hardware, dict) and hardware.get("gpu") else None


def _pick(cls: type, values: Any) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in dict(values or {}).items() if k in names}


def resolve_target(study: StudyRecord, *, gpu: str | None = None, tokens: float | None = None,
                   trial: TrialRecord | None = None) -> Target | str:
    """The :class:`Target`, or a sentence saying why there is none (shown in the report)."""
    from trainplan.planner import Hyperparams, Layout, load_gpu, load_model

    trial = trial or study.best
    if trial is None:
        return "no completed trial yet, so there is no configuration to plan for"
    if not trial.config.get("model"):
        return f"trial {trial.number} records no model in its config"
    name = target_gpu_name(study, gpu)
    if name is None:
        return "no target GPU: pass --gpu (the sweep file names no hardware.gpu)"
    gpu_spec = load_gpu(name)  # an unknown name is the user's --gpu: let the UsageError through
    try:
        model = load_model(str(trial.config["model"]))
        layout = Layout(**_pick(Layout, trial.config.get("layout"))).validate(model)
        hp_values = _pick(Hyperparams, trial.config.get("hyperparams"))
        if "betas" in hp_values:
            hp_values["betas"] = tuple(hp_values["betas"])
        hp = Hyperparams(**hp_values)
    except (UsageError, TypeError) as exc:
        return f"cannot rebuild trial {trial.number}'s configuration: {exc}"
    if tokens is not None and tokens <= 0:
        raise UsageError("--tokens", f"must be positive, got {tokens:g}")
    return Target(model=model, layout=layout, hyperparams=hp, gpu=gpu_spec, tokens=tokens, spec=dict(trial.config))


def read_scale_decision(path: Path) -> dict[str, Any] | None:
    """``trainplan scale``'s ``scale.json`` at ``path`` (None when absent); a file that is not one is
    an error naming it, not a silently different summary."""
    import json

    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(str(path), f"cannot read the scale decision: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "scale-up" or not {"target", "layout", "fit"} <= doc.keys():
        raise UsageError(str(path), "not a scale decision written by `trainplan scale` (kind scale-up)")
    return doc
