"""The two catalogs (model presets, GPUs) and how ``--model`` / ``--gpu`` are resolved."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from trainplan.errors import UsageError
from trainplan.planner import SUPPORTED_FAMILIES, from_hf_config, gpu_catalog, load_gpu, load_model, model_presets
from trainplan.planner._model import _HF_DEFAULTS

REQUIRED_PRESETS = [
    "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl",
    *(f"pythia-{s}" for s in ("70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")),
    "llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b",
    "mistral-7b", "mixtral-8x7b",
    *(f"qwen2.5-{s}" for s in ("0.5b", "1.5b", "3b", "7b", "14b", "32b", "72b")),
    "gemma-2b", "gemma-7b", "trainplan-tiny",
]
REQUIRED_GPUS = ["v100-32gb", "a10", "l4", "l40s", "a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie",
                 "h200", "b200", "mi300x"]


def test_catalogs_hold_the_documented_entries() -> None:
    assert set(REQUIRED_PRESETS) <= set(model_presets())
    assert set(REQUIRED_GPUS) <= set(gpu_catalog())
    assert all(k == k.lower() for k in [*model_presets(), *gpu_catalog()])


@pytest.mark.parametrize("name", sorted(model_presets()))
def test_every_preset_loads(name: str) -> None:
    entry = model_presets()[name]
    assert entry["source"]
    spec = load_model(name)
    assert spec.name == name and spec.family in SUPPORTED_FAMILIES
    assert spec.num_heads % spec.num_kv_heads == 0
    assert min(spec.vocab_size, spec.hidden_size, spec.num_layers, spec.intermediate_size) > 0


def test_defaults_table_matches_transformers() -> None:
    # A config.json that omits a field gets the config class's default in transformers; the spec
    # must describe that same model.
    from transformers import AutoConfig

    for family, defaults in _HF_DEFAULTS.items():
        config = AutoConfig.for_model(family)
        for key, value in defaults.items():
            real = getattr(config, key)
            if value is None:  # derived in transformers: kv heads = heads, head_dim = d // heads
                derived = {"num_key_value_heads": config.num_attention_heads,
                           "head_dim": config.hidden_size // config.num_attention_heads}[key]
                assert real in (None, derived), (family, key, real)
            else:
                assert real == value, (family, key, real)


def test_missing_fields_take_the_familys_defaults() -> None:
    mistral = from_hf_config({"model_type": "mistral", "hidden_size": 256, "num_attention_heads": 8})
    assert mistral.num_kv_heads == 8 and mistral.intermediate_size == 14336
    gemma = from_hf_config({"model_type": "gemma", "hidden_size": 256, "num_attention_heads": 16})
    assert gemma.head_dim == 256 and gemma.tie_word_embeddings


@pytest.mark.parametrize("key", sorted(gpu_catalog()))
def test_every_gpu_has_positive_figures(key: str) -> None:
    gpu = load_gpu(key.upper())  # names are case-insensitive
    assert gpu.key == key and gpu.name and gpu.source
    assert min(gpu.memory_gib, gpu.hbm_gbps, gpu.intra_node_gbps, gpu.inter_node_gbps, gpu.price_per_hour) > 0
    assert all(v > 0 for v in gpu.tflops.values())
    # Tensor-core half precision is far above fp32 on every catalog part.
    assert gpu.peak_flops("fp16") > 3 * gpu.tflops["fp32"] * 1e12
    if not key.startswith("v100"):
        assert gpu.peak_flops("bf16") == gpu.peak_flops("fp16")
    # Intra-node links are faster than the per-GPU network.
    assert gpu.intra_node_gbps > gpu.inter_node_gbps


def test_fitted_efficiencies_follow_their_documented_derivation() -> None:
    # gpus.json: compute_efficiency = measured MAMF share x 0.80 (A100 SXM 85.9%, H100 SXM 80.1%)
    for key, mamf in (("a100-40gb", 0.859), ("a100-80gb", 0.859), ("h100-sxm", 0.801), ("h200", 0.801),
                      ("h100-pcie", 0.801)):
        gpu = load_gpu(key)
        assert gpu.compute_efficiency == round(mamf * 0.80, 3), key
        assert gpu.attention_efficiency == (0.60 if key.startswith("a100") else 0.40), key
    for gpu in gpu_catalog().values():
        assert 0 < gpu.compute_efficiency <= 1
        assert gpu.attention_efficiency is None or 0 < gpu.attention_efficiency <= gpu.compute_efficiency
        assert gpu.intra_node_busbw_gbps is None or 0 < gpu.intra_node_busbw_gbps <= gpu.intra_node_gbps


def test_v100_has_no_bf16() -> None:
    v100 = load_gpu("v100-32gb")
    with pytest.raises(UsageError) as err:
        v100.peak_flops("bf16")
    assert err.value.key == "--precision" and "bf16" in err.value.message
    assert v100.peak_flops("fp32") == 15.7e12  # no TF32 units: plain fp32


@pytest.mark.parametrize(("name", "suggested"), [("h100", ["h100-sxm", "h100-pcie"]), ("A100", ["a100-40gb"])])
def test_unknown_gpu_lists_close_matches(name: str, suggested: list[str]) -> None:
    with pytest.raises(UsageError) as err:
        load_gpu(name)
    assert err.value.key == "--gpu"
    assert all(s in err.value.message for s in suggested)


@pytest.mark.parametrize(("name", "suggested"), [("llama-70b", "llama-2-70b"), ("pythia-1.3b", "pythia-1.4b")])
def test_unknown_model_lists_close_matches(name: str, suggested: str) -> None:
    with pytest.raises(UsageError) as err:
        load_model(name)
    assert err.value.key == "--model" and suggested in err.value.message


def test_local_config_file_and_folder(tmp_path: Path) -> None:
    cfg = model_presets()["mistral-7b"]["config"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    preset = load_model("mistral-7b")
    for ref in (str(tmp_path / "config.json"), str(tmp_path)):
        spec = load_model(ref)
        assert spec.name == ref
        assert replace(spec, name="mistral-7b") == preset


@pytest.mark.parametrize(
    ("cfg", "words"),
    [
        ({"model_type": "llama", "hidden_size": 100, "num_attention_heads": 3}, "does not divide hidden_size"),
        ({"model_type": "llama", "num_attention_heads": 32, "num_key_value_heads": 5}, "does not divide"),
        ({"model_type": "no-such-arch"}, "is not known"),
        ({"model_type": "gpt2", "n_layer": 0}, "positive integer"),
        ({"model_type": "mixtral", "num_local_experts": 2, "num_experts_per_tok": 4}, "exceeds"),
    ],
)
def test_bad_config_names_model_flag(tmp_path: Path, cfg: dict, words: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(UsageError) as err:
        load_model(str(path))
    assert err.value.key == "--model" and words in err.value.message


def test_unreadable_config_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(UsageError) as err:
        load_model(str(path))
    assert err.value.key == "--model" and "cannot read" in err.value.message


@pytest.mark.parametrize("name", ["opt-1.3b", "falcon-7b", "phi-3-mini", "qwen3-8b", "qwen1.5-moe-a2.7b",
                                  "qwen3-30b-a3b", "gemma-2-9b", "gemma-3-1b", "deepseek-v2-lite", "deepseek-v3"])
def test_added_presets_plan_end_to_end(name: str) -> None:
    # The memory and throughput estimates read the spec's shape fields: every added family must
    # come out with positive, finite, JSON-valid figures (pure Python, analytic path).
    import math

    from trainplan.planner import Layout, plan

    result = plan(load_model(name), Layout(gpus=64, zero=3, seq_len=2048, micro_batch=1), load_gpu("h100-sxm"))
    doc = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert doc["parameters"]["source"] == "analytic"
    per_gpu = doc["memory"]["per_gpu"]
    assert per_gpu["weights_bytes"] > 0 and per_gpu["activations_bytes"] > 0
    assert math.isfinite(doc["throughput"]["tokens_per_s"]) and doc["throughput"]["tokens_per_s"] > 0
    assert doc["flops"]["model_per_token"] > 6 * doc["parameters"]["active"]
