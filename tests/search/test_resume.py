"""``kill -9`` of the sweep in the middle of a trial, then the same command again: finished
trials are kept, the interrupted one is retried, the total reaches ``n_trials``, and nothing of
the first run is left alive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from trainplan.search import budget_count

pytestmark = pytest.mark.slow


def _trials(db: Path) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name="resume", storage=f"sqlite:///{db}").get_trials()
    except Exception:  # not created yet
        return []


def _alive(pgid: int) -> bool:
    """A process of the group still runs. Zombies do not count: when an earlier test made this
    pytest process a child subreaper (the in-process search does), the killed trial's processes are
    re-parented here and wait, dead, to be reaped."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        state, _ppid, group = text[text.rfind(")") + 2:].split()[:3]
        if int(group) == pgid and state != "Z":
            return True
    return False


def test_kill_9_then_rerun(tmp_path: Path, make_sweep, run_cli) -> None:
    runs = tmp_path / "runs"
    path = make_sweep(tmp_path, "resume", base_changes={"tokens": 16384}, sampler={"type": "random", "seed": 1},
                      pruner={"type": "none"}, budget={"n_trials": 2})
    db = runs / "search-resume" / "study.db"
    env = {**os.environ, "TRAINPLAN_RUNS": str(runs)}
    first = subprocess.Popen([sys.executable, "-m", "trainplan", "search", str(path), "--no-progress"],
                             cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Wait until trial 0 finished and trial 1 is training (its metrics are flowing).
    deadline, pgid = time.monotonic() + 240, None
    while time.monotonic() < deadline and first.poll() is None:
        trials = _trials(db)
        if len(trials) == 2 and trials[0].state.is_finished():
            pgid = (trials[1].user_attrs.get("worker") or {}).get("pgid")
            metrics = runs / "search-resume" / "trials" / "trial-0001" / "metrics.jsonl"
            if pgid and metrics.is_file() and metrics.stat().st_size > 0:
                break
        time.sleep(0.5)
    assert pgid is not None and first.poll() is None, "the sweep never reached its second trial"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    # The orphan guard ends the trial's process group once the sweep is gone.
    deadline = time.monotonic() + 20
    while _alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(pgid), "the interrupted trial outlived the sweep"
    before = _trials(db)
    kept = before[0]
    result_mtime = (Path(kept.user_attrs["trial_dir"]) / "result.json").stat().st_mtime
    assert before[1].state == optuna.trial.TrialState.RUNNING

    run_cli("search", str(path), "--no-progress", runs=runs, cwd=tmp_path, timeout=300)

    after = _trials(db)
    assert len(after) == 3 and budget_count(after) == 2
    assert (after[0].state, after[0].values, after[0].datetime_complete) == (kept.state, kept.values, kept.datetime_complete)
    assert (Path(kept.user_attrs["trial_dir"]) / "result.json").stat().st_mtime == result_mtime  # never rerun
    interrupted, retry = after[1], after[2]
    assert interrupted.state == optuna.trial.TrialState.FAIL and "worker died" in interrupted.user_attrs["reason"]
    assert retry.system_attrs.get("failed_trial") == 1 and retry.params == interrupted.params
    assert retry.state.is_finished() and retry.user_attrs["status"] == "completed"
