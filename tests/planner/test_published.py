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


# The larger published set (issue 11): tests/planner/data/published_runs.json -----------------------
# Rows, sources, quotes and per-row tolerances were collected by the research engineer
# (/work/wt/research/NOTES.md); tests/planner/published_rows.py maps each to planner inputs.
# benchmarks/published_check.py prints every row before and after issue 11.

import trainplan.planner as _planner  # noqa: E402
from tests.planner import published_rows as pr  # noqa: E402

RUNS = pr.load_rows()
MEMORY = [r for r in RUNS if pr.is_memory(r) and not pr.is_fits_only(r)]
THROUGHPUT = [r for r in RUNS if not pr.is_memory(r)]
TRAINED = [r for r in RUNS if r.get("trained")]

# What the planner achieves today on this set (benchmarks/results/published_check.md). These are
# regression floors; the targets are asserted in the three tests after these.
ACHIEVED = {"memory_within": 0.94, "throughput_within": 0.81, "false_fits": 0}


def _share_within(rows: list[dict[str, Any]]) -> float:
    return sum(pr.within(r, pr.predicted(_planner, r)[0]) for r in rows) / len(rows)


def _false_fits() -> list[str]:
    return [r["id"] for r in TRAINED if not pr.predicted(_planner, r)[1]]


def test_published_runs_are_sourced_with_tolerances_and_enough_rows():
    assert len(MEMORY) + sum(pr.is_fits_only(r) for r in RUNS if pr.is_memory(r)) >= 25
    assert len(THROUGHPUT) >= 25
    assert len({r["source"]["title"].split(":")[0] for r in MEMORY}) >= 5
    for r in RUNS:
        assert r["source"]["quote"] and r["source"]["url_or_path"], r["id"]
        assert 0 < pr.tolerance(r) <= 0.30, r["id"]


def test_published_memory_does_not_regress():
    assert _share_within(MEMORY) >= ACHIEVED["memory_within"]


def test_published_throughput_does_not_regress():
    assert _share_within(THROUGHPUT) >= ACHIEVED["throughput_within"]


def test_published_false_fits_do_not_regress():
    assert len(_false_fits()) <= ACHIEVED["false_fits"], _false_fits()


def test_memory_within_ten_percent_on_eighty_percent_of_rows():
    assert _share_within(MEMORY) >= 0.80


def test_throughput_within_fifteen_percent_on_eighty_percent_of_rows():
    assert _share_within(THROUGHPUT) >= 0.80


def test_no_trained_layout_is_answered_does_not_fit():
    assert _false_fits() == []
