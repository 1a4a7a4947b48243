"""Real DeepSpeed trials: a tiny ladder through `trainplan search` and `trainplan scale`.

A real trial that overfits (and is stopped on it) is in test_overfit_real.py."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from tests.search.conftest import TINY_BASE
from trainplan.runners import TrialSpec
from trainplan.search._ladder import default_ladder_path

pytestmark = pytest.mark.slow
LADDER_DIR = default_ladder_path().parent


def test_tiny_ladder_searches_every_size_and_scale_writes_the_target(tmp_path: Path, run_cli) -> None:
    sweep = {
        "study_name": "tiny-ladder", "base": {k: v for k, v in TINY_BASE.items() if k != "model"},
        "ladder": [{"name": w, "model": str(LADDER_DIR / f"ladder-llama-{w}.json")} for w in ("w64", "w128")],
        "hardware": {"gpu": "a100-80gb"}, "space": {"lr": {"choices": [0.002, 0.006, 0.02]}},
        "budget": {"n_trials": 6}, "sampler": {"type": "grid", "seed": 0}, "pruner": {"type": "none"},
        # Two trials at a time, one thread each (the search gives each local worker its share of the
        # cores): a 16-step trial of these widths is mostly process start-up, which two overlap on
        # 2 cores; one two-thread trial beside any other load spins its OpenMP threads (tests/_proc.py).
        # The grid sampler skips points another worker is running, so the grid is still run once.
        "workers": 2,
    }
    path = tmp_path / "ladder.yaml"
    path.write_text(yaml.safe_dump(sweep))
    run_dir = tmp_path / "runs" / "ladder"
    run_cli("search", str(path), "--run-dir", str(run_dir), "--no-progress", runs=tmp_path / "runs", cwd=tmp_path,
            timeout=1100)
    study = optuna.load_study(study_name="tiny-ladder", storage=f"sqlite:///{run_dir / 'study.db'}")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted((t.params["size"], t.params["lr"]) for t in done) == sorted(
        (s, lr) for s in ("w64", "w128") for lr in (0.002, 0.006, 0.02))  # the whole grid, every size
    assert all("overfit" in t.user_attrs for t in done)
    out = tmp_path / "target"
    proc = run_cli("scale", "--run-dir", str(run_dir), "--target-model", str(LADDER_DIR / "ladder-llama-w192.json"),
                   "--tokens", "8192", "--seq-len", "64", "--out", str(out), "--format", "json",
                   runs=tmp_path / "runs", cwd=tmp_path)
    doc = json.loads(proc.stdout)
    assert doc["mode"] == "fitted" and [o["size"] for o in doc["fit"]["data"]] == ["w64", "w128"]
    assert any("outside the fitted range" in n for n in doc["notes"])  # w192 is past the swept sizes
    spec = TrialSpec.from_json(out / "spec.json")
    assert spec.hyperparams.lr == pytest.approx(doc["fit"]["target"]["lr"]["value"])
    assert "trainplan.runners.train" in (out / "cmd.txt").read_text()
