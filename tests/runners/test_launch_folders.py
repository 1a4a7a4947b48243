"""runners/_folders.py: a reused trial folder keeps every earlier trial, one generation per trial."""

from __future__ import annotations

from pathlib import Path

from trainplan.runners._folders import TRIAL_FILES, is_trial_dir, log_tail, rotate_trial_files


def _write(folder: Path, names: tuple[str, ...], text: str) -> None:
    for name in names:
        (folder / name).write_text(text)


def test_rotation_moves_one_trial_aside_together_and_counts_up(tmp_path: Path) -> None:
    assert rotate_trial_files(tmp_path) is None  # nothing to keep
    (tmp_path / "notes.txt").write_text("mine")
    _write(tmp_path, ("spec.json", "metrics.jsonl", "stderr.log"), "first")
    assert rotate_trial_files(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl.1", "notes.txt", "spec.json.1", "stderr.log.1"]
    _write(tmp_path, ("spec.json", "cmd.txt"), "second")
    assert rotate_trial_files(tmp_path) == 2  # after the highest generation of any trial file
    assert (tmp_path / "spec.json.1").read_text() == "first" and (tmp_path / "spec.json.2").read_text() == "second"
    assert (tmp_path / "cmd.txt.2").is_file() and not (tmp_path / "cmd.txt.1").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"  # not a trial file: left alone
    assert not any((tmp_path / name).exists() for name in TRIAL_FILES)


def test_a_rotated_trial_is_still_a_trial_folder(tmp_path: Path) -> None:
    assert not is_trial_dir(tmp_path)
    (tmp_path / "stdout.log").write_text("")
    assert not is_trial_dir(tmp_path)  # logs alone could be anyone's
    (tmp_path / "cmd.txt.3").write_text("deepspeed ...")
    assert is_trial_dir(tmp_path)


def test_log_tail_keeps_the_end(tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    log.write_bytes(b"x" * 5000 + b"\nRuntimeError: boom\n")
    assert log_tail(log, limit=20).endswith("RuntimeError: boom\n") and len(log_tail(log, limit=20)) == 20
    assert log_tail(tmp_path / "missing.log") == ""
