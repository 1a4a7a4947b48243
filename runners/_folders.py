"""The trial folder: which files make a trial's record, and how a reused folder keeps earlier
trials' files (moved aside, never overwritten)."""

from __future__ import annotations

import os
from pathlib import Path

from trainplan.errors import UsageError

__all__ = ["TRIAL_FILES", "check_trial_folder", "is_trial_dir", "log_tail", "rotate_trial_files"]

TRIAL_FILES = ("spec.json", "ds_config.json", "cmd.txt", "metrics.jsonl", "result.json", "stdout.log", "stderr.log")
"""The files one trial writes in its folder (docs/protocol.md, "Trial protocol")."""


def rotate_trial_files(trial_dir: Path, names: tuple[str, ...] = TRIAL_FILES) -> int | None:
    """Move an earlier trial's files in ``trial_dir`` aside as ``<name>.N`` (N: 1 for the first
    earlier trial, then 2, ...), all with one N so they stay together; nothing is deleted or
    overwritten. Returns N, or None when the folder held none of ``names``."""
    present = [name for name in names if (trial_dir / name).exists()]
    if not present:
        return None
    used = [int(p.name.rsplit(".", 1)[1]) for name in TRIAL_FILES for p in trial_dir.glob(f"{name}.*")
            if p.name.rsplit(".", 1)[1].isdigit()]
    generation = max(used, default=0) + 1
    for name in present:
        (trial_dir / name).rename(trial_dir / f"{name}.{generation}")
    return generation


def is_trial_dir(path: Path) -> bool:
    """``path`` holds (or held) a trial: its ``spec.json`` or ``cmd.txt``, current or rotated."""
    return any(any(path.glob(f"{name}*")) for name in ("spec.json", "cmd.txt"))


def check_trial_folder(path: Path, flag: str = "--out") -> None:
    """``path`` may hold a trial: a new or empty folder, or a trial folder (whose earlier files are
    kept as ``<name>.N``), never a folder of someone's other files; else a :class:`UsageError`
    naming ``flag``."""
    if path.exists() and not path.is_dir():
        raise UsageError(flag, f"{path} is a file; give a folder")
    if path.is_dir() and any(path.iterdir()) and not is_trial_dir(path):
        raise UsageError(flag, f"{path} is not empty and holds no trial (no spec.json); give a new or empty "
                               "folder, or a trial folder to rerun in")


def log_tail(path: Path, limit: int = 4000) -> str:
    """The last ``limit`` bytes of a log, as text ('' when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - limit))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""
