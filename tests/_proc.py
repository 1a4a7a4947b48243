"""Subprocesses for tests: a time limit that ends the whole process group, not only its leader.

``subprocess.run(timeout=...)`` kills the direct child only; a ``deepspeed`` launcher's ranks (or a
JIT build they started) would outlive it and hold the build lock or the CPU for the next test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def run_group(argv: list[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in a new session with captured text output; past ``timeout`` seconds, SIGKILL its
    process group and fail the test with the output so far."""
    return run_groups([argv], timeout=timeout, **kwargs)[0]


def run_groups(argvs: list[list[str]], *, timeout: float, envs: list[dict[str, str]] | None = None,
               **kwargs) -> list[subprocess.CompletedProcess[str]]:
    """:func:`run_group` for several commands at once (all started, then all waited for, within one
    ``timeout``; ``envs``, one per command, if given): independent commands overlap their start-up,
    which is mostly single-threaded imports or waiting."""
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True, **kwargs, **({"env": envs[i]} if envs else {}))
             for i, argv in enumerate(argvs)]
    deadline = time.monotonic() + timeout
    done = []
    try:
        for argv, proc in zip(argvs, procs):
            try:
                out, err = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
                pytest.fail(f"{' '.join(argv[:4])} ... ran past {timeout:.0f} s and was killed\n"
                            f"{out[-2000:]}\n{err[-3000:]}")
            done.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    finally:  # a failure above leaves no other launch running
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
    return done


def cli_env(runs: Path) -> dict[str, str]:
    return {**os.environ, "TRAINPLAN_RUNS": str(runs), "PYTHONUNBUFFERED": "1"}


ONE_THREAD = {"OMP_NUM_THREADS": "1"}
"""For trials that run side by side on this machine: the runner gives each rank all the cores it
sees (runners/_loop.py), and trials of two threads each side by side on 2 cores crawl (OpenMP
threads spinning for a core): three of them trained at 100-123 tokens/s each, one alone at about
1,900 (tests/search/test_postgres.py before this, load 2.5-3.6)."""


def trainplan(*args: str, runs: Path, cwd: Path, check: bool = True, timeout: float = 300,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m trainplan ARGS`` with runs under ``runs`` (and ``env`` added); fails the test on a
    non-zero exit when ``check``."""
    proc = run_group([sys.executable, "-m", "trainplan", *args], timeout=timeout, cwd=cwd,
                     env={**cli_env(runs), **(env or {})})
    if check and proc.returncode != 0:
        pytest.fail(f"trainplan {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}")
    return proc
