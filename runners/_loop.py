"""The training loop of one trial: a Hugging Face causal LM driven by a DeepSpeed engine.

Runs on every rank (started by the ``deepspeed`` launcher through :mod:`trainplan.runners.train`).
All ranks agree once per optimizer step, in one tiny all-reduce, on the mean training loss and on
whether any rank was asked to stop, so they leave the loop at the same step and nobody is left
waiting in a collective.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainplan.runners._data import Corpus, load_corpus
from trainplan.runners._device import cpu_peak_growth, describe_device, reset_peak
from trainplan.runners._dist import init_distributed
from trainplan.runners._result import METRIC_KEYS, finite_or_none
from trainplan.runners._spec import TrialSpec, is_checkpoint

__all__ = ["Outcome", "build_model", "optimizer_settings", "train"]

# Config fields that hold a dropout probability in the Hugging Face families the planner knows.
_DROPOUT_KEYS = ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop",
                 "summary_first_dropout", "hidden_dropout_prob", "attention_probs_dropout_prob")
_ATTENTION = {"eager": "eager", "sdpa": "sdpa", "flash": "flash_attention_2"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How the loop ended, as rank 0 saw it."""

    status: str
    """``completed``, ``diverged`` or ``terminated``."""
    reason: str
    """Human text; empty when completed."""
    records: list[dict[str, Any]]
    """Every metrics record written."""
    diverged_at_step: int | None = None
    """The step whose loss was NaN/inf or exploded (``diverged`` only)."""
    loop_started: float = 0.0
    """``time.perf_counter()`` when the first step began: what came before is startup."""
    optimizer: dict[str, Any] | None = None
    """What the engine's optimizer really holds (:func:`optimizer_settings`): ``result.json``'s
    ``optimizer``, the check that every setting came from ``ds_config.json``."""


def optimizer_settings(engine: Any) -> dict[str, Any]:
    """Betas, eps and the weight decay of each parameter group of the optimizer DeepSpeed built
    (``engine.basic_optimizer``, the torch optimizer under any ZeRO wrapper)."""
    groups = engine.basic_optimizer.param_groups
    return {"type": type(engine.basic_optimizer).__name__, "betas": [float(b) for b in groups[0]["betas"]],
            "eps": float(groups[0]["eps"]), "weight_decay": [float(g["weight_decay"]) for g in groups]}


def build_model(spec: TrialSpec, vocab_size: int) -> Any:
    """The model to train: from a checkpoint folder, or freshly initialised from a config."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    attention = _ATTENTION[spec.layout.attention]
    if is_checkpoint(spec.model):
        path = os.path.expanduser(spec.model)
        config = AutoConfig.from_pretrained(path)
        _set_dropout(config, spec.dropout)
        model = AutoModelForCausalLM.from_pretrained(path, config=config, attn_implementation=attention,
                                                     dtype=torch.float32)
        if model.get_input_embeddings().num_embeddings < vocab_size:
            raise ValueError(f"the checkpoint's vocabulary ({model.get_input_embeddings().num_embeddings}) "
                             f"is smaller than the tokenizer's ({vocab_size})")
        return model
    from trainplan.planner import load_model

    cfg = dict(load_model(spec.model).hf_config)
    if spec.tokenizer is not None:
        cfg["vocab_size"] = vocab_size  # a from-scratch model takes the tokenizer's vocabulary
    elif cfg["vocab_size"] < vocab_size:
        raise ValueError(f"model vocabulary {cfg['vocab_size']} is smaller than the byte vocabulary 256; "
                         "pass --tokenizer or a model with vocab_size >= 256")
    config = AutoConfig.for_model(**cfg)
    _set_dropout(config, spec.dropout)
    torch.manual_seed(spec.seed)  # identical initial weights for every layout of the same seed
    # Initialise on the rank's GPU where there is one: the CPU's normal_() takes ~10 s per 150M
    # parameters, longer than a short trial's training; DeepSpeed then finds the weights in place.
    where = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else "cpu"
    with torch.device(where):
        return AutoModelForCausalLM.from_config(config, attn_implementation=attention, dtype=torch.float32)


def _set_dropout(config: Any, p: float) -> None:
    for key in _DROPOUT_KEYS:
        if hasattr(config, key):
            setattr(config, key, p)


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    # No decay on norms and biases (1-D tensors), as in GPT-3 / nanoGPT's configure_optimizers.
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    plain = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def _peak_memory(device: Any) -> int:
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return cpu_peak_growth()  # peak allocated bytes (or RSS) since the model build began (docs/protocol.md)


def _peak_reserved(device: Any) -> int | None:
    import torch

    # What the caching allocator held from the driver (allocated + cached blocks); no CPU equivalent.
    return int(torch.cuda.max_memory_reserved(device)) if device.type == "cuda" else None


def _evaluate(engine: Any, corpus: Corpus, batch: int) -> float:
    import torch

    engine.eval()
    total, blocks = 0.0, 0
    with torch.no_grad():
        for ids in corpus.eval_batches(batch):
            ids = ids.to(engine.device)
            total += float(engine(input_ids=ids, labels=ids).loss) * ids.shape[0]
            blocks += ids.shape[0]
    engine.train()
    return total / blocks


def train(spec: TrialSpec, ds_config: dict[str, Any], *, stop_requested: Callable[[], bool],
          emit: Callable[[dict[str, Any]], None]) -> Outcome:
    """Train ``spec`` with the engine configured by ``ds_config``; ``emit`` gets each record (rank 0)."""
    import deepspeed
    import torch
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator

    init_distributed()
    rank, world = dist.get_rank(), dist.get_world_size()
    layout = spec.layout
    if world != layout.dp:
        raise ValueError(f"the launcher started {world} ranks but the layout asks for {layout.dp} (--gpus)")
    if not torch.cuda.is_available() and "OMP_NUM_THREADS" not in os.environ:
        # Ranks on one CPU share its cores; oversubscribed BLAS threads make every rank slower.
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    torch.manual_seed(spec.seed)
    corpus = load_corpus(data=spec.data, text_key=spec.text_key, tokenizer=spec.tokenizer,
                         max_bytes=spec.max_data_bytes, eval_tokens=spec.eval_tokens,
                         seq_len=layout.seq_len, seed=spec.seed)
    # Device first (its matmul peak is measured once per machine), then peak memory counts from here.
    here = torch.device(get_accelerator().device_name(int(os.environ.get("LOCAL_RANK", "0"))))
    describe_device(here, world)
    if not is_checkpoint(spec.model):
        with torch.device("meta"):  # imports the modeling code (~130 MB) before peak memory counts
            build_model(spec, corpus.vocab_size)
    reset_peak(here)
    model = build_model(spec, corpus.vocab_size)
    if layout.checkpointing == "full":  # recompute every block in backward (Hugging Face's own hook)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=_param_groups(model, spec.hyperparams.weight_decay), config=ds_config)
    device = engine.device
    settings = optimizer_settings(engine)
    # ZeRO-0 in fp32 clips with torch's clip_grad_norm_ and keeps no norm
    # (deepspeed/runtime/engine.py, clip_fp32_gradients): measure it ourselves there.
    plain_grads = layout.zero == 0 and layout.precision == "fp32"

    micro, accum, batch = layout.micro_batch, layout.grad_accum, layout.global_batch
    tokens_per_step = batch * layout.seq_len
    # A loss far above uniform guessing (ln V) means the run has blown up even if still finite.
    explode_at = 4.0 * math.log(corpus.vocab_size)
    records: list[dict[str, Any]] = []
    # Step 0: the untrained model's held-out loss, the start every learning curve is judged from.
    initial = {key: None for key in METRIC_KEYS} | {"step": 0, "tokens": 0, "elapsed_s": 0.0,
                                                   "eval_loss": _evaluate(engine, corpus, micro),
                                                   "peak_mem_bytes": _peak_memory(device),
                                                   "peak_reserved_bytes": _peak_reserved(device)}
    records.append(initial)
    if rank == 0:
        emit(initial)
    start = time.perf_counter()
    interval_start, interval_tokens, eval_time = start, 0, 0.0
    cpu_start, eval_cpu = time.process_time(), 0.0  # rank 0's CPU-seconds: contention-free timing (issue 13)
    for step in range(1, spec.steps + 1):
        loss_sum = torch.zeros((), device=device)
        own_norm = None
        for k in range(accum):
            # Same global block indices for any (ranks x accumulation) split of the batch.
            ids = corpus.train_batch((step - 1) * batch + (k * world + rank) * micro, micro).to(device)
            loss = engine(input_ids=ids, labels=ids).loss
            engine.backward(loss)
            if k == accum - 1 and plain_grads:
                own_norm = _total_norm(engine.module)  # gradients are already averaged over ranks
            engine.step()
            loss_sum += loss.detach().float()
        agreed = torch.stack([loss_sum / accum, torch.tensor(float(stop_requested()), device=device)])
        dist.all_reduce(agreed)
        train_loss, stop = float(agreed[0]) / world, float(agreed[1]) > 0
        interval_tokens += tokens_per_step
        diverged = not math.isfinite(train_loss) or train_loss > explode_at
        last = step == spec.steps or stop or diverged
        eval_loss = None
        if not diverged and (step % spec.eval_every == 0 or last):
            t0, c0 = time.perf_counter(), time.process_time()
            eval_loss = _evaluate(engine, corpus, micro)
            eval_time += time.perf_counter() - t0
            eval_cpu += time.process_time() - c0
        if step % spec.log_every == 0 or last or eval_loss is not None:
            now = time.perf_counter()
            record = {
                "step": step,
                "tokens": step * tokens_per_step,
                "elapsed_s": round(now - start, 4),
                "train_loss": finite_or_none(train_loss),
                "eval_loss": eval_loss,
                "lr": float(engine.get_lr()[0]),
                "grad_norm": finite_or_none(own_norm if plain_grads else _grad_norm(engine)),
                "tokens_per_s": interval_tokens / max(now - interval_start - eval_time, 1e-9),
                "cpu_s": round(time.process_time() - cpu_start - eval_cpu, 4),
                "peak_mem_bytes": _peak_memory(device),
                "peak_reserved_bytes": _peak_reserved(device),
            }
            interval_start, interval_tokens, eval_time = now, 0, 0.0
            cpu_start, eval_cpu = time.process_time(), 0.0
            records.append(record)
            if rank == 0:
                emit(record)
        if diverged:
            what = "NaN/inf" if not math.isfinite(train_loss) else f"{train_loss:.3g} > {explode_at:.3g} (4 ln V)"
            return Outcome(status="diverged", reason=f"training loss {what} at step {step}",
                           records=records, diverged_at_step=step, loop_started=start, optimizer=settings)
        if stop:
            return Outcome(status="terminated", reason=f"stopped by a signal after step {step}",
                           records=records, loop_started=start, optimizer=settings)
    return Outcome(status="completed", reason="", records=records, loop_started=start, optimizer=settings)


def _total_norm(module: Any) -> float:
    import torch

    grads = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


def _grad_norm(engine: Any) -> float | None:
    norm = engine.get_global_grad_norm()
    if norm is None:
        return None
    return float(norm.item() if hasattr(norm, "item") else norm)
