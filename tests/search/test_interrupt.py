"""Ctrl-C on ``trainplan search``: the running trial is stopped and recorded ``terminated`` (queued
again), nothing of it is left running, and the command that resumes is printed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from tests.runners.test_signals import _trial_processes

pytestmark = pytest.mark.slow


def test_ctrl_c_records_terminated_and_prints_the_resume_command(tmp_path: Path, make_sweep) -> None:
    runs = tmp_path / "runs"
    path = make_sweep(tmp_path, "ctrlc", base_changes={"tokens": 8_000_000}, sampler={"type": "random", "seed": 3},
                      pruner={"type": "none"}, budget={"n_trials": 3})
    cmd = [sys.executable, "-m", "trainplan", "search", str(path), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "TRAINPLAN_RUNS": str(runs)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    trial_dir = runs / "search-ctrlc" / "trials" / "trial-0000"
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and proc.poll() is None:
        metrics = trial_dir / "metrics.jsonl"
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.3)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the first trial never trained: {proc.communicate()[1][-2000:]}")
    try:
        assert _trial_processes(trial_dir)
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground process
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr[-2000:]
    assert f"Resume with: trainplan search {path} --no-progress" in stderr
    assert _trial_processes(trial_dir) == []
    trials = optuna.load_study(study_name="ctrlc", storage=f"sqlite:///{runs / 'search-ctrlc' / 'study.db'}").trials
    first = trials[0]
    assert first.state == optuna.trial.TrialState.FAIL and first.user_attrs["status"] == "terminated"
    assert (trial_dir / "result.json").is_file() and len(first.user_attrs["curve"]) >= 2  # metrics kept
    assert trials[-1].state == optuna.trial.TrialState.WAITING and trials[-1].params == first.params  # retried
