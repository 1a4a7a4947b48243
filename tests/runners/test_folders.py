"""``run --out`` never deletes or overwrites a user's files, and a rerun keeps the earlier trial."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainplan.cli import main


def _dry_run(out: Path, *extra: str) -> int:
    return main(["run", "--dry-run", "--steps", "3", "--out", str(out), *extra])


def test_refuses_a_folder_of_other_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "stdout.log").write_text("my own log\n")
    (out / "ds_config.json").write_text("{\"mine\": true}\n")
    (out / "notes.txt").write_text("keep\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert _dry_run(out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_rerun_in_a_trial_folder_keeps_the_earlier_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "trial"
    assert _dry_run(out) == 0
    first_spec = (out / "spec.json").read_text()
    # What a launch would have left: logs and records of the first trial.
    (out / "stdout.log").write_text("first stdout\n")
    (out / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n")
    (out / "notes.txt").write_text("a user's note\n")
    assert _dry_run(out, "--lr", "1e-3") == 0
    assert (out / "stdout.log.1").read_text() == "first stdout\n"
    assert (out / "metrics.jsonl.1").read_text().startswith('{"step": 1}')
    assert (out / "spec.json.1").read_text() == first_spec
    assert json.loads((out / "spec.json").read_text())["hyperparams"]["lr"] == 1e-3
    assert (out / "notes.txt").read_text() == "a user's note\n"
    assert not (out / "stdout.log").exists()  # the dry run launched nothing
    assert _dry_run(out) == 0  # a third: the second's files become .2, the first's stay .1
    assert (out / "spec.json.2").is_file() and (out / "stdout.log.1").read_text() == "first stdout\n"
    capsys.readouterr()
