"""``trainplan run`` ends its whole trial however it is ended: SIGTERM stops the tree and records
``terminated`` with the metrics kept; even SIGKILL leaves no rank behind (the orphan guard)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests._proc import ONE_THREAD
from trainplan.search._guard import trial_marker

pytestmark = pytest.mark.slow


def _trial_processes(trial_dir: Path) -> list[int]:
    marker, found = trial_marker(trial_dir), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                args = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if any(a == marker or a.endswith("=" + marker) for a in args):
                found.append(int(entry))
    return found


def _launch(tmp_path: Path) -> tuple[subprocess.Popen[str], Path]:
    out = tmp_path / "trial"
    cmd = [sys.executable, "-m", "trainplan", "run", "--steps", "100000", "--seq-len", "32", "--micro-batch", "2",
           "--eval-every", "100000", "--eval-tokens", "512", "--max-data-bytes", "100000", "--quiet", "--out", str(out)]
    # One thread per rank: the trials of both tests start together (their start-ups overlap) and
    # two-thread trials side by side on 2 cores crawl (tests/_proc.py).
    # Output to files, not pipes: a run waits for its test while the other test runs.
    with open(tmp_path / "run.out", "w") as stdout, open(tmp_path / "run.err", "w") as stderr:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "TRAINPLAN_RUNS": str(tmp_path / "runs"),
                                                        **ONE_THREAD},
                                stdout=stdout, stderr=stderr, text=True, start_new_session=True)
    return proc, out


def _training(proc: subprocess.Popen[str], out: Path) -> None:
    deadline = time.monotonic() + 400  # the first DeepSpeed launch on a machine builds its ops
    metrics = out / "metrics.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            return
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    pytest.fail(f"the trial never trained: {(out.parent / 'run.err').read_text()[-2000:]}")


TEST = "test_signal_to_run_leaves_no_process"


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """A ``trainplan run`` of no end for each signal this session selected, all started at once:
    signal -> (process, trial folder). Each test signals its own; whatever is left is killed after."""
    sigs = [item.callspec.params["sig"] for item in request.session.items if getattr(item, "originalname", None) == TEST]
    started = {}
    try:
        for sig in dict.fromkeys(sigs):
            started[sig] = _launch(tmp_path_factory.mktemp(sig.name))
        yield started
    finally:
        for proc, out in started.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            for pid in _trial_processes(out):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_signal_to_run_leaves_no_process(runs, sig: signal.Signals) -> None:
    proc, out = runs[sig]
    _training(proc, out)
    try:
        assert _trial_processes(out), "the marker must find the running trial, or this test proves nothing"
        os.kill(proc.pid, sig)  # the trainplan process only, not its group: the ranks are its job
        proc.wait(timeout=90)
        stdout, stderr = (out.parent / "run.out").read_text(), (out.parent / "run.err").read_text()
        deadline = time.monotonic() + 30
        while _trial_processes(out) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _trial_processes(out) == []
    finally:
        for pid in _trial_processes(out):
            os.kill(pid, signal.SIGKILL)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        return
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "terminated" and result["steps"] >= 2
    assert json.loads(stdout)["status"] == "terminated"
    assert len((out / "metrics.jsonl").read_text().splitlines()) >= 3  # the metrics are kept
