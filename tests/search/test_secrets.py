"""A storage password never leaves the command line: a real PostgreSQL server with password
authentication, a real sweep, its report and its exports, then every output stream, every stored
attribute and every written file is searched for the password."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from tests._proc import cli_env, run_group

pytestmark = pytest.mark.slow

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "Zq7-s3cret/pw@x"  # holds "/" and "@", which a naive URL parser would split on
URL_PASSWORD = PASSWORD.replace("/", "%2F").replace("@", "%40")


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def pg_with_password() -> Iterator[tuple[str, str]]:
    """(URL with the password, URL without it) of a loopback server that demands a password."""
    if not (PG_BIN / "initdb").is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL binaries missing under {PG_BIN}")
        pytest.skip(f"PostgreSQL binaries missing under {PG_BIN}")
    root = Path(tempfile.mkdtemp(prefix="trainplan-pgpw-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        for path in (root, sock, pwfile):
            shutil.chown(path, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                                 "--auth=scram-sha-256", f"--pwfile={pwfile}"]), check=True, capture_output=True)
    pwfile.unlink()
    subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                                 f"-p {port} -k {sock} -c listen_addresses=127.0.0.1", "start"]),
                   check=True, capture_output=True)
    try:
        base = f"127.0.0.1:{port}/postgres"
        yield f"postgresql+psycopg://postgres:{URL_PASSWORD}@{base}", f"postgresql+psycopg://postgres@{base}"
    finally:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _cli(*args: str, runs: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_group([sys.executable, "-m", "trainplan", *args], timeout=600, cwd=cwd,
                     env={**cli_env(runs), **(env or {})})


def _leaks(text: str) -> bool:
    return PASSWORD in text or URL_PASSWORD in text or "s3cret" in text


def test_password_in_no_output_attribute_or_file(tmp_path: Path, pg_with_password, make_sweep) -> None:
    url, bare = pg_with_password
    runs = tmp_path / "runs"
    # One real trial, as short as a trial gets (2 steps): what matters is what the search writes.
    sweep = make_sweep(tmp_path, "secret", base_changes={"tokens": 1024, "evals_per_trial": 1, "eval_tokens": 512},
                       sampler={"type": "random", "seed": 1}, pruner={"type": "none"}, budget={"n_trials": 1})
    outputs = []
    # 1. The password in the URL on the command line: a real trial, the summary, the export.
    proc = _cli("search", str(sweep), "--storage", url, "--no-progress", "--export", str(tmp_path / "t.csv"),
                runs=runs, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "postgres:***@" in proc.stdout
    outputs.append(proc)
    # 2. The same study through $TRAINPLAN_STORAGE, and a reader that takes $PGPASSWORD with no
    #    password in the URL at all (libpq reads it).
    outputs.append(_cli("trials", str(sweep), runs=runs, cwd=tmp_path, env={"TRAINPLAN_STORAGE": url}))
    outputs.append(_cli("trials", str(sweep), "--storage", bare, "-o", str(tmp_path / "t.json"),
                        runs=runs, cwd=tmp_path, env={"PGPASSWORD": PASSWORD}))
    outputs.append(_cli("report", "--storage", url, "--study", "secret", "--out", str(tmp_path / "report"),
                        runs=runs, cwd=tmp_path))
    assert all(p.returncode == 0 for p in outputs), [p.stderr[-1500:] for p in outputs]
    # 3. Errors that name the storage: a wrong study, a refused connection, a wrong password.
    wrong = url.replace(URL_PASSWORD, URL_PASSWORD + "9")
    for args in (["report", "--storage", url, "--study", "nope"],
                 ["trials", str(sweep), "--storage", url, "--study-name", "nope"],
                 ["search", str(sweep), "--storage", url.replace("127.0.0.1:", "127.0.0.1:1"), "--no-progress"],
                 ["report", "--storage", wrong, "--study", "secret"],
                 ["trials", str(sweep), "--storage", wrong]):
        proc = _cli(*args, runs=runs, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr[-1500:])
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        outputs.append(proc)
    for proc in outputs:
        assert not _leaks(proc.stdout) and not _leaks(proc.stderr), (proc.args[3:5], proc.stdout[-500:], proc.stderr[-500:])

    study = optuna.load_study(study_name="secret", storage=url)
    system = study._storage.get_study_system_attrs(study._study_id)
    attrs = json.dumps([study.user_attrs, system] + [[t.user_attrs, t.system_attrs] for t in study.trials], default=str)
    assert "--storage" in attrs and "***" in attrs  # the command was recorded, masked
    assert not _leaks(attrs)
    files = [p for root in (runs, tmp_path / "report") for p in root.rglob("*") if p.is_file()]
    files += [tmp_path / "t.csv", tmp_path / "t.json"]
    assert any(p.name == "report.html" for p in files) and any(p.suffix == ".csv" for p in files)
    leaking = [str(p) for p in files if _leaks(p.read_bytes().decode(errors="replace"))]
    assert not leaking
