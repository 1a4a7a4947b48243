"""Turn a row of ``data/published_runs.json`` into planner inputs, and read the planner's answer.

Shared by ``test_published.py`` and ``benchmarks/published_check.py``. Every function takes the
planner package as an argument, so the benchmark can run the very same mapping against the planner
as it was before issue 11 (an older ``trainplan.planner`` whose ``Layout`` lacks the newer fields:
they are dropped, and choices it did not offer are mapped to the nearest it had, see ``OLD_CHOICES``).
How each published field maps, and what is approximated, is stated in ``MAPPING``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

DATA = Path(__file__).parent / "data" / "published_runs.json"
GIB = 2**30

MAPPING = """\
framework: fsdp, fsdp2 and torchtune's single-GPU recipe -> fsdp; deepspeed -> deepspeed; megatron ->
megatron; megatron-deepspeed -> megatron-deepspeed. zero: the row's stage (FSDP FULL_SHARD 3,
SHARD_GRAD_OP 2). checkpointing: per-op-selective -> selective-op; selective-layer (every N-th block
checkpointed) -> full when the row's selective_ac_fraction is 1, else selective-op, whose recompute
is of the same order (an approximation). A paged optimizer (bitsandbytes PagedAdamW: states in
unified memory the driver evicts to the host) -> offload cpu.
precision: bf16, amp_bf16, fp16 as named; 'pure' bf16 (torchtune: no fp32 master or states) ->
bf16-pure. fused_loss: chunked CE / Liger -> loss chunked; other fused kernels (flash-attn, xformers)
-> fused; Megatron's vocab-parallel fusion is its default loss. llm-foundry MPT rows -> fused: its
ComposerMPTCausalLM defaults to loss_fn fused_crossentropy (flash-attn's kernel) and the benchmark
yamls do not override it (the row's 'no fused loss' assumption is overruled here). loss_compiled (torchtitan
compiles its loss with the model since 2025) -> fused: inductor saves the lp logits and a per-row
log-sum-exp and writes an lp gradient. context_parallel / Ulysses degree c -> cp = c.
zero_partition_ranks z (ZeRO-3 partitioning over fewer ranks than dp x cp, as Megatron-DeepSpeed did
in early 2024) -> memory rows are planned on z x tp x pp GPUs (dp x cp = z): per-GPU bytes are those of
one partition group, the other replicas hold the same. Not modelled, so left out of the mapping:
float8 matmuls and all-gathers, torch.compile, async TP, HSDP replica groups, optimizer-in-backward.
Memory quantity: max_memory_reserved_gib -> reserved; peak_memory_gib measured as torch's active or
allocated peak -> max_allocated; peak_memory_gib of unknown kind -> nvidia-smi (total).
The 'before' planner had one memory figure (memory.per_gpu.total_bytes): it is compared with every
memory row."""

OLD_CHOICES = {"checkpointing": {"selective-op": "selective"}, "precision": {"bf16-pure": "bf16"}}


def load_rows() -> list[dict[str, Any]]:
    return json.loads(DATA.read_text())["rows"]


def _framework(name: str) -> str:
    name = name.lower()
    if name.startswith("megatron-deepspeed"):
        return "megatron-deepspeed"
    if name.startswith("megatron"):
        return "megatron"
    if name.startswith("deepspeed"):
        return "deepspeed"
    return "fsdp"  # fsdp, fsdp2, single-gpu (torchtune)


def _choice(text: str, options: dict[str, str], default: str) -> str:
    text = str(text).lower()
    return next((v for k, v in options.items() if k in text), default)


def layout_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The planner ``Layout`` the row describes (all fields of the newest ``Layout``)."""
    lay, hw = row["layout"], row["hardware"]
    tp, pp = int(lay.get("tp") or 1), int(lay.get("pp") or 1)
    cp = int(lay.get("context_parallel") or 1)
    gpus = int(hw["gpus"])
    if lay.get("zero_partition_ranks") and is_memory(row):
        gpus = int(lay["zero_partition_ranks"]) * tp * pp  # dp x cp = the ranks ZeRO-3 partitions over
    dp = max(gpus // (tp * pp * cp), 1)
    mb = int(lay["micro_batch"])
    accum = lay.get("grad_accum")
    if not accum:
        gb = lay.get("global_batch")
        accum = max(round(gb / (mb * dp)), 1) if gb else 1
    zero = lay.get("zero")
    zero = int(zero) if str(zero).isdigit() else 3
    fused_loss = str(lay.get("fused_loss") or "").lower()
    if "chunk" in fused_loss or "liger" in fused_loss or lay.get("liger_kernel"):
        loss = "chunked"
    elif lay.get("loss_compiled"):
        loss = "fused"  # torch.compile'd cross-entropy: lp logits + lse saved, lp gradient
    elif fused_loss and fused_loss != "false" and "megatron" not in fused_loss:
        loss = "fused"
    elif str(row["model"]["preset_or_hf"]).startswith("{'model_type': 'mpt'") or \
            (isinstance(row["model"]["preset_or_hf"], dict) and row["model"]["preset_or_hf"].get("model_type") == "mpt"):
        loss = "fused"  # llm-foundry's MPT defaults to loss_fn fused_crossentropy (modeling_mpt.py)
    else:
        loss = "default"
    precision = str(lay.get("precision", "bf16")).lower()
    return dict(
        gpus=gpus, gpus_per_node=int(hw.get("gpus_per_node") or 8), zero=zero,
        offload="cpu" if str(lay.get("offload", "none")).startswith("cpu") or "paged" in str(lay.get("optimizer")).lower() else "none",
        tp=tp, pp=pp, cp=cp, micro_batch=mb, grad_accum=int(accum), seq_len=int(lay["seq_len"]),
        precision="fp16" if "fp16" in precision else ("bf16-pure" if "pure" in precision and "autocast" not in precision else "bf16"),
        checkpointing="full" if "selective-layer" in str(lay.get("checkpointing")) and float(lay.get("selective_ac_fraction") or 0.5) >= 1
        else _choice(lay.get("checkpointing", "none"),
                              {"per-op": "selective-op", "selective-layer": "selective-op", "selective": "selective",
                               "full": "full"}, "none"),
        attention=_choice(lay.get("attention", "sdpa"), {"eager": "eager", "flash": "flash"}, "sdpa"),
        optimizer="adamw", framework=_framework(lay.get("framework", "deepspeed")),
        pp_interleave=int(lay.get("pp_interleave") or 1), sequence_parallel=bool(lay.get("sequence_parallel")) and tp > 1,
        loss=loss,
    )


def model_spec(planner: ModuleType, row: dict[str, Any]):
    """A preset, an HF config the planner reads, or a spec built from the row's stated shape."""
    ref = row["model"]["preset_or_hf"]
    if isinstance(ref, str):
        return planner.load_model(ref)
    if ref.get("model_type") in planner.SUPPORTED_FAMILIES:
        return planner.from_hf_config(ref, name=row["id"])
    m = row["model"]
    heads = int(m["num_heads"])
    return planner.ModelSpec(
        name=row["id"], family=str(ref.get("model_type")).split()[0], vocab_size=int(m["vocab_size"]),
        hidden_size=int(m["hidden_size"]), num_layers=int(m["num_layers"]), num_heads=heads,
        num_kv_heads=int(m.get("num_kv_heads") or heads),
        head_dim=int(ref.get("head_dim") or m["hidden_size"] // heads),
        intermediate_size=int(m["intermediate_size"]),
        max_position_embeddings=int(ref.get("max_seq_len") or ref.get("n_positions") or 1 << 20),
        tie_word_embeddings=bool(m.get("tie_word_embeddings", ref.get("tie_word_embeddings", False))),
        gated_mlp="swiglu" in str(m.get("mlp", "")).lower(),
        norm="rmsnorm" if "rms" in str(m.get("norm", "rmsnorm")).lower() else "layernorm",
        qkv_bias=bool(ref.get("qkv_bias")), out_bias=False, mlp_bias=False,
        learned_positions=bool(ref.get("learned_pos_emb")), hf_config=ref,
    )


def gpu_spec(planner: ModuleType, row: dict[str, Any]):
    gpu = planner.load_gpu(row["hardware"]["gpu"])
    mem = row["hardware"].get("memory_gib")
    if mem:  # a variant of the catalog's card (e.g. H100 96 GB): its size, no known nvidia-smi total
        changes = {"memory_gib": float(mem)}
        if "usable_mib" in {f.name for f in dataclasses.fields(gpu)}:
            changes["usable_mib"] = None
        gpu = dataclasses.replace(gpu, **changes)
    return gpu


def make_plan(planner: ModuleType, row: dict[str, Any]):
    """The planner's plan for the row; fields an older ``Layout`` lacks are dropped or mapped."""
    fields = layout_fields(row)
    known = {f.name for f in dataclasses.fields(planner.Layout)}
    for key, table in OLD_CHOICES.items():
        if key in fields and fields[key] not in getattr(planner, key.upper(), ()) and key != "precision":
            fields[key] = table.get(fields[key], fields[key])
    if "bf16-pure" not in getattr(planner, "PRECISIONS", ()):
        fields["precision"] = OLD_CHOICES["precision"].get(fields["precision"], fields["precision"])
    fields = {k: v for k, v in fields.items() if k in known}
    layout = planner.Layout(**fields)
    return planner.plan(model_spec(planner, row), layout, gpu_spec(planner, row), tokens=1e9)


def memory_kind(row: dict[str, Any]) -> str:
    """Which planner figure a memory row is compared with: reserved, max_allocated or nvidia_smi."""
    if row["quantity"] == "max_memory_reserved_gib":
        return "reserved"
    kind = str(row.get("memory_kind") or row.get("measurement") or "").lower()
    if "active" in kind or "allocated" in kind:
        return "max_allocated"
    return "nvidia_smi"


def is_memory(row: dict[str, Any]) -> bool:
    return row["quantity"] in ("peak_memory_gib", "max_memory_reserved_gib")


def is_fits_only(row: dict[str, Any]) -> bool:
    return row.get("value_kind") == "upper_bound"


def predicted(planner: ModuleType, row: dict[str, Any], *, old: bool = False) -> tuple[float, bool]:
    """(the planner's figure in the row's units, fits) for one row."""
    p = make_plan(planner, json.loads(json.dumps(row)))
    q = row["quantity"]
    if is_memory(row):
        mem = p.memory
        if old:
            value = mem.total
        else:
            value = {"reserved": mem.reserved, "max_allocated": mem.allocated, "nvidia_smi": mem.total}[memory_kind(row)]
        return value / GIB, p.fits
    if q == "tokens_per_s_per_gpu":
        return p.perf.tokens_per_s / p.layout.gpus, p.fits
    if q == "mfu":
        return p.perf.mfu, p.fits
    if q == "tflops_per_gpu":  # Megatron-style counting includes the recompute (Narayanan et al. 2021, eq. 3)
        return p.perf.hfu * p.gpu.peak_flops(p.layout.precision) / 1e12, p.fits
    raise AssertionError(f"unknown quantity {q}")


def error(row: dict[str, Any], value: float) -> float:
    """Signed relative error of ``value`` against the row."""
    return value / float(row["value"]) - 1


def category(row: dict[str, Any]) -> dict[str, str]:
    """Categories the benchmark groups by: GPU generation, model size band, parallelism."""
    params = float(row["model"].get("params_b") or 0)
    band = "<3B" if params < 3 else "3-15B" if params < 15 else "15-80B" if params < 80 else ">80B"
    lay = layout_fields(row)
    par = []
    if lay["tp"] > 1:
        par.append("TP")
    if lay["pp"] > 1:
        par.append("PP")
    if lay["cp"] > 1:
        par.append("CP")
    kind = {"fsdp": "FSDP", "deepspeed": "ZeRO", "megatron": "Megatron", "megatron-deepspeed": "Megatron-DS"}[lay["framework"]]
    gen = "A100" if row["hardware"]["gpu"].startswith("a100") else "H100/H200"
    return {"gpu": gen, "size": band, "parallelism": "+".join([kind, *par]) if par else f"{kind}-{lay['zero']}"
            if lay["framework"] == "deepspeed" else "+".join([kind, *par])}


def tolerance(row: dict[str, Any]) -> float:
    return float(row["tolerance"])


def within(row: dict[str, Any], value: float) -> bool:
    return math.isfinite(value) and abs(error(row, value)) <= tolerance(row)
