"""``trainplan models`` and ``trainplan gpus``: list the catalogs."""

from __future__ import annotations

import json

import click

from trainplan.cli._format import human_count, print_table
from trainplan.planner import count_parameters, gpu_catalog, load_model, model_presets


@click.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def models(fmt: str) -> None:
    """List the built-in model presets with their exact parameter counts."""
    rows = []
    for name, entry in model_presets().items():
        spec = load_model(name)
        rows.append({"name": name, "family": spec.family, "parameters": count_parameters(spec).total,
                     "layers": spec.num_layers, "hidden": spec.hidden_size, "heads": spec.num_heads,
                     "kv_heads": spec.num_kv_heads, "vocab": spec.vocab_size,
                     "experts": spec.num_experts, "source": entry.get("source", "")})
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    print_table(
        "Model presets (exact parameter counts)",
        ["preset", "family", "params", "layers", "d", "heads", "kv", "vocab", "source"],
        [[r["name"], r["family"], human_count(r["parameters"]), r["layers"], r["hidden"], r["heads"],
          r["kv_heads"], r["vocab"], r["source"]] for r in rows],
    )


@click.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def gpus(fmt: str) -> None:
    """List the GPU catalog: memory, dense peak TFLOP/s, bandwidths and default price."""
    catalog = gpu_catalog()
    if fmt == "json":
        click.echo(json.dumps({k: {f: getattr(g, f) for f in g.__slots__} for k, g in catalog.items()}, indent=2))
        return
    print_table(
        "GPU catalog (datasheet dense peaks; price = default USD per GPU-hour, override with --price)",
        ["gpu", "name", "GiB", "bf16 TF/s", "fp32/tf32 TF/s", "HBM GB/s", "node GB/s", "net GB/s", "$/h"],
        [[k, g.name, f"{g.memory_gib:g}", f"{g.tflops.get('bf16', 0):g}" if "bf16" in g.tflops else "-",
          f"{g.tflops.get('tf32', g.tflops.get('fp32', 0)):g}", f"{g.hbm_gbps:g}", f"{g.intra_node_gbps:g}",
          f"{g.inter_node_gbps:g}", f"{g.price_per_hour:.2f}"] for k, g in catalog.items()],
    )
