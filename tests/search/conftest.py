"""Shared helpers for the search tests: a tiny real sweep (a few seconds of DeepSpeed per trial)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests._proc import trainplan

TINY_BASE: dict[str, Any] = {
    "model": "trainplan-tiny",
    "tokens": 8192,  # 16 steps of 8 x 64 tokens
    "layout": {"micro_batch": 8, "seq_len": 64, "precision": "fp32"},
    "global_batch": 8,
    "eval_tokens": 2048,
    "max_data_bytes": 200_000,
    "evals_per_trial": 4,
    "hyperparams": {"lr": 3e-3},
}


def tiny_sweep(tmp: Path, name: str = "tiny", base_changes: dict[str, Any] | None = None, **sections: Any) -> Path:
    """Write a sweep file of tiny real trials; ``base_changes`` update the base trial and
    ``sections`` replace top-level keys."""
    sweep: dict[str, Any] = {
        "study_name": name, "base": {**TINY_BASE, **(base_changes or {})}, "hardware": {"gpu": "a100-80gb"},
        "space": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}},
        "budget": {"n_trials": 2}, "sampler": {"type": "tpe", "seed": 0, "n_startup_trials": 2},
        "pruner": {"type": "median", "n_startup_trials": 1}, "heartbeat_s": 2,
    }
    sweep.update(sections)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


@pytest.fixture(scope="session")
def make_sweep():
    """``make_sweep(tmp, name, **sections) -> Path``: see :func:`tiny_sweep`."""
    return tiny_sweep


@pytest.fixture(scope="session")
def run_cli():
    """``run_cli(*args, runs=, cwd=, check=True, timeout=300)``: ``python -m trainplan`` in a subprocess."""
    return trainplan
