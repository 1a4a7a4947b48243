"""The report's decision summary is about the scale-up target when `trainplan scale` gave one; the
small study's best trial moves to its own section (checked on the page's data and its sections)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pytest

from tests.cli.test_scale_cli import LRS, _loss
from tests.search.test_ladder import make_study
from trainplan.cli import main
from trainplan.errors import UsageError
from trainplan.reports import build_report


def _section(text: str, sid: str) -> str:
    match = re.search(rf'<section id="{sid}">(.*?)</section>', text, re.S)
    assert match, f"no section {sid}"
    return match.group(1)


def _ladder(tmp_path: Path) -> optuna.Study:
    url = make_study(tmp_path / "study.db", {"w64": 0, "w96": 0, "w128": 0}, loss_of=_loss, lrs=LRS)
    study = optuna.load_study(study_name="ladder", storage=url)
    study.set_user_attr("sweep", {"base": {"warmup_fraction": 0.1, "data": "stdlib"}, "ladder": [{"name": "w64"}],
                                  "hardware": {"gpu": "a100-80gb"}})
    return study


def test_summary_is_about_the_target_and_the_best_trial_keeps_its_section(tmp_path: Path, capsys) -> None:
    study = _ladder(tmp_path)
    assert main(["scale", "--run-dir", str(tmp_path), "--target-model", "llama-2-7b", "--tokens", "2T",
                 "--gpu", "h100-sxm", "--max-gpus", "512", "--format", "json"]) == 0
    decision = json.loads(capsys.readouterr().out)
    page = build_report(study, tmp_path)  # picks up tmp_path/target/scale.json, as `trainplan report` does
    summary = json.loads((tmp_path / "report_data" / "summary.json").read_text())
    t, lay = summary["target"], decision["layout"]
    assert t["model"] == "llama-2-7b" and t["tokens"] == 2e12
    assert (t["lr"], t["global_batch"], t["steps"]) == (decision["target"]["lr"], decision["target"]["global_batch"],
                                                       decision["target"]["steps"])
    assert (t["gpus"], t["gpu"], t["zero"]) == (lay["layout"]["gpus"], "h100-sxm", lay["layout"]["zero"])
    assert t["hours"] == pytest.approx(lay["time"]["hours"]) and t["cost_usd"] == pytest.approx(lay["cost"]["usd"])
    assert t["predicted_loss"] == decision["target"]["predicted_loss"]
    assert t["launch_command"] == (tmp_path / "target" / "cmd.txt").read_text().strip()
    assert any("outside the fitted range" in n for n in t["notes"])
    text = page.read_text()
    top = _section(text, "summary")
    assert "The target run: llama-2-7b" in top and f"{lay['layout']['gpus']} x h100-sxm" in top
    assert "Best trial" not in top  # the swept model's best trial is not the decision
    best = _section(text, "best")
    assert f"Best trial: #{summary['best_number']}" in best
    # the scale-up figures carry the target's point
    lr = json.loads((tmp_path / "report_data" / "scaleup-lr.json").read_text())
    assert lr["target"]["target"]["model"] == "llama-2-7b"


def test_without_a_target_the_summary_is_the_best_trial(tmp_path: Path) -> None:
    study = _ladder(tmp_path)
    text = build_report(study, tmp_path / "rep").read_text()
    summary = json.loads((tmp_path / "rep" / "report_data" / "summary.json").read_text())
    assert summary["target"] is None and "Best trial: #" in _section(text, "summary")
    assert '<section id="best">' not in text


def test_a_file_that_is_not_a_scale_decision_is_refused_by_name(tmp_path: Path) -> None:
    study = _ladder(tmp_path)
    bad = tmp_path / "target" / "scale.json"
    bad.parent.mkdir()
    bad.write_text('{"kind": "plan"}')
    with pytest.raises(UsageError) as info:
        build_report(study, tmp_path)
    assert info.value.key == str(bad) and "trainplan scale" in info.value.message
