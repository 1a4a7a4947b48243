"""Exact parameter counts of a :class:`ModelSpec`, to the unit.

The counts follow the Hugging Face modeling code of each supported family (transformers 5):
which projections carry biases, whether the LM head is tied, GPT-2's learned position table,
Mixtral's router and stacked experts. ``tests/planner/test_params.py`` checks every preset
against ``sum(p.numel() for p in model.parameters())`` of the real model built on the meta device.

Conventions (stated once, used by the memory and FLOP estimates):

- ``embedding`` is the input token embedding plus, for GPT-2, the learned position table.
- ``lm_head`` is the output projection's own weight: 0 when it is tied to the token embedding.
  An untied head is *not* part of ``embedding``; ``non_embedding = total - embedding`` therefore
  includes it (it is a real V x d matmul per token, unlike the embedding lookup).
- ``per_layer`` is one transformer block (all blocks of a model are identical).
- ``active`` is what one token uses: for a mixture of experts only ``experts_per_token`` experts
  plus the router (Mixtral 8x7B: 12.9B of 46.7B); for a dense model it equals ``total``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from trainplan.planner._model import ModelSpec

__all__ = ["ParamCounts", "count_parameters"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ParamCounts:
    """Parameter counts of one model; every figure is an exact integer."""

    total: int
    """All distinct parameters (a tied LM head counted once)."""
    embedding: int
    """Token embedding (+ learned position table for GPT-2)."""
    non_embedding: int
    """``total - embedding``: blocks, final norm and an untied LM head."""
    lm_head: int
    """Untied output projection (V x d); 0 when tied to the token embedding."""
    per_layer: int
    """One transformer block."""
    per_layer_matrix: int
    """Weight matrices of one block (projections, experts, router)."""
    per_layer_vector: int
    """Norm weights/biases and projection biases of one block."""
    per_layer_tp_sharded: int
    """Part of a block that Megatron-style tensor parallelism splits across ranks: the q/k/v,
    output and MLP weight matrices, and the biases of the column-parallel ones (q/k/v, MLP
    up/gate), whose outputs are split (Shoeybi et al. 2019, "Megatron-LM", section 3)."""
    per_layer_tp_replicated: int
    """Part of a block every tensor-parallel rank holds whole: norms, the biases added after the
    row-parallel all-reduce (attention output, MLP down), and the MoE router."""
    per_expert: int
    """One MoE expert's MLP (0 for a dense model)."""
    final_norm: int
    """The norm after the last block."""
    norms_and_biases: int
    """Every one-dimensional parameter in the model (all norms and biases)."""
    active: int
    """Parameters one token uses (MoE: routed experts only; dense: ``total``)."""

    @property
    def layers(self) -> int:
        """All transformer blocks together."""
        return self.total - self.embedding - self.lm_head - self.final_norm


@dataclass(frozen=True, slots=True)
class _Block:
    """One block split by how tensor parallelism treats it."""

    sharded_matrix: int
    sharded_bias: int
    replicated_matrix: int
    replicated_vector: int
    expert: int
    """One expert's MLP (weights and biases)."""


def _norm_params(model: ModelSpec) -> int:
    # RMSNorm has a weight only; LayerNorm a weight and a bias (both HF families use affine norms).
    return model.hidden_size * (2 if model.norm == "layernorm" else 1)


def _block(model: ModelSpec) -> _Block:
    d, q, kv, inner = model.hidden_size, model.q_size, model.kv_size, model.intermediate_size
    attn_matrix = d * q + 2 * d * kv + q * d  # q, k, v (GQA-sized), output projection
    qkv_bias = (q + 2 * kv) if model.qkv_bias else 0
    out_bias = d if model.out_bias else 0
    up_matrices = 2 if model.gated_mlp else 1  # gate and up (SwiGLU/GeGLU) or fc_in
    mlp_matrix = (up_matrices + 1) * d * inner
    mlp_up_bias = up_matrices * inner if model.mlp_bias else 0
    mlp_down_bias = d if model.mlp_bias else 0
    expert = mlp_matrix + mlp_up_bias + mlp_down_bias
    router = d * model.num_experts if model.is_moe else 0  # Mixtral gate: Linear(d, E), no bias
    return _Block(
        sharded_matrix=attn_matrix + model.num_experts * mlp_matrix,
        sharded_bias=qkv_bias + model.num_experts * mlp_up_bias,
        replicated_matrix=router,
        replicated_vector=2 * _norm_params(model) + out_bias + model.num_experts * mlp_down_bias,
        expert=expert if model.is_moe else 0,
    )


@lru_cache(maxsize=256)  # pure in a frozen spec; --recommend asks thousands of times
def count_parameters(model: ModelSpec) -> ParamCounts:
    """Exact parameter counts of ``model`` as its Hugging Face implementation builds it."""
    d, layers = model.hidden_size, model.num_layers
    blk = _block(model)
    per_layer_matrix = blk.sharded_matrix + blk.replicated_matrix
    per_layer_vector = blk.sharded_bias + blk.replicated_vector
    per_layer = per_layer_matrix + per_layer_vector

    token_embedding = model.vocab_size * d
    positions = model.max_position_embeddings * d if model.learned_positions else 0
    embedding = token_embedding + positions
    lm_head = 0 if model.tie_word_embeddings else model.vocab_size * d  # no bias in any family
    final_norm = _norm_params(model)
    total = embedding + layers * per_layer + final_norm + lm_head

    unused_experts = (model.num_experts - model.experts_per_token) * blk.expert
    return ParamCounts(
        total=total,
        embedding=embedding,
        non_embedding=total - embedding,
        lm_head=lm_head,
        per_layer=per_layer,
        per_layer_matrix=per_layer_matrix,
        per_layer_vector=per_layer_vector,
        per_layer_tp_sharded=blk.sharded_matrix + blk.sharded_bias,
        per_layer_tp_replicated=blk.replicated_matrix + blk.replicated_vector,
        per_expert=blk.expert,
        final_norm=final_norm,
        norms_and_biases=layers * per_layer_vector + final_norm,
        active=total - layers * unused_experts,
    )
