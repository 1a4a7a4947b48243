"""`trainplan scale` as a user runs it on a ladder study: the fit, the target's files, the warnings
and refusals. The study is a real SQLite study holding the records the search stores; its losses
come from a known law, so the fitted LR exponent can be checked (the real-trial check is
benchmarks/transfer.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.search.test_ladder import make_study
from trainplan.cli import main
from trainplan.runners import TrialSpec

LRS = (0.001, 0.002, 0.004, 0.008, 0.016, 0.032)


def _loss(n: float, lr: float, gb: int) -> float:
    # lr* = 2 N^-0.4; loss falls with N (alpha 0.35), quadratic in log2(lr / lr*), batch 16 better.
    return 1.2 + 30 * n**-0.35 + 0.03 * math.log2(lr / (2 * n**-0.4)) ** 2 + 0.05 * (gb == 8)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def ladder_dir(tmp_path: Path) -> Path:
    make_study(tmp_path / "study.db", {"w64": 0, "w96": 0, "w128": 0, "w192": 0}, loss_of=_loss, lrs=LRS)
    return tmp_path


def test_scale_fits_the_ladder_and_writes_the_target_run(capsys, ladder_dir: Path) -> None:
    out_dir = ladder_dir / "target"
    code, out, err = run(capsys, "scale", "--run-dir", str(ladder_dir), "--target-model", "llama-2-7b",
                         "--tokens", "2T", "--gpu", "a100-80gb", "--max-gpus", "512", "--out", str(out_dir),
                         "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    fit = doc["fit"]
    assert doc["mode"] == "fitted" and len(fit["data"]) == 4 and fit["alpha_fitted"]
    # lr* = 2 N^-0.4 on a grid of factor-2 steps: the fitted exponent lies near -0.4
    assert fit["lr_exponent"]["low"] <= fit["lr_exponent"]["value"] <= fit["lr_exponent"]["high"]
    assert fit["lr_exponent"]["value"] == pytest.approx(-0.4, abs=0.12)
    assert any("FAR outside the fitted range" in n for n in doc["notes"])  # 7B from a 2M-parameter ladder
    assert [p["law"] for p in doc["priors"]] == ["deepseek", "step_law"]
    t = doc["target"]
    assert t["steps"] == math.ceil(2e12 / (t["global_batch"] * t["seq_len"]))
    spec = TrialSpec.from_json(out_dir / "spec.json")
    # 3,500x beyond the swept N: the spec takes the Step Law prior, and says so
    assert t["hyperparams_from"] == "step_law" and any("Step Law prior's" in n for n in doc["notes"])
    assert spec.hyperparams.lr == pytest.approx(doc["priors"][1]["lr"]) == t["lr"]
    assert spec.layout.global_batch == t["global_batch"] and spec.steps == t["steps"]
    ds = json.loads((out_dir / "ds_config.json").read_text())
    assert ds["train_batch_size"] == t["global_batch"]
    cmd = (out_dir / "cmd.txt").read_text()
    assert "trainplan.runners.train" in cmd and str((out_dir / "spec.json").resolve()) in cmd
    nodes = spec.layout.nodes  # several hosts: the one launch-command builder names them once, with a hostfile
    assert cmd.count("--num_nodes") == (nodes > 1) and (f"--num_nodes {nodes}" in cmd) == (nodes > 1)
    assert ("--hostfile hostfile" in cmd) == (nodes > 1)
    assert json.loads((out_dir / "scale.json").read_text())["target"] == t


def test_target_inside_the_ladder_gets_no_warning_and_a_table(capsys, ladder_dir: Path) -> None:
    code, out, _ = run(capsys, "scale", "--run-dir", str(ladder_dir), "--target-model",
                       str(Path(__file__).parents[2] / "search/data/ladder-llama-w128.json"),
                       "--tokens", "131072", "--seq-len", "128", "--out", str(ladder_dir / "t"))
    assert code == 0
    assert "WARNING" not in out and "predictions, not measurements" in out and "prior (step_law)" in out


def test_one_size_says_it_anchors_the_priors(capsys, tmp_path: Path) -> None:
    make_study(tmp_path / "study.db", {"w128": 0}, loss_of=_loss, lrs=LRS)
    code, out, _ = run(capsys, "scale", "--run-dir", str(tmp_path), "--target-model", "llama-2-7b", "--tokens", "1T",
                       "--max-gpus", "512")
    assert code == 0 and "anchored" in out
    code, out, _ = run(capsys, "scale", "--run-dir", str(tmp_path), "--target-model", "llama-2-7b", "--tokens", "1T",
                       "--max-gpus", "512", "--format", "json")
    doc = json.loads(out)
    assert doc["mode"] == "anchored" and any("anchored" in n for n in doc["notes"])


def test_dataset_tokens_give_epochs_and_a_higher_loss(capsys, ladder_dir: Path) -> None:
    # A target at the ladder's tokens, so the loss is predicted at the target's tokens.
    w192 = str(Path(__file__).parents[2] / "search/data/ladder-llama-w192.json")
    args = ["scale", "--run-dir", str(ladder_dir), "--target-model", w192, "--tokens", "131072", "--seq-len", "128",
            "--format", "json"]
    _, out, _ = run(capsys, *args)
    free = json.loads(out)["target"]["predicted_loss"]["value"]
    code, out, _ = run(capsys, *args, "--dataset-tokens", "13107")
    doc = json.loads(out)
    assert code == 0 and doc["data"]["epochs"] == pytest.approx(10.0, rel=1e-4)
    assert doc["target"]["predicted_loss_tokens"] == 131072
    assert doc["target"]["predicted_loss"]["value"] > free
    # the same compute on smaller (more epochs) and bigger (fewer) models
    assert [round(a["epochs"], 1) for a in doc["same_compute"]] == [40.0, 20.0, 10.0, 5.0, 2.5]


def test_a_target_at_other_tokens_says_its_loss_is_at_the_ladders(capsys, ladder_dir: Path) -> None:
    code, out, _ = run(capsys, "scale", "--run-dir", str(ladder_dir), "--target-model", "llama-2-7b", "--tokens", "2T",
                       "--max-gpus", "512", "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["target"]["predicted_loss_tokens"] == pytest.approx(131072)
    assert any("not the target's" in n for n in doc["notes"])
    assert 1.0 < doc["target"]["predicted_loss"]["value"] < 1.6  # E 1.2 + 30 N^-0.35 in the study


@pytest.mark.parametrize(("extra", "flag"), [
    (["--budget", "1"], "--budget"),
    (["--tokens", "lots"], "--tokens"),
    (["--target-model", "no-such-model"], "--target-model"),  # the flag typed (the planner says --model)
])
def test_bad_input_is_one_line_naming_the_flag(capsys, ladder_dir: Path, extra: list[str], flag: str) -> None:
    args = ["scale", "--run-dir", str(ladder_dir), "--target-model", "llama-2-7b", "--max-gpus", "512", *extra]
    code, _, err = run(capsys, *args)
    assert code == 2 and err.count("\n") == 1 and flag in err


def test_missing_or_thin_study_is_refused_naming_what_to_run(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "scale", "--run-dir", str(tmp_path), "--target-model", "llama-2-7b")
    assert code == 2 and "trainplan search" in err
    make_study(tmp_path / "study.db", {"w64": 0}, loss_of=_loss, lrs=(0.002,), batches=(16,))
    code, _, err = run(capsys, "scale", "--run-dir", str(tmp_path), "--target-model", "llama-2-7b")
    assert code == 2 and "default_ladder.yaml" in err and "w64: 1" in err


def test_report_page_carries_the_fit_and_the_decision(capsys, ladder_dir: Path) -> None:
    page = ladder_dir / "scale.html"
    code, _, err = run(capsys, "scale", "--run-dir", str(ladder_dir), "--target-model", "llama-2-7b", "--tokens", "2T",
                       "--max-gpus", "512", "--report", str(page))
    assert code == 0 and page.is_file(), err
    text = page.read_text()
    assert "The target&#x27;s decision" in text or "The target's decision" in text
    data = json.loads((ladder_dir / "report_data" / "scaleup-lr.json").read_text())
    assert data["mode"] == "fitted" and len(data["optima"]) == 4 and data["target"]["target"]["model"] == "llama-2-7b"
    curve = data["curve"]
    assert all(r["lr_low"] <= r["lr_value"] <= r["lr_high"] for r in curve)
    assert curve[-1]["n"] == pytest.approx(data["target"]["fit"]["target"]["non_embedding_params"])
    # the fitted LR falls with N (lr* = 2 N^-0.4 in the study)
    assert curve[-1]["lr_value"] < curve[0]["lr_value"]


def test_hyperparams_from_fit_writes_the_fits_extrapolation(capsys, ladder_dir: Path) -> None:
    out_dir = ladder_dir / "fit"
    code, out, _ = run(capsys, "scale", "--run-dir", str(ladder_dir), "--target-model", "llama-2-7b", "--tokens", "2T",
                       "--max-gpus", "512", "--hyperparams-from", "fit", "--out", str(out_dir), "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["target"]["hyperparams_from"] == "fit"
    assert TrialSpec.from_json(out_dir / "spec.json").hyperparams.lr == pytest.approx(doc["fit"]["target"]["lr"]["value"])


def test_the_table_says_whether_d_was_identified(capsys, ladder_dir: Path) -> None:
    code, out, err = run(capsys, "scale", "--run-dir", str(ladder_dir), "--target-model", "llama-2-7b", "--tokens", "2T",
                         "--max-gpus", "512", "--out", str(ladder_dir / "t"))
    assert code == 0, err
    row = next(line for line in out.splitlines() if "D (tokens)" in line)
    # the study's sizes all trained 131,072 tokens: D is the prior's, and the row says why
    assert "not identified (every size trained the same" in row and "Step Law prior" in row
