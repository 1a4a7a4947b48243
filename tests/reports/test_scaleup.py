"""The scale-up views: the study report of a ladder gets the section; too few trials say what to run."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from tests.cli.test_scale_cli import LRS, _loss
from tests.search.test_ladder import make_study
from trainplan.reports import build_report
from trainplan.reports._scaleup import get_scaleup_info
from trainplan.search._ladder import ladder_points


def test_ladder_study_report_has_the_scaleup_section(tmp_path: Path) -> None:
    url = make_study(tmp_path / "s.db", {"w64": 0, "w96": 0, "w128": 0}, loss_of=_loss, lrs=LRS)
    study = optuna.load_study(study_name="ladder", storage=url)
    study.set_user_attr("sweep", {"base": {"warmup_fraction": 0.1}, "ladder": [{"name": "w64"}]})
    page = build_report(study, tmp_path / "rep")
    assert 'id="scaleup"' in page.read_text()
    data = json.loads((tmp_path / "rep" / "report_data" / "scaleup-loss-compute.json").read_text())
    assert data["mode"] == "fitted" and data["target"] is None
    assert [o["size"] for o in data["optima"]] == ["w64", "w96", "w128"]
    # 3 sizes: alpha is the prior, and the page says so
    assert any("alpha held at the Besiroglu" in n for n in data["notes"])
    # the fitted frontier falls with compute
    losses = [r["loss_value"] for r in data["curve"]]
    assert losses == sorted(losses, reverse=True)


def test_a_ladder_whose_tokens_grow_draws_its_frontier_along_that_path(tmp_path: Path) -> None:
    tokens = {"w64": 65536, "w96": 98304, "w128": 131072}  # D ~ N^0.5, as the default ladder
    url = make_study(tmp_path / "s.db", tokens, loss_of=_loss, lrs=LRS, steps_tokens=tokens)
    info = get_scaleup_info(ladder_points(optuna.load_study(study_name="ladder", storage=url)), n_boot=20)
    assert info.mode == "fitted"
    first, last = info.curve[0], info.curve[-1]
    assert first["tokens"] == pytest.approx(65536, rel=0.05) and last["tokens"] == pytest.approx(131072, rel=0.05)
    assert last["compute"] == pytest.approx(6 * last["n"] * last["tokens"])
    assert any("grow with its sizes" in n for n in info.notes)


def test_too_few_trials_give_a_message_not_a_figure(tmp_path: Path) -> None:
    url = make_study(tmp_path / "s.db", {"w64": 0}, loss_of=_loss, lrs=(0.002,), batches=(16,))
    info = get_scaleup_info(ladder_points(optuna.load_study(study_name="ladder", storage=url)))
    assert info.mode == "none" and "default_ladder.yaml" in info.message
