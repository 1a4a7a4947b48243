"""Shared helpers for the search tests: a tiny real sweep (a few seconds of DeepSpeed per trial),
and a real PostgreSQL server on the loopback (with or without a password)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests._proc import trainplan

TINY_BASE: dict[str, Any] = {
    "model": "trainplan-tiny",
    "tokens": 8192,  # 16 steps of 8 x 64 tokens
    "layout": {"micro_batch": 8, "seq_len": 64, "precision": "fp32"},
    "global_batch": 8,
    "eval_tokens": 2048,
    "max_data_bytes": 200_000,
    "evals_per_trial": 4,
    "hyperparams": {"lr": 3e-3},
}


def tiny_sweep(tmp: Path, name: str = "tiny", base_changes: dict[str, Any] | None = None, **sections: Any) -> Path:
    """Write a sweep file of tiny real trials; ``base_changes`` update the base trial and
    ``sections`` replace top-level keys."""
    sweep: dict[str, Any] = {
        "study_name": name, "base": {**TINY_BASE, **(base_changes or {})}, "hardware": {"gpu": "a100-80gb"},
        "space": {"lr": {"low": 1e-3, "high": 1e-2, "log": True}},
        "budget": {"n_trials": 2}, "sampler": {"type": "tpe", "seed": 0, "n_startup_trials": 2},
        "pruner": {"type": "median", "n_startup_trials": 1}, "heartbeat_s": 2,
    }
    sweep.update(sections)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


@pytest.fixture(scope="session")
def make_sweep():
    """``make_sweep(tmp, name, **sections) -> Path``: see :func:`tiny_sweep`."""
    return tiny_sweep


@pytest.fixture(scope="session")
def run_cli():
    """``run_cli(*args, runs=, cwd=, check=True, timeout=300)``: ``python -m trainplan`` in a subprocess."""
    return trainplan


PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_PASSWORD = "Zq7-s3cret/pw@x"  # holds "/" and "@", which a naive URL parser would split on
PG_URL_PASSWORD = PG_PASSWORD.replace("/", "%2F").replace("@", "%40")


def _as_postgres(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextlib.contextmanager
def postgres_server(password: str | None = None) -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1, trusting every local user or, given ``password``, demanding
    it (scram-sha-256); yields ``127.0.0.1:PORT/postgres`` and removes the server after."""
    if not (PG_BIN / "initdb").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL binaries missing under {PG_BIN}")
        pytest.skip(f"PostgreSQL binaries missing under {PG_BIN}")
    root = Path(tempfile.mkdtemp(prefix="trainplan-pg-"))
    data, sock, pwfile = root / "data", root / "sock", root / "pw"
    sock.mkdir()
    auth = ["--auth=trust"]
    if password is not None:
        pwfile.write_text(password + "\n")
        auth = ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
    if os.geteuid() == 0:
        for path in (root, sock, *([pwfile] if password is not None else [])):
            shutil.chown(path, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", *auth]),
                   check=True, capture_output=True)
    pwfile.unlink(missing_ok=True)
    subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                                 f"-p {port} -k {sock} -c listen_addresses=127.0.0.1", "start"]),
                   check=True, capture_output=True)
    try:
        yield f"127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """URL of a loopback PostgreSQL server that trusts local users."""
    with postgres_server() as base:
        yield f"postgresql+psycopg://postgres@{base}"


@pytest.fixture(scope="module")
def pg_with_password() -> Iterator[tuple[str, str]]:
    """(URL with the password, URL without it) of a loopback server that demands :data:`PG_PASSWORD`."""
    with postgres_server(PG_PASSWORD) as base:
        yield f"postgresql+psycopg://postgres:{PG_URL_PASSWORD}@{base}", f"postgresql+psycopg://postgres@{base}"
