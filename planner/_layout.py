"""How a training run is laid out on GPUs: the parallel, batch and precision choices.

One :class:`Layout` is what ``trainplan plan`` evaluates, what ``--recommend`` enumerates, and what
the runner turns into a DeepSpeed config. ``problems`` is the one place that states what makes a
layout unsound for a model (``validate`` raises the first; the recommender skips any layout that
has one); its messages name the flag the user typed. ``with_global_batch`` is the one rule that
turns a global batch into gradient accumulation, for ``plan``, ``run`` and the search alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from trainplan.errors import UsageError
from trainplan.planner._model import ModelSpec

__all__ = ["Layout", "PRECISIONS", "OFFLOADS", "CHECKPOINTING", "ATTENTION", "OPTIMIZERS", "ZERO_STAGES",
           "FRAMEWORKS", "LOSSES"]

ZERO_STAGES = (0, 1, 2, 3)
"""DeepSpeed ZeRO stages: 0 none, 1 optimizer states, 2 + gradients, 3 + parameters partitioned."""
PRECISIONS = ("fp32", "fp16", "bf16", "bf16-pure")
OFFLOADS = ("none", "cpu", "nvme")
CHECKPOINTING = ("none", "selective", "selective-op", "full")
ATTENTION = ("eager", "sdpa", "flash")
OPTIMIZERS = ("adamw", "sgd", "adafactor")
FRAMEWORKS = ("deepspeed", "fsdp", "megatron", "megatron-deepspeed")
LOSSES = ("default", "fused", "chunked")


@dataclass(frozen=True, slots=True, kw_only=True)
class Layout:
    """Parallelism, batch and numerics of one training run."""

    gpus: int = 1
    """Total GPUs (data x tensor x pipeline)."""
    gpus_per_node: int = 8
    """GPUs in one node; collectives beyond it use the inter-node network."""
    zero: int = 0
    """DeepSpeed ZeRO stage: 0 none, 1 optimizer states, 2 + gradients, 3 + parameters partitioned."""
    offload: str = "none"
    """Move optimizer states (and, with ZeRO-3, parameters) to ``cpu`` or ``nvme``."""
    tp: int = 1
    """Tensor-parallel degree (Megatron-style column/row split of every block)."""
    pp: int = 1
    """Pipeline-parallel degree (layers split into this many stages)."""
    micro_batch: int = 1
    """Sequences per GPU per forward/backward."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    seq_len: int = 2048
    """Tokens per sequence."""
    precision: str = "bf16"
    """Training precision: ``fp32``, ``fp16``/``bf16`` mixed precision with fp32 master weights, or
    ``bf16-pure`` (bf16 weights, gradients and optimizer states, no fp32 master: torchtune)."""
    checkpointing: str = "none"
    """Activation checkpointing: ``none``, ``selective`` (attention recomputed, Megatron),
    ``selective-op`` (torchtitan's per-op policy: every other matmul recomputed) or ``full``."""
    attention: str = "sdpa"
    """Attention kernel: ``eager`` stores the score matrix; ``sdpa``/``flash`` do not."""
    optimizer: str = "adamw"
    """``adamw`` (two fp32 moments), ``sgd`` (momentum) or ``adafactor`` (factored second moment)."""
    framework: str = "deepspeed"
    """Training stack whose buffers and kernels the memory estimate models: ``deepspeed`` (HF
    model, DeepSpeed engine), ``fsdp`` (FSDP2/torchtitan, fused kernels), ``megatron``, or
    ``megatron-deepspeed`` (Megatron's kernels, DeepSpeed's ZeRO engine)."""
    cp: int = 1
    """Context-parallel degree (torchtitan CP, DeepSpeed Ulysses): each sequence split over cp GPUs."""
    pp_interleave: int = 1
    """Model chunks per pipeline stage (interleaved 1F1B when > 1)."""
    sequence_parallel: bool = False
    """Megatron sequence parallelism: norms, dropouts and residuals split by ``tp`` too."""
    loss: str = "default"
    """``default`` (the framework's cross-entropy over full logits), ``fused`` (one kernel on the
    low-precision logits, no fp32 copies: flash-attn's) or ``chunked`` (a fused/chunked linear
    cross-entropy that never holds the whole logits tensor)."""

    # Derived quantities ------------------------------------------------------------------
    @property
    def dp(self) -> int:
        """Data-parallel degree."""
        return self.gpus // (self.tp * self.pp * self.cp)

    @property
    def nodes(self) -> int:
        return -(-self.gpus // self.gpus_per_node)

    @property
    def global_batch(self) -> int:
        """Sequences per optimizer step."""
        return self.micro_batch * self.grad_accum * self.dp

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len

    @property
    def mixed(self) -> bool:
        return self.precision != "fp32"

    def with_(self, **changes: Any) -> Layout:
        """This layout with ``changes``: ``dataclasses.replace`` spelled out, since ``--recommend`` makes
        one or two for every candidate and replace's per-field bookkeeping costs as much as the layout."""
        return type(self)(**({name: getattr(self, name) for name in _FIELDS} | changes))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_global_batch(self, global_batch: int, *, flag: str = "--global-batch",
                          grad_accum: int | None = None) -> Layout:
        """This layout with the gradient accumulation that reaches ``global_batch`` sequences per step.

        The one rule (``plan``, ``run`` and the search): the global batch is micro-batch x
        accumulation x data-parallel ranks exactly, so it must be a multiple of micro-batch x dp;
        anything else is refused, naming ``flag``, never rounded. A ``grad_accum`` the user gave as
        well must be the one this implies.
        """
        per_step = self.micro_batch * self.dp
        if not isinstance(global_batch, int) or isinstance(global_batch, bool) or global_batch < 1 or per_step < 1 or global_batch % per_step:
            raise UsageError(flag, f"{global_batch!r} is not a positive multiple of --micro-batch x data-parallel "
                                   f"ranks = {self.micro_batch} x {self.dp} = {per_step}")
        accum = global_batch // per_step
        if grad_accum is not None and grad_accum != accum:
            raise UsageError("--grad-accum", f"{grad_accum} disagrees with {flag} {global_batch} "
                                             f"(which implies {accum}); give one of them")
        return self.with_(grad_accum=accum)

    def with_global_batch_at_least(self, global_batch: int) -> Layout:
        """This layout with the fewest accumulation steps (at least one) whose global batch is at
        least ``global_batch``: the rounding-up variant of :meth:`with_global_batch`, for what-if
        views that vary the GPU count at a fixed micro-batch (the report's scaling figures), where
        an exact multiple rarely exists. Runs and searches use the exact rule."""
        per_step = self.micro_batch * self.dp
        return self.with_(grad_accum=max(1, -(-global_batch // per_step)))

    # Validation ---------------------------------------------------------------------------
    def problems(self, model: ModelSpec | None = None) -> list[UsageError]:
        """Every reason this layout cannot train ``model``, in the order ``validate`` checks them."""
        out: list[UsageError] = []
        for flag, value in (
            ("--gpus", self.gpus), ("--gpus-per-node", self.gpus_per_node), ("--tp", self.tp),
            ("--pp", self.pp), ("--micro-batch", self.micro_batch), ("--grad-accum", self.grad_accum),
            ("--seq-len", self.seq_len), ("--pp-interleave", self.pp_interleave), ("--cp", self.cp),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:  # JSON true is no count
                out.append(UsageError(flag, f"must be a positive integer, got {value!r}"))
        if out:  # the divisibility rules below need positive integers
            return out
        choices = {
            "--zero": (self.zero, ZERO_STAGES), "--offload": (self.offload, OFFLOADS),
            "--precision": (self.precision, PRECISIONS), "--checkpointing": (self.checkpointing, CHECKPOINTING),
            "--attention": (self.attention, ATTENTION), "--optimizer": (self.optimizer, OPTIMIZERS),
            "--framework": (self.framework, FRAMEWORKS), "--loss": (self.loss, LOSSES),
        }
        for flag, (value, allowed) in choices.items():
            if value not in allowed:
                out.append(UsageError(flag, f"{value!r} is not one of {', '.join(map(str, allowed))}"))
        if self.gpus % (self.tp * self.pp * self.cp):
            out.append(UsageError("--gpus", f"{self.gpus} GPUs is not a multiple of --tp x --pp x --cp = {self.tp * self.pp * self.cp}"))
        if self.seq_len % self.cp:
            out.append(UsageError("--cp", f"{self.cp} does not divide --seq-len {self.seq_len}"))
        if self.tp > self.gpus_per_node:
            out.append(UsageError("--tp", f"{self.tp} exceeds --gpus-per-node {self.gpus_per_node}; tensor parallelism stays inside a node"))
        if self.offload != "none" and self.zero == 0:
            out.append(UsageError("--offload", f"{self.offload} offload needs --zero 1, 2 or 3 (DeepSpeed offloads partitioned states)"))
        if self.offload == "nvme" and self.zero != 3:
            out.append(UsageError("--offload", "nvme offload needs --zero 3"))
        if self.pp_interleave > 1 and self.pp == 1:
            out.append(UsageError("--pp-interleave", "needs --pp > 1 (it splits each pipeline stage into chunks)"))
        if self.sequence_parallel and self.tp == 1:
            out.append(UsageError("--sequence-parallel", "needs --tp > 1 (it splits along the tensor-parallel group)"))
        if self.pp > 1 and self.zero > 1 and self.framework in ("deepspeed", "megatron-deepspeed"):
            out.append(UsageError("--zero", f"stage {self.zero} does not combine with --pp {self.pp}; DeepSpeed pipeline parallelism supports ZeRO 0 and 1"))
        if model is not None:
            if self.tp > 1 and model.num_heads % self.tp:
                out.append(UsageError("--tp", f"{self.tp} does not divide the model's {model.num_heads} attention heads"))
            if self.tp > 1 and model.num_kv_heads % self.tp and self.tp % model.num_kv_heads:
                out.append(UsageError("--tp", f"{self.tp} and the model's {model.num_kv_heads} kv-heads do not divide one another"))
            if self.pp * self.pp_interleave > model.num_layers:
                if self.pp_interleave > 1:
                    out.append(UsageError("--pp-interleave", f"{self.pp} stages x {self.pp_interleave} chunks exceed the model's {model.num_layers} layers"))
                else:
                    out.append(UsageError("--pp", f"{self.pp} pipeline stages exceed the model's {model.num_layers} layers"))
            if self.seq_len > model.max_position_embeddings and model.learned_positions:
                out.append(UsageError("--seq-len", f"{self.seq_len} exceeds the model's {model.max_position_embeddings} learned positions"))
        return out

    def validate(self, model: ModelSpec | None = None) -> Layout:
        """Raise the first of :meth:`problems` (a :class:`UsageError` naming the flag); return self when sound."""
        found = self.problems(model)
        if found:
            raise found[0]
        return self


_FIELDS = tuple(f.name for f in fields(Layout))
