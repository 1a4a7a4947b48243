"""Keeping secrets out of what trainplan prints and writes, and spreadsheets from running cells.

One rule for storage URLs: a password is shown as ``***`` wherever a URL is printed, logged,
stored in a study or written to a file. :func:`mask_url` renders one URL; :func:`mask_argv` a
command line; :func:`redact` any text (a driver's error message), replacing every password this
process has seen (:func:`remember_url`) and ``$PGPASSWORD``. The password itself may come from the
URL, from ``$TRAINPLAN_STORAGE`` (the URL, kept off the command line) or from ``$PGPASSWORD`` /
``~/.pgpass``, which libpq reads itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

__all__ = ["MASK", "csv_cell", "mask_argv", "mask_url", "redact", "remember_url", "storage_from_env"]

MASK = "***"

# scheme://user:password@host...; the password runs to the last "@" before the path or query,
# so an unescaped "@" or "/" inside it is still hidden.
_URL = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<password>[^\s]*)@(?P<tail>[^@\s]*)$")
# The same inside running text (an error message): there a password ends at a quote or space.
_IN_TEXT = re.compile(r"""([A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s'"]*:)(?!\*\*\*@)[^@\s'"/]+@""")
_seen: set[str] = set()


def _split(url: str) -> tuple[str, str, str] | None:
    query = url.find("?")
    body, rest = (url, "") if query < 0 else (url[:query], url[query:])
    match = _URL.match(body)
    if not match or not match["password"]:
        return None
    return match["head"], match["password"], match["tail"] + rest


def mask_url(url: str | None) -> str | None:
    """``url`` with its password (if any) shown as ``***``; anything else unchanged."""
    if not url:
        return url
    parts = _split(url)
    if parts is None:
        return url
    head, _, tail = parts
    return f"{head}{MASK}@{tail}"


def remember_url(url: str | None) -> str | None:
    """Note the password of ``url`` so that :func:`redact` hides it everywhere; returns ``url``."""
    parts = _split(url or "")
    if parts is not None:
        _seen.add(parts[1])
        _seen.add(unquote(parts[1]))
    return url


def _secrets() -> list[str]:
    found = set(_seen)
    if os.environ.get("PGPASSWORD"):
        found.add(os.environ["PGPASSWORD"])
    remember = _split(os.environ.get("TRAINPLAN_STORAGE", ""))
    if remember is not None:
        found.update({remember[1], unquote(remember[1])})
    # Longest first, so a password that contains another is hidden whole.
    return sorted((s for s in found if len(s) >= 3), key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every URL password masked and every known password replaced by ``***``."""
    for secret in _secrets():  # known passwords first: they may hold "/" or "@"
        text = text.replace(secret, MASK)
    if "://" in text:
        text = _IN_TEXT.sub(lambda m: f"{m[1]}{MASK}@", text)
    return text


def mask_argv(argv: Iterable[Any]) -> list[str]:
    """A command line with the password of any URL argument (``--storage URL`` or
    ``--storage=URL``) masked."""
    out = []
    for arg in argv:
        arg = str(arg)
        if "=" in arg and arg.startswith("--"):
            flag, _, value = arg.partition("=")
            out.append(f"{flag}={redact(value)}")
        else:
            out.append(redact(arg))
    return out


def storage_from_env(storage: str | None) -> str | None:
    """``storage`` as given, else ``$TRAINPLAN_STORAGE`` (so a URL with a password need not be
    typed on a command line, where ``ps`` and shell history see it)."""
    if storage:
        return remember_url(storage)
    return remember_url(os.environ.get("TRAINPLAN_STORAGE") or None)


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula (``= + - @`` first, OWASP's CSV
    injection list) gets a leading ``'``; numbers and other values are unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value
