"""Shared fixtures for the planner tests: tiny configs of every family and a real-model builder.

``TINY_CONFIGS`` holds one small Hugging Face config per supported family plus variants with odd
shapes (grouped-query attention, explicit head_dim != hidden/heads, q/k/v and MLP biases, tied and
untied heads, ignored bias flags), so that every branch of ``from_hf_config`` and of the parameter
and FLOP counts meets a real model. ``build_hf_model`` builds the very model transformers would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

_BASE = {"vocab_size": 512, "max_position_embeddings": 256}
_LLAMA_LIKE = {**_BASE, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2}

TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "gpt2": {"model_type": "gpt2", "vocab_size": 512, "n_positions": 256, "n_embd": 64,
             "n_layer": 2, "n_head": 4},
    # Untied head and an explicit MLP width: both are separate code paths in GPT-2.
    "gpt2-untied-ninner": {"model_type": "gpt2", "vocab_size": 509, "n_positions": 128, "n_embd": 48,
                           "n_layer": 3, "n_head": 3, "n_inner": 80, "tie_word_embeddings": False},
    "gpt_neox": {**_BASE, "model_type": "gpt_neox", "hidden_size": 64, "intermediate_size": 160,
                 "num_hidden_layers": 2, "num_attention_heads": 4, "rotary_pct": 0.25},
    # Pythia-style with the attention biases switched off and a tied head.
    "gpt_neox-nobias-tied": {**_BASE, "model_type": "gpt_neox", "hidden_size": 48, "intermediate_size": 100,
                             "num_hidden_layers": 2, "num_attention_heads": 6, "attention_bias": False,
                             "tie_word_embeddings": True},
    "llama": {**_LLAMA_LIKE, "model_type": "llama"},
    # Every optional llama branch: biases everywhere, head_dim != hidden/heads, multi-query, tied.
    "llama-biases-headdim": {**_LLAMA_LIKE, "model_type": "llama", "attention_bias": True, "mlp_bias": True,
                             "head_dim": 24, "num_key_value_heads": 1, "tie_word_embeddings": True},
    # Mistral's modeling code has no biases: the attention_bias flag must be ignored.
    "mistral": {**_LLAMA_LIKE, "model_type": "mistral", "attention_bias": True, "sliding_window": 64},
    "mixtral": {**_LLAMA_LIKE, "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2},
    "qwen2": {**_LLAMA_LIKE, "model_type": "qwen2", "tie_word_embeddings": True},
    "gemma": {**_LLAMA_LIKE, "model_type": "gemma", "head_dim": 32, "num_key_value_heads": 1},
}
"""Name -> Hugging Face config fields of a tiny model (build with ``build_hf_model``)."""


def build_hf_model(cfg: Mapping[str, Any], *, device: str = "meta", attn_implementation: str | None = None,
                   seed: int = 0, **from_config: Any) -> Any:
    """The ``AutoModelForCausalLM`` transformers builds from ``cfg``, on ``device`` (fp32).

    Extra keywords go to ``from_config`` (e.g. ``experts_implementation="eager"``).
    """
    import torch
    import transformers

    config = transformers.AutoConfig.for_model(**cfg)
    kwargs = dict(from_config)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    torch.manual_seed(seed)
    with torch.device(device):
        return transformers.AutoModelForCausalLM.from_config(config, **kwargs)


@pytest.fixture(params=sorted(TINY_CONFIGS))
def tiny_config(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """``(name, config)`` for each tiny config in turn."""
    return request.param, TINY_CONFIGS[request.param]


@pytest.fixture
def hf_model_builder() -> Callable[..., Any]:
    """``build_hf_model`` as a fixture, for tests in other files of this folder."""
    return build_hf_model
