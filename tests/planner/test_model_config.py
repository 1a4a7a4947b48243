"""Bad model configs are refused with one line naming the config key and what it allows.

Issue 12 found configs that were planned with wrong numbers: a negative or fractional head_dim,
a negative GPT-2 n_inner, ``"tie_word_embeddings": "false"`` (a truthy string). Every value the
counts read is now checked, for every analytic family; the CLI turns the refusal into exit 2.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.planner.conftest import TINY_CONFIGS
from tests.planner.family_configs import FAMILY_CONFIGS
from trainplan.cli import main
from trainplan.errors import UsageError
from trainplan.planner import SUPPORTED_FAMILIES, count_parameters, from_hf_config, load_model

ALL = {**TINY_CONFIGS, **FAMILY_CONFIGS}

# (base config, fields to change, config key the message must name, words of the allowed range)
BAD: list[tuple[str, dict[str, Any], str, str]] = [
    ("llama", {"head_dim": -16}, "head_dim", "positive integer"),
    ("llama", {"head_dim": 16.5}, "head_dim", "positive integer"),
    ("llama", {"head_dim": 16.0}, "head_dim", "positive integer"),
    ("gpt2", {"n_inner": -256}, "n_inner", "positive integer"),
    ("gpt2", {"n_embd": math.nan}, "hidden_size", "positive integer"),
    ("gpt2", {"tie_word_embeddings": "false"}, "tie_word_embeddings", "true or false"),
    ("gpt2", {"attn_pdrop": 1.0}, "attn_pdrop", "[0, 1)"),
    ("gpt_neox", {"rotary_pct": 0}, "rotary_pct", "(0, 1]"),
    ("gpt_neox", {"attention_bias": "true"}, "attention_bias", "true or false"),
    ("gpt_neox", {"hidden_dropout": "0.1"}, "hidden_dropout", "[0, 1)"),
    ("llama", {"vocab_size": -5}, "vocab_size", "positive integer"),
    ("llama", {"num_hidden_layers": 2.0}, "num_hidden_layers", "positive integer"),
    ("llama", {"num_key_value_heads": 0}, "num_key_value_heads", "positive integer"),
    ("llama", {"mlp_bias": 0}, "mlp_bias", "true or false"),
    ("mistral", {"intermediate_size": math.inf}, "intermediate_size", "positive integer"),
    ("mixtral", {"num_local_experts": "8"}, "num_local_experts", "positive integer"),
    ("qwen2", {"tie_word_embeddings": None}, "tie_word_embeddings", "true or false"),
    ("gemma", {"max_position_embeddings": True}, "max_position_embeddings", "positive integer"),
    ("opt-proj", {"ffn_dim": 0}, "ffn_dim", "positive integer"),
    ("opt-proj", {"word_embed_proj_dim": -32}, "word_embed_proj_dim", "positive integer"),
    ("opt-proj", {"do_layer_norm_before": "yes"}, "do_layer_norm_before", "true or false"),
    ("opt-proj", {"dropout": -0.1}, "dropout", "[0, 1)"),
    ("falcon", {"bias": "no"}, "bias", "true or false"),
    ("falcon-new", {"num_kv_heads": -2}, "num_kv_heads", "positive integer"),
    ("falcon", {"ffn_hidden_size": 12.5}, "ffn_hidden_size", "positive integer"),
    ("phi3", {"num_attention_heads": -4}, "num_attention_heads", "positive integer"),
    ("qwen3", {"attention_bias": 1}, "attention_bias", "true or false"),
    ("qwen3", {"head_dim": 0}, "head_dim", "positive integer"),
    ("qwen2_moe", {"mlp_only_layers": "1"}, "mlp_only_layers", "list of layer indices"),
    ("qwen2_moe", {"mlp_only_layers": [-1]}, "mlp_only_layers", "list of layer indices"),
    ("qwen2_moe", {"decoder_sparse_step": 0}, "decoder_sparse_step", "positive integer"),
    ("qwen2_moe", {"shared_expert_intermediate_size": -48}, "shared_expert_intermediate_size", "integer >= 0"),
    ("qwen3_moe", {"num_experts": -1}, "num_experts", "integer >= 0"),
    ("qwen3_moe", {"moe_intermediate_size": None}, "moe_intermediate_size", "positive integer"),
    ("gemma2", {"head_dim": -32}, "head_dim", "positive integer"),
    ("gemma3_text", {"intermediate_size": 1e3}, "intermediate_size", "positive integer"),
    ("deepseek_v2", {"q_lora_rank": -1}, "q_lora_rank", "positive integer or null"),
    ("deepseek_v2", {"first_k_dense_replace": -1}, "first_k_dense_replace", "integer >= 0"),
    ("deepseek_v2", {"num_key_value_heads": 2}, "num_key_value_heads", "equal to num_attention_heads"),
    ("deepseek_v3", {"kv_lora_rank": 0}, "kv_lora_rank", "positive integer"),
    ("deepseek_v3", {"v_head_dim": 12.0}, "v_head_dim", "positive integer"),
    ("deepseek_v3", {"num_experts_per_tok": 8}, "num_experts_per_tok", "exceeds n_routed_experts"),
    ("deepseek_v3", {"model_type": 42}, "model_type", "a transformers model type"),
]


@pytest.mark.parametrize(("base", "change", "key", "allowed"), BAD,
                         ids=[f"{b}-{next(iter(c))}-{c[next(iter(c))]!r}" for b, c, _, _ in BAD])
def test_bad_value_is_refused_naming_key_and_range(base: str, change: dict[str, Any], key: str, allowed: str) -> None:
    cfg = {**ALL[base], **change}
    with pytest.raises(UsageError) as err:
        count_parameters(from_hf_config(cfg))
    assert err.value.key == "--model"
    assert key in err.value.message and allowed in err.value.message, err.value.message
    assert "\n" not in str(err.value)


def test_every_analytic_family_is_in_the_bad_input_table() -> None:
    families = {ALL[base]["model_type"] for base, *_ in BAD}
    assert families == set(SUPPORTED_FAMILIES)


def test_the_silently_wrong_cases_of_issue_12_were_planned_before() -> None:
    # The strings and signs that used to pass would each have changed the count: the check
    # guards a real difference, not a formality.
    llama, gpt2 = TINY_CONFIGS["llama"], TINY_CONFIGS["gpt2"]
    tied = count_parameters(from_hf_config({**gpt2, "tie_word_embeddings": True})).total
    untied = count_parameters(from_hf_config({**gpt2, "tie_word_embeddings": False})).total
    assert tied != untied
    assert count_parameters(from_hf_config({**llama, "head_dim": 8})).total != count_parameters(
        from_hf_config(llama)).total


@pytest.mark.parametrize("text", ["[1, 2]", '"llama"', "\udcff"])
def test_non_object_or_undecodable_config_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(UsageError) as err:
        load_model(str(path))
    assert err.value.key == "--model"


@pytest.mark.parametrize(("change", "key"), [({"head_dim": -16}, "head_dim"),
                                             ({"tie_word_embeddings": "false"}, "tie_word_embeddings")])
def test_cli_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict, key: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**TINY_CONFIGS["llama"], **change}))
    code = main(["plan", "--model", str(path), "--gpu", "a100-80gb"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--model" in lines[0] and key in lines[0] and "Traceback" not in err


@pytest.mark.parametrize(("cfg", "words"), [({"model_type": "t5"}, "not a causal language model"),
                                            ({"model_type": "no-such-arch"}, "is not known")])
def test_cli_refuses_what_the_meta_device_path_cannot_build(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           cfg: dict, words: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    code = main(["plan", "--model", str(path), "--gpu", "a100-80gb"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--model" in lines[0] and words in lines[0] and "Traceback" not in err
