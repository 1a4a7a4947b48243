"""``trainplan plan``: memory, time and cost of one layout, or ``--recommend`` the best layouts.

Examples::

    trainplan plan --model llama-2-7b --gpu a100-80gb --gpus 8 --zero 3 --tokens 2T
    trainplan plan --model llama-3.1-70b --gpu h100-sxm --recommend --max-gpus 64 --optimize cost
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import click

from trainplan.cli._help import field_docs
from trainplan.cli._types import Count, Finite, check_output_file
from trainplan.cli._format import human_bytes, human_count, human_hours, parse_count, print_table
from trainplan.errors import UsageError
from trainplan.planner import (
    ATTENTION, CHECKPOINTING, FRAMEWORKS, LOSSES, OFFLOADS, OPTIMIZERS, PRECISIONS, ZERO_STAGES, Layout,
    LayoutSpace, Plan, load_gpu, load_model, plan as make_plan, plan_deepspeed_config, recommend,
)

_L = Layout()
"""The planner's defaults: each layout option's default and help are its Layout field's."""


def _doc(name: str) -> str:
    return field_docs(Layout)[name]


def _layout(o: dict[str, Any]) -> tuple[Layout, int | None]:
    """The layout the flags give (one flag per Layout field); returns it and the global batch asked
    for (if any), which sets the accumulation by the planner's one rule."""
    layout = Layout(**{f.name: o[f.name] for f in fields(Layout)} | {"grad_accum": o["grad_accum"] or 1}).validate()
    gb = o["global_batch"]
    if gb is None:
        return layout, None
    return layout.with_global_batch(gb, grad_accum=o["grad_accum"]), gb


def _plan_rows(p: Plan) -> list[list[str]]:
    mem, lay, perf, fl, pc = p.memory, p.layout, p.perf, p.flops, p.params
    rows = [
        ["parameters", f"{pc.total:,} total; {pc.embedding:,} embedding; {pc.non_embedding:,} non-embedding; "
                       f"{pc.per_layer:,} per layer" + (f"; {pc.active:,} active per token" if p.model.is_moe else "")],
        ["counted by", "analytic formulas for the family" if pc.source == "analytic" else
                       "the model built by transformers on the meta device, FLOPs from FlopCounterMode"],
        ["layout", f"{lay.gpus} x {p.gpu.key} ({lay.nodes} node{'s' * (lay.nodes > 1)}), dp {lay.dp} tp {lay.tp} "
                   f"pp {lay.pp}, ZeRO-{lay.zero}, offload {lay.offload}, {lay.precision}, "
                   f"checkpointing {lay.checkpointing}, attention {lay.attention}, {lay.optimizer}"],
        ["batch", f"micro {lay.micro_batch} x accum {lay.grad_accum} x dp {lay.dp} = {lay.global_batch} "
                  f"sequences of {lay.seq_len} = {lay.tokens_per_step:,} tokens/step"],
        ["FLOPs / token", f"model {fl.model_per_token:.3e} (6N + 12Lds), hardware {fl.hardware_per_token:.3e} "
                          f"(with recompute); per step {fl.model_per_step:.3e} / {fl.hardware_per_step:.3e}"],
    ]
    for name, value in mem.breakdown().items():
        rows.append([f"  {name.replace('_', ' ')}", human_bytes(value)])
    rows += [
        ["memory / GPU", f"{human_bytes(mem.total)} (nvidia-smi) of {human_bytes(p.usable_bytes)} usable: "
                         + ("FITS" if p.fits else "DOES NOT FIT") + f", headroom {human_bytes(p.headroom_bytes)}"],
        ["  as torch reports", f"max_memory_allocated {human_bytes(mem.allocated)}, reserved "
                               f"{human_bytes(mem.reserved)}; peak at {mem.peak_phase} ({lay.framework})"],
    ]
    if mem.cpu_bytes:
        rows.append(["CPU memory / node", human_bytes(mem.cpu_bytes * min(lay.gpus, lay.gpus_per_node))])
    if mem.nvme_bytes:
        rows.append(["NVMe / node", human_bytes(mem.nvme_bytes * min(lay.gpus, lay.gpus_per_node))])
    rows += [
        ["step time", f"{perf.step_time_s:.3f} s = compute {perf.compute_s:.3f} + exposed DP comm "
                      f"{perf.dp_comm_exposed_s:.3f} + TP comm {perf.tp_comm_s:.3f} + bubble {perf.bubble_s:.3f} "
                      f"+ pipeline sends {perf.pp_p2p_s:.3f} + offload {perf.offload_s:.3f} (assumed compute efficiency {perf.efficiency:.0%})"],
        ["throughput", f"{perf.tokens_per_s:,.0f} tokens/s ({perf.tokens_per_s / lay.gpus:,.0f} per GPU), "
                       f"MFU {perf.mfu:.1%}, HFU {perf.hfu:.1%}"],
        ["training", f"{human_count(p.tokens)} tokens ({p.tokens_source}) = {p.steps:,} steps: "
                     f"{human_hours(p.hours)}, {p.gpu_hours:,.0f} GPU-hours"],
        ["cost", f"${p.cost_usd:,.0f} at ${p.price_per_hour:.2f}/GPU-hour"],
        ["scaling law", f"compute-optimal {human_count(p.scaling.compute_optimal_tokens)} tokens "
                        f"({p.scaling.tokens_per_parameter:.1f}/param); predicted loss "
                        f"{p.scaling.predicted_loss_at_optimal:.3f} there"
                        + (f", {p.scaling.predicted_loss_at_tokens:.3f} at {human_count(p.tokens)}"
                           if p.scaling.predicted_loss_at_tokens else "")
                        + " (Chinchilla fit, Besiroglu et al. 2024; a prediction)"],
    ]
    for s in p.suggested_hyperparams():
        rows.append([f"LR / batch ({s.law})", f"peak LR {s.lr:.3g}, global batch {human_count(s.batch_tokens)} tokens "
                                              f"= {s.batch_sequences(lay.seq_len):,} sequences (prior: {s.source})"])
    return rows


def _data_limit(p: Plan, unique_tokens: float | None) -> dict[str, Any] | None:
    """Epochs and the data-constrained loss when the plan needs more tokens than the data holds."""
    if unique_tokens is None:
        return None
    from dataclasses import asdict

    from trainplan.planner._scaling import data_constrained

    pred = data_constrained(p.params.active, p.tokens, unique_tokens)
    return {**asdict(pred), "law": "Muennighoff et al. 2023 (arXiv:2305.16264, eqs. 5-6), Besiroglu constants"}


def _data_row(d: dict[str, Any]) -> list[str]:
    if d["epochs"] <= 1:
        return ["data", f"{human_count(d['tokens'])} of {human_count(d['unique_tokens'])} unique tokens: under one epoch"]
    return ["data", f"{d['epochs']:.1f} epochs of {human_count(d['unique_tokens'])} unique tokens: worth "
                    f"{human_count(d['effective_tokens'])} unique; predicted loss {d['predicted_loss']:.3f} "
                    f"(vs {d['predicted_loss_unconstrained']:.3f} with unique data; Muennighoff et al. 2023"
                    + (", little lost up to ~4 epochs)" if d["epochs"] <= 4 else ", repeated tokens lose value past ~4 epochs)")]


def _rec_rows(plans: list[Plan]) -> list[list[str]]:
    return [[str(i + 1), str(p.layout.gpus), f"{p.layout.dp}/{p.layout.tp}/{p.layout.pp}", str(p.layout.zero),
             p.layout.offload, f"{p.layout.micro_batch}x{p.layout.grad_accum}", p.layout.checkpointing,
             human_bytes(p.memory.total), f"{p.perf.tokens_per_s:,.0f}", f"{p.perf.mfu:.1%}",
             human_hours(p.hours), f"${p.cost_usd:,.0f}"] for i, p in enumerate(plans)]


def _write_ds_config(path: str | None, p: Plan) -> None:
    if path:
        Path(path).write_text(json.dumps(plan_deepspeed_config(p), indent=2) + "\n")
        click.echo(f"wrote the DeepSpeed config of this layout to {path}", err=True)


@click.command()
@click.option("--model", required=True, help="Preset name (see `trainplan models`), a config.json or folder, or a hub id.")
@click.option("--gpu", default="h100-sxm", show_default=True, help="GPU from the catalog (see `trainplan gpus`).")
@click.option("--gpus", type=Count(), default=_L.gpus, show_default=True, help=_doc("gpus"))
@click.option("--gpus-per-node", type=Count(1, 1024), default=_L.gpus_per_node, show_default=True, help=_doc("gpus_per_node"))
@click.option("--seq-len", type=Count(1, 2**24), default=None, help="Tokens per sequence [2048, or the model's maximum if smaller].")
@click.option("--micro-batch", type=Count(), default=_L.micro_batch, show_default=True, help=_doc("micro_batch"))
@click.option("--grad-accum", type=Count(), default=None, help=_doc("grad_accum") + f" [{_L.grad_accum}]")
@click.option("--global-batch", type=Count(), default=None, help="Sequences per optimizer step (sets --grad-accum).")
@click.option("--tokens", default=None, help="Training tokens, e.g. 300B or 2T [compute-optimal].")
@click.option("--zero", type=click.Choice([str(z) for z in ZERO_STAGES]), default=str(_L.zero), show_default=True, help=_doc("zero"))
@click.option("--offload", type=click.Choice(OFFLOADS), default=_L.offload, show_default=True, help=_doc("offload"))
@click.option("--tp", type=Count(1, 1024), default=_L.tp, show_default=True, help=_doc("tp"))
@click.option("--pp", type=Count(1, 1024), default=_L.pp, show_default=True, help=_doc("pp"))
@click.option("--precision", type=click.Choice(PRECISIONS), default=_L.precision, show_default=True, help=_doc("precision"))
@click.option("--checkpointing", type=click.Choice(CHECKPOINTING), default=_L.checkpointing, show_default=True,
              help=_doc("checkpointing"))
@click.option("--attention", type=click.Choice(ATTENTION), default=_L.attention, show_default=True, help=_doc("attention"))
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=_L.optimizer, show_default=True, help=_doc("optimizer"))
@click.option("--framework", type=click.Choice(FRAMEWORKS), default=_L.framework, show_default=True,
              help=_doc("framework"))
@click.option("--pp-interleave", type=Count(1, 1024), default=_L.pp_interleave, show_default=True,
              help=_doc("pp_interleave"))
@click.option("--cp", type=Count(1, 1 << 20), default=_L.cp, show_default=True, help=_doc("cp"))
@click.option("--sequence-parallel", is_flag=True, help=_doc("sequence_parallel") + " Needs --tp > 1.")
@click.option("--loss", type=click.Choice(LOSSES), default=_L.loss, show_default=True, help=_doc("loss"))
@click.option("--mfu", type=Finite(0, 1, low_open=True), default=None, help="Compute efficiency to assume, 0-1 [by model width].")
@click.option("--price", type=Finite(0, 1e6), default=None, help="USD per GPU-hour [catalog default].")
@click.option("--recommend", is_flag=True, help="Search layouts and rank those that fit.")
@click.option("--max-gpus", type=Count(), default=64, show_default=True, help="With --recommend.")
@click.option("--optimize", type=click.Choice(["time", "cost", "gpus"]), default="time", show_default=True)
@click.option("--top", type=Count(1, 10**6), default=5, show_default=True, help="Layouts shown with --recommend.")
@click.option("--ds-config", type=click.Path(dir_okay=False), default=None, help="Write the (best) layout's ds_config.json here.")
@click.option("--report", type=click.Path(dir_okay=False), default=None, help="Write a planner-only HTML page here.")
@click.option("--dataset-tokens", default=None, help="Unique tokens of the training data, e.g. 500B: epochs and the data-constrained loss.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--calibration", type=click.Path(dir_okay=False), default=None,
              help="Calibration file (trainplan calibrate): plan on its device, with intervals.")
def plan(**o: Any) -> None:
    """Estimate parameters, FLOPs, per-GPU memory, throughput, time and cost (all estimates)."""
    o["zero"] = int(o["zero"])
    check_output_file(o["ds_config"], "--ds-config")
    check_output_file(o["report"], "--report")
    model = load_model(o["model"])
    gpu = load_gpu(o["gpu"])
    tokens = parse_count(o["tokens"], "--tokens") if o["tokens"] is not None else None  # '' is refused too
    unique = parse_count(o["dataset_tokens"], "--dataset-tokens") if o["dataset_tokens"] is not None else None
    o["seq_len"] = o["seq_len"] or min(2048, model.max_position_embeddings)
    layout, global_batch = _layout(o)
    cal = None
    if o["calibration"]:  # plan on the calibrated device (trainplan/cli/calibrate.py)
        from trainplan.cli.calibrate import calibrated_dict, calibrated_rows, use_calibration

        cal, gpu, layout = use_calibration(o, layout, gpu)
    single = make_plan(model, layout, gpu, tokens=tokens, mfu=o["mfu"], price=o["price"])
    data = _data_limit(single, unique)
    rec = None
    if o["recommend"]:
        rec = recommend(model, gpu, layout, global_batch=global_batch or layout.global_batch, tokens=tokens,
                        optimize=o["optimize"], space=LayoutSpace(max_gpus=o["max_gpus"]),
                        mfu=o["mfu"], price=o["price"], calibration=cal)
    best = rec.ranked[0] if rec and rec.ranked else single
    _write_ds_config(o["ds_config"], best)
    if o["report"]:
        from trainplan.reports import build_plan_report

        path = build_plan_report(single, rec, Path(o["report"]))
        click.echo(f"wrote planner report to {path}", err=True)

    if o["fmt"] == "json":
        out: dict[str, Any] = single.to_dict()
        if data is not None:
            out["scaling"]["data_constrained"] = data
        if cal is not None:
            out["calibrated"] = calibrated_dict(cal, single, o["calibration"])
        if rec is not None:
            out = rec.to_dict(single, o["top"])
        click.echo(json.dumps(out, indent=2))
    else:
        if rec is not None:  # the answer first; the requested layout after it, one line when it does not fit
            if rec.ranked:
                print_table(
                    f"Recommended layouts by {rec.optimize} (global batch {rec.ranked[0].layout.global_batch}; "
                    f"{rec.feasible:,} of {rec.evaluated:,} candidates fit; fewest GPUs: {rec.min_gpus})"
                    + (" - tokens/s, time and cost calibrated" if rec.calibrated is not None else ""),
                    ["#", "GPUs", "dp/tp/pp", "ZeRO", "offload", "micro x accum", "ckpt", "mem/GPU",
                     "tokens/s", "MFU", "time", "cost"],
                    _rec_rows(rec.ranked[: o["top"]]))
            else:
                click.echo(f"no layout of {rec.evaluated:,} candidates up to {o['max_gpus']} GPUs fits in "
                           f"{gpu.name} memory; raise --max-gpus or lower --seq-len", err=True)
            if not single.fits:
                lay = single.layout
                click.echo(f"requested layout ({lay.gpus} x {gpu.key}, ZeRO-{lay.zero}, micro-batch {lay.micro_batch}): "
                           f"DOES NOT FIT, needs {human_bytes(single.memory.total)} of "
                           f"{human_bytes(gpu.memory_bytes)} per GPU (estimate)")
                return
        print_table(f"trainplan plan: {model.name} on {gpu.name} (estimates)" + (" -- the requested layout" if rec else ""),
                    ["", "estimate"], _plan_rows(single) + ([_data_row(data)] if data else []))
        if cal is not None:
            print_table("Calibrated (90% prediction intervals)", ["", "calibrated estimate"], calibrated_rows(cal, single))
