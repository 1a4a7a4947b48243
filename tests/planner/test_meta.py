"""The meta-device path: any causal LM transformers builds, counted on the model itself.

Two kinds of check: (1) analytic families forced through the meta path give the very figures the
analytic formulas give, field by field, so the two paths agree where both exist; (2) for a
``model_type`` the planner has no formulas for, the meta-device FLOP count equals FlopCounterMode
on a real forward + backward on the CPU, and the parameters equal the real model's.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from tests.planner.conftest import TINY_CONFIGS, build_hf_model
from tests.planner.family_configs import FAMILY_CONFIGS
from tests.planner.test_flops import BATCH, _measure
from trainplan.errors import UsageError
from trainplan.planner import count_parameters, flops, from_hf_config, load_model
from trainplan.planner._flops import counted_flops_per_step
from trainplan.planner._meta import meta_spec

ALL = {**TINY_CONFIGS, **FAMILY_CONFIGS}
# Causal LMs with no analytic description here: OLMo-2 (q/k norms over the whole projection,
# post-norms), BLOOM (ALiBi, fused q/k/v, embedding LayerNorm), OLMoE (64-expert style MoE).
OTHER: dict[str, dict[str, Any]] = {
    "olmo2": {"model_type": "olmo2", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 96,
              "num_hidden_layers": 2, "num_attention_heads": 4, "pad_token_id": 1, "eos_token_id": 2},
    "bloom": {"model_type": "bloom", "vocab_size": 512, "hidden_size": 64, "n_layer": 2, "n_head": 4},
    "olmoe": {"model_type": "olmoe", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 96,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_experts": 4, "num_experts_per_tok": 2,
              "pad_token_id": 1, "eos_token_id": 2},
}
_SAME = ("total", "embedding", "lm_head", "per_layer", "per_layer_matrix", "per_layer_vector", "final_norm",
         "norms_and_biases", "per_expert", "active")


@pytest.mark.parametrize("name", ["gpt2", "llama-biases-headdim", "mixtral", "opt-postnorm", "falcon-new",
                                  "qwen2_moe", "gemma3_text", "deepseek_v3"])
def test_meta_path_agrees_with_the_analytic_one(name: str) -> None:
    cfg = ALL[name]
    analytic, meta = from_hf_config(cfg), meta_spec(cfg, "custom")
    a, m = count_parameters(analytic), count_parameters(meta)
    assert (a.source, m.source) == ("analytic", "meta-device")
    for key in _SAME:
        assert getattr(m, key) == getattr(a, key), key
    for ckpt in ("none", "selective", "full"):
        fa, fm = flops(analytic, 64, 128, ckpt), flops(meta, 64, 128, ckpt)
        assert fm.counted_per_token == fa.counted_per_token, ckpt
        assert fm.model_per_token == fa.model_per_token and fm.hardware_per_token == fa.hardware_per_token


@pytest.mark.parametrize("name", sorted(OTHER))
def test_other_architectures_are_counted_exactly(name: str) -> None:
    cfg = OTHER[name]
    spec = from_hf_config(cfg)
    assert spec.source == "meta-device" and spec.family == name
    real = build_hf_model(cfg, device="cpu", attn_implementation="eager", experts_implementation="batched_mm")
    assert count_parameters(spec).total == sum(p.numel() for p in real.parameters())
    # The meta-device count (eager attention) equals FlopCounterMode on a real CPU run, both for a
    # plain step and with every block's forward rerun by full checkpointing.
    for ckpt in ("none", "full"):
        assert counted_flops_per_step(spec, 32, BATCH, ckpt, attention="matmul") == _measure(real, 32, checkpointing=ckpt)


def test_moe_active_parameters_skip_unrouted_experts() -> None:
    spec = from_hf_config(OTHER["olmoe"])
    p = count_parameters(spec)
    assert spec.num_experts == 4 and spec.experts_per_token == 2
    assert p.total - p.active == spec.num_layers * 2 * p.per_expert > 0


def test_unknown_or_non_causal_model_types_name_the_model_flag(tmp_path: Path) -> None:
    for cfg, words in [({"model_type": "no-such-arch"}, "is not known"),
                       ({"model_type": "t5"}, "not a causal language model")]:
        path = tmp_path / "config.json"
        path.write_text(json.dumps(cfg))
        with pytest.raises(UsageError) as err:
            load_model(str(path))
        assert err.value.key == "--model" and words in err.value.message and "llama" in err.value.message


def test_parameter_source_reaches_the_plan_json() -> None:
    from trainplan.planner import Layout, load_gpu, plan

    layout = Layout(gpus=1, micro_batch=1, seq_len=32)
    for cfg, source in [(OTHER["olmo2"], "meta-device"), (TINY_CONFIGS["llama"], "analytic")]:
        result = plan(from_hf_config(cfg), layout, load_gpu("a100-80gb")).to_dict()
        assert result["parameters"]["source"] == source
        assert asdict(count_parameters(from_hf_config(cfg)))["total"] == result["parameters"]["total"]
