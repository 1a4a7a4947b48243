"""Tiny configs of the families added beside the first seven, one or more per ``model_type``.

Each exercises the branches its family has in ``from_hf_config``: OPT's embedding projections and
post-norm variant, Falcon's three attention/norm layouts, fused q/k/v (Phi-3), q/k norms (Qwen3,
Gemma 3), sandwich norms (Gemma 2/3), shared experts with a gate, ``mlp_only_layers`` and
``decoder_sparse_step`` (Qwen MoE), multi-head latent attention with and without a query
compression and dense first layers (DeepSeek V2/V3). ``build_hf_model`` builds them.
"""

from __future__ import annotations

from typing import Any

_BASE = {"vocab_size": 512, "max_position_embeddings": 256}
_LLAMA_LIKE = {**_BASE, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2}
_MOE = {"num_experts_per_tok": 2, "moe_intermediate_size": 32}
_MLA = {"num_key_value_heads": 4, "kv_lora_rank": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 16, "v_head_dim": 12,
        "n_group": 1, "topk_group": 1}

FAMILY_CONFIGS: dict[str, dict[str, Any]] = {
    # OPT-125m style (pre-norm, biases, tied) with word_embed_proj_dim != d: project_in/out.
    "opt-proj": {**_BASE, "model_type": "opt", "hidden_size": 64, "ffn_dim": 96, "num_hidden_layers": 2,
                 "num_attention_heads": 4, "word_embed_proj_dim": 32, "pad_token_id": 1},
    # OPT-350m style: post-norm (no final norm), and here no biases and an untied head.
    "opt-postnorm": {**_BASE, "model_type": "opt", "hidden_size": 48, "ffn_dim": 80, "num_hidden_layers": 3,
                     "num_attention_heads": 3, "do_layer_norm_before": False, "enable_bias": False,
                     "tie_word_embeddings": False, "pad_token_id": 1},
    # Falcon-7B style: multi-query, parallel block with one norm, no biases, tied.
    "falcon": {**_BASE, "model_type": "falcon", "hidden_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 4},
    # Falcon-40B style: new decoder architecture, grouped k/v, two norms; with biases.
    "falcon-new": {**_BASE, "model_type": "falcon", "hidden_size": 64, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "new_decoder_architecture": True, "num_kv_heads": 2,
                   "bias": True, "ffn_hidden_size": 80},
    # Sequential block, multi-head, ALiBi positions, untied head.
    "falcon-seq-alibi": {**_BASE, "model_type": "falcon", "hidden_size": 48, "num_hidden_layers": 2,
                         "num_attention_heads": 4, "parallel_attn": False, "multi_query": False,
                         "alibi": True, "tie_word_embeddings": False},
    "phi3": {**_LLAMA_LIKE, "model_type": "phi3", "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2},
    "qwen3": {**_LLAMA_LIKE, "model_type": "qwen3", "head_dim": 24, "tie_word_embeddings": True},
    # Shared expert with its gate; layer 1 dense by mlp_only_layers.
    "qwen2_moe": {**_LLAMA_LIKE, "model_type": "qwen2_moe", "num_hidden_layers": 3, "num_experts": 4, **_MOE,
                  "shared_expert_intermediate_size": 48, "mlp_only_layers": [1]},
    # Sparse every second layer, explicit head_dim, attention biases.
    "qwen3_moe": {**_LLAMA_LIKE, "model_type": "qwen3_moe", "num_hidden_layers": 3, "num_experts": 4, **_MOE,
                  "decoder_sparse_step": 2, "head_dim": 24, "attention_bias": True},
    "gemma2": {**_LLAMA_LIKE, "model_type": "gemma2", "head_dim": 32},
    "gemma3_text": {**_LLAMA_LIKE, "model_type": "gemma3_text", "head_dim": 32, "attention_bias": True},
    # DeepSeek-V2-Lite style: no query compression, one dense first layer, dense MLP biases.
    "deepseek_v2": {**_LLAMA_LIKE, "model_type": "deepseek_v2", "num_hidden_layers": 3, "n_routed_experts": 4,
                    **_MOE, "n_shared_experts": 2, "first_k_dense_replace": 1, "q_lora_rank": None, **_MLA,
                    "mlp_bias": True},
    # DeepSeek-V3 style: query compression, attention biases, untied.
    "deepseek_v3": {**_LLAMA_LIKE, "model_type": "deepseek_v3", "num_hidden_layers": 3, "n_routed_experts": 4,
                    **_MOE, "n_shared_experts": 1, "first_k_dense_replace": 1, "q_lora_rank": 24, **_MLA,
                    "attention_bias": True},
}
"""Name -> Hugging Face config fields of a tiny model of an added family."""
