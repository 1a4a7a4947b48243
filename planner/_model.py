"""The model a plan is made for, described by its Hugging Face config fields.

A :class:`ModelSpec` is read from a built-in preset, a local ``config.json`` (or a folder holding
one) or, when online, a hub id. Only what the estimates need is kept, plus the raw config so the
runner and the tests can build the very same model with ``transformers``.

Two paths, and the spec says which it took (``source``):

- ``"analytic"``: the ``model_type`` is one of ``SUPPORTED_FAMILIES``, whose modeling code is
  described here field by field; pure Python, no torch.
- ``"meta-device"``: any other causal LM transformers knows is built on the meta device by
  :mod:`trainplan.planner._meta` (imports torch and transformers, only then), which counts its
  parameters and FLOPs exactly.

Every config value the estimates read is checked here first (type, finiteness, range), so a bad
config is one ``--model`` error naming the config key and what it allows, never a wrong plan.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainplan.errors import UsageError, close_matches
from trainplan.planner._modelspec import SOURCES, SUPPORTED_FAMILIES, ModelSpec

__all__ = ["ModelSpec", "SOURCES", "SUPPORTED_FAMILIES", "from_hf_config", "load_model"]


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
    "opt": dict(vocab_size=50272, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                ffn_dim=3072, max_position_embeddings=2048, tie_word_embeddings=True, enable_bias=True,
                do_layer_norm_before=True, layer_norm_elementwise_affine=True),
    "falcon": dict(vocab_size=65024, hidden_size=4544, num_hidden_layers=32, num_attention_heads=71,
                   max_position_embeddings=2048, tie_word_embeddings=True, new_decoder_architecture=False,
                   multi_query=True, parallel_attn=True, bias=False, alibi=False),
    "phi3": dict(vocab_size=32064, hidden_size=3072, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=None, intermediate_size=8192, max_position_embeddings=4096,
                 tie_word_embeddings=False),
    "qwen3": dict(vocab_size=151936, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=32, head_dim=128, intermediate_size=22016,
                  max_position_embeddings=32768, tie_word_embeddings=False, attention_bias=False),
    "qwen2_moe": dict(vocab_size=151936, hidden_size=2048, num_hidden_layers=24, num_attention_heads=16,
                      num_key_value_heads=16, intermediate_size=5632, max_position_embeddings=32768,
                      tie_word_embeddings=False, qkv_bias=True, num_experts=60, num_experts_per_tok=4,
                      moe_intermediate_size=1408, shared_expert_intermediate_size=5632,
                      decoder_sparse_step=1, mlp_only_layers=[]),
    "qwen3_moe": dict(vocab_size=151936, hidden_size=2048, num_hidden_layers=24, num_attention_heads=32,
                      num_key_value_heads=4, intermediate_size=6144, max_position_embeddings=32768,
                      tie_word_embeddings=False, attention_bias=False, num_experts=128, num_experts_per_tok=8,
                      moe_intermediate_size=768, decoder_sparse_step=1, mlp_only_layers=[]),
    "gemma2": dict(vocab_size=256000, hidden_size=2304, num_hidden_layers=26, num_attention_heads=8,
                   num_key_value_heads=4, head_dim=256, intermediate_size=9216, max_position_embeddings=8192,
                   tie_word_embeddings=True, attention_bias=False),
    "gemma3_text": dict(vocab_size=262208, hidden_size=2304, num_hidden_layers=26, num_attention_heads=8,
                        num_key_value_heads=4, head_dim=256, intermediate_size=9216,
                        max_position_embeddings=131072, tie_word_embeddings=True, attention_bias=False),
    "deepseek_v2": dict(vocab_size=102400, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                        intermediate_size=11008, max_position_embeddings=2048, tie_word_embeddings=False,
                        attention_bias=False, mlp_bias=False, n_routed_experts=64,
                        moe_intermediate_size=1407, n_shared_experts=2, first_k_dense_replace=0,
                        kv_lora_rank=512, q_lora_rank=1536, qk_rope_head_dim=64, qk_nope_head_dim=128,
                        v_head_dim=128),
    "deepseek_v3": dict(vocab_size=129280, hidden_size=7168, num_hidden_layers=61, num_attention_heads=128,
                        intermediate_size=18432, max_position_embeddings=4096, tie_word_embeddings=False,
                        attention_bias=False, n_routed_experts=256, num_experts_per_tok=8,
                        moe_intermediate_size=2048, n_shared_experts=1, first_k_dense_replace=3,
                        kv_lora_rank=512, q_lora_rank=1536, qk_rope_head_dim=64, qk_nope_head_dim=128,
                        v_head_dim=128),
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


def _bad(key: str, allowed: str, value: Any) -> UsageError:
    return UsageError("--model", f"config key {key} must be {allowed}, got {value!r}")


def _int(cfg: Mapping[str, Any], family: str, key: str, *, minimum: int = 1, optional: bool = False) -> Any:
    """An integer config value >= ``minimum`` (JSON floats such as 64.0, NaN and bools refused);
    ``None`` when ``optional`` and the config has it null or missing without a default."""
    value = _field(cfg, family, key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise _bad(key, allowed + (" or null" if optional else ""), value)
    return value


def _positive_int(cfg: Mapping[str, Any], family: str, key: str) -> int:
    return _int(cfg, family, key)


def _bool(cfg: Mapping[str, Any], family: str, key: str) -> bool:
    """A JSON true/false (a string "false" would be truthy in Python: refused)."""
    value = _field(cfg, family, key)
    if not isinstance(value, bool):
        raise _bad(key, "true or false", value)
    return value


# Config values the memory estimate reads besides the shapes: dropout probabilities in [0, 1) and
# GPT-NeoX's rotary share in (0, 1]. Checked for every family so none reaches a float() later.
_FRACTIONS = {"attn_pdrop": "[0, 1)", "resid_pdrop": "[0, 1)", "embd_pdrop": "[0, 1)",
              "attention_dropout": "[0, 1)", "hidden_dropout": "[0, 1)", "dropout": "[0, 1)",
              "rotary_pct": "(0, 1]"}


def _check_fractions(cfg: Mapping[str, Any]) -> None:
    for key, allowed in _FRACTIONS.items():
        value = cfg.get(key)
        if value is None:
            continue
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (0 <= value < 1 if allowed == "[0, 1)" else 0 < value <= 1)
        if not ok:
            raise _bad(key, f"a number in {allowed}", value)


def _attention_shape(cfg: Mapping[str, Any], family: str, d: int, heads: int) -> tuple[int, int]:
    """``(kv_heads, head_dim)`` with the family's rules: explicit head_dim or d // heads."""
    if family in ("gpt2", "gpt_neox", "opt", "falcon"):  # no head_dim field: d // heads
        explicit, kv_heads = None, heads
    else:
        explicit = _int(cfg, family, "head_dim", optional=True)
        kv_heads = _int(cfg, family, "num_key_value_heads", optional=True) or heads
    if family == "falcon":
        # modeling_falcon.py FalconAttention: new_decoder_architecture reads num_kv_heads, else
        # multi_query means one shared k/v head, else multi-head.
        if _bool(cfg, family, "new_decoder_architecture"):
            kv_heads = _int(cfg, family, "num_kv_heads", optional=True) or heads
        elif _bool(cfg, family, "multi_query"):
            kv_heads = 1
    if explicit is None and d % heads:
        raise UsageError("--model", f"num_attention_heads {heads} does not divide hidden_size {d}")
    if heads % kv_heads:
        raise UsageError("--model", f"num_key_value_heads {kv_heads} does not divide num_attention_heads {heads}")
    return kv_heads, explicit or d // heads


def _moe_layers(cfg: Mapping[str, Any], family: str, layers: int) -> tuple[int, tuple[int, ...]]:
    """``(experts, dense layer indices)`` of the Qwen and DeepSeek MoE families."""
    if family.startswith("deepseek"):
        experts = _int(cfg, family, "n_routed_experts")
        # modeling_deepseek_v3.py DeepseekV3DecoderLayer: MoE from first_k_dense_replace on.
        first = _int(cfg, family, "first_k_dense_replace", minimum=0)
        return experts, tuple(range(min(first, layers)))
    experts = _int(cfg, family, "num_experts", minimum=0)
    step = _int(cfg, family, "decoder_sparse_step")
    only = _field(cfg, family, "mlp_only_layers")
    if not isinstance(only, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in only):
        raise _bad("mlp_only_layers", "a list of layer indices (integers >= 0)", only)
    # modeling_qwen2_moe.py Qwen2MoeDecoderLayer: sparse unless listed or off the sparse step.
    dense = tuple(i for i in range(layers) if i in only or experts == 0 or (i + 1) % step)
    return max(experts, 1), dense


def from_hf_config(cfg: Mapping[str, Any], name: str = "custom") -> ModelSpec:
    """Build a :class:`ModelSpec` from a Hugging Face config dict; checks the shapes agree.

    Missing fields take the defaults of the family's transformers config class, and each family's
    biases follow its modeling code (e.g. Mistral ignores ``attention_bias``, Qwen2 always has
    q/k/v biases and never an output-projection bias). A ``model_type`` outside
    ``SUPPORTED_FAMILIES`` is built on the meta device (:mod:`trainplan.planner._meta`).
    """
    if not isinstance(cfg, Mapping):
        raise UsageError("--model", f"a config must be a JSON object, got {type(cfg).__name__}")
    family = cfg.get("model_type")
    if not isinstance(family, str) or not family:
        raise _bad("model_type", "a transformers model type such as 'llama'", family)
    _check_fractions(cfg)
    if family not in SUPPORTED_FAMILIES or _needs_meta(cfg, family):
        from trainplan.planner._meta import meta_spec  # imports torch and transformers

        return meta_spec(cfg, name)
    d = _positive_int(cfg, family, "hidden_size")
    heads = _positive_int(cfg, family, "num_attention_heads")
    layers = _positive_int(cfg, family, "num_hidden_layers")
    kv_heads, head_dim = _attention_shape(cfg, family, d, heads)
    common = dict(
        name=name, family=family, vocab_size=_positive_int(cfg, family, "vocab_size"), hidden_size=d,
        num_layers=layers, num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
        max_position_embeddings=_positive_int(cfg, family, "max_position_embeddings"),
        tie_word_embeddings=_bool(cfg, family, "tie_word_embeddings"), hf_config=dict(cfg),
    )
    no_bias = dict(qkv_bias=False, out_bias=False, mlp_bias=False)
    if family == "gpt2":
        inner = _int(cfg, family, "n_inner", optional=True) or 4 * d  # GPT2MLP: n_inner or 4 d
        return ModelSpec(**common, intermediate_size=inner, gated_mlp=False, norm="layernorm",
                         qkv_bias=True, out_bias=True, mlp_bias=True, learned_positions=True)
    if family == "opt":
        bias = _bool(cfg, family, "enable_bias")
        proj = _int(cfg, family, "word_embed_proj_dim", optional=True) or d
        # modeling_opt.py OPTDecoder: a final norm only for pre-norm models (OPT-350m has none);
        # the position table has max_position_embeddings + 2 rows (OPTLearnedPositionalEmbedding).
        return ModelSpec(**common, intermediate_size=_positive_int(cfg, family, "ffn_dim"), gated_mlp=False,
                         norm="layernorm", qkv_bias=bias, out_bias=bias, mlp_bias=bias, learned_positions=True,
                         position_offset=2, embed_proj_dim=0 if proj == d else proj,
                         final_norm=_bool(cfg, family, "do_layer_norm_before"))
    if family == "falcon":
        bias = _bool(cfg, family, "bias")
        inner = _int(cfg, family, "ffn_hidden_size", optional=True) or 4 * d  # FalconConfig default
        # FalconDecoderLayer: two norms unless a parallel block with one (Falcon-7B style).
        parallel, new = _bool(cfg, family, "parallel_attn"), _bool(cfg, family, "new_decoder_architecture")
        ln = _int(cfg, family, "num_ln_in_parallel_attn", optional=True) or (2 if new else 1)
        return ModelSpec(**common, intermediate_size=inner, gated_mlp=False, norm="layernorm",
                         qkv_bias=bias, out_bias=bias, mlp_bias=bias, learned_positions=False,
                         norms_per_layer=2 if not parallel or ln == 2 else 1)
    if family == "gpt_neox":
        bias = _bool(cfg, family, "attention_bias")
        return ModelSpec(**common, intermediate_size=_positive_int(cfg, family, "intermediate_size"),
                         gated_mlp=False, norm="layernorm", qkv_bias=bias, out_bias=bias, mlp_bias=True,
                         learned_positions=False)
    # llama-style families: RMSNorm, gated MLP, rotary positions; biases differ per family.
    llama_like = dict(gated_mlp=True, norm="rmsnorm", learned_positions=False)
    inner = _positive_int(cfg, family, "intermediate_size")
    if family.startswith("deepseek"):
        return _deepseek(cfg, family, common, inner)
    if family in ("qwen2_moe", "qwen3_moe"):
        experts, dense = _moe_layers(cfg, family, layers)
        per_token = _positive_int(cfg, family, "num_experts_per_tok") if experts > 1 else 1
        if per_token > experts:
            raise UsageError("--model", f"num_experts_per_tok {per_token} exceeds num_experts {experts}")
        shared = _int(cfg, family, "shared_expert_intermediate_size", minimum=0) if family == "qwen2_moe" else 0
        bias = (dict(qkv_bias=_bool(cfg, family, "qkv_bias"), out_bias=False, mlp_bias=False)
                if family == "qwen2_moe" else dict(no_bias, qkv_bias=_bool(cfg, family, "attention_bias"),
                                                   out_bias=_bool(cfg, family, "attention_bias")))
        return ModelSpec(**common, **llama_like, **bias, intermediate_size=inner, num_experts=experts,
                         experts_per_token=per_token, qk_norm=family == "qwen3_moe",
                         moe_intermediate_size=_positive_int(cfg, family, "moe_intermediate_size"),
                         shared_expert_size=shared, shared_expert_gate=shared > 0,
                         dense_layers=dense if experts > 1 else ())
    attn_bias = (_bool(cfg, family, "attention_bias")
                 if family in ("llama", "gemma", "qwen3", "gemma2", "gemma3_text") else False)
    moe = family == "mixtral"
    experts = _positive_int(cfg, family, "num_local_experts") if moe else 1
    per_token = _positive_int(cfg, family, "num_experts_per_tok") if moe else 1
    if per_token > experts:
        raise UsageError("--model", f"num_experts_per_tok {per_token} exceeds num_local_experts {experts}")
    return ModelSpec(
        **common, **llama_like, intermediate_size=inner,
        qkv_bias=attn_bias or family == "qwen2", out_bias=attn_bias,
        mlp_bias=_bool(cfg, family, "mlp_bias") if family == "llama" else False,
        num_experts=experts, experts_per_token=per_token,
        norms_per_layer=4 if family in ("gemma2", "gemma3_text") else 2,
        qk_norm=family in ("qwen3", "gemma3_text"),
    )


def _deepseek(cfg: Mapping[str, Any], family: str, common: dict[str, Any], inner: int) -> ModelSpec:
    """DeepSeek V2/V3: multi-head latent attention, shared + routed experts, dense first layers
    (DeepSeek-AI 2024, "DeepSeek-V2", section 2.1; modeling_deepseek_v3.py)."""
    experts, dense = _moe_layers(cfg, family, common["num_layers"])
    per_token = _positive_int(cfg, family, "num_experts_per_tok")
    if per_token > experts:
        raise UsageError("--model", f"num_experts_per_tok {per_token} exceeds n_routed_experts {experts}")
    moe_inner = _positive_int(cfg, family, "moe_intermediate_size")
    rope, nope = _positive_int(cfg, family, "qk_rope_head_dim"), _positive_int(cfg, family, "qk_nope_head_dim")
    bias = _bool(cfg, family, "attention_bias")
    heads = common["num_heads"]
    # MLA expands keys and values to every head; eager attention then repeats them by
    # heads // num_key_value_heads, which only works when the two are equal (real configs are).
    kv_heads = _int(cfg, family, "num_key_value_heads", optional=True) or heads
    if kv_heads != heads:
        raise _bad("num_key_value_heads", f"equal to num_attention_heads ({heads}) under MLA", kv_heads)
    spec = dict(common, num_kv_heads=heads, head_dim=rope + nope)
    return ModelSpec(
        **spec, intermediate_size=inner, gated_mlp=True, norm="rmsnorm", learned_positions=False,
        qkv_bias=bias, out_bias=bias, mlp_bias=_bool(cfg, family, "mlp_bias") if family == "deepseek_v2" else False,
        num_experts=experts, experts_per_token=per_token, moe_intermediate_size=moe_inner,
        shared_expert_size=moe_inner * _int(cfg, family, "n_shared_experts", minimum=0),
        dense_layers=dense, q_lora_rank=_int(cfg, family, "q_lora_rank", optional=True) or 0,
        kv_lora_rank=_positive_int(cfg, family, "kv_lora_rank"), qk_rope_head_dim=rope,
        v_head_dim=_positive_int(cfg, family, "v_head_dim"),
    )


def _needs_meta(cfg: Mapping[str, Any], family: str) -> bool:
    """Rare variants of an analytic family that its description here leaves out."""
    # OPT without affine norms (layer_norm_elementwise_affine: false) has parameter-free norms.
    return family == "opt" and _bool(cfg, family, "layer_norm_elementwise_affine") is False


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
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
