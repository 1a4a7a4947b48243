"""Click parameter types for the CLI's numbers: one validation layer for flags.

Every float flag is finite (``nan`` and ``inf`` parse as floats but poison a plan: ``NaN`` is not
valid JSON, an infinite token budget crashes the step count) and every count has a ceiling far
above any real run, so a typo like ``--gpus 10**24`` is refused rather than planned as 0 tokens/s.
The message names the flag (click adds it) and the allowed range.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

__all__ = ["MAX_COUNT", "Count", "Finite", "check_output_file"]

MAX_COUNT = 2**30
"""Ceiling of a count flag (GPUs, steps, batch sizes): ~1e9, beyond any real training run."""


class Finite(click.ParamType):
    """A finite float within ``[low, high]`` (an end is open when ``low_open``/``high_open``)."""

    name = "number"

    def __init__(self, low: float | None = None, high: float | None = None, *, low_open: bool = False,
                 high_open: bool = False) -> None:
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open

    def _range(self) -> str:
        if self.low is None and self.high is None:
            return "a finite number"
        left = "any" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        right = "" if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
        return "a finite number " + " and ".join(p for p in (left if self.low is not None else "", right) if p)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float) and math.isfinite(value):
            number = value
        else:
            try:
                number = float(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a number; expected {self._range()}", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not allowed; expected {self._range()}", param, ctx)
        if self.low is not None and (number < self.low or (self.low_open and number == self.low)):
            self.fail(f"{number:g} is out of range; expected {self._range()}", param, ctx)
        if self.high is not None and (number > self.high or (self.high_open and number == self.high)):
            self.fail(f"{number:g} is out of range; expected {self._range()}", param, ctx)
        return number


def Count(low: int = 1, high: int = MAX_COUNT) -> click.IntRange:  # noqa: N802 - reads as a type
    """An integer in ``[low, high]``."""
    return click.IntRange(low, high)


def check_output_file(path: str | Path | None, flag: str, suffixes: tuple[str, ...] = ()) -> None:
    """A file the command will write: its folder exists, it is not a folder, and (given
    ``suffixes``) it has one of them. Checked before anything long runs."""
    from trainplan.errors import UsageError

    if path is None or str(path) == "-":
        return
    path = Path(path)
    if path.is_dir():
        raise UsageError(flag, f"{path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise UsageError(flag, f"folder {path.parent} does not exist")
    if suffixes and path.suffix.lower().lstrip(".") not in suffixes:
        raise UsageError(flag, f"{path.name}: the suffix must be one of {', '.join('.' + s for s in suffixes)}")
