"""A restarted search ends a dead worker's trial processes only when they verifiably are that
trial's: a crafted RUNNING trial naming someone else's process group leaves the group alive."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from trainplan.search import load_sweep, open_study, reclaim_dead_local_trials
from trainplan.search._guard import process_start_ticks, verified_trial_pids


def _dead_pid() -> int:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return dead.pid


def _group(*extra: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *extra], start_new_session=True)
    time.sleep(0.2)
    return proc


def _crafted(study: optuna.Study, trial_dir: Path | None, pgid: int, leader_start: int | None) -> None:
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    if trial_dir is not None:
        trial.set_user_attr("trial_dir", str(trial_dir))
    worker = {"host": os.uname().nodename, "pid": _dead_pid(), "start": -1, "pgid": pgid}
    if leader_start is not None:
        worker["leader_start"] = leader_start
    trial.set_user_attr("worker", worker)


@pytest.mark.parametrize("case", ["no-start-recorded", "wrong-start", "not-the-trials-command", "outside-run-dir"])
def test_foreign_process_group_survives_a_crafted_running_trial(tmp_path: Path, case: str) -> None:
    sweep = load_sweep(None, {"sampler.type": "random"})
    run_dir = tmp_path / "run"
    study = open_study(sweep, run_dir)
    trial_dir = run_dir / "trials" / "trial-0000"
    elsewhere = tmp_path / "other" / "trial-0000"
    foreign = _group("--spec", str((elsewhere if case == "outside-run-dir" else trial_dir) / "spec.json")
                     if case != "not-the-trials-command" else "--spec=/somewhere/else/spec.json")
    try:
        start = process_start_ticks(foreign.pid)
        leader_start = {"no-start-recorded": None, "wrong-start": start - 1}.get(case, start)
        _crafted(study, elsewhere if case == "outside-run-dir" else trial_dir, foreign.pid, leader_start)
        # The trial itself is reclaimed (its worker is gone) ...
        assert len(reclaim_dead_local_trials(study, sweep, run_dir)) == 1
        # ... but the process group it names is not this search's: it lives on.
        time.sleep(0.3)
        assert foreign.poll() is None
    finally:
        foreign.kill()
        foreign.wait()


def test_verified_trial_processes_are_ended(tmp_path: Path) -> None:
    sweep = load_sweep(None, {"sampler.type": "random"})
    run_dir = tmp_path / "run"
    study = open_study(sweep, run_dir)
    trial_dir = run_dir / "trials" / "trial-0000"
    ours = _group(f"--spec={trial_dir / 'spec.json'}")
    try:
        assert verified_trial_pids(ours.pid, process_start_ticks(ours.pid), trial_dir) == [ours.pid]
        _crafted(study, trial_dir, ours.pid, process_start_ticks(ours.pid))
        assert len(reclaim_dead_local_trials(study, sweep, run_dir)) == 1
        assert ours.wait(timeout=10) is not None
    finally:
        if ours.poll() is None:
            ours.kill()
