"""Errors shared by every part of trainplan.

A :class:`UsageError` is bad input: the CLI prints it as one line and exits with code 2. It names
the flag or config key the user typed, so the message can say what is allowed for it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["UsageError", "TrainplanError", "close_matches"]


class TrainplanError(Exception):
    """A failure that is not the user's input (exit code 1)."""


class UsageError(ValueError):
    """Bad input, reported as ``<key>: <message>`` with exit code 2.

    Args:
        key: the flag (``--zero``) or config key (``search_space.lr``) that was wrong.
        message: what was wrong and what is allowed.
    """

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


def close_matches(name: str, choices: Iterable[str], n: int = 4) -> str:
    """A ``did you mean ...?`` suffix listing the choices closest to ``name`` (may be empty)."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    # Substring hits catch "llama-70b" -> "llama-2-70b" which difflib ranks low.
    hits += [c for c in lowered if name.lower() in c and c not in hits]
    hits = [lowered[h] for h in hits[:n]]
    return f"; did you mean {', '.join(hits)}?" if hits else ""
