"""Activation bytes of the planner against the tensors autograd really saves for backward.

A ``saved_tensors_hooks`` pack hook records the storage of every tensor a real Hugging Face model
saves during one training forward (fp32, CPU), each storage once. Parameters are excluded (they are
weights), and so are the storages shaped like the logits (the vocabulary as last dimension): the
planner reports those under ``logits`` and the test checks them separately against
``ActivationBytes.logits_saved``. What is compared is ``ActivationBytes.forward``: all blocks'
saved tensors plus ids, rotary tables and the final norm. Under full checkpointing that is only
each block's input; the block recomputed in backward (``ActivationBytes.recompute``) is a peak
that the hooks do not see during the forward, and equals the unchecked per-block bytes, which the
``none`` cases verify. Dropout masks are kept in the input dtype on the CPU (4 bytes) but as bools
on CUDA; the CPU runs pass ``mask_bytes=4``.
"""

from __future__ import annotations

from typing import Any

import pytest

from trainplan.planner import Layout, from_hf_config
from trainplan.planner._memory import activation_bytes

B, S, V, D = 2, 128, 1000, 128
_LLAMA = {"vocab_size": V, "max_position_embeddings": 256, "hidden_size": D, "intermediate_size": 352,
          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
FAMILIES: dict[str, dict[str, Any]] = {
    # GPT-2 with its dropouts off: SDPA with dropout falls back to the math path on the CPU.
    "gpt2": {"model_type": "gpt2", "vocab_size": V, "n_positions": 256, "n_embd": D, "n_layer": 2,
             "n_head": 4, "attn_pdrop": 0.0, "resid_pdrop": 0.0, "embd_pdrop": 0.0},
    "gpt_neox": {"model_type": "gpt_neox", "vocab_size": V, "max_position_embeddings": 256, "hidden_size": D,
                 "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4},
    "llama": {**_LLAMA, "model_type": "llama"},
    "mistral": {**_LLAMA, "model_type": "mistral"},
    "qwen2": {**_LLAMA, "model_type": "qwen2"},
    "gemma": {**_LLAMA, "model_type": "gemma", "head_dim": 32},
    "mixtral": {**_LLAMA, "model_type": "mixtral", "num_local_experts": 4, "num_experts_per_tok": 2},
}


def _saved_bytes(cfg: dict[str, Any], attention: str, full_checkpointing: bool) -> tuple[int, int]:
    """(activation bytes, logits-shaped bytes) saved for backward by one training forward."""
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**cfg),
                                                          attn_implementation=attention)
    model.train()
    if full_checkpointing:
        model.gradient_checkpointing_enable()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, tuple[int, bool]] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params and storage.nbytes():
            seen.setdefault(storage.data_ptr(), (storage.nbytes(), tensor.dim() > 0 and tensor.shape[-1] == V))
        return tensor

    ids = torch.randint(0, V, (B, S), generator=torch.Generator().manual_seed(0))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids).loss.backward()
    acts = sum(n for n, logit in seen.values() if not logit)
    return acts, sum(n for n, logit in seen.values() if logit)


CASES = [(fam, attn, ckpt) for fam in FAMILIES for attn in ("eager", "sdpa") for ckpt in ("none", "full")]


@pytest.mark.parametrize(("family", "attention", "checkpointing"), CASES,
                         ids=[f"{f}-{a}-{c}" for f, a, c in CASES])
def test_activation_bytes_within_ten_percent_of_autograd(family, attention, checkpointing):
    cfg = FAMILIES[family]
    layout = Layout(precision="fp32", micro_batch=B, seq_len=S, attention=attention, checkpointing=checkpointing)
    est = activation_bytes(from_hf_config(cfg), layout, mask_bytes=4)
    acts, logits = _saved_bytes(cfg, attention, checkpointing == "full")
    assert est.forward == pytest.approx(acts, rel=0.10), f"estimated {est.forward:,} vs saved {acts:,}"
    assert est.logits_saved == logits


def test_dropout_masks_are_counted():
    cfg = {**FAMILIES["gpt2"], "attn_pdrop": 0.1, "resid_pdrop": 0.1, "embd_pdrop": 0.1}
    layout = Layout(precision="fp32", micro_batch=B, seq_len=S, attention="eager")
    est = activation_bytes(from_hf_config(cfg), layout, mask_bytes=4)
    acts, _ = _saved_bytes(cfg, "eager", False)
    assert est.forward == pytest.approx(acts, rel=0.10)
    assert est.forward > activation_bytes(from_hf_config(FAMILIES["gpt2"]), layout, mask_bytes=4).forward


def test_bf16_halves_most_but_not_all_activation_bytes():
    model = from_hf_config(FAMILIES["llama"])
    fp32 = activation_bytes(model, Layout(precision="fp32", micro_batch=B, seq_len=S))
    bf16 = activation_bytes(model, Layout(precision="bf16", micro_batch=B, seq_len=S))
    # RMSNorm keeps fp32 copies and SDPA an fp32 log-sum-exp, so bf16 saves more than half.
    assert 0.5 * fp32.forward < bf16.forward < 0.75 * fp32.forward


def test_full_checkpointing_peak_adds_one_recomputed_block():
    model = from_hf_config(FAMILIES["llama"])
    none = activation_bytes(model, Layout(micro_batch=B, seq_len=S))
    full = activation_bytes(model, Layout(micro_batch=B, seq_len=S, checkpointing="full"))
    assert full.recompute == none.per_layer
    assert full.total == full.forward + none.per_layer < none.total
