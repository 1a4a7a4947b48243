"""The model a plan is made for, described by its Hugging Face config fields.

A :class:`ModelSpec` is read from a built-in preset, a local ``config.json`` (or a folder holding
one) or, when online, a hub id. Only what the estimates need is kept, plus the raw config so the
runner and the tests can build the very same model with ``transformers``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainplan.errors import UsageError, close_matches

__all__ = ["ModelSpec", "SUPPORTED_FAMILIES", "from_hf_config", "load_model"]

# Hugging Face ``model_type`` values whose architecture the planner models exactly.
SUPPORTED_FAMILIES = ("gpt2", "gpt_neox", "llama", "mistral", "mixtral", "qwen2", "gemma")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """A decoder-only transformer, in the terms the estimates use."""

    name: str
    """Preset name, config path or hub id the spec was read from."""
    family: str
    """Hugging Face ``model_type`` (one of ``SUPPORTED_FAMILIES``)."""
    vocab_size: int
    """Rows of the token embedding (padded vocabularies count their padding)."""
    hidden_size: int
    """Model width d."""
    num_layers: int
    """Transformer blocks L."""
    num_heads: int
    """Query heads."""
    num_kv_heads: int
    """Key/value heads (== num_heads without grouped-query attention)."""
    head_dim: int
    """Width of one head (hidden_size // num_heads unless the config says otherwise)."""
    intermediate_size: int
    """MLP inner width (per expert for MoE)."""
    max_position_embeddings: int
    """Longest sequence the positions support."""
    tie_word_embeddings: bool
    """The LM head shares the input embedding's weight."""
    gated_mlp: bool
    """Three-matrix gated MLP (SwiGLU/GeGLU) instead of two matrices."""
    norm: str
    """``"rmsnorm"`` (weight only) or ``"layernorm"`` (weight and bias)."""
    qkv_bias: bool
    """The q, k and v projections have biases."""
    out_bias: bool
    """The attention output projection has a bias."""
    mlp_bias: bool
    """The MLP projections have biases."""
    learned_positions: bool
    """A learned absolute position table (GPT-2) instead of rotary positions."""
    num_experts: int = 1
    """Experts per MoE layer; 1 for a dense model."""
    experts_per_token: int = 1
    """Experts each token is routed to."""
    hf_config: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The raw Hugging Face config this spec came from."""

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim


def _get(cfg: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    if default is None:
        raise UsageError("--model", f"config has none of the keys {', '.join(keys)}")
    return default


def from_hf_config(cfg: Mapping[str, Any], name: str = "custom") -> ModelSpec:
    """Build a :class:`ModelSpec` from a Hugging Face config dict; checks the shapes agree."""
    family = cfg.get("model_type")
    if family not in SUPPORTED_FAMILIES:
        raise UsageError(
            "--model",
            f"model_type {family!r} is not supported; supported: {', '.join(SUPPORTED_FAMILIES)}",
        )
    d = int(_get(cfg, "hidden_size", "n_embd"))
    heads = int(_get(cfg, "num_attention_heads", "n_head"))
    if d <= 0 or heads <= 0:
        raise UsageError("--model", "hidden_size and num_attention_heads must be positive")
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or 0) or d // heads
    if cfg.get("head_dim") is None and d % heads:
        raise UsageError("--model", f"num_attention_heads {heads} does not divide hidden_size {d}")
    if heads % kv_heads:
        raise UsageError("--model", f"num_key_value_heads {kv_heads} does not divide num_attention_heads {heads}")
    common = dict(
        name=name,
        family=family,
        vocab_size=int(cfg["vocab_size"]),
        hidden_size=d,
        num_layers=int(_get(cfg, "num_hidden_layers", "n_layer")),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=int(_get(cfg, "max_position_embeddings", "n_positions", default=2048)),
        hf_config=dict(cfg),
    )
    if family == "gpt2":
        return ModelSpec(
            **common, intermediate_size=int(cfg.get("n_inner") or 4 * d),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", True)), gated_mlp=False,
            norm="layernorm", qkv_bias=True, out_bias=True, mlp_bias=True, learned_positions=True,
        )
    if family == "gpt_neox":
        bias = bool(cfg.get("attention_bias", True))
        return ModelSpec(
            **common, intermediate_size=int(cfg["intermediate_size"]),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)), gated_mlp=False,
            norm="layernorm", qkv_bias=bias, out_bias=bias, mlp_bias=True, learned_positions=False,
        )
    # llama-style families: RMSNorm, gated MLP, rotary positions.
    attn_bias = bool(cfg.get("attention_bias", False))
    moe = family == "mixtral"
    return ModelSpec(
        **common, intermediate_size=int(cfg["intermediate_size"]),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", family == "gemma")),
        gated_mlp=True, norm="rmsnorm",
        qkv_bias=attn_bias or family == "qwen2", out_bias=attn_bias,
        mlp_bias=bool(cfg.get("mlp_bias", False)), learned_positions=False,
        num_experts=int(cfg.get("num_local_experts", 1)) if moe else 1,
        experts_per_token=int(cfg.get("num_experts_per_tok", 1)) if moe else 1,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError("--model", f"cannot read {path}: {exc}") from None


def load_model(ref: str) -> ModelSpec:
    """Resolve ``--model``: a preset name, a config.json or folder holding one, or a hub id."""
    from trainplan.planner._catalog import model_presets

    presets = model_presets()
    if ref in presets:
        return from_hf_config(presets[ref]["config"], name=ref)
    path = Path(os.path.expanduser(ref))
    if path.is_dir() and (path / "config.json").is_file():
        return from_hf_config(_read_json(path / "config.json"), name=ref)
    if path.is_file():
        return from_hf_config(_read_json(path), name=ref)
    if ref.count("/") == 1 and not path.exists() and not ref.startswith((".", "/")):
        return from_hf_config(_fetch_hub_config(ref), name=ref)
    raise UsageError(
        "--model",
        f"unknown model {ref!r}: not a preset (see `trainplan models`), a config.json or a hub id"
        + close_matches(ref, presets),
    )


def _fetch_hub_config(repo_id: str) -> dict[str, Any]:
    """Download ``config.json`` of a hub model (needs the network; no torch import)."""
    try:
        from huggingface_hub import hf_hub_download

        return _read_json(Path(hf_hub_download(repo_id, "config.json")))
    except UsageError:
        raise
    except Exception as exc:  # offline, gated, missing: all are the user's to fix
        from trainplan.planner._catalog import model_presets

        raise UsageError(
            "--model",
            f"{repo_id!r} is not a preset and its config could not be fetched from the hub "
            f"({type(exc).__name__}); pass a local config.json instead"
            + close_matches(repo_id.split("/")[-1], model_presets()),
        ) from None
