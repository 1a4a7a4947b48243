"""Page assembly: one HTML file, one inline plotly.js, figure data written beside it.

Offline and reproducible by construction: plotly.js is inlined from the installed plotly package
(``plotly.offline.get_plotlyjs()``), MathJax and the plotly logo/cloud links are off, every figure
gets a fixed ``div_id``, and nothing time-dependent is written unless the caller passes it.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainplan.safe import csv_cell, redact

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["DATA_DIR", "PLOTLY_CONFIG", "Page", "pre_json"]

DATA_DIR = "report_data"
"""Folder, beside the page, that holds every figure's data as ``<figure id>.json`` and ``.csv``."""

# https://plotly.com/javascript/configuration-options/: no logo link and no "send to cloud"
# button, so the page never offers a network action (plotly.js 3 dropped the Chart Studio links).
PLOTLY_CONFIG = {"displaylogo": False, "showSendToCloud": False, "responsive": True}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f2d3d;color:#fff;padding:18px 28px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;opacity:.8}nav{padding:8px 28px;background:#eef1f5;position:sticky;top:0;z-index:10}
nav a{margin-right:16px;color:#1f2d3d;text-decoration:none;font-size:14px}
main{padding:8px 28px 40px}section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;margin:18px 0;padding:8px 18px 16px}
h2{font-size:19px;border-bottom:1px solid #eee;padding-bottom:6px}h3{font-size:15px;margin:14px 0 6px}
pre{background:#f4f4f4;padding:10px;overflow:auto;font-size:12px;max-height:360px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f2f4f7}table.trials{display:block;overflow:auto;max-height:520px}
.tag{color:#fff;border-radius:3px;padding:0 5px}.empty{color:#777;font-style:italic}
.controls{font-size:13px;margin:4px 0}.figure{margin:10px 0}
"""


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _csv_value(value: Any) -> Any:
    value = _jsonable(value)
    return csv_cell(redact(value)) if isinstance(value, str) else value


def pre_json(value: Any) -> str:
    """``value`` as indented JSON in an escaped ``<pre>`` block."""
    return f"<pre>{html.escape(json.dumps(_jsonable(value), indent=2, sort_keys=True))}</pre>"


@dataclass(slots=True)
class Page:
    """Collects sections and figures, then writes the page and the data files."""

    title: str
    """Page title (escaped when written)."""
    subtitle: str
    """One line under the title (escaped when written)."""
    out_dir: Path
    """Folder of the page; figure data goes to ``out_dir / DATA_DIR``."""
    sections: list[tuple[str, str, list[str]]] = field(default_factory=list)
    """(anchor id, heading, HTML parts) in page order."""
    figure_ids: list[str] = field(default_factory=list)
    """Div ids of the figures placed, in order."""
    scripts: list[str] = field(default_factory=list)
    """Small in-page scripts run after the figures."""

    def section(self, anchor: str, heading: str) -> list[str]:
        """Start a section; returns its part list to append HTML to."""
        parts: list[str] = []
        self.sections.append((anchor, heading, parts))
        return parts

    def figure(self, fid: str, fig: go.Figure, info: Any) -> str:
        """Write ``info`` (JSON, and CSV when it has rows) and return the figure's div."""
        self.write_data(fid, info)
        self.figure_ids.append(f"fig-{fid}")
        div = fig.to_html(full_html=False, include_plotlyjs=False, include_mathjax=False,
                          div_id=f"fig-{fid}", config=PLOTLY_CONFIG, default_width="100%",
                          default_height=f"{int(fig.layout.height or 420)}px")
        return f'<div class="figure">{div}</div>'

    def write_data(self, fid: str, info: Any) -> None:
        data_dir = self.out_dir / DATA_DIR
        data_dir.mkdir(parents=True, exist_ok=True)
        payload = _jsonable(info)
        # redact: no storage password reaches a file that gets shared (trainplan.safe).
        (data_dir / f"{fid}.json").write_text(redact(json.dumps(payload, indent=1, sort_keys=True)) + "\n")
        rows = info.rows() if callable(getattr(info, "rows", None)) else getattr(info, "rows", None)
        if isinstance(rows, list) and rows:
            fields = list(dict.fromkeys(k for r in rows for k in r))
            with (data_dir / f"{fid}.csv").open("w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=fields)
                writer.writeheader()
                # A text cell starting = + - @ would run as a spreadsheet formula: neutralised.
                writer.writerows({k: _csv_value(v) for k, v in r.items()} for r in rows)

    def render(self) -> str:
        import plotly.offline

        e = html.escape
        nav = "".join(f'<a href="#{e(a)}">{e(h)}</a>' for a, h, _ in self.sections)
        body = "".join(f'<section id="{e(a)}"><h2>{e(h)}</h2>{"".join(p)}</section>' for a, h, p in self.sections)
        # "</script" inside inline JS would end the tag early; plotly.js has none, but be safe.
        plotly_js = plotly.offline.get_plotlyjs().replace("</script", "<\\/script")
        scripts = "".join(f"<script>{s}</script>" for s in self.scripts)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            # No network at all: the policy blocks any fetch the page or a plotly feature might try.
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; img-src data: blob:; "
            "font-src data:; connect-src 'none'\">"
            f"<title>{e(self.title)}</title><style>{_CSS}</style>"
            f"<script>{plotly_js}</script></head><body>"
            f"<header><h1>{e(self.title)}</h1><p>{e(self.subtitle)}</p></header><nav>{nav}</nav>"
            f"<main>{body}</main>{scripts}</body></html>\n"
        )

    def write(self, name: str = "report.html") -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / name
        path.write_text(redact(self.render()), encoding="utf-8")
        return path
