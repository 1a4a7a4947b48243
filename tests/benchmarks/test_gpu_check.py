"""benchmarks/gpu_check.py in its CPU smoke mode, end to end: real trials through the real launcher
(two gloo ranks, then one), the plain PyTorch loop, and the table written from what they measured."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest

from tests._proc import cli_env, run_group

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TRIAL_FILES = {"spec.json", "ds_config.json", "cmd.txt", "metrics.jsonl", "result.json", "stdout.log", "stderr.log"}
NUMERIC = ("params", "alloc GiB", "plan alloc GiB", "alloc err %", "plan reserved GiB", "tok/s", "start-up s")
CPU_ONLY_DASH = ("reserved GiB", "reserved err %", "plan tok/s", "tok/s err %", "MFU %", "plan MFU %")


def _table(md: str) -> list[dict[str, str]]:
    lines = md.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| trial |"))
    cols = [c.strip() for c in lines[header].strip("|").split("|")]
    rows = []
    for line in lines[header + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(cols, (c.strip() for c in line.strip("|").split("|")))))
    return rows


def _num(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("B"))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_check")
    argv = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--budget-s", "600",
            "--work", str(tmp / "work"), "--out", str(tmp / "out")]
    proc = run_group(argv, timeout=700, cwd=ROOT, env=cli_env(tmp / "runs"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, json.loads((tmp / "out" / "gpu_check.json").read_text()), (tmp / "out" / "gpu_check.md").read_text()


def test_every_trial_ran_and_kept_its_folder(smoke):
    tmp, report, _ = smoke
    trials = report["trials"]
    assert [(t["gpus"], t["zero"], t["checkpointing"]) for t in trials] == [(2, 2, "none"), (1, 0, "full")]
    assert report["not_run"] == [] and report["device"]["kind"] == "cpu"
    for t in trials:
        folder = tmp / "work" / t["trial_dir"]
        assert {p.name for p in folder.iterdir()} >= TRIAL_FILES
        assert t["status"] == "completed", t["reason"]
        assert t["result"] == json.loads((folder / "result.json").read_text())  # the calibration record
        assert t["spec"] == json.loads((folder / "spec.json").read_text())
        assert t["spec"]["layout"]["checkpointing"] == t["checkpointing"]
        assert t["result"]["peak_reserved_bytes"] is None  # max_memory_reserved exists on a GPU only


def test_rows_hold_the_trials_measurements(smoke):
    tmp, report, md = smoke
    rows = _table(md)
    assert [r["trial"] for r in rows] == [t["name"] for t in report["trials"]]
    for row, t in zip(rows, report["trials"]):
        for col in NUMERIC:
            assert _num(row[col]) == _num(row[col]), (col, row[col])  # a number, not NaN or a dash
        for col in CPU_ONLY_DASH:
            assert row[col] == "—", (col, row[col])
        records = [json.loads(line) for line in (tmp / "work" / t["trial_dir"] / "metrics.jsonl").read_text().splitlines()]
        timed = [r["tokens_per_s"] for r in records if r["step"] > 2 and r["eval_loss"] is None]
        assert len(timed) >= 3
        assert _num(row["tok/s"]) == pytest.approx(statistics.median(timed), abs=0.51)
        assert _num(row["alloc GiB"]) == pytest.approx(t["result"]["peak_mem_bytes"] / 2**30, abs=0.0051)
        est = t["estimate"]["allocated_bytes"]  # like for like: the planner's max_allocated
        assert 0 < est < t["estimate"]["memory_bytes"] and _num(row["alloc err %"]) == pytest.approx(100 * (est - t["result"]["peak_mem_bytes"])
                                                                   / t["result"]["peak_mem_bytes"], abs=0.051)


def test_runner_is_compared_with_a_plain_loop(smoke):
    _, report, md = smoke
    plain = report["plain_loop"]
    assert plain["status"] == "completed" and plain["runner_trial"] == report["trials"][1]["name"]
    assert plain["tokens_per_s"] > 0 and plain["ratio"] == pytest.approx(plain["runner_tokens_per_s"] / plain["tokens_per_s"])
    assert f"{plain['ratio']:.3f}x" in md


def test_replan_re_estimates_the_measured_rows_and_keeps_the_runs_own(smoke, tmp_path):
    """``--replan``: this planner's estimates for a finished check's rows, no trial run; the
    measurements and the run's own estimates (``estimate_at_run``) are kept."""
    tmp, report, _ = smoke
    argv = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--replan", str(tmp / "out" / "gpu_check.json"),
            "--out", str(tmp_path), "--note", "A test note."]
    proc = run_group(argv, timeout=120, cwd=ROOT, env=cli_env(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [t["measured"] for t in again["trials"]] == [t["measured"] for t in report["trials"]]
    assert [t["estimate_at_run"] for t in again["trials"]] == [t["estimate"] for t in report["trials"]]
    assert [t["estimate"]["allocated_bytes"] for t in again["trials"]] == \
        [t["estimate"]["allocated_bytes"] for t in report["trials"]]  # the same planner here
    assert "A test note." in (tmp_path / "gpu_check.md").read_text()
