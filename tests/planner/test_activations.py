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

from trainplan.planner import Layout, from_hf_config, load_model
from trainplan.planner._activations import logits_bytes, op_recompute_flops_per_token
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


# Fused kernels (megatron / fsdp) against the closed forms of Korthikanti et al. 2022 ----------------
# A GPT block with dropout, layer norms, a 4h GeLU MLP and eager attention; h=1024, a=16, s=2048,
# b=1. The paper's figures ignore the fp32 mean/rstd a fused layer norm keeps (8 bytes a token per
# norm); those are added by hand below.
_GPT = {"model_type": "gpt2", "vocab_size": 50304, "n_positions": 2048, "n_embd": 1024, "n_layer": 24,
        "n_head": 16, "attn_pdrop": 0.1, "resid_pdrop": 0.1, "embd_pdrop": 0.1}
_SBH, _AS2B, _STATS = 2048 * 1024, 16 * 2048 ** 2, 2 * 8 * 2048


def _fused(**layout: Any):
    base = dict(framework="megatron", precision="fp16", micro_batch=1, seq_len=2048, attention="eager")
    return activation_bytes(from_hf_config(_GPT), Layout(**{**base, **layout}))


def test_fused_gpt_block_saves_34sbh_plus_5as2b():
    # Korthikanti eq. 1: s*b*h*(34 + 5*a*s/h) = 71,303,168 + 335,544,320 (+ 32,768 norm statistics)
    assert _fused().per_layer == 34 * _SBH + 5 * _AS2B + _STATS == 406_880_256


def test_tensor_parallelism_leaves_10sbh_whole_and_sequence_parallelism_splits_it():
    # eq. 2: sbh (10 + 24/t + 5as/(ht)); eq. 4 (with sequence parallelism): sbh/t (34 + 5as/h)
    assert _fused(gpus=4, tp=4).per_layer == 10 * _SBH + 24 * _SBH // 4 + 5 * _AS2B // 4 + _STATS
    assert _fused(gpus=4, tp=4, sequence_parallel=True).per_layer == (34 * _SBH + 5 * _AS2B + _STATS) // 4


def test_megatron_selective_and_full_checkpointing():
    # Sec. 5: selective keeps 34sbh (scores recomputed); full keeps the block input, 2sbh (/t with SP)
    assert _fused(checkpointing="selective").per_layer == 34 * _SBH + _STATS
    assert _fused(checkpointing="full").per_layer == 2 * _SBH
    assert _fused(gpus=4, tp=4, sequence_parallel=True, checkpointing="full").per_layer == 2 * _SBH // 4
    assert _fused(checkpointing="full").recompute == _fused().per_layer


def test_fused_llama_block_with_flash_by_hand():
    # Llama-2-7B, bf16, s=4096: norm inputs 2(2d + 4), QKV/MLP inputs 2*2d, q k v out 2(4*4096)
    # + fp32 lse 4*32, fused SwiGLU 3 * 2 * 11008 = 131,720 bytes a token.
    model = load_model("llama-2-7b")
    act = activation_bytes(model, Layout(framework="fsdp", seq_len=4096, attention="flash"))
    assert act.per_layer == 4096 * (2 * (2 * 4096 + 4) + 2 * 2 * 4096 + 2 * 4 * 4096 + 4 * 32 + 3 * 2 * 11008)
    # The HF eager path keeps fp32 norm copies and four SwiGLU intermediates: ~1.4x more.
    eager = activation_bytes(model, Layout(seq_len=4096, attention="flash"))
    assert 1.3 < eager.per_layer / act.per_layer < 1.5


def test_torchtitan_per_op_checkpointing_keeps_every_other_matmul_and_flash_outputs():
    # Block input d, wq (q), wv (kv), w1 (I), w2 (d) outputs, the SDPA output (q) and lse:
    # (4096 + 4096 + 4096 + 11008 + 4096 + 4096) * 2 + 4 * 32 = 63,104 bytes a token.
    model = load_model("llama-2-7b")
    act = activation_bytes(model, Layout(framework="fsdp", seq_len=4096, checkpointing="selective-op"))
    assert act.per_layer == 4096 * 63_104
    none = activation_bytes(model, Layout(framework="fsdp", seq_len=4096))
    assert act.recompute == none.per_layer  # one block rebuilt in backward, as under full
    assert op_recompute_flops_per_token(model) == 32 * 2 * (4096 * 4096 + 4096 * 4096 + 4096 * 11008)


def test_interleaved_pipeline_keeps_fewer_micro_batches_in_flight():
    # Korthikanti Sec. 4.2.3: p (1 + (p-1)/(p v)) micro-batches of a stage: 4 (1 + 3/8) = 5.5
    model = load_model("llama-2-7b")
    plain = activation_bytes(model, Layout(gpus=4, pp=4, grad_accum=8))
    inter = activation_bytes(model, Layout(gpus=4, pp=4, grad_accum=8, pp_interleave=2))
    assert (plain.in_flight, inter.in_flight) == (4, 5.5)


@pytest.mark.parametrize(("framework", "loss", "per_elem"),
                         [("deepspeed", "default", 12), ("fsdp", "default", 16), ("megatron", "default", 4 + 2),
                          ("megatron-deepspeed", "default", 4 + 2)])
def test_logits_peak_by_framework(framework, loss, per_elem):
    # tp = 2: fsdp (torchtitan) runs DTensor's loss_parallel, 16 bytes a logit (logits_bytes docstring)
    model = load_model("llama-2-7b")
    layout = Layout(framework=framework, loss=loss, micro_batch=2, seq_len=4096, gpus=2, tp=2)
    assert logits_bytes(model, layout) == 2 * 4096 * 16000 * per_elem


def test_torchtitan_loss_parallel_holds_16_bytes_a_logit_plain_cross_entropy_12():
    # Llama 3.1 70B, local batch 16 x 8192 on TP 8 (torchtitan's 2D run): 131,072 tokens x 128,256/8 =
    # 16,032 logits a token per rank; torch/distributed/tensor/parallel/loss.py backward holds the saved
    # log-softmax, zeros_like grad_input, (grad_input + exp(x)) and its product with grad_output: 4 x 4 B.
    model = load_model("llama-3.1-70b")
    tp8 = Layout(framework="fsdp", gpus=256, tp=8, sequence_parallel=True, micro_batch=16, seq_len=8192)
    assert logits_bytes(model, tp8) == 33_621_540_864 == 131_072 * 16_032 * 16
    plain = Layout(framework="fsdp", gpus=256, micro_batch=16, seq_len=8192)  # log_softmax + 2 fp32 grads
    assert logits_bytes(model, plain) == 131_072 * 128_256 * 12


def test_ulysses_cross_entropy_is_not_in_place():
    # Megatron-DeepSpeed's vocab_sequence_parallel_cross_entropy (Ulysses): softmax (fp32, saved),
    # softmax.log() (fp32), the fp32 copy and the fp16 logits at once: 2 + 4 + 4 + 4 = 14 bytes a logit
    # on s/cp = 8192 tokens; Megatron's in-place vocab_parallel_cross_entropy (cp = 1) holds 4 + 2.
    model = from_hf_config({**_GPT, "n_positions": 32768})
    ulysses = Layout(framework="megatron-deepspeed", precision="fp16", gpus=8, cp=4, seq_len=32768)
    assert logits_bytes(model, ulysses) == 5_769_265_152 == 8192 * 50304 * 14
    tp = Layout(framework="megatron-deepspeed", precision="fp16", gpus=8, tp=4, seq_len=32768)
    assert logits_bytes(model, tp) == 32768 * 50304 // 4 * 6


def test_dtensor_sequence_parallelism_saves_the_gathered_linear_inputs():
    # Megatron SP saves the sequence-sharded inputs of the QKV and first MLP linears (2sbh each, /t)
    # and gathers again in backward; torchtitan's DTensor SP hands F.linear the all-gathered input,
    # which it saves whole. Everything else is the same: the difference is 4sbh (1 - 1/t) = 3sbh.
    megatron = _fused(gpus=4, tp=4, sequence_parallel=True)
    fsdp = _fused(gpus=4, tp=4, sequence_parallel=True, framework="fsdp")
    assert fsdp.per_layer - megatron.per_layer == 4 * _SBH - 4 * _SBH // 4 == 6_291_456


def test_final_norm_and_lm_head_input_only_on_the_last_pipeline_stage():
    # Llama-2-7B bf16, 4096 tokens: final RMSNorm input (2d + 4) and output, the LM head's input (2d).
    model = load_model("llama-2-7b")
    one = activation_bytes(model, Layout(framework="fsdp", seq_len=4096))
    assert one.head == 4096 * (2 * 4096 + 4 + 2 * 4096)
    assert one.forward == one.layers * one.per_layer + one.other + one.head
    piped = activation_bytes(model, Layout(framework="fsdp", gpus=4, pp=4, grad_accum=8, seq_len=4096))
    assert piped.forward == 4 * (piped.layers * piped.per_layer + piped.other)  # first stage: no head
    assert piped.last_stage == piped.layers * piped.per_layer + piped.other + piped.head


def test_chunked_loss_never_holds_the_whole_logits():
    model = load_model("llama-2-7b")
    chunked = logits_bytes(model, Layout(loss="chunked", micro_batch=2, seq_len=4096))
    assert chunked == 2 * 4096 * 4096 * (8 + 2)  # one ~b*s*d chunk, fp32 + grad, and the lp hidden grad
    assert chunked < logits_bytes(model, Layout(micro_batch=2, seq_len=4096)) / 9  # HF loss: 12 B a logit


def test_fused_loss_holds_lp_logits_and_their_gradient_only():
    # flash-attn's CrossEntropyLoss (llm-foundry's default): lp logits + lp gradient, 2e bytes each
    model = load_model("llama-2-7b")
    assert logits_bytes(model, Layout(loss="fused", micro_batch=2, seq_len=4096)) == 2 * 4096 * 32000 * 4
