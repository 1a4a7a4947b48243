"""Two worker processes (one running two trials at once) share one study on a real PostgreSQL server
(started here, loopback only): every trial runs exactly once and the overall ``n_trials`` holds."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

pytestmark = pytest.mark.slow

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _as_postgres(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    if not (PG_BIN / "initdb").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL binaries missing under {PG_BIN}")
        pytest.skip(f"PostgreSQL binaries missing under {PG_BIN}")
    root = Path(tempfile.mkdtemp(prefix="trainplan-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]),
                   check=True, capture_output=True)
    subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                                 f"-p {port} -k {sock} -c listen_addresses=127.0.0.1", "start"]),
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_study(tmp_path: Path, postgres_url: str, make_sweep) -> None:
    path = make_sweep(tmp_path, "shared", sampler={"type": "random", "seed": 2}, pruner={"type": "none"},
                      budget={"n_trials": 3})
    env = {**os.environ, "TRAINPLAN_RUNS": str(tmp_path / "runs")}
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
