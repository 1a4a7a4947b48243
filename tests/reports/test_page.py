"""The page: offline, deterministic, escaped, with every figure's data beside it."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import optuna
from tests.reports.conftest import build_study

from trainplan.reports import DATA_DIR, build_report

FIGURES = {"estimate-vs-measured", "learning-curves", "history", "importances", "parallel-coordinates", "slices",
           "timeline"}


def _figure_ids(page: str) -> list[str]:
    return re.findall(r'<div id="(fig-[a-z-]+)" class="plotly-graph-div"', page)


def test_page_is_self_contained(study: optuna.Study, tmp_path: Path) -> None:
    path = build_report(study, tmp_path / "out")
    page = path.read_text()
    assert path == tmp_path / "out" / "report.html"
    # exactly one plotly.js, inline; no external script, stylesheet, font or MathJax
    assert page.count("plotly.js v") == 1 or page.count("* plotly.js") == 1
    assert len(re.findall(r"<script[^>]*\bsrc=", page)) == 0
    assert "<link" not in page and "@import" not in page and "mathjax" not in page.lower().split("plotly.js")[0]
    assert "connect-src 'none'" in page  # the page's CSP forbids fetches
    assert '"displaylogo": false' in page
    ids = _figure_ids(page)
    assert {i.removeprefix("fig-") for i in ids} >= FIGURES
    for section in ("Decision summary", "Estimated vs measured", "Learning curves", "Search diagnostics",
                    "Scaling trade-offs", "Trials", "Environment"):
        assert f"<h2>{section}</h2>" in page
    assert "CUDA out of memory at step 1" in page and "trainplan search --trials 7" in page


def test_every_figure_writes_its_data(study: optuna.Study, tmp_path: Path) -> None:
    path = build_report(study, tmp_path / "out")
    data = path.parent / DATA_DIR
    for fid in (i.removeprefix("fig-") for i in _figure_ids(path.read_text())):
        assert json.loads((data / f"{fid}.json").read_text()), fid
    with (data / "learning-curves.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["trial"] for r in rows} == {"0", "1", "2", "4", "6", "7"}
    assert sum(1 for r in rows if r["eval_loss"]) == 4 + 4 + 2 + 0 + 4 + 2
    with (data / "trials.csv").open() as fh:
        trials = list(csv.DictReader(fh))
    assert [t["status"] for t in trials][3:6] == ["oom", "diverged", "infeasible"]


def test_same_data_gives_the_same_bytes(study: optuna.Study, tmp_path: Path) -> None:
    a = build_report(study, tmp_path / "a")
    b = build_report(optuna.load_study(study_name=study.study_name, storage=study._storage), tmp_path / "b")
    assert a.read_bytes() == b.read_bytes()
    for f in sorted((a.parent / DATA_DIR).iterdir()):
        assert f.read_bytes() == (b.parent / DATA_DIR / f.name).read_bytes(), f.name


def test_generated_line_defaults_to_the_data(study: optuna.Study, tmp_path: Path) -> None:
    page = build_report(study, tmp_path / "a").read_text()
    assert "data up to 2026-01-01T12:03:55" in page
    page = build_report(study, tmp_path / "b", generated="generated 2026-02-02").read_text()
    assert "generated 2026-02-02" in page


def test_trial_folders_are_linked_relative_to_the_page(study: optuna.Study, tmp_path: Path) -> None:
    page = build_report(study, tmp_path / "out").read_text()
    assert '<a href="../trials/trial-0003/">../trials/trial-0003</a>' in page


def test_user_strings_are_escaped(storage: str, tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    study = build_study(storage, evil, param_name=evil, trial_dirs=tmp_path / evil.replace("/", "_"))
    page = build_report(study, tmp_path / "out").read_text()
    assert evil not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<title>trainplan report: &lt;script&gt;" in page


def test_a_study_without_completed_trials_still_renders(storage: str, tmp_path: Path) -> None:
    study = optuna.create_study(storage=storage, study_name="empty")
    page = build_report(study, tmp_path / "out").read_text()
    assert "no completed trial" in page and _figure_ids(page) == []
