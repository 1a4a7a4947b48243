"""The report in a real headless Chromium: every figure renders, nothing errs, nothing is fetched."""

from __future__ import annotations

import os
import re
from pathlib import Path

import optuna
import pytest
from tests.reports._browser import find_chromium, open_page
from tests.reports.conftest import build_study

from trainplan.reports import build_report

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def chromium() -> None:
    if find_chromium():
        return
    message = "chromium is not installed (make browser / apt-get install chromium)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)  # CI installs it: a missing browser is a broken set-up, not a skip
    pytest.skip(message)


# Switch the curves' x axis to tokens with the page's own selector; report what the first trace shows.
SWITCH_TO_TOKENS = """
(async () => {
  const sel = document.querySelector('select[data-curves-for]');
  sel.value = 'tokens'; sel.dispatchEvent(new Event('change'));
  await new Promise(r => setTimeout(r, 300));
  const gd = document.getElementById(sel.getAttribute('data-curves-for'));
  const tr = gd.data.find(t => t.meta === 0);
  return {x: Array.from(tr.x).slice(0, 2), title: gd.layout.xaxis2.title.text};
})()
"""


def test_report_renders_every_figure_without_errors(study: optuna.Study, tmp_path: Path) -> None:
    page = build_report(study, tmp_path / "out")
    expected = len(re.findall(r'class="plotly-graph-div"', page.read_text()))
    shot = tmp_path / "report.png"
    seen = open_page(page, screenshot=shot, probe=SWITCH_TO_TOKENS)
    assert expected >= 7 and seen.rendered_plots == expected
    assert seen.errors == []
    assert seen.requests == [page.resolve().as_uri()]  # the page itself, nothing else
    assert shot.stat().st_size > 50_000 and shot.read_bytes()[:4] == b"\x89PNG"
    assert seen.probe == {"x": [20480, 40960], "title": "training tokens"}
    assert "Decision summary" in seen.text and "CUDA out of memory at step 1" in seen.text


def test_hostile_study_name_is_shown_not_run(storage: str, tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    study = build_study(storage, evil, param_name=evil)
    probe = ("['fig-slices', 'fig-parallel-coordinates', 'fig-importances'].map("
             "id => document.getElementById(id).textContent.includes('<script>alert(1)</script>'))")
    seen = open_page(build_report(study, tmp_path / "out"), probe=probe)
    assert seen.alerts == [] and seen.errors == []
    assert f"Study {evil}" in seen.text  # the text itself, visible
    assert seen.text.count(evil) >= 2  # the study name and the parameter's column
    assert seen.probe == [True, True, True]  # figures show the parameter name literally too


def test_multi_objective_page_shows_the_pareto_front(storage: str, tmp_path: Path) -> None:
    page = build_report(build_study(storage, "multi", multi=True), tmp_path / "out")
    seen = open_page(page, probe="document.getElementById('fig-pareto-front').querySelectorAll('.point').length")
    assert seen.errors == [] and seen.rendered_plots == page.read_text().count('class="plotly-graph-div"')
    assert seen.probe == 4  # the four completed trials
