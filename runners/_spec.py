"""The resolved, self-contained description of one training trial.

A :class:`TrialSpec` is what ``trainplan run`` builds from its flags (or ``--spec FILE``), what the
search builds for every sampled configuration, and what the training entry reads back from
``spec.json``. It holds typed planner values (:class:`~trainplan.planner.Layout`,
:class:`~trainplan.planner.Hyperparams`) so the DeepSpeed config is derived in one place
(:func:`trainplan.planner.deepspeed_config`) and never written by hand.

Pure Python: importing this module does not import torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from trainplan.errors import UsageError, close_matches
from trainplan.planner import (
    Hyperparams, Layout, LayoutSpace, deepspeed_config, hyperparams_from_deepspeed_config, load_model,
)
from trainplan.runners._device import gpu_present

__all__ = ["TrialSpec", "DEFAULT_DATA", "DEFAULT_HYPERPARAMS", "DEFAULT_LAYOUT", "RUNNER_CHECKPOINTING", "SPEC_FLAGS",
           "is_checkpoint", "launchable_space", "resolve_spec", "spec_default"]

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                 "pytorch_model.bin.index.json")

DEFAULT_DATA = "stdlib"
"""The built-in corpus: the running interpreter's standard-library sources, as bytes."""

DEFAULT_LAYOUT = Layout(gpus=1, micro_batch=16, grad_accum=1, seq_len=128, precision="fp32")
"""The default task's layout: 16 x 128 byte tokens per step on one rank, fp32 (the CPU default)."""


RUNNER_CHECKPOINTING = ("none", "full")
"""Checkpointing the runner applies (Hugging Face's whole-block hook); the planner also models
Megatron's selective and torchtitan's per-op modes, which a trial cannot run."""


def launchable_space(**changes: Any) -> LayoutSpace:
    """The recommender's search space restricted to layouts the runner can launch: data parallel
    (ZeRO) only, checkpointing none or full. ``changes`` set the other fields (``max_gpus``...)."""
    return LayoutSpace(tp=(1,), pp=(1,), checkpointing=RUNNER_CHECKPOINTING, **changes)


def is_checkpoint(ref: str) -> bool:
    """A folder holding ``config.json`` and weights is fine-tuned; anything else trains from scratch."""
    path = Path(os.path.expanduser(ref))
    return path.is_dir() and (path / "config.json").is_file() and any((path / f).exists() for f in _WEIGHT_FILES)


def _layout(value: Layout | Mapping[str, Any]) -> Layout:
    if isinstance(value, Layout):
        return value
    known = {f.name for f in fields(Layout)}
    for key in value:
        if key not in known:
            raise UsageError(f"layout.{key}", "unknown layout key" + close_matches(key, known))
    return dataclasses.replace(DEFAULT_LAYOUT, **dict(value))


DEFAULT_HYPERPARAMS = Hyperparams(lr=3e-3, warmup_steps=5, total_steps=100)
"""The default task's optimizer: a peak lr that suits a sub-million-parameter model, short warm-up."""


def _hyperparams(value: Hyperparams | Mapping[str, Any]) -> Hyperparams:
    if isinstance(value, Hyperparams):
        return value
    known = {f.name for f in fields(Hyperparams)}
    values = dict(value)
    for key in values:
        if key not in known:
            raise UsageError(f"hyperparams.{key}", "unknown hyperparameter" + close_matches(key, known))
    if "betas" in values:
        values["betas"] = tuple(float(b) for b in values["betas"])
    return dataclasses.replace(DEFAULT_HYPERPARAMS, **values)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialSpec:
    """One training trial, resolved: everything the training entry needs and nothing implicit."""

    model: str = "trainplan-tiny"
    """Preset name or ``config.json`` (trained from scratch), or a checkpoint folder (fine-tuned)."""
    data: str = DEFAULT_DATA
    """``stdlib`` (built-in corpus), a local ``.txt``/``.jsonl``/``.parquet`` file or folder of them,
    or ``hf:NAME`` for a ``datasets`` hub dataset (needs the network and ``datasets``)."""
    text_key: str = "text"
    """Field holding the text in JSONL records, Parquet columns and ``datasets`` rows."""
    tokenizer: str | None = None
    """Local Hugging Face tokenizer folder; ``None`` means byte-level tokens (vocabulary 256)."""
    max_data_bytes: int = 4_000_000
    """Cap on the text read (bytes), so startup stays fast on a large corpus."""
    eval_tokens: int = 16_384
    """Held-out tokens at the end of the corpus, the same for every trial whatever its batch layout."""
    steps: int = 100
    """Optimizer steps to run; also the learning-rate schedule's horizon."""
    layout: Layout = DEFAULT_LAYOUT
    """Parallel, batch and precision layout (``gpus`` is the rank count; on the CPU, processes)."""
    hyperparams: Hyperparams = DEFAULT_HYPERPARAMS
    """Optimizer and schedule; ``total_steps`` is always set to ``steps``."""
    dropout: float = 0.0
    """Dropout probability written into every dropout field the model config has."""
    seed: int = 0
    """Seeds the weight init, the data order and torch's RNG on every rank."""
    eval_every: int = 25
    """Evaluate on the held-out tokens every this many steps (and always after the last step)."""
    log_every: int = 1
    """Append a ``metrics.jsonl`` record every this many steps."""
    timeout_s: float | None = None
    """Wall-clock limit for the whole launch; past it the trial is stopped and marked ``timeout``."""
    gpu: str | None = None
    """GPU catalog name used for the planner's estimate in ``result.json`` (``None``: memory only)."""

    def __post_init__(self) -> None:
        # Accept plain dicts (from JSON or the search) and keep the schedule horizon == steps.
        layout = _layout(self.layout)
        hp = _hyperparams(self.hyperparams)
        if isinstance(self.steps, int) and self.steps >= 1:
            if hp.total_steps != self.steps:
                hp = dataclasses.replace(hp, total_steps=self.steps)
            if hp.warmup_steps == DEFAULT_HYPERPARAMS.warmup_steps > self.steps:
                hp = dataclasses.replace(hp, warmup_steps=self.steps)  # the default warm-up fits any run
        object.__setattr__(self, "layout", layout)
        object.__setattr__(self, "hyperparams", hp)

    # Validation -------------------------------------------------------------------------------
    def validate(self) -> TrialSpec:
        """Raise :class:`UsageError` naming the flag at fault; return self when sound."""
        for flag, value in (("--steps", self.steps), ("--eval-every", self.eval_every),
                            ("--log-every", self.log_every), ("--eval-tokens", self.eval_tokens),
                            ("--max-data-bytes", self.max_data_bytes)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UsageError(flag, f"must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise UsageError("--seed", f"must be a non-negative integer, got {self.seed!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise UsageError("--dropout", f"must lie in [0, 1), got {self.dropout}")
        if self.timeout_s is not None and not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise UsageError("--timeout", f"must be a positive number of seconds, got {self.timeout_s}")
        if self.eval_tokens < self.layout.seq_len:
            raise UsageError("--eval-tokens", f"{self.eval_tokens} is less than one sequence (--seq-len {self.layout.seq_len})")
        if not is_checkpoint(self.model):
            self.layout.validate(load_model(self.model))  # unknown presets fail here, before a launch
        else:
            self.layout.validate()
        if self.gpu is not None:
            from trainplan.planner import load_gpu

            try:
                load_gpu(self.gpu)
            except UsageError as exc:
                raise UsageError("--estimate-gpu", exc.message) from None
        if self.layout.tp > 1 or self.layout.pp > 1:
            raise UsageError("--tp" if self.layout.tp > 1 else "--pp",
                             "the runner trains data-parallel (ZeRO) layouts only; tensor/pipeline degree must be 1")
        if self.layout.optimizer != "adamw":
            raise UsageError("--optimizer", "the runner trains with AdamW only")
        # The planner also describes stacks the runner does not launch (issue 11's profiles).
        lay = self.layout
        for key, value, allowed in (("precision", lay.precision, ("fp32", "fp16", "bf16")),
                                    ("checkpointing", lay.checkpointing, RUNNER_CHECKPOINTING),
                                    ("framework", lay.framework, ("deepspeed",)), ("loss", lay.loss, ("default",)),
                                    ("cp", lay.cp, (1,)), ("pp_interleave", lay.pp_interleave, (1,)),
                                    ("sequence_parallel", lay.sequence_parallel, (False,))):
            if value not in allowed:
                raise UsageError(f"layout.{key}", f"the runner trains {', '.join(map(str, allowed))} only, got {value!r}")
        self.hyperparams.validate()
        return self

    # Derived ----------------------------------------------------------------------------------
    def ds_config(self) -> dict[str, Any]:
        """The DeepSpeed config of this trial (what ``ds_config.json`` holds)."""
        return deepspeed_config(self.layout, self.hyperparams)

    def with_ds_config(self, config: Mapping[str, Any], *, where: str = "ds_config.json") -> TrialSpec:
        """This trial as the engine config ``config`` trains it: the one source of every optimizer
        setting (lr, betas, eps, weight decay, schedule, clipping).

        ``cmd.txt`` invites editing ``ds_config.json`` by hand; such an edit applies whole (the
        returned spec's hyperparameters are the file's, so the weight decay the loop gives its
        parameter groups is the file's too) or is refused with a :class:`UsageError` naming the key:
        an optimizer or schedule the planner cannot read back, a schedule horizon other than
        ``steps``, or batch, ZeRO or precision keys that differ from the layout the loop feeds.
        """
        config = dict(config)
        hp = hyperparams_from_deepspeed_config(config, self.hyperparams, where=where)
        if hp.total_steps != self.steps:
            raise UsageError(f"{where}:scheduler.params.total_num_steps",
                             f"{hp.total_steps} differs from the trial's {self.steps} steps; edit steps in spec.json too")
        own = deepspeed_config(self.layout, hp)
        for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
            if config.get(key, own[key]) != own[key]:
                raise UsageError(f"{where}:{key}", f"{config[key]!r} differs from spec.json's layout ({own[key]}); "
                                                   "change the layout in spec.json instead")
        stage = (config.get("zero_optimization") or {}).get("stage", own["zero_optimization"]["stage"])
        if stage != self.layout.zero:
            raise UsageError(f"{where}:zero_optimization.stage", f"{stage!r} differs from spec.json's layout.zero "
                                                                 f"({self.layout.zero}); change spec.json instead")
        for precision in ("bf16", "fp16"):
            if bool((config.get(precision) or {}).get("enabled")) != (self.layout.precision == precision):
                raise UsageError(f"{where}:{precision}.enabled", f"disagrees with spec.json's layout.precision "
                                                                 f"({self.layout.precision}); change spec.json instead")
        return dataclasses.replace(self, hyperparams=hp)

    @property
    def tokens_per_step(self) -> int:
        return self.layout.tokens_per_step

    @property
    def total_tokens(self) -> int:
        """Training tokens of the whole trial (``steps`` x tokens per step)."""
        return self.steps * self.tokens_per_step

    # Serialization ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if hasattr(value, "to_dict") else value
        out["hyperparams"]["betas"] = list(out["hyperparams"]["betas"])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialSpec:
        """Build from a (partial) dict; unknown keys are errors naming the key."""
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise UsageError(f"spec.{key}", "unknown trial spec key" + close_matches(key, known))
        values = dict(data)
        try:
            return cls(**values)
        except TypeError as exc:  # a wrongly typed nested value
            raise UsageError("spec", str(exc)) from None

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> TrialSpec:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError("--spec", f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict):
            raise UsageError("--spec", f"{path} must hold one JSON object")
        return cls.from_dict(data)

    def with_(self, **changes: Any) -> TrialSpec:
        return dataclasses.replace(self, **changes)


# Precedence ---------------------------------------------------------------------------------------
SPEC_FLAGS: dict[str, tuple[str | None, str]] = {
    "model": (None, "model"), "data": (None, "data"), "text_key": (None, "text_key"),
    "tokenizer": (None, "tokenizer"), "steps": (None, "steps"), "dropout": (None, "dropout"),
    "seed": (None, "seed"), "eval_every": (None, "eval_every"), "eval_tokens": (None, "eval_tokens"),
    "log_every": (None, "log_every"), "max_data_bytes": (None, "max_data_bytes"),
    "timeout": (None, "timeout_s"), "estimate_gpu": (None, "gpu"),
    "gpus": ("layout", "gpus"), "zero": ("layout", "zero"), "offload": ("layout", "offload"),
    "seq_len": ("layout", "seq_len"), "micro_batch": ("layout", "micro_batch"),
    "grad_accum": ("layout", "grad_accum"), "precision": ("layout", "precision"),
    "attention": ("layout", "attention"),
    "lr": ("hyperparams", "lr"), "min_lr_ratio": ("hyperparams", "min_lr_ratio"),
    "weight_decay": ("hyperparams", "weight_decay"), "warmup_steps": ("hyperparams", "warmup_steps"),
    "schedule": ("hyperparams", "schedule"), "eps": ("hyperparams", "eps"),
    "grad_clip": ("hyperparams", "grad_clip"),
}
"""``trainplan run`` options that set one spec field: option name -> (section, field); section
None is the spec's top level. ``beta1``/``beta2`` (one field, ``betas``) and ``global_batch``
(derived: it sets ``grad_accum``) are handled by :func:`resolve_spec` itself."""


def spec_default(section: str | None, name: str) -> Any:
    """The default of one spec field (``section`` as in :data:`SPEC_FLAGS`)."""
    if section == "layout":
        return getattr(DEFAULT_LAYOUT, name)
    if section == "hyperparams":
        return getattr(DEFAULT_HYPERPARAMS, name)
    return next(f.default for f in fields(TrialSpec) if f.name == name)


def resolve_spec(flags: Mapping[str, Any], spec_file: str | Path | None = None, *, gpu: bool | None = None) -> TrialSpec:
    """The one precedence rule: command line (``flags``, by option name; None: not given) >
    ``spec_file`` > defaults. Returns a validated spec.

    The precision a spec does not state is bf16 where a GPU is present (``gpu``; detected when
    None), fp32 on the CPU. ``global_batch`` sets the accumulation by the planner's one rule
    (:meth:`~trainplan.planner.Layout.with_global_batch`), as in ``trainplan plan``: a ``grad_accum``
    flag given with it must be the one it implies (a spec file's ``grad_accum`` is overridden)."""
    gpu = gpu_present() if gpu is None else gpu
    base: dict[str, Any] = {}
    file_sets_precision = False
    if spec_file:
        base = TrialSpec.from_json(spec_file).to_dict()
        file_sets_precision = "precision" in json.loads(Path(spec_file).read_text()).get("layout", {})
    base.setdefault("layout", {})
    base.setdefault("hyperparams", {})
    for name, (section, key) in SPEC_FLAGS.items():
        value = flags.get(name)
        if value is not None:
            (base if section is None else base[section])[key] = value
    if flags.get("beta1") is not None or flags.get("beta2") is not None:
        betas = list(base["hyperparams"].get("betas", DEFAULT_HYPERPARAMS.betas))
        betas[0] = flags["beta1"] if flags.get("beta1") is not None else betas[0]
        betas[1] = flags["beta2"] if flags.get("beta2") is not None else betas[1]
        base["hyperparams"]["betas"] = betas
    if flags.get("precision") is None and not file_sets_precision:
        base["layout"]["precision"] = "bf16" if gpu else "fp32"
    spec = TrialSpec.from_dict(base)
    if flags.get("global_batch") is not None:
        spec.layout.validate()  # the rule multiplies the micro-batch: a spec file's must be a count first
        spec = spec.with_(layout=spec.layout.with_global_batch(flags["global_batch"], grad_accum=flags.get("grad_accum")))
    spec = spec.validate()
    if spec.layout.precision == "fp16" and not gpu:
        raise UsageError("--precision", "fp16 needs a GPU; use fp32 (or bf16) on the CPU")
    return spec
