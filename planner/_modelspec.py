"""The model description every estimate reads (``ModelSpec``), apart from how it is built.

``planner/_model.py`` builds specs from configs and presets with formulas; ``planner/_meta.py`` builds
them on the meta device for architectures without formulas. Both import this module, and neither
imports the other at module level, so the two builders form no import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ModelSpec", "SOURCES", "SUPPORTED_FAMILIES"]

# Hugging Face ``model_type`` values whose architecture the planner models exactly, in pure Python.
SUPPORTED_FAMILIES = (
    "gpt2", "gpt_neox", "llama", "mistral", "mixtral", "qwen2", "gemma",
    "opt", "falcon", "phi3", "qwen3", "qwen2_moe", "qwen3_moe", "gemma2", "gemma3_text",
    "deepseek_v2", "deepseek_v3",
)
SOURCES = ("analytic", "meta-device")
"""How a spec's parameters and FLOPs are counted: ``analytic`` by the formulas of ``_params.py`` and
``_flops.py`` (specs built by ``_model.py``), ``meta-device`` on a model built by ``_meta.py``."""


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
    moe_intermediate_size: int = 0
    """Inner width of one routed expert when it differs from ``intermediate_size`` (Qwen MoE,
    DeepSeek: there ``intermediate_size`` is the dense layers' MLP); 0 = ``intermediate_size``."""
    shared_expert_size: int = 0
    """Inner width of the always-on shared expert MLP (Qwen2-MoE, DeepSeek); 0 = none."""
    shared_expert_gate: bool = False
    """A Linear(d, 1) sigmoid gate scales the shared expert (Qwen2-MoE)."""
    dense_layers: tuple[int, ...] = ()
    """In an MoE model, the blocks whose MLP is dense (``intermediate_size``), by index."""
    norms_per_layer: int = 2
    """Hidden-size norms in one block: 2 pre-norms; 4 for Gemma 2/3 (pre and post norms around
    attention and MLP); 1 for Falcon-7B style parallel blocks."""
    qk_norm: bool = False
    """A per-head RMSNorm (head_dim weights) on queries and keys (Qwen3, Gemma 3)."""
    final_norm: bool = True
    """A norm after the last block (OPT-350m, post-norm, has none)."""
    position_offset: int = 0
    """Extra rows of a learned position table (OPT keeps 2 for its padding offset)."""
    embed_proj_dim: int = 0
    """Width of the token embedding when it differs from d, with bias-free projections in and out
    (OPT's ``word_embed_proj_dim``); 0 = d."""
    q_lora_rank: int = 0
    """Multi-head latent attention (DeepSeek V2/V3): rank of the query compression; 0 = a plain
    q_proj."""
    kv_lora_rank: int = 0
    """MLA: rank of the joint key/value compression; 0 = not MLA."""
    qk_rope_head_dim: int = 0
    """MLA: rotary part of each query/key head (``head_dim`` = nope + rope part)."""
    v_head_dim: int = 0
    """Width of one value head when it differs from ``head_dim`` (MLA); 0 = ``head_dim``."""
    source: str = "analytic"
    """How parameters and FLOPs are counted, one of ``SOURCES``."""
    exact_params: tuple[tuple[str, int], ...] = ()
    """``source == "meta-device"``: the parameter counts measured on the built model."""
    hf_config: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The raw Hugging Face config this spec came from."""

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def value_head_dim(self) -> int:
        return self.v_head_dim or self.head_dim

    @property
    def expert_size(self) -> int:
        """Inner width of one routed expert."""
        return self.moe_intermediate_size or self.intermediate_size

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim
