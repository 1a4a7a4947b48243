"""One look for every figure: category colours, a small layout template, number formatting.

Plotly's default template is ~6 KB of JSON per figure; a page with a dozen figures and one
embedded plotly.js should not pay that twelve times, so figures use the small layout below.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["CATEGORY_STYLE", "GIB", "fmt_bytes", "fmt_num", "fmt_seconds", "new_figure", "plain"]

GIB = 2**30

# Colour-blind-safe palette (Okabe & Ito 2008, "Color Universal Design"); line dash and width
# carry the category too so it survives greyscale printing.
CATEGORY_STYLE: dict[str, dict[str, Any]] = {
    "best": {"color": "#D55E00", "width": 3.0, "dash": "solid", "opacity": 1.0, "label": "best"},
    "completed": {"color": "#0072B2", "width": 1.2, "dash": "solid", "opacity": 0.7, "label": "completed"},
    "pruned": {"color": "#999999", "width": 1.0, "dash": "dot", "opacity": 0.6, "label": "pruned"},
    "failed": {"color": "#CC79A7", "width": 1.0, "dash": "dash", "opacity": 0.8, "label": "failed"},
    "infeasible": {"color": "#E69F00", "width": 1.0, "dash": "dashdot", "opacity": 0.8, "label": "infeasible"},
    "running": {"color": "#009E73", "width": 1.0, "dash": "longdash", "opacity": 0.8, "label": "running"},
}

_LAYOUT: dict[str, Any] = {
    "template": None,
    "paper_bgcolor": "white",
    "plot_bgcolor": "white",
    "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12, "color": "#222"},
    "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
    "hovermode": "closest",
    "height": 420,
}
_AXIS: dict[str, Any] = {"gridcolor": "#e5e5e5", "linecolor": "#888", "zerolinecolor": "#ccc", "automargin": True}


def new_figure(title: str, *, xaxis: str = "", yaxis: str = "", **layout: Any) -> go.Figure:
    """An empty figure with the report's layout, a title and axis titles."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.update_layout(**_LAYOUT, title={"text": title, "x": 0.01})
    fig.update_layout(**layout)
    fig.update_xaxes(**_AXIS, title_text=xaxis)
    fig.update_yaxes(**_AXIS, title_text=yaxis)
    return fig


def plain(text: str) -> str:
    """``text`` for a plotly title, label or tick: plotly.js reads those as a subset of HTML
    (https://plotly.com/chart-studio-help/adding-HTML-and-links-to-charts/), so a user's
    ``<b>`` or ``<script>`` must arrive as entities to be shown literally."""
    return html.escape(text, quote=False)


def fmt_num(value: float | None, digits: int = 4) -> str:
    """Compact significant-digit formatting; an em dash for missing values."""
    if value is None:
        return "\u2014"
    return f"{value:.{digits}g}"


def fmt_bytes(value: float | None) -> str:
    if value is None:
        return "\u2014"
    return f"{value / GIB:.2f} GiB" if value >= 2**28 else f"{value / 2**20:.1f} MiB"


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return "\u2014"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    if value < 3 * 86400:
        return f"{value / 3600:.1f} h"
    return f"{value / 86400:.1f} days"
