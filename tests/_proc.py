"""Subprocesses for tests: a time limit that ends the whole process group, not only its leader.

``subprocess.run(timeout=...)`` kills the direct child only; a ``deepspeed`` launcher's ranks (or a
JIT build they started) would outlive it and hold the build lock or the CPU for the next test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def run_group(argv: list[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in a new session with captured text output; past ``timeout`` seconds, SIGKILL its
    process group and fail the test with the output so far."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{' '.join(argv[:4])} ... ran past {timeout:.0f} s and was killed\n"
                    f"{out[-2000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def cli_env(runs: Path) -> dict[str, str]:
    return {**os.environ, "TRAINPLAN_RUNS": str(runs), "PYTHONUNBUFFERED": "1"}


def trainplan(*args: str, runs: Path, cwd: Path, check: bool = True,
              timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python -m trainplan ARGS`` with runs under ``runs``; fails the test on a non-zero exit when
    ``check``."""
    proc = run_group([sys.executable, "-m", "trainplan", *args], timeout=timeout, cwd=cwd, env=cli_env(runs))
    if check and proc.returncode != 0:
        pytest.fail(f"trainplan {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}")
    return proc
