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


# Hugging Face config-class defaults (transformers 5), used when a config.json omits a field so the
# spec describes the model ``AutoConfig.for_model(**cfg)`` builds; tests/planner/test_catalog.py
# checks this table against the installed transformers. ``None`` for num_key_value_heads and
# head_dim means "derived": heads, and hidden_size // heads.
_HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "gpt2": dict(vocab_size=50257, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 max_position_embeddings=1024, tie_word_embeddings=True),
    "gpt_neox": dict(vocab_size=50432, hidden_size=6144, num_hidden_layers=44, num_attention_heads=64,
                     intermediate_size=24576, max_position_embeddings=2048, tie_word_embeddings=False,
                     attention_bias=True),
    "llama": dict(vocab_size=32000, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=None, head_dim=None, intermediate_size=11008,
                  max_position_embeddings=2048, tie_word_embeddings=False, attention_bias=False,
                  mlp_bias=False),
    "mistral": dict(vocab_size=32000, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=None, intermediate_size=14336,
                    max_position_embeddings=131072, tie_word_embeddings=False),
    "mixtral": dict(vocab_size=32000, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=None, intermediate_size=14336,
                    max_position_embeddings=131072, tie_word_embeddings=False, num_local_experts=8,
                    num_experts_per_tok=2),
    "qwen2": dict(vocab_size=151936, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=32, intermediate_size=22016,
                  max_position_embeddings=32768, tie_word_embeddings=False),
    "gemma": dict(vocab_size=256000, hidden_size=3072, num_hidden_layers=28, num_attention_heads=16,
                  num_key_value_heads=16, head_dim=256, intermediate_size=24576,
                  max_position_embeddings=8192, tie_word_embeddings=True, attention_bias=False),
}

# GPT-2's config names the same fields differently (its ``attribute_map`` accepts both).
_GPT2_ALIASES = {"hidden_size": "n_embd", "num_hidden_layers": "n_layer",
                 "num_attention_heads": "n_head", "max_position_embeddings": "n_positions"}


def _field(cfg: Mapping[str, Any], family: str, key: str) -> Any:
    """``cfg[key]`` (or its GPT-2 alias) when present, else the config class's default."""
    for k in (key, _GPT2_ALIASES.get(key, key)):
        if k in cfg:
            return cfg[k]
    return _HF_DEFAULTS[family].get(key)


def _positive_int(cfg: Mapping[str, Any], family: str, key: str) -> int:
    value = _field(cfg, family, key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UsageError("--model", f"config field {key} must be a positive integer, got {value!r}")
    return value


def from_hf_config(cfg: Mapping[str, Any], name: str = "custom") -> ModelSpec:
    """Build a :class:`ModelSpec` from a Hugging Face config dict; checks the shapes agree.

    Missing fields take the defaults of the family's transformers config class, and each family's
    biases follow its modeling code (e.g. Mistral ignores ``attention_bias``, Qwen2 always has
    q/k/v biases and never an output-projection bias).
    """
    family = cfg.get("model_type")
    if family not in SUPPORTED_FAMILIES:
        raise UsageError(
            "--model",
            f"model_type {family!r} is not supported; supported: {', '.join(SUPPORTED_FAMILIES)}",
        )
    d = _positive_int(cfg, family, "hidden_size")
    heads = _positive_int(cfg, family, "num_attention_heads")
    # GPT-2 and GPT-NeoX have no grouped-query attention and no head_dim field.
    kv_heads = heads if family in ("gpt2", "gpt_neox") else int(_field(cfg, family, "num_key_value_heads") or heads)
    explicit_head_dim = None if family in ("gpt2", "gpt_neox") else _field(cfg, family, "head_dim")
    if explicit_head_dim is None and d % heads:
        raise UsageError("--model", f"num_attention_heads {heads} does not divide hidden_size {d}")
    head_dim = int(explicit_head_dim or d // heads)
    if kv_heads <= 0 or heads % kv_heads:
        raise UsageError("--model", f"num_key_value_heads {kv_heads} does not divide num_attention_heads {heads}")
    common = dict(
        name=name,
        family=family,
        vocab_size=_positive_int(cfg, family, "vocab_size"),
        hidden_size=d,
        num_layers=_positive_int(cfg, family, "num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=_positive_int(cfg, family, "max_position_embeddings"),
        tie_word_embeddings=bool(_field(cfg, family, "tie_word_embeddings")),
        hf_config=dict(cfg),
    )
    if family == "gpt2":
        return ModelSpec(
            **common, intermediate_size=int(cfg.get("n_inner") or 4 * d), gated_mlp=False,
            norm="layernorm", qkv_bias=True, out_bias=True, mlp_bias=True, learned_positions=True,
        )
    inner = _positive_int(cfg, family, "intermediate_size")
    if family == "gpt_neox":
        bias = bool(_field(cfg, family, "attention_bias"))
        return ModelSpec(
            **common, intermediate_size=inner, gated_mlp=False, norm="layernorm",
            qkv_bias=bias, out_bias=bias, mlp_bias=True, learned_positions=False,
        )
    # llama-style families: RMSNorm, gated MLP, rotary positions; biases differ per family.
    attn_bias = bool(_field(cfg, family, "attention_bias")) if family in ("llama", "gemma") else False
    moe = family == "mixtral"
    experts = _positive_int(cfg, family, "num_local_experts") if moe else 1
    per_token = _positive_int(cfg, family, "num_experts_per_tok") if moe else 1
    if per_token > experts:
        raise UsageError("--model", f"num_experts_per_tok {per_token} exceeds num_local_experts {experts}")
    return ModelSpec(
        **common, intermediate_size=inner, gated_mlp=True, norm="rmsnorm",
        qkv_bias=attn_bias or family == "qwen2", out_bias=attn_bias,
        mlp_bias=bool(_field(cfg, family, "mlp_bias")) if family == "llama" else False,
        learned_positions=False, num_experts=experts, experts_per_token=per_token,
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
