"""Parameter counts against the real Hugging Face models and against published totals.

Every preset and every tiny config is built by transformers on the meta device (no memory, no
weights) and its ``parameters()`` are compared with ``count_parameters``, field by field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.planner.conftest import TINY_CONFIGS, build_hf_model
from tests.planner.family_configs import FAMILY_CONFIGS
from trainplan.planner import from_hf_config, model_presets
from trainplan.planner._params import ParamCounts, count_parameters

PUBLISHED = json.loads((Path(__file__).parent / "data" / "published_param_counts.json").read_text())
PUBLISHED.pop("_comment")

# Modules whose output Megatron-style tensor parallelism all-reduces (row-parallel): their biases
# are added after the reduction, so every rank holds them whole; so do norms and the MoE router.
_ROW_PARALLEL = ("o_proj", "down_proj", "dense", "dense_4h_to_h", "attn.c_proj", "mlp.c_proj", "out_proj", "fc2")
# MoE routers, Qwen2-MoE's shared-expert gate, and MLA's down-projections shared by all heads.
_REPLICATED_MATRICES = ("mlp.gate.weight", "shared_expert_gate.weight")
_REPLICATED_MODULES = ("q_a_proj", "kv_a_proj_with_mqa")
ALL_CONFIGS = {**TINY_CONFIGS, **FAMILY_CONFIGS}


def _blocks(model: Any, num_layers: int) -> Any:
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == num_layers:
            return module
    raise AssertionError("no ModuleList of transformer blocks found")


def _is_norm(name: str) -> bool:
    return "norm" in name or name.startswith(("ln_", "ln_1", "ln_2"))


def _real_counts(cfg: dict[str, Any]) -> dict[str, int]:
    """The figures ``ParamCounts`` claims, measured on the real model.

    Blocks may differ (dense first layers, ``mlp_only_layers``): the ``per_layer*`` figures are
    the largest block's, ``per_expert`` is one routed expert of any sparse block.
    """
    import torch

    model = build_hf_model(cfg)
    spec = from_hf_config(cfg)
    every = _blocks(model, spec.num_layers)
    block = max(every, key=lambda b: sum(p.numel() for p in b.parameters()))
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    # Learned position tables (GPT-2 wpe, OPT embed_positions): every other embedding module.
    positions = sum(m.weight.numel() for m in model.modules()
                    if isinstance(m, torch.nn.Embedding) and m.weight is not emb)
    replicated = 0
    for name, p in block.named_parameters():
        module = name.rsplit(".", 1)[0]
        if _is_norm(module) or name.endswith(_REPLICATED_MATRICES) or module.endswith(_REPLICATED_MODULES) or (
            p.ndim == 1 and module.endswith(_ROW_PARALLEL)
        ):
            replicated += p.numel()
    experts = [m for b in every for n, m in b.named_modules() if n.rsplit(".", 1)[-1] == "experts"]
    return {
        "total": sum(p.numel() for p in model.parameters()),  # parameters() deduplicates tied weights
        "embedding": emb.numel() + positions,
        "lm_head": 0 if head is emb else head.numel(),
        "per_layer": sum(p.numel() for p in block.parameters()),
        "per_layer_matrix": sum(p.numel() for p in block.parameters() if p.ndim >= 2),
        "per_layer_vector": sum(p.numel() for p in block.parameters() if p.ndim == 1),
        "per_layer_tp_replicated": replicated,
        "norms_and_biases": sum(p.numel() for p in model.parameters() if p.ndim == 1),
        "per_expert": sum(p.numel() for p in experts[0].parameters()) // spec.num_experts if experts else 0,
        "layers": sum(p.numel() for b in every for p in b.parameters()),
        "projections": sum(p.numel() for n, p in model.named_parameters() if n.endswith(("project_in.weight",
                                                                                         "project_out.weight"))),
    }


def _assert_matches(counts: ParamCounts, real: dict[str, int]) -> None:
    for key, value in real.items():
        assert getattr(counts, key) == value, f"{key}: counted {getattr(counts, key)}, model has {value}"
    assert counts.non_embedding == counts.total - counts.embedding
    assert counts.per_layer_tp_sharded + counts.per_layer_tp_replicated == counts.per_layer


@pytest.mark.parametrize("name", sorted(model_presets()))
def test_every_preset_matches_the_real_model(name: str) -> None:
    cfg = model_presets()[name]["config"]
    _assert_matches(count_parameters(from_hf_config(cfg, name=name)), _real_counts(cfg))


@pytest.mark.parametrize("name", sorted(ALL_CONFIGS))
def test_every_branch_matches_the_real_model(name: str) -> None:
    cfg = ALL_CONFIGS[name]
    _assert_matches(count_parameters(from_hf_config(cfg, name=name)), _real_counts(cfg))


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_totals(name: str) -> None:
    ref = PUBLISHED[name]
    counts = count_parameters(from_hf_config(model_presets()[name]["config"], name=name))
    assert counts.total == pytest.approx(ref["total"], rel=ref.get("rel_tol", 0), abs=0), ref["source"]
    if "non_embedding_excl_head" in ref:
        assert counts.non_embedding - counts.lm_head == ref["non_embedding_excl_head"]
    if "active" in ref:
        assert counts.active == pytest.approx(ref["active"], rel=ref["active_rel_tol"])


def test_moe_active_counts_only_routed_experts() -> None:
    spec = from_hf_config(TINY_CONFIGS["mixtral"])
    counts = count_parameters(spec)
    unused = spec.num_experts - spec.experts_per_token
    assert counts.active == counts.total - spec.num_layers * unused * counts.per_expert
    dense = count_parameters(from_hf_config(TINY_CONFIGS["llama"]))
    assert dense.active == dense.total and dense.per_expert == 0


def test_tied_head_is_not_counted_twice() -> None:
    tied = count_parameters(from_hf_config(TINY_CONFIGS["qwen2"]))
    untied = count_parameters(from_hf_config({**TINY_CONFIGS["qwen2"], "tie_word_embeddings": False}))
    assert tied.lm_head == 0
    assert untied.total - tied.total == untied.lm_head == 512 * 64


def test_bias_flags_follow_each_familys_modeling_code() -> None:
    # Mistral ignores attention_bias; Qwen2 has q/k/v biases but no output bias whatever the flag.
    mistral = from_hf_config(TINY_CONFIGS["mistral"])
    assert not mistral.qkv_bias and not mistral.out_bias
    qwen = from_hf_config({**TINY_CONFIGS["qwen2"], "attention_bias": True, "mlp_bias": True})
    assert qwen.qkv_bias and not qwen.out_bias and not qwen.mlp_bias


@pytest.mark.parametrize("name", sorted(FAMILY_CONFIGS))
def test_added_families_count_active_parameters_per_token(name: str) -> None:
    # Active = total minus the routed experts a token skips, in every sparse block; the dense
    # blocks (DeepSeek's first_k_dense_replace, Qwen's mlp_only_layers / sparse step) skip none.
    spec = from_hf_config(FAMILY_CONFIGS[name])
    counts = count_parameters(spec)
    sparse = spec.num_layers - len(spec.dense_layers) if spec.is_moe else 0
    unused = spec.num_experts - spec.experts_per_token
    assert counts.active == counts.total - sparse * unused * counts.per_expert
    assert counts.source == "analytic"


def test_deepseek_v3_published_total() -> None:
    # DeepSeek-V3 (DeepSeek-AI 2024, "DeepSeek-V3 Technical Report", section 1): "671B total
    # parameters with 37B activated for each token" -- the main model, without the 14B MTP module
    # (which transformers does not build). Config: deepseek-ai/DeepSeek-V3 config.json on the hub.
    spec = from_hf_config({"model_type": "deepseek_v3", "vocab_size": 129280, "hidden_size": 7168,
                           "intermediate_size": 18432, "moe_intermediate_size": 2048, "num_hidden_layers": 61,
                           "num_attention_heads": 128, "n_shared_experts": 1, "n_routed_experts": 256,
                           "num_experts_per_tok": 8, "first_k_dense_replace": 3, "q_lora_rank": 1536,
                           "kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128,
                           "v_head_dim": 128, "tie_word_embeddings": False})
    counts = count_parameters(spec)
    assert counts.total == pytest.approx(671e9, rel=0.005)
    assert counts.active == pytest.approx(37e9, rel=0.02)
