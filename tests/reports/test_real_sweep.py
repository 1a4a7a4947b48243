"""A report from a real sweep of the default task: every section present, every figure rendered.

The default sweep file (search/data/default_sweep.yaml) with its search space kept and its budget
shrunk (2 trials of a few seconds of DeepSpeed each), run through ``trainplan search`` and then
``trainplan report`` with no flags, as a user would.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from tests._proc import ONE_THREAD, trainplan
from tests.reports._browser import find_chromium, open_page

from trainplan.search import default_sweep_path

pytestmark = pytest.mark.slow

SECTIONS = ("Decision summary", "Estimated vs measured", "Learning curves", "Search diagnostics",
            "Scaling trade-offs", "Trials", "Environment")


def test_report_of_a_real_default_sweep(tmp_path: Path) -> None:
    sweep = yaml.safe_load(default_sweep_path().read_text())
    # Two short trials (8 steps of 8 x 64 tokens) keep this under a minute on 2 CPU cores; the
    # pruned, failed and infeasible paths are covered on synthetic studies elsewhere.
    sweep["base"].update(tokens=4096, layout={"micro_batch": 8, "seq_len": 64, "precision": "fp32", "zero": 0},
                         global_batch=8, eval_tokens=1024, max_data_bytes=100_000, evals_per_trial=2)
    sweep["space"]["global_batch"] = {"choices": [8, 16]}
    sweep["budget"] = {"n_trials": 2}
    sweep["sampler"] = {"type": "random", "seed": 0}
    sweep["pruner"] = {"type": "none"}
    sweep["workers"] = 2  # both trials at once: most of a short trial is process start-up
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    runs = tmp_path / "runs"
    trainplan("search", str(path), "--no-progress", runs=runs, cwd=tmp_path, timeout=400, env=ONE_THREAD)

    page = Path(trainplan("report", runs=runs, cwd=tmp_path).stdout.strip())
    assert page == runs / "search-default" / "report.html"
    html = page.read_text()
    for section in SECTIONS:
        assert f"<h2>{section}</h2>" in html
    figures = set(re.findall(r'<div id="fig-([a-z-]+)" class="plotly-graph-div"', html))
    assert {"learning-curves", "history", "parallel-coordinates", "slices", "timeline", "estimate-vs-measured",
            "memory-vs-gpus", "time-cost-vs-gpus", "throughput-vs-microbatch", "loss-vs-compute"} <= figures
    assert "Launch the fastest layout" in html and (page.parent / "recommended" / "spec.json").is_file()
    assert "trials/trial-0000" in html  # the table links the real trial folders

    if not find_chromium():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("chromium is not installed (make browser)")
        pytest.skip("chromium is not installed")
    seen = open_page(page, screenshot=tmp_path / "real-sweep.png")
    assert seen.rendered_plots == len(figures) and seen.errors == []
    assert seen.requests == [page.resolve().as_uri()]
