"""A storage password never leaves the command line: a real PostgreSQL server with password
authentication, a real sweep, its report and its exports, then every output stream, every stored
attribute and every written file is searched for the password."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from tests._proc import cli_env, run_group, run_groups
from tests.search.conftest import PG_PASSWORD as PASSWORD  # the server's password
from tests.search.conftest import PG_URL_PASSWORD as URL_PASSWORD

pytestmark = pytest.mark.slow

def _cli(*args: str, runs: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_group([sys.executable, "-m", "trainplan", *args], timeout=600, cwd=cwd,
                     env={**cli_env(runs), **(env or {})})


def _clis(calls: list[tuple[list[str], dict[str, str]]], *, runs: Path,
          cwd: Path) -> list[subprocess.CompletedProcess[str]]:
    """:func:`_cli` for several (args, env) at once."""
    return run_groups([[sys.executable, "-m", "trainplan", *args] for args, _ in calls], timeout=600, cwd=cwd,
                      envs=[{**cli_env(runs), **env} for _, env in calls])


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
    #    password in the URL at all (libpq reads it). All at once: each is a separate process.
    readers = [(["trials", str(sweep)], {"TRAINPLAN_STORAGE": url}),
               (["trials", str(sweep), "--storage", bare, "-o", str(tmp_path / "t.json")], {"PGPASSWORD": PASSWORD}),
               (["report", "--storage", url, "--study", "secret", "--out", str(tmp_path / "report")], {})]
    read = _clis(readers, runs=runs, cwd=tmp_path)
    assert all(p.returncode == 0 for p in read), [p.stderr[-1500:] for p in read]
    outputs += read
    # 3. Errors that name the storage: a wrong study, a refused connection, a wrong password.
    wrong = url.replace(URL_PASSWORD, URL_PASSWORD + "9")
    errors = [(args, {}) for args in (
        ["report", "--storage", url, "--study", "nope"],
        ["trials", str(sweep), "--storage", url, "--study-name", "nope"],
        ["search", str(sweep), "--storage", url.replace("127.0.0.1:", "127.0.0.1:1"), "--no-progress"],
        ["report", "--storage", wrong, "--study", "secret"],
        ["trials", str(sweep), "--storage", wrong])]
    for (args, _), proc in zip(errors, _clis(errors, runs=runs, cwd=tmp_path)):
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
