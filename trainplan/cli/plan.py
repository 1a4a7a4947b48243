"""``trainplan plan``: memory, time and cost of one layout, or ``--recommend`` the best layouts.

Examples::

    trainplan plan --model llama-2-7b --gpu a100-80gb --gpus 8 --zero 3 --tokens 2T
    trainplan plan --model llama-3.1-70b --gpu h100-sxm --recommend --max-gpus 64 --optimize cost
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from trainplan.cli._format import human_bytes, human_count, human_hours, parse_count, print_table
from trainplan.errors import UsageError
from trainplan.planner import (
    ATTENTION, CHECKPOINTING, OFFLOADS, OPTIMIZERS, PRECISIONS, Layout, LayoutSpace, Plan,
    deepspeed_config, load_gpu, load_model, plan as make_plan, recommend,
)


def _layout(o: dict[str, Any]) -> tuple[Layout, int | None]:
    """Build the layout from flags; returns it and the global batch asked for (if any)."""
    layout = Layout(
        gpus=o["gpus"], gpus_per_node=o["gpus_per_node"], zero=o["zero"], offload=o["offload"],
        tp=o["tp"], pp=o["pp"], micro_batch=o["micro_batch"], grad_accum=o["grad_accum"] or 1,
        seq_len=o["seq_len"], precision=o["precision"], checkpointing=o["checkpointing"],
        attention=o["attention"], optimizer=o["optimizer"],
    ).validate()
    gb = o["global_batch"]
    if gb is None:
        return layout, None
    per_step = layout.micro_batch * layout.dp
    if gb % per_step:
        raise UsageError("--global-batch", f"{gb} is not divisible by --micro-batch x data-parallel size = "
                         f"{layout.micro_batch} x {layout.dp} = {per_step}")
    if o["grad_accum"] and o["grad_accum"] != gb // per_step:
        raise UsageError("--grad-accum", f"{o['grad_accum']} disagrees with --global-batch {gb} "
                         f"(which implies {gb // per_step}); give one of them")
    return layout.with_(grad_accum=gb // per_step), gb


def _plan_rows(p: Plan) -> list[list[str]]:
    mem, lay, perf, fl, pc = p.memory, p.layout, p.perf, p.flops, p.params
    rows = [
        ["parameters", f"{pc.total:,} total; {pc.embedding:,} embedding; {pc.non_embedding:,} non-embedding; "
                       f"{pc.per_layer:,} per layer" + (f"; {pc.active:,} active per token" if p.model.is_moe else "")],
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
        ["memory / GPU", f"{human_bytes(mem.total)} of {human_bytes(p.gpu.memory_bytes)}: "
                         + ("FITS" if p.fits else "DOES NOT FIT") + f", headroom {human_bytes(p.headroom_bytes)}"],
    ]
    if mem.cpu_bytes:
        rows.append(["CPU memory / node", human_bytes(mem.cpu_bytes * min(lay.gpus, lay.gpus_per_node))])
    if mem.nvme_bytes:
        rows.append(["NVMe / node", human_bytes(mem.nvme_bytes * min(lay.gpus, lay.gpus_per_node))])
    rows += [
        ["step time", f"{perf.step_time_s:.3f} s = compute {perf.compute_s:.3f} + exposed DP comm "
                      f"{perf.dp_comm_exposed_s:.3f} + TP comm {perf.tp_comm_s:.3f} + bubble {perf.bubble_s:.3f} "
                      f"+ offload {perf.offload_s:.3f} (assumed compute efficiency {perf.efficiency:.0%})"],
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
    return rows


def _rec_rows(plans: list[Plan]) -> list[list[str]]:
    return [[str(i + 1), str(p.layout.gpus), f"{p.layout.dp}/{p.layout.tp}/{p.layout.pp}", str(p.layout.zero),
             p.layout.offload, f"{p.layout.micro_batch}x{p.layout.grad_accum}", p.layout.checkpointing,
             human_bytes(p.memory.total), f"{p.perf.tokens_per_s:,.0f}", f"{p.perf.mfu:.1%}",
             human_hours(p.hours), f"${p.cost_usd:,.0f}"] for i, p in enumerate(plans)]


def _write_ds_config(path: str | None, p: Plan) -> None:
    if path:
        Path(path).write_text(json.dumps(deepspeed_config(p.layout), indent=2) + "\n")
        click.echo(f"wrote the DeepSpeed config of this layout to {path}", err=True)


@click.command()
@click.option("--model", required=True, help="Preset name (see `trainplan models`), a config.json or folder, or a hub id.")
@click.option("--gpu", default="h100-sxm", show_default=True, help="GPU from the catalog (see `trainplan gpus`).")
@click.option("--gpus", type=click.IntRange(min=1), default=1, show_default=True, help="Total GPUs.")
@click.option("--gpus-per-node", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--seq-len", type=click.IntRange(min=1), default=None, help="Tokens per sequence [2048, or the model's maximum if smaller].")
@click.option("--micro-batch", type=click.IntRange(min=1), default=1, show_default=True, help="Sequences per GPU per step.")
@click.option("--grad-accum", type=click.IntRange(min=1), default=None, help="Micro-batches per optimizer step [1].")
@click.option("--global-batch", type=click.IntRange(min=1), default=None, help="Sequences per optimizer step (sets --grad-accum).")
@click.option("--tokens", default=None, help="Training tokens, e.g. 300B or 2T [compute-optimal].")
@click.option("--zero", type=click.Choice(["0", "1", "2", "3"]), default="0", show_default=True)
@click.option("--offload", type=click.Choice(OFFLOADS), default="none", show_default=True)
@click.option("--tp", type=click.IntRange(min=1), default=1, show_default=True, help="Tensor-parallel degree.")
@click.option("--pp", type=click.IntRange(min=1), default=1, show_default=True, help="Pipeline-parallel degree.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="bf16", show_default=True)
@click.option("--checkpointing", type=click.Choice(CHECKPOINTING), default="none", show_default=True)
@click.option("--attention", type=click.Choice(ATTENTION), default="sdpa", show_default=True)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="adamw", show_default=True)
@click.option("--mfu", type=float, default=None, help="Compute efficiency to assume, 0-1 [by model width].")
@click.option("--price", type=float, default=None, help="USD per GPU-hour [catalog default].")
@click.option("--recommend", is_flag=True, help="Search layouts and rank those that fit.")
@click.option("--max-gpus", type=click.IntRange(min=1), default=64, show_default=True, help="With --recommend.")
@click.option("--optimize", type=click.Choice(["time", "cost", "gpus"]), default="time", show_default=True)
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, help="Layouts shown with --recommend.")
@click.option("--ds-config", type=click.Path(dir_okay=False), default=None, help="Write the (best) layout's ds_config.json here.")
@click.option("--report", type=click.Path(dir_okay=False), default=None, help="Write a planner-only HTML page here.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--calibration", type=click.Path(dir_okay=False), default=None,
              help="Calibration file (trainplan calibrate): plan on its device, with intervals.")
def plan(**o: Any) -> None:
    """Estimate parameters, FLOPs, per-GPU memory, throughput, time and cost (all estimates)."""
    o["zero"] = int(o["zero"])
    model = load_model(o["model"])
    gpu = load_gpu(o["gpu"])
    tokens = parse_count(o["tokens"], "--tokens") if o["tokens"] else None
    o["seq_len"] = o["seq_len"] or min(2048, model.max_position_embeddings)
    layout, global_batch = _layout(o)
    cal = None
    if o["calibration"]:  # plan on the calibrated device (trainplan/cli/calibrate.py)
        from trainplan.cli.calibrate import calibrated_dict, calibrated_rows, use_calibration

        cal, gpu, layout = use_calibration(o, layout, gpu)
    single = make_plan(model, layout, gpu, tokens=tokens, mfu=o["mfu"], price=o["price"])
    rec = None
    if o["recommend"]:
        rec = recommend(model, gpu, layout, global_batch=global_batch or layout.global_batch, tokens=tokens,
                        optimize=o["optimize"], space=LayoutSpace(max_gpus=o["max_gpus"]),
                        mfu=o["mfu"], price=o["price"])
    best = rec.ranked[0] if rec and rec.ranked else single
    _write_ds_config(o["ds_config"], best)
    if o["report"]:
        from trainplan.reports import build_plan_report

        path = build_plan_report(single, rec, Path(o["report"]))
        click.echo(f"wrote planner report to {path}", err=True)

    if o["fmt"] == "json":
        out: dict[str, Any] = single.to_dict()
        if cal is not None:
            out["calibrated"] = calibrated_dict(cal, single, o["calibration"])
        if rec is not None:
            out = {"kind": "recommendation", "optimize": rec.optimize, "evaluated": rec.evaluated,
                   "feasible": rec.feasible, "min_gpus": rec.min_gpus, "requested": single.to_dict(),
                   "top": [p.to_dict() for p in rec.ranked[: o["top"]]],
                   "ds_config": deepspeed_config(best.layout) if rec.ranked else None}
        click.echo(json.dumps(out, indent=2))
    else:
        print_table(f"trainplan plan: {model.name} on {gpu.name} (estimates)", ["", "estimate"], _plan_rows(single))
        if cal is not None:
            print_table("Calibrated (90% prediction intervals)", ["", "calibrated estimate"], calibrated_rows(cal, single))
        if rec is not None:
            if rec.ranked:
                print_table(
                    f"Recommended layouts by {rec.optimize} (global batch {rec.ranked[0].layout.global_batch}; "
                    f"{rec.feasible:,} of {rec.evaluated:,} candidates fit; fewest GPUs: {rec.min_gpus})",
                    ["#", "GPUs", "dp/tp/pp", "ZeRO", "offload", "micro x accum", "ckpt", "mem/GPU",
                     "tokens/s", "MFU", "time", "cost"],
                    _rec_rows(rec.ranked[: o["top"]]))
            else:
                click.echo(f"no layout of {rec.evaluated:,} candidates up to {o['max_gpus']} GPUs fits in "
                           f"{gpu.name} memory; raise --max-gpus or lower --seq-len", err=True)
