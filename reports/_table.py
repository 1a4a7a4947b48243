"""The trial table and the environment section: plain HTML tables, every string escaped.

Study names, parameter names and paths come from users and trial folders; each passes through
``html.escape`` (text) or ``urllib.parse.quote`` plus ``html.escape`` (links) before it reaches
the page, so a name like ``<script>alert(1)</script>`` is shown, never run.
"""

from __future__ import annotations

import html
import os
import platform
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from trainplan import __version__
from trainplan.reports._records import StudyRecord
from trainplan.reports._style import CATEGORY_STYLE, fmt_bytes, fmt_num, fmt_seconds

__all__ = ["EnvironmentInfo", "TableInfo", "environment_html", "get_environment_info", "get_table_info",
           "kv_table", "table_html"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TableInfo:
    """One row per trial."""

    objectives: list[str]
    """Objective column names."""
    params: list[str]
    """Parameter column names, sorted."""
    rows: list[dict[str, Any]]
    """``trial, category, status, reason, duration_s, tokens, tokens_per_s, peak_mem_bytes, trial_dir``,
    the objectives and the parameters."""


def get_table_info(study: StudyRecord) -> TableInfo:
    params = sorted({p for t in study.trials for p in t.params})
    rows = []
    for t in study.trials:
        row: dict[str, Any] = {"trial": t.number, "category": t.category, "status": t.status, "reason": t.reason,
                               "duration_s": t.duration_s, "tokens": t.tokens, "tokens_per_s": t.tokens_per_s,
                               "peak_mem_bytes": t.peak_mem_bytes, "trial_dir": t.trial_dir}
        row.update({name: (t.values[i] if t.values else None) for i, name in enumerate(study.objective_names)})
        row.update({f"param:{p}": t.params.get(p) for p in params})
        rows.append(row)
    return TableInfo(objectives=list(study.objective_names), params=params, rows=rows)


def _link(path: str, page_dir: Path) -> str:
    if not path:
        return ""
    try:
        rel = os.path.relpath(Path(path).resolve(), page_dir.resolve())
    except ValueError:  # another drive on Windows
        rel = path
    href = quote(Path(rel).as_posix(), safe="/.-_~")
    return f'<a href="{html.escape(href)}/">{html.escape(rel)}</a>'


def table_html(info: TableInfo, page_dir: Path) -> str:
    """The trial table; links to trial folders are relative to the page's folder."""
    e = html.escape
    head = ["trial", "status", "reason", *info.objectives, "duration", "tokens", "tokens/s", "peak memory",
            *info.params, "folder"]
    out = ['<table class="trials"><thead><tr>', *[f"<th>{e(h)}</th>" for h in head], "</tr></thead><tbody>"]
    for r in info.rows:
        color = CATEGORY_STYLE[r["category"]]["color"]
        cells = [str(r["trial"]), f'<span class="tag" style="background:{color}">{e(r["status"])}</span>'
                 + (" &#9733;" if r["category"] == "best" else ""), e(r["reason"])]
        cells += [fmt_num(r[o], 5) for o in info.objectives]
        cells += [fmt_seconds(r["duration_s"]), fmt_num(r["tokens"]), fmt_num(r["tokens_per_s"]),
                  fmt_bytes(r["peak_mem_bytes"])]
        cells += [e(fmt_num(v) if isinstance(v, float) else str(v)) if v is not None else "\u2014"
                  for v in (r[f"param:{p}"] for p in info.params)]
        cells.append(_link(r["trial_dir"], page_dir))
        out.append(f'<tr class="{e(r["category"])}">' + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvironmentInfo:
    """Where the sweep ran and what made this page."""

    command: str
    """The command line that ran the sweep (empty when the study does not record it)."""
    sweep_environment: dict[str, Any]
    """The sweep's recorded versions and host."""
    report_environment: dict[str, str]
    """Versions of the tools that wrote this page."""
    sweep: dict[str, Any]
    """The resolved sweep file."""


def get_environment_info(study: StudyRecord) -> EnvironmentInfo:
    import optuna
    import plotly

    from trainplan.safe import mask_argv, mask_url

    sweep = dict(study.sweep)
    if isinstance(sweep.get("storage"), str):  # studies written before passwords were masked
        sweep["storage"] = mask_url(sweep["storage"])
    return EnvironmentInfo(
        command=shlex.join(mask_argv(study.command)) if study.command else "", sweep_environment=dict(study.environment),
        report_environment={"trainplan": __version__, "python": platform.python_version(),
                            "optuna": optuna.__version__, "plotly": plotly.__version__,
                            "platform": f"{sys.platform}-{platform.machine()}"},
        sweep=sweep)


def kv_table(values: dict[str, Any]) -> str:
    """A two-column table of escaped keys and values (nested values as compact JSON)."""
    import json

    rows = []
    for k, v in values.items():
        text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
        rows.append(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(text)}</td></tr>")
    return '<table class="kv">' + "".join(rows) + "</table>"


def environment_html(info: EnvironmentInfo) -> str:
    import json

    e = html.escape
    parts = ["<h3>Sweep command</h3>",
             f"<pre>{e(info.command) if info.command else 'not recorded by the study'}</pre>",
             "<h3>Sweep environment</h3>",
             kv_table(info.sweep_environment) if info.sweep_environment else "<p>not recorded by the study</p>",
             "<h3>Report written with</h3>", kv_table(info.report_environment)]
    if info.sweep:
        parts += ["<h3>Resolved sweep file</h3>", f"<pre>{e(json.dumps(info.sweep, indent=2, sort_keys=True, default=str))}</pre>"]
    return "".join(parts)
