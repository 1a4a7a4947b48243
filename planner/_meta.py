"""Any causal LM transformers can build: parameters and FLOPs measured on the meta device.

This is the one planner module that imports torch and transformers, and only when a config's
``model_type`` is outside ``SUPPORTED_FAMILIES`` (``from_hf_config`` imports it lazily); the
analytic families never load it. The model is built by ``AutoModelForCausalLM.from_config``
under ``torch.device("meta")``: real shapes, no memory, no weights, no download.

What is exact and what is approximated:

- Parameters (``ParamCounts``): ``total``, ``embedding`` (input embedding plus any learned
  position table), ``lm_head``, ``final_norm``, ``norms_and_biases``, ``per_layer*`` (the largest
  block) and ``per_expert`` are read off the built model's tensors: exact. ``active`` removes the
  routed experts a token skips (``num_experts - num_experts_per_tok`` of every ``*experts``
  module), exact for the stacked-expert MoE layers of transformers 5. The tensor-parallel split
  (``per_layer_tp_*``) is approximated: one-dimensional tensors and routers replicated, the rest
  sharded.
- FLOPs (``counted``): ``torch.utils.flop_counter.FlopCounterMode`` over a real forward and
  backward of one sequence at the plan's length, on meta tensors, with transformers' eager
  attention (every matmul visible to the counter) and ``batched_mm`` experts (each token's k
  experts). The fused-kernel convention of the analytic path (``ATTENTION_KERNELS``) is applied
  with the attention core computed from the config shapes; full checkpointing adds the measured
  forward of every block.
- The spec's shape fields (hidden size, heads, head_dim, MLP width, norm kind, gated MLP, biases)
  feed the memory estimate: read from the config where it has them (``get_text_config()``), else
  guessed from the modules (RMSNorm by class name, gated MLP by a ``gate`` projection). Memory of
  an architecture the analytic families do not describe is therefore an approximation; the
  parameter and FLOP counts are not.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

from trainplan.errors import UsageError
from trainplan.planner._modelspec import SUPPORTED_FAMILIES, ModelSpec

__all__ = ["MetaFlops", "meta_flops", "meta_spec"]

_EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
_INNER_KEYS = ("intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size", "ffn_config")


def _refuse(model_type: str, why: str) -> UsageError:
    return UsageError(
        "--model",
        f"model_type {model_type!r} {why}; the analytic families are {', '.join(SUPPORTED_FAMILIES)}, and any "
        f"other must be a causal LM that transformers {transformers.__version__} builds",
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """transformers' advice while building a shape-only model (token ids outside a tiny vocab,
    kernels not installed) is not the plan's output: keep stderr to trainplan's own lines."""
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers.logging.set_verbosity(level)


@lru_cache(maxsize=8)  # a plan and --recommend ask about the same model many times
def _build(cfg_json: str) -> Any:
    with _quiet():
        return _build_model(cfg_json)


def _build_model(cfg_json: str) -> Any:
    cfg = json.loads(cfg_json)
    model_type = cfg["model_type"]
    try:
        config = transformers.AutoConfig.for_model(**cfg)
    except (ValueError, KeyError) as exc:
        raise _refuse(model_type, f"is not known ({str(exc).splitlines()[0][:120]})") from None
    with torch.device("meta"):
        try:
            return transformers.AutoModelForCausalLM.from_config(
                config, attn_implementation="eager", experts_implementation="batched_mm")
        except (TypeError, ValueError) as exc:
            if "Unrecognized configuration class" in str(exc):
                raise _refuse(model_type, "is not a causal language model (no AutoModelForCausalLM)") from None
            try:  # a model that takes no experts_implementation
                return transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
            except Exception as again:  # transformers' own shape checks: the user's config to fix
                raise _refuse(model_type, f"cannot be built: {str(again).splitlines()[0][:160]}") from None
        except Exception as exc:
            raise _refuse(model_type, f"cannot be built: {str(exc).splitlines()[0][:160]}") from None


def _key(cfg: Mapping[str, Any]) -> str:
    return json.dumps(dict(cfg), sort_keys=True, default=str)


def _blocks(model: Any, num_layers: int | None) -> tuple[str, Any]:
    """``(qualified name, ModuleList)`` of the transformer blocks: the list of ``num_layers``
    modules, else the longest list."""
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m)]
    if not lists:
        raise _refuse(model.config.model_type, "has no list of blocks to count")
    exact = [x for x in lists if len(x[1]) == num_layers]
    return exact[0] if exact else max(lists, key=lambda x: len(x[1]))


def _numel(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def _first(cfg: Any, keys: tuple[str, ...]) -> Any:
    for k in keys:
        value = getattr(cfg, k, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _measured_params(model: Any, text: Any, blocks: Any, experts: int, per_token: int) -> dict[str, int]:
    emb = model.get_input_embeddings().weight
    head_module = model.get_output_embeddings()
    head = head_module.weight if head_module is not None else emb
    positions = sum(m.weight.numel() for m in model.modules()
                    if isinstance(m, torch.nn.Embedding) and m.weight is not emb
                    and m.weight.shape[-1] == text.hidden_size)
    block = max(blocks, key=_numel)
    vectors = sum(p.numel() for p in block.parameters() if p.ndim == 1)
    routers = sum(p.numel() for n, p in block.named_parameters()
                  if experts > 1 and p.ndim == 2 and p.shape[0] == experts and "experts" not in n)
    # The norm after the last block: norm modules among the blocks' siblings.
    parent = next(m for m in model.modules() if any(c is blocks for c in m.children()))
    final_norm = sum(_numel(c) for c in parent.children() if "norm" in type(c).__name__.lower())
    expert_modules = [m for b in blocks for n, m in b.named_modules() if n.rsplit(".", 1)[-1] == "experts"]
    unused = sum(_numel(m) * (experts - per_token) // experts for m in expert_modules) if experts > 1 else 0
    total = sum(p.numel() for p in model.parameters())  # parameters() counts a tied head once
    embedding = emb.numel() + positions
    return dict(
        total=total, embedding=embedding, non_embedding=total - embedding,
        lm_head=0 if head is emb else head.numel(), per_layer=_numel(block),
        per_layer_matrix=_numel(block) - vectors, per_layer_vector=vectors,
        per_layer_tp_sharded=_numel(block) - vectors - routers, per_layer_tp_replicated=vectors + routers,
        per_expert=_numel(expert_modules[0]) // experts if expert_modules and experts > 1 else 0,
        final_norm=final_norm, norms_and_biases=sum(p.numel() for p in model.parameters() if p.ndim == 1),
        active=total - unused,
    )


def meta_spec(cfg: Mapping[str, Any], name: str) -> ModelSpec:
    """A :class:`ModelSpec` of any causal LM transformers builds, counted on the meta device."""
    model = _build(_key(cfg))
    text = model.config.get_text_config()
    d = _first(text, ("hidden_size", "d_model", "n_embd"))
    if d is None:
        raise _refuse(cfg["model_type"], "has no hidden_size in its config")
    layers_name, blocks = _blocks(model, _first(text, ("num_hidden_layers", "n_layer", "num_layers")))
    heads = _first(text, ("num_attention_heads", "n_head")) or 1
    kv_heads = _first(text, ("num_key_value_heads", "num_kv_heads")) or heads
    if heads % kv_heads:
        kv_heads = heads
    experts = _first(text, _EXPERT_KEYS) or 1
    per_token = min(_first(text, ("num_experts_per_tok", "moe_topk", "top_k")) or 1, experts)
    block = max(blocks, key=_numel)
    names = [n for n, _ in block.named_parameters()]
    vocab = model.get_input_embeddings().weight.shape[0]
    counts = _measured_params(model, text, blocks, experts, per_token)
    head_dim = _first(text, ("head_dim",)) or max(d // heads, 1)
    mla: dict[str, int] = {}
    if _first(text, ("kv_lora_rank",)):  # multi-head latent attention (DeepSeek-style configs)
        rope, nope = _first(text, ("qk_rope_head_dim",)) or 0, _first(text, ("qk_nope_head_dim",)) or 0
        head_dim = rope + nope or head_dim
        mla = dict(kv_lora_rank=text.kv_lora_rank, q_lora_rank=_first(text, ("q_lora_rank",)) or 0,
                   qk_rope_head_dim=rope, v_head_dim=_first(text, ("v_head_dim",)) or 0)
    return ModelSpec(
        name=name, family=cfg["model_type"], vocab_size=vocab, hidden_size=d, num_layers=len(blocks),
        num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim, **mla,
        intermediate_size=_first(text, _INNER_KEYS) or 4 * d,
        max_position_embeddings=_first(text, ("max_position_embeddings", "n_positions")) or 2048,
        tie_word_embeddings=counts["lm_head"] == 0, gated_mlp=any("gate" in n for n in names),
        norm="rmsnorm" if any("rmsnorm" in type(m).__name__.lower() for m in block.modules()) else "layernorm",
        qkv_bias=any(n.endswith("bias") and any(k in n for k in ("q_proj", "qkv", "query", "c_attn")) for n in names),
        out_bias=any(n.endswith(("o_proj.bias", "out_proj.bias", "dense.bias")) for n in names),
        mlp_bias=any(n.endswith(("down_proj.bias", "fc2.bias", "c_proj.bias")) for n in names),
        learned_positions=counts["embedding"] > model.get_input_embeddings().weight.numel(),
        num_experts=experts, experts_per_token=per_token,
        source="meta-device", exact_params=tuple(sorted(counts.items())), hf_config=dict(cfg),
    )


@dataclass(frozen=True, slots=True)
class MetaFlops:
    """FlopCounterMode's figures for one sequence (batch 1) of the model, eager attention."""

    forward: int
    backward: int
    blocks_forward: int
    """The forward of all blocks: what full checkpointing reruns."""


@lru_cache(maxsize=16)
def _measure(cfg_json: str, seq_len: int) -> MetaFlops:
    model = _build(cfg_json)
    text = model.config.get_text_config()
    layers_name, blocks = _blocks(model, _first(text, ("num_hidden_layers", "n_layer", "num_layers")))
    model.train()
    ids = torch.zeros(1, seq_len, dtype=torch.long, device="meta")
    fwd, bwd = FlopCounterMode(display=False), FlopCounterMode(display=False)
    try:
        with _quiet(), fwd:
            loss = model(input_ids=ids, labels=ids).loss
        with _quiet(), bwd:
            loss.backward()
    except Exception as exc:  # an op without a meta kernel, data-dependent shapes
        raise UsageError("--model", f"{text.model_type} cannot run a forward/backward on the meta device to "
                                    f"count its FLOPs ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
    finally:
        model.zero_grad(set_to_none=True)
    # FlopCounterMode keys modules as "<root class>.<qualified name>".
    prefix = f"{type(model).__name__}.{layers_name}."
    counts = fwd.get_flop_counts()
    blocks_forward = sum(sum(counts.get(f"{prefix}{i}", {}).values()) for i in range(len(blocks)))
    return MetaFlops(forward=fwd.get_total_flops(), backward=bwd.get_total_flops(), blocks_forward=blocks_forward)


def meta_flops(model: ModelSpec, seq_len: int) -> MetaFlops:
    """FlopCounterMode's forward and backward count of one sequence of ``model`` (a meta-device
    spec) with eager attention; ``planner/_flops.py`` turns it into training FLOPs per token."""
    return _measure(_key(model.hf_config), seq_len)
