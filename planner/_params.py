"""Exact parameter counts of a :class:`ModelSpec`, to the unit.

The counts follow the Hugging Face modeling code of each supported family (transformers 5):
which projections carry biases, whether the LM head is tied, GPT-2's and OPT's learned position
tables, OPT's embedding projections, Qwen3/Gemma 3 q/k norms, Gemma 2/3 sandwich norms, the MoE
routers, stacked routed experts and shared experts (Mixtral, Qwen MoE, DeepSeek), and DeepSeek's
multi-head latent attention. ``tests/planner/test_params.py`` checks every preset
against ``sum(p.numel() for p in model.parameters())`` of the real model built on the meta device.

Conventions (stated once, used by the memory and FLOP estimates):

- ``embedding`` is the input token embedding plus, for GPT-2, the learned position table.
- ``lm_head`` is the output projection's own weight: 0 when it is tied to the token embedding.
  An untied head is *not* part of ``embedding``; ``non_embedding = total - embedding`` therefore
  includes it (it is a real V x d matmul per token, unlike the embedding lookup).
- ``per_layer`` is one transformer block; where blocks differ (DeepSeek's dense first layers,
  Qwen-MoE's ``mlp_only_layers``) it is the largest one, and ``per_layer_*``/``per_expert``
  describe that block; ``layers`` (all blocks) stays exact.
- ``active`` is what one token uses: for a mixture of experts only ``experts_per_token`` experts
  plus the router (Mixtral 8x7B: 12.9B of 46.7B); for a dense model it equals ``total``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from trainplan.planner._model import ModelSpec

__all__ = ["ParamCounts", "blocks", "count_parameters", "ends_matmul_per_token"]


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
    projections: int = 0
    """OPT's bias-free ``project_in``/``project_out`` between the embedding width and d (0 elsewhere)."""
    source: str = "analytic"
    """``"analytic"`` (counted from the config here) or ``"meta-device"`` (measured on the model
    transformers builds on the meta device, :mod:`trainplan.planner._meta`)."""

    @property
    def layers(self) -> int:
        """All transformer blocks together."""
        return self.total - self.embedding - self.lm_head - self.final_norm - self.projections


@dataclass(frozen=True, slots=True)
class _Block:
    """One block split by how tensor parallelism treats it."""

    sharded_matrix: int
    sharded_bias: int
    replicated_matrix: int
    replicated_vector: int
    expert: int
    """One routed expert's MLP (weights and biases)."""
    routed: int
    """Routed experts in this block (0 for a dense MLP)."""
    matmul_per_token: int
    """Weights one token multiplies by in this block: attention, router, shared expert, its k
    routed experts (the MLP of a dense block). A linear layer's forward is 2 x this in FLOPs."""
    unused: int = 0
    """Routed-expert parameters one token does not use."""

    @property
    def total(self) -> int:
        return self.sharded_matrix + self.sharded_bias + self.replicated_matrix + self.replicated_vector


def _norm_params(model: ModelSpec) -> int:
    # RMSNorm has a weight only; LayerNorm a weight and a bias (every family's norms are affine).
    return model.hidden_size * (2 if model.norm == "layernorm" else 1)


def _attention(model: ModelSpec) -> tuple[int, int, int, int]:
    """``(sharded matrix, sharded bias, replicated matrix, replicated vector)`` of one attention."""
    d, q, kv, heads = model.hidden_size, model.q_size, model.kv_size, model.num_heads
    out_bias = d if model.out_bias else 0  # added after the row-parallel all-reduce: replicated
    if model.is_mla:
        # Multi-head latent attention (DeepSeek-V2 paper, section 2.1.2; modeling_deepseek_v3.py):
        # q = q_b(norm(q_a(x))), or q_proj(x) without q_lora_rank; [c_kv, k_rope] = kv_a(x);
        # [k_nope, v] = kv_b(norm(c_kv)). The down-projections q_a and kv_a serve all heads, so
        # TP replicates them (as Megatron-Core's MLA does); q_b/q_proj and kv_b are column-parallel,
        # o_proj row-parallel. attention_bias adds biases to q_a, kv_a and o_proj only.
        r_q, r_kv, rope, v = model.q_lora_rank, model.kv_lora_rank, model.qk_rope_head_dim, model.value_head_dim
        sharded = (r_q or d) * q + r_kv * heads * (model.head_dim - rope + v) + heads * v * d
        down = d * r_q + d * (r_kv + rope)
        down_bias = (r_q + r_kv + rope) if model.qkv_bias else 0
        return sharded, 0, down, r_q + r_kv + down_bias + out_bias  # + q_a / kv_a RMSNorm weights
    matrix = d * q + 2 * d * kv + q * d  # q, k, v (GQA-sized), output projection
    qkv_bias = (q + 2 * kv) if model.qkv_bias else 0
    qk_norm = 2 * model.head_dim if model.qk_norm else 0  # RMSNorm(head_dim) on q and on k
    return matrix, qkv_bias, 0, qk_norm + out_bias


def _mlp(model: ModelSpec, inner: int, bias: bool) -> tuple[int, int, int]:
    """``(matrices, column-parallel biases, row-parallel bias)`` of one (gated) MLP."""
    up_matrices = 2 if model.gated_mlp else 1  # gate and up (SwiGLU/GeGLU) or fc_in
    d = model.hidden_size
    return (up_matrices + 1) * d * inner, (up_matrices * inner if bias else 0), (d if bias else 0)


def _block(model: ModelSpec, layer: int = 0) -> _Block:
    """Block ``layer``: its attention, norms and MLP (dense, or routed + shared experts)."""
    d = model.hidden_size
    a_matrix, a_bias, a_rep_matrix, a_rep_vector = _attention(model)
    norms = model.norms_per_layer * _norm_params(model)
    if not model.is_moe or layer in model.dense_layers:
        m_matrix, m_bias, m_down_bias = _mlp(model, model.intermediate_size, model.mlp_bias)
        return _Block(sharded_matrix=a_matrix + m_matrix, sharded_bias=a_bias + m_bias,
                      replicated_matrix=a_rep_matrix, replicated_vector=a_rep_vector + norms + m_down_bias,
                      expert=0, routed=0, matmul_per_token=a_matrix + a_rep_matrix + m_matrix)
    e, k = model.num_experts, model.experts_per_token
    # Routed experts are stacked weights without biases in every MoE family here (transformers 5
    # MixtralExperts, Qwen2MoeExperts, DeepseekV3NaiveMoe); the router is Linear(d, E), no bias.
    expert, _, _ = _mlp(model, model.expert_size, False)
    shared, shared_bias, shared_down_bias = (_mlp(model, model.shared_expert_size, model.mlp_bias)
                                             if model.shared_expert_size else (0, 0, 0))
    router = d * e + (d if model.shared_expert_gate else 0)  # + Qwen2-MoE's Linear(d, 1) shared gate
    return _Block(
        sharded_matrix=a_matrix + e * expert + shared, sharded_bias=a_bias + shared_bias,
        replicated_matrix=a_rep_matrix + router, replicated_vector=a_rep_vector + norms + shared_down_bias,
        expert=expert, routed=e, matmul_per_token=a_matrix + a_rep_matrix + router + shared + k * expert,
        unused=(e - k) * expert,
    )


@lru_cache(maxsize=256)  # pure; the FLOP count asks again for every layout --recommend tries
def blocks(model: ModelSpec) -> tuple[_Block, ...]:
    """Every block of ``model``, in order (MoE models may mix dense and sparse blocks)."""
    return tuple(_block(model, i) for i in range(model.num_layers))


def ends_matmul_per_token(model: ModelSpec) -> int:
    """Weights each token multiplies by outside the blocks: the LM head (tied or not) and OPT's
    projections between the embedding width and d."""
    width = model.embed_proj_dim or model.hidden_size
    proj = 2 * model.hidden_size * model.embed_proj_dim
    return width * model.vocab_size + proj


@lru_cache(maxsize=256)  # pure in a frozen spec; --recommend asks thousands of times
def count_parameters(model: ModelSpec) -> ParamCounts:
    """Exact parameter counts of ``model`` as its Hugging Face implementation builds it."""
    if model.source != "analytic":
        return ParamCounts(**dict(model.exact_params), source=model.source)
    d = model.hidden_size
    every = blocks(model)
    blk = max(every, key=lambda b: b.total)  # the largest block stands for "a block" (see per_layer)
    per_layer_matrix = blk.sharded_matrix + blk.replicated_matrix
    per_layer_vector = blk.sharded_bias + blk.replicated_vector

    width = model.embed_proj_dim or d
    token_embedding = model.vocab_size * width
    positions = (model.max_position_embeddings + model.position_offset) * d if model.learned_positions else 0
    embedding = token_embedding + positions
    lm_head = 0 if model.tie_word_embeddings else model.vocab_size * width  # no bias in any family
    projections = 2 * d * model.embed_proj_dim  # OPT project_in / project_out, no biases
    final_norm = _norm_params(model) if model.final_norm else 0
    layers = sum(b.total for b in every)
    total = embedding + layers + final_norm + lm_head + projections
    return ParamCounts(
        total=total,
        embedding=embedding,
        non_embedding=total - embedding,
        lm_head=lm_head,
        per_layer=blk.total,
        per_layer_matrix=per_layer_matrix,
        per_layer_vector=per_layer_vector,
        per_layer_tp_sharded=blk.sharded_matrix + blk.sharded_bias,
        per_layer_tp_replicated=blk.replicated_matrix + blk.replicated_vector,
        per_expert=blk.expert,
        final_norm=final_norm,
        norms_and_biases=sum(b.sharded_bias + b.replicated_vector for b in every) + final_norm,
        active=total - sum(b.unused for b in every),
        projections=projections,
    )
