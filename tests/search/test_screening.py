"""Planner screening and the classification of failed trials.

A configuration the planner rejects launches no process and is recorded with the planner's
numbers; OOM and crashed trials are recorded with their reasons, inform the sampler, and do not
stop the study. One OOM is real (a model whose weights the host cannot allocate, passed by a
planner told the GPU is huge); the other outcomes are simulated with a stand-in trial handle.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import optuna
import pytest

import trainplan.runners
from trainplan.search import load_sweep, open_study, run_search, run_trial_for, screen
from trainplan.search import sweep_from_dict


def _sweep(tmp_path: Path, make_sweep, **sections: Any):
    return load_sweep(make_sweep(tmp_path, "screen", **sections))


def test_planner_rejection_launches_nothing(tmp_path: Path, make_sweep, monkeypatch: pytest.MonkeyPatch) -> None:
    launched: list[Any] = []
    monkeypatch.setattr(trainplan.runners, "launch_trial", lambda *a, **k: launched.append(a))
    sweep = _sweep(tmp_path, make_sweep, hardware={"gpu": "a100-80gb", "memory_gib": 0.0001}, budget={"n_trials": 2})
    result = run_search(sweep, run_dir=tmp_path / "run", progress=False)
    assert launched == [] and result.counts == {"infeasible": 2} and result.best == []
    study = optuna.load_study(study_name="screen", storage=result.storage)
    for trial in study.trials:
        attrs = trial.user_attrs
        assert trial.state == optuna.trial.TrialState.PRUNED  # never a "best" loss
        assert attrs["status"] == "infeasible" and attrs["reason"].startswith("planner: needs")
        assert "a100-80gb has 0.00 GiB" in attrs["reason"]
        assert attrs["estimate"]["fits"] is False and attrs["estimate"]["memory_bytes"] > 0
        assert trial.constraints["memory"] > 0  # the sampler learns the region is infeasible
        assert attrs["cpu_seconds"] == 0 and attrs["gpu_hours"] == 0
        folder = Path(attrs["trial_dir"])
        assert (folder / "spec.json").is_file() and (folder / "plan.json").is_file()
        assert not (folder / "cmd.txt").exists() and not (folder / "stdout.log").exists()


def test_screen_uses_the_memory_override(tmp_path: Path, make_sweep) -> None:
    from trainplan.search import resolve_trial

    roomy = _sweep(tmp_path, make_sweep)
    tight = _sweep(tmp_path, make_sweep, hardware={"gpu": "a100-80gb", "memory_gib": 0.0001})
    spec = resolve_trial(roomy, {})
    big, small = screen(spec, roomy), screen(spec, tight)
    assert big["fits"] is True and small["fits"] is False
    # capacity is what fits is judged against: the override's usable bytes (less the fit margin)
    assert big["allocated_bytes"] == small["allocated_bytes"]  # the live tensors do not depend on the card
    assert small["capacity_bytes"] == small["plan"]["memory"]["usable_bytes"] <= int(0.0001 * 2**30)
    assert small["capacity_bytes"] > 0.9 * 0.0001 * 2**30


@pytest.mark.slow
def test_a_real_out_of_memory_trial_is_recorded_and_informs_the_sampler(tmp_path: Path, make_sweep) -> None:
    from trainplan.planner import load_model

    config = dict(load_model("trainplan-tiny").hf_config)
    config["intermediate_size"] = 2**27  # one 64 GiB MLP weight: the CPU allocator refuses it at once
    (tmp_path / "huge.json").write_text(json.dumps(config))
    sweep = _sweep(tmp_path, make_sweep, base_changes={"model": str(tmp_path / "huge.json")},
                   hardware={"gpu": "a100-80gb", "memory_gib": 10_000_000}, budget={"n_trials": 1})
    result = run_search(sweep, run_dir=tmp_path / "run", progress=False)
    assert result.counts == {"oom": 1} and result.best == []
    (trial,) = optuna.load_study(study_name="screen", storage=result.storage).trials
    attrs = trial.user_attrs
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.constraints["memory"] > 0
    assert attrs["status"] == "oom" and "can't allocate memory" in attrs["reason"], attrs["reason"]
    assert attrs["estimate"]["fits"] is True  # the planner was told the GPU is huge; the host said no
    assert attrs["cpu_seconds"] > 0 and attrs["tokens"] == 0
    assert json.loads((Path(attrs["trial_dir"]) / "result.json").read_text())["exit_code"] == 4  # the rank's oom code
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            assert str(tmp_path) not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue


class _DeadTrial:
    """A trial that ended at once with a given result (the branch under test is the search's)."""

    def __init__(self, result: dict[str, Any]) -> None:
        self.pid, self._result = 2**22 + 12345, result  # a pid no process has
        self.reaped_cpu_s = 0.5

    def poll(self) -> int:
        return 1

    def new_metrics(self) -> list[dict[str, Any]]:
        return []

    def stop(self, grace_s: float) -> int:
        return 1

    def finalize(self) -> dict[str, Any]:
        return self._result


@pytest.mark.parametrize(("status", "state", "constraint"), [
    ("oom", optuna.trial.TrialState.PRUNED, "memory"),
    ("crashed", optuna.trial.TrialState.FAIL, None),
    ("timeout", optuna.trial.TrialState.FAIL, None),
])
def test_failed_trials_are_recorded_and_the_study_goes_on(tmp_path: Path, make_sweep, monkeypatch: pytest.MonkeyPatch,
                                                          status: str, state: optuna.trial.TrialState,
                                                          constraint: str | None) -> None:
    result = {"status": status, "reason": f"simulated {status}", "tokens": 0, "elapsed_s": 3.0,
              "final_eval_loss": None, "tokens_per_s": None, "peak_mem_bytes": None}
    monkeypatch.setattr(trainplan.runners, "launch_trial", lambda *a, **k: _DeadTrial(result))
    sweep = _sweep(tmp_path, make_sweep, budget={"n_trials": 2})
    study = open_study(sweep, tmp_path)
    for _ in range(2):
        assert run_trial_for(study, study.ask(), sweep, tmp_path, None, threading.Event()) == status
    for trial in study.get_trials():
        assert trial.state == state and trial.user_attrs["reason"] == f"simulated {status}"
        assert trial.user_attrs["gpu_hours"] == pytest.approx(3.0 / 3600)
        assert trial.user_attrs["cpu_seconds"] == 0.5  # the launcher's wait4 total (no samples)
        if constraint:
            assert trial.constraints[constraint] > 0


def test_nothing_completed_exits_1(tmp_path: Path, make_sweep, run_cli) -> None:
    path = make_sweep(tmp_path, "none", hardware={"gpu": "a100-80gb", "memory_gib": 0.0001}, budget={"n_trials": 1})
    proc = run_cli("search", str(path), "--no-progress", runs=tmp_path / "runs", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "1 infeasible" in proc.stdout and "no trial completed" in proc.stderr


def test_bad_sweep_exits_2_naming_the_key(tmp_path: Path, run_cli) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("space:\n  lr: {low: 0.1, high: 0.01}\n")
    proc = run_cli("search", str(path), runs=tmp_path / "runs", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "space.lr.low" in proc.stderr
    proc = run_cli("trials", "--study-name", "nope", runs=tmp_path / "runs", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "trainplan search" in proc.stderr


def test_multi_objective_study_has_a_pareto_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = sweep_from_dict({"objectives": ["eval_loss", "gpu_hours"], "budget": {"n_trials": 3},
                             "space": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}}})
    runs = iter([(3.0, 10.0), (2.5, 20.0), (2.8, 30.0)])

    def fake_launch(*a: Any, **k: Any) -> _DeadTrial:
        loss, secs = next(runs)
        return _DeadTrial({"status": "completed", "reason": "", "tokens": 10, "elapsed_s": secs,
                           "final_eval_loss": loss, "tokens_per_s": 1.0, "peak_mem_bytes": 1})

    monkeypatch.setattr(trainplan.runners, "launch_trial", fake_launch)
    result = run_search(sweep, run_dir=tmp_path, progress=False)
    # (2.8, 30 s) is dominated by (2.5, 20 s); the other two form the front.
    assert sorted(b["values"][0] for b in result.best) == [2.5, 3.0]


class _RunningTrial(_DeadTrial):
    def poll(self) -> int | None:
        return None


def test_an_interrupted_trial_is_queued_again(tmp_path: Path, make_sweep, monkeypatch: pytest.MonkeyPatch) -> None:
    from trainplan.search import budget_count

    result = {"status": "terminated", "reason": "", "tokens": 0, "elapsed_s": 1.0, "final_eval_loss": None,
              "tokens_per_s": None, "peak_mem_bytes": None}
    monkeypatch.setattr(trainplan.runners, "launch_trial", lambda *a, **k: _RunningTrial(result))
    sweep = _sweep(tmp_path, make_sweep, budget={"n_trials": 2})
    study = open_study(sweep, tmp_path)
    stop = threading.Event()
    stop.set()  # Ctrl-C arrived while the trial ran
    assert run_trial_for(study, study.ask(), sweep, tmp_path, None, stop) == "terminated"
    first, retry = study.get_trials()
    assert first.state == optuna.trial.TrialState.FAIL and "interrupted" in first.user_attrs["reason"]
    assert retry.state == optuna.trial.TrialState.WAITING and retry.params == first.params
    assert budget_count(study.get_trials()) == 1
