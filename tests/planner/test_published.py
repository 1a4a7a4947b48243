"""The planner against published measurements (papers and public benchmark tables).

Each record in ``data/published_measurements.json`` names its source, the text read there, and
the planner inputs that describe its configuration. The tolerances are what the planner honestly
achieves with its default assumptions; they are stated here and in the README, and every row's
error is printed by ``benchmarks/published_check.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trainplan.planner import Layout, from_hf_config, load_gpu, load_model, plan

DATA = json.loads((Path(__file__).parent / "data" / "published_measurements.json").read_text())["measurements"]

# Relative tolerance per quantity (see README, "What it has been checked against").
TOLERANCE = {
    # One compute efficiency per GPU for every framework and year (Megatron-LM 2021 to torchtitan 2024).
    "mfu": 0.30,
    "tflops_per_gpu": 0.30,
    "tokens_per_s_per_gpu": 0.30,
    "gpu_hours": 0.35,  # published GPU-hours include restarts, evaluations and downtime
}


def predicted(record: dict[str, Any]) -> float:
    """What the planner estimates for the record's quantity."""
    spec = record["plan"]
    ref = spec["model"]
    model = load_model(ref) if isinstance(ref, str) else from_hf_config(ref, name=record["id"])
    gpus_per_node = spec["layout"].pop("gpus_per_node", 8)
    p = plan(model, Layout(gpus_per_node=gpus_per_node, **spec["layout"]), load_gpu(spec["gpu"]),
             tokens=spec.get("tokens"))
    q = record["quantity"]
    if q == "mfu":
        return p.perf.mfu
    if q == "tflops_per_gpu":  # Megatron counts the recompute pass (Narayanan et al. 2021, eq. 3)
        return p.perf.hfu * p.gpu.peak_flops(p.layout.precision) / 1e12
    if q == "tokens_per_s_per_gpu":
        return p.perf.tokens_per_s / p.layout.gpus
    if q == "gpu_hours":
        return p.gpu_hours
    raise AssertionError(f"unknown quantity {q}")


def test_the_data_file_has_enough_sourced_measurements():
    assert len(DATA) >= 10
    for rec in DATA:
        assert rec["source"] and rec["quote"], rec["id"]
        assert rec["quantity"] in TOLERANCE


@pytest.mark.parametrize("record", DATA, ids=[r["id"] for r in DATA])
def test_planner_lands_within_tolerance_of_published(record):
    est = predicted(json.loads(json.dumps(record)))
    tol = TOLERANCE[record["quantity"]]
    assert est == pytest.approx(record["value"], rel=tol), (
        f"{record['id']}: planner {est:.4g} vs published {record['value']:.4g} "
        f"({(est / record['value'] - 1):+.1%}, tolerance {tol:.0%})")
