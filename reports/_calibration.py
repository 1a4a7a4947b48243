"""The calibration view: estimated against measured before and after calibration, the residual of
each trial, and the fitted constants with their intervals.

``get_calibration_info(cal)`` turns a :class:`~trainplan.planner.Calibration` into plain rows (no
plotly); ``get_calibration_plot(info)`` draws them; ``calibration_section`` puts both on a page.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainplan.reports._style import new_figure

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from trainplan.planner import Calibration
    from trainplan.reports._html import Page

__all__ = ["CalibrationInfo", "calibration_section", "get_calibration_info", "get_calibration_plot"]

MIB = 2**20


@dataclass(frozen=True, slots=True, kw_only=True)
class CalibrationInfo:
    """One calibration's fit, as plain values."""

    device: str
    """The device the trials ran on."""
    rows: list[dict[str, Any]]
    """Per layout (its repeats' median, :func:`trainplan.planner.merge_repeats`): ``trial``, measured, fitted (calibrated) and uncalibrated ``tokens_per_s`` and
    ``peak_mem_bytes``, and the calibrated residuals ``tps_residual``/``mem_residual`` (fit/measured - 1)."""
    constants: list[dict[str, Any]]
    """``name, value, low, high, unit, doc`` (low/high None where the trials could not identify it)."""
    notes: list[str]
    """What was not calibrated, and why."""


def get_calibration_info(cal: Calibration) -> CalibrationInfo:
    rows = [{"trial": t["id"] + (f" (median of {len(t['repeats'])})" if t.get("repeats") else ""), "tokens_per_s": t["tokens_per_s"], "tokens_per_s_calibrated": t["tokens_per_s_fit"],
             "tokens_per_s_uncalibrated": t["tokens_per_s_uncalibrated"], "peak_mem_bytes": t["peak_mem_bytes"],
             "peak_mem_calibrated": t["peak_mem_fit"], "peak_mem_uncalibrated": t["peak_mem_uncalibrated"],
             "tps_residual": t["tokens_per_s_fit"] / t["tokens_per_s"] - 1,
             "mem_residual": t["peak_mem_fit"] / t["peak_mem_bytes"] - 1} for t in cal.trials]
    constants = [{"name": k, "value": c.value, "low": None if c.low != c.low else c.low,
                  "high": None if c.high != c.high else c.high, "unit": c.unit, "doc": c.doc}
                 for group in (cal.speed, cal.memory) for k, c in group.items()]
    return CalibrationInfo(device=f"{cal.device.get('kind', '').upper()} {cal.device.get('name')}", rows=rows,
                           constants=constants, notes=list(cal.notes))


def get_calibration_plot(info: CalibrationInfo) -> go.Figure:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, subplot_titles=("throughput (tokens/s)", "peak memory per rank (MiB)",
                                                        "calibrated residual per trial (%)"))
    fig.update_layout(new_figure(f"Estimate (x) against measurement (y) on {info.device}, before and after "
                                 "calibration; the diagonal is a perfect estimate").layout)
    for col, (meas, scale) in enumerate((("tokens_per_s", 1.0), ("peak_mem", MIB)), start=1):
        key = "tokens_per_s" if col == 1 else "peak_mem_bytes"
        for suffix, color, name in (("uncalibrated", "#999999", "uncalibrated"), ("calibrated", "#1f77b4", "calibrated")):
            fig.add_trace(go.Scatter(x=[r[f"{meas}_{suffix}"] / scale for r in info.rows],
                                     y=[r[key] / scale for r in info.rows], mode="markers", name=name,
                                     legendgroup=name, showlegend=col == 1, text=[r["trial"] for r in info.rows],
                                     marker={"color": color, "size": 8}), row=1, col=col)
        values = [v / scale for r in info.rows for v in (r[key], r[f"{meas}_calibrated"], r[f"{meas}_uncalibrated"])]
        if values:
            lo, hi = min(values), max(values)
            fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", showlegend=False, hoverinfo="skip",
                                     line={"color": "#888", "dash": "dot"}), row=1, col=col)
        fig.update_xaxes(type="log", title_text="estimate", row=1, col=col)
        fig.update_yaxes(type="log", title_text="measured", row=1, col=col)
    for res, name, color in (("tps_residual", "tokens/s", "#1f77b4"), ("mem_residual", "memory", "#ff7f0e")):
        fig.add_trace(go.Bar(x=[r["trial"] for r in info.rows], y=[100 * r[res] for r in info.rows], name=name,
                             marker={"color": color}), row=1, col=3)
    return fig


def calibration_section(page: Page, parts: list[str], path: Path) -> None:
    """Append the calibration in ``path`` (a run folder's calibration.json) to ``parts``."""
    from trainplan.errors import UsageError
    from trainplan.planner import load_calibration
    from trainplan.reports._style import fmt_num

    try:
        cal = load_calibration(path)
    except UsageError as exc:
        parts.append(f'<p class="empty">Calibration not shown: {html.escape(exc.message)}</p>')
        return
    info = get_calibration_info(cal)
    parts.append(f"<h3>Calibration ({html.escape(path.name)}, {html.escape(cal.trial_count())})</h3>")
    parts.append(page.figure("calibration", get_calibration_plot(info), info))
    rows = "".join(f"<tr><td>{html.escape(c['name'])}</td><td>{fmt_num(c['value'])}</td><td>"
                   + (f"{fmt_num(c['low'])} - {fmt_num(c['high'])}" if c["low"] is not None else "not calibrated")
                   + f"</td><td>{html.escape(c['unit'])}</td><td>{html.escape(c['doc'])}</td></tr>"
                   for c in info.constants)
    parts.append("<table><thead><tr><th>constant</th><th>value</th><th>90% interval</th><th>unit</th><th>meaning</th>"
                 f"</tr></thead><tbody>{rows}</tbody></table>")
    parts += [f'<p class="empty">{html.escape(n)}</p>' for n in info.notes]
