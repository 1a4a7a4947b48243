"""Option help taken from the config dataclasses: the docstring under each field is the help, so
the command line and the config never describe a setting twice.

A field's docstring is read from the class's source (Python keeps no attribute docstrings at
runtime); reST markup is reduced to plain text for the terminal.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
import textwrap
from typing import Any

__all__ = ["field_docs", "field_help"]

_ROLE = re.compile(r":\w+:`~?(?:[\w.]+\.)?([\w]+)`")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its docstring (one line, plain text) for a dataclass ``cls``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = _ROLE.sub(r"\1", " ".join(after.value.value.split())).replace("``", "")
    return docs


def field_help(cls: type, name: str, default: Any = None) -> str:
    """The help of option ``name``: the docstring of ``cls``'s field, then ``[default: X]`` unless
    ``default`` is None."""
    text = field_docs(cls)[name]
    if default is None:
        return text
    shown = f"{default:g}" if isinstance(default, float) else str(default)
    return f"{text} [default: {shown}]"
