"""The planner's allocated-memory estimate against the ten real H100 trials (issue 14).

benchmarks/results/gpu_trials holds ten ``trainplan run`` trials measured on one NVIDIA H100 80GB
HBM3 (torch 2.11 cu130, DeepSpeed 0.19.8, transformers 5.17; Llama-style models 125M-1.5B, bf16,
SDPA, sequences of 2048, ZeRO 0/1/2/3 on one GPU, micro-batch 2-16, checkpointing none/full). Each
folder's ``result.json`` has ``peak_mem_bytes`` (``torch.cuda.max_memory_allocated`` over the whole
run, evaluation included) and ``spec.json`` the model and layout. Each trial is planned here on
``h100-sxm`` with that model and layout, and the plan's ``max_allocated_bytes`` must be within
``TOLERANCE`` of the measurement; the peak must fall in the phase the mechanism says
(planner/_memory.py, PHASES).

Measured (estimate - measured) / measured, this tree: -0.5% to +0.3% on every row. The planner
before the phase-by-phase peak (gpu_check.json's ``estimate``, commit 6746dbd: fp32 gradients
summed with the activations, 14 bytes a logit) was +6.4% to +17.5% above on every row, so
every row fails this test on that code.
Pure Python, no torch: a fraction of a second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trainplan.planner import Layout, load_gpu, load_model, plan

ROOT = Path(__file__).resolve().parents[2]
TRIALS = ROOT / "benchmarks" / "results" / "gpu_trials"
GPU_CHECK = ROOT / "benchmarks" / "results" / "gpu_check.json"
TOLERANCE = 0.01
"""Achieved: the largest miss is 0.5% (the checkpointed 1.5B row, whose peak is its evaluation)."""
PHASE = {"llama-1.5b-z0-mb2-1r": "optimizer step", "llama-1.5b-z0-mb16-ckptfull-1r": "evaluation"}
"""Where the peak falls when it is not at the loss: at micro-batch 2 FP16_Optimizer's fp32 copies
of the gradients outweigh the activations; with every block checkpointed the evaluation's logits
and key/value cache outweigh the training step."""


def _trials() -> list[Path]:
    return sorted(p for p in TRIALS.glob("llama-*") if (p / "result.json").is_file())


def _planned(folder: Path) -> tuple[int, int, str]:
    """(estimated max_allocated, measured max_memory_allocated, peak phase) of one trial."""
    spec: dict[str, Any] = json.loads((folder / "spec.json").read_text())
    result: dict[str, Any] = json.loads((folder / "result.json").read_text())
    assert result["status"] == "completed", folder.name
    p = plan(load_model(str(ROOT / spec["model"])), Layout(**spec["layout"]), load_gpu("h100-sxm"), tokens=1e9)
    return p.to_dict()["memory"]["max_allocated_bytes"], int(result["peak_mem_bytes"]), p.memory.peak_phase


def test_all_ten_trials_are_there():
    assert len(_trials()) == 10


@pytest.mark.parametrize("folder", _trials(), ids=lambda p: p.name)
def test_allocated_estimate_within_tolerance_of_max_memory_allocated(folder: Path):
    est, measured, phase = _planned(folder)
    assert abs(est / measured - 1) <= TOLERANCE, (folder.name, est / 2**30, measured / 2**30, f"{est / measured - 1:+.2%}")
    assert phase == PHASE.get(folder.name, "loss"), (folder.name, phase)


def test_the_planner_before_the_phases_missed_every_row():
    # The estimate terms the older planner wrote beside each measurement (kept as `estimate_at_run`
    # once gpu_check.py --replan re-estimated the rows): allocated = total - overhead.
    rows = {r["name"]: r for r in json.loads(GPU_CHECK.read_text())["trials"] if r["status"] == "completed"}
    assert set(rows) == {p.name for p in _trials()}
    misses = {}
    for name, row in rows.items():
        terms = row.get("estimate_at_run", row["estimate"])["memory"]
        old = terms["total_bytes"] - terms["overhead_bytes"]
        misses[name] = old / row["measured"]["peak_allocated_bytes"] - 1
    assert min(misses.values()) > 0.06 and max(misses.values()) > 0.17, misses
    assert all(m > TOLERANCE for m in misses.values())
