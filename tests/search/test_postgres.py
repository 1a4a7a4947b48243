"""Two worker processes (one running two trials at once) share one study on a real PostgreSQL server
(started here, loopback only): every trial runs exactly once and the overall ``n_trials`` holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from tests._proc import ONE_THREAD

pytestmark = pytest.mark.slow


def test_two_workers_share_one_study(tmp_path: Path, postgres_url: str, make_sweep) -> None:
    path = make_sweep(tmp_path, "shared", sampler={"type": "random", "seed": 2}, pruner={"type": "none"},
                      budget={"n_trials": 3})
    # Two "machines" on this one: one thread per trial, or the three trials fight for 2 cores.
    env = {**os.environ, "TRAINPLAN_RUNS": str(tmp_path / "runs"), **ONE_THREAD}
    cmd = [sys.executable, "-m", "trainplan", "search", str(path), "--storage", postgres_url, "--no-progress"]
    workers = []
    # One process with two worker threads, one with a single worker: like two machines, one bigger.
    for extra in (["--workers", "2"], []):
        workers.append(subprocess.Popen(cmd + extra, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, start_new_session=True))
        time.sleep(1.0)
    try:
        outputs = [w.communicate(timeout=400) for w in workers]
    finally:  # past the limit: end both workers and their trials, not only the two leaders
        for w in workers:
            if w.poll() is None:
                os.killpg(w.pid, signal.SIGKILL)
    assert [w.returncode for w in workers] == [0, 0], [o[1][-2000:] for o in outputs]
    trials = optuna.load_study(study_name="shared", storage=postgres_url).get_trials()
    assert len(trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    dirs = [Path(t.user_attrs["trial_dir"]) for t in trials]
    assert len(set(dirs)) == 3
    for d in dirs:  # each trial folder holds one launch
        assert len((d / "cmd.txt").read_text().splitlines()) == 1 and (d / "result.json").is_file()
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2, "both processes should have run trials"
    ports = [(d / "cmd.txt").read_text().split("--master_port ")[1].split()[0] for d in dirs]
    assert len(set(ports)) == 3  # every launch has its own master port
