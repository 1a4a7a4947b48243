"""Where trainplan writes: run folders and the latest-run pointer."""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["runs_root", "new_run_dir", "latest_run_dir"]


def runs_root() -> Path:
    """The folder that holds run folders: ``$TRAINPLAN_RUNS`` or ``./runs``."""
    return Path(os.environ.get("TRAINPLAN_RUNS", "runs"))


def new_run_dir(kind: str, root: Path | None = None) -> Path:
    """A fresh, timestamped folder ``<root>/<kind>-YYYYmmdd-HHMMSS[-N]``."""
    root = root or runs_root()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"{kind}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = root / f"{kind}-{stamp}-{n}"
    path.mkdir(parents=True)
    return path


def latest_run_dir(kind: str, root: Path | None = None) -> Path | None:
    """The most recently modified ``<kind>-*`` folder under ``root``, or None."""
    root = root or runs_root()
    if not root.is_dir():
        return None
    found = [p for p in root.glob(f"{kind}-*") if p.is_dir()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None
