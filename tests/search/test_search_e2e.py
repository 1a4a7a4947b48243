"""A real sweep end to end: DeepSpeed trials, a pruned one, a diverged one, records, export.

One sweep (module fixture) serves every assertion. Its first three configurations are queued so
the outcome is known: a sound learning rate (completes), a tiny one (falls behind and is pruned),
and a huge one (diverges). All run through ``trainplan search`` as a user would.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
import pandas as pd
import pytest

from trainplan.search import load_sweep, open_study

pytestmark = pytest.mark.slow

PROTOCOL_ATTRS = {"status", "reason", "trial_dir", "curve", "tokens", "tokens_per_s", "peak_mem_bytes",
                  "elapsed_s", "gpu_hours", "cpu_seconds", "estimate", "config"}


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory: pytest.TempPathFactory, make_sweep, run_cli) -> dict:
    tmp = tmp_path_factory.mktemp("e2e")
    runs = tmp / "runs"
    # 64 steps (a few seconds), evaluated every 16: the search sees the pruned trial's first
    # evaluation and stops it with 48 steps to spare (it polls metrics.jsonl twice a second).
    path = make_sweep(tmp, "e2e", base_changes={"tokens": 32768}, space={"lr": {"low": 1e-5, "high": 20.0, "log": True}},
                      budget={"n_trials": 3})
    sweep = load_sweep(path)
    run_dir = runs / "search-e2e"
    study = open_study(sweep, run_dir)
    for lr in (3e-3, 1e-5, 20.0):
        study.enqueue_trial({"lr": lr})
    proc = run_cli("search", str(path), "--format", "json", "--no-progress", "--export", str(tmp / "trials.csv"),
                     runs=runs, cwd=tmp, timeout=400)
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{run_dir / 'study.db'}")
    return {"tmp": tmp, "runs": runs, "run_dir": run_dir, "summary": json.loads(proc.stdout), "study": study,
            "path": path, "cli": run_cli}


def _by_status(study: optuna.Study) -> dict[str, optuna.trial.FrozenTrial]:
    return {t.user_attrs["status"]: t for t in study.trials}


def test_outcomes_are_classified_and_the_study_goes_on(sweep_run: dict) -> None:
    assert sweep_run["summary"]["counts"] == {"completed": 1, "pruned": 1, "diverged": 1}
    trials = _by_status(sweep_run["study"])
    assert trials["completed"].state == optuna.trial.TrialState.COMPLETE
    assert trials["pruned"].state == optuna.trial.TrialState.PRUNED
    # Diverged trials inform the sampler as constraint violations and are never a "best".
    diverged = trials["diverged"]
    assert diverged.state == optuna.trial.TrialState.PRUNED and diverged.constraints["stable"] > 0
    assert "loss" in diverged.user_attrs["reason"]


def test_best_trial_matches_its_own_result_json(sweep_run: dict) -> None:
    best = sweep_run["summary"]["best"][0]
    result = json.loads((Path(best["trial_dir"]) / "result.json").read_text())
    assert result["status"] == "completed"
    assert best["values"][0] == result["final_eval_loss"] == sweep_run["study"].best_value
    assert best["params"]["lr"] == pytest.approx(3e-3)


def test_pruned_trial_stopped_early_with_its_curve(sweep_run: dict) -> None:
    pruned = _by_status(sweep_run["study"])["pruned"]
    completed = _by_status(sweep_run["study"])["completed"]
    assert "pruned at" in pruned.user_attrs["reason"]
    assert 0 < pruned.user_attrs["tokens"] < completed.user_attrs["tokens"]
    # The pruner saw eval loss against tokens seen: the intermediate steps are token counts.
    evals = [row for row in pruned.user_attrs["curve"] if row[4] is not None]
    assert set(pruned.intermediate_values) <= {row[1] for row in evals}
    assert json.loads((Path(pruned.user_attrs["trial_dir"]) / "result.json").read_text())["status"] == "terminated"


def test_every_trial_carries_the_protocol_records(sweep_run: dict) -> None:
    for trial in sweep_run["study"].trials:
        assert PROTOCOL_ATTRS <= set(trial.user_attrs), trial.number
        attrs = trial.user_attrs
        assert attrs["cpu_seconds"] > 0 and attrs["elapsed_s"] > 0 and attrs["gpu_hours"] > 0
        assert attrs["config"]["params"] == trial.params and attrs["config"]["model"] == "trainplan-tiny"
        assert set(attrs["estimate"]) == {"memory_bytes", "allocated_bytes", "tokens_per_s", "fits"}
        assert all(len(row) == 5 for row in attrs["curve"])
    study_attrs = sweep_run["study"].user_attrs
    assert study_attrs["objectives"] == {"names": ["eval_loss"], "directions": ["minimize"]}
    assert study_attrs["sweep"]["budget"]["n_trials"] == 3 and study_attrs["command"][:2] == ["trainplan", "search"]
    assert study_attrs["environment"]["versions"]["optuna"] == optuna.__version__


def test_no_trial_process_is_left(sweep_run: dict) -> None:
    run_dir = str(sweep_run["run_dir"])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        assert run_dir not in cmdline, f"process {pid} still runs: {cmdline}"


def test_export_and_trials_command(sweep_run: dict) -> None:
    table = pd.read_csv(sweep_run["tmp"] / "trials.csv")
    assert sorted(table["status"]) == ["completed", "diverged", "pruned"]
    assert {"param_lr", "eval_loss", "tokens", "cpu_seconds", "est_memory_bytes", "trial_dir", "curve"} <= set(table.columns)
    curve = json.loads(table.loc[table["status"] == "completed", "curve"].iloc[0])
    assert curve[-1][1] == table.loc[table["status"] == "completed", "tokens"].iloc[0]
    out = sweep_run["tmp"] / "t.parquet"
    sweep_run["cli"]("trials", str(sweep_run["path"]), "-o", str(out), runs=sweep_run["runs"], cwd=sweep_run["tmp"])
    assert len(pd.read_parquet(out)) == 3
    as_json = sweep_run["cli"]("trials", str(sweep_run["path"]), "--format", "json", runs=sweep_run["runs"], cwd=sweep_run["tmp"])
    assert {r["number"] for r in json.loads(as_json.stdout)} == {0, 1, 2}


def test_running_again_reruns_nothing(sweep_run: dict) -> None:
    sweep_run["cli"]("search", str(sweep_run["path"]), "--no-progress", runs=sweep_run["runs"], cwd=sweep_run["tmp"])
    study = optuna.load_study(study_name="e2e", storage=f"sqlite:///{sweep_run['run_dir'] / 'study.db'}")
    assert len(study.trials) == 3
