"""The calibration view's data (reports/_calibration.py): before/after rows, residuals, constants."""

from __future__ import annotations

import random

import pytest

from tests.planner.test_calibration import _grid, _measure
from trainplan.planner import fit
from trainplan.reports._calibration import get_calibration_info, get_calibration_plot


def test_calibration_info_holds_before_after_residuals_and_intervals() -> None:
    points = [_measure(p, random.Random(2), 0.03) for p in _grid() if p["layout"]["gpus"] == 1]
    cal = fit(points)
    info = get_calibration_info(cal)
    assert [r["trial"] for r in info.rows] == [p["id"] for p in points]
    for r, p in zip(info.rows, points):
        assert r["tokens_per_s"] == pytest.approx(p["tokens_per_s"])
        assert r["tps_residual"] == pytest.approx(r["tokens_per_s_calibrated"] / r["tokens_per_s"] - 1)
        assert abs(r["tps_residual"]) < 0.15 and abs(r["mem_residual"]) < 0.15
    # the uncalibrated planner (efficiency assumed, no memory overhead) is further off than the fit
    assert sum(abs(r["tokens_per_s_uncalibrated"] / r["tokens_per_s"] - 1) for r in info.rows) > \
        sum(abs(r["tps_residual"]) for r in info.rows)
    consts = {c["name"]: c for c in info.constants}
    assert consts["e_max"]["low"] <= consts["e_max"]["value"] <= consts["e_max"]["high"]
    assert consts["comm_factor"]["low"] is None and "--gpus 2" in info.notes[0]
    fig = get_calibration_plot(info)
    assert len(fig.data) == 2 * 3 + 2  # before/after and a diagonal per panel, two residual bar series


def test_report_shows_the_run_folders_calibration(study, tmp_path) -> None:
    from trainplan.reports import DATA_DIR, build_report

    points = [_measure(p, random.Random(2), 0.03) for p in _grid()]
    out = tmp_path / "out"
    out.mkdir()
    fit(points).save(out / "calibration.json")
    page = build_report(study, out).read_text()
    assert 'id="fig-calibration"' in page and f"Calibration (calibration.json, {len(points)} trials)" in page
    assert "e_max" in page and "90% interval" in page
    assert (out / DATA_DIR / "calibration.csv").read_text().splitlines()[0].startswith("trial,tokens_per_s")
    (out / "calibration.json").write_text("{}")
    assert "Calibration not shown: not a trainplan calibration file" in build_report(study, out).read_text()
