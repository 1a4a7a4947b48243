"""Small formatting helpers shared by the CLI verbs (numbers, tables)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from trainplan.errors import UsageError

__all__ = ["human_bytes", "human_count", "human_hours", "parse_count", "print_table"]

MAX_TOKENS = 1e18
"""Ceiling of a token count: a million times Llama 3's 15T."""

_SUFFIX = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_count(text: str, flag: str) -> float:
    """``"300B"``, ``"2T"``, ``"1.5e9"`` -> float; a bad value names ``flag``."""
    raw = text.strip().lower().replace("_", "").replace(",", "")
    scale = 1.0
    if raw and raw[-1] in _SUFFIX:
        raw, scale = raw[:-1], _SUFFIX[raw[-1]]
    try:
        value = float(raw) * scale
    except ValueError:
        raise UsageError(flag, f"{text!r} is not a number (examples: 300B, 2T, 1.5e9)") from None
    if not math.isfinite(value) or not value > 0:
        raise UsageError(flag, f"must be a positive finite count (examples: 300B, 2T, 1.5e9), got {text!r}")
    if value > MAX_TOKENS:
        raise UsageError(flag, f"{text!r} is more than {MAX_TOKENS:.0e}, beyond any training run")
    return value


def human_bytes(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def human_count(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def human_hours(h: float) -> str:
    if h < 1:
        return f"{h * 60:.1f} min"
    if h < 48:
        return f"{h:.1f} h"
    return f"{h / 24:.1f} days"


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a table to stdout with rich (plain text when stdout is not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    for h in header:
        table.add_column(h, overflow="fold")
    for row in rows:
        table.add_row(*(str(c) for c in row))
    Console(width=160).print(table)
