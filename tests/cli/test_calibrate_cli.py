"""`trainplan calibrate` and `trainplan plan --calibration` as a user runs them: the file, the
calibrated figures with intervals beside the uncalibrated ones, and one-line refusals (exit 2).

The trial folders here are written from synthetic measurements (tests/planner/test_calibration.py)
to test the reading and refusing branches fast; real trials: tests/runners/test_device.py (slow) and the
leave-one-out benchmark, benchmarks/calibration.py."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.planner.test_calibration import _grid, _measure
from trainplan.cli import main
from trainplan.planner._device import software_stack
from trainplan.planner._calibration import FORMAT_VERSION


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _trial_folders(root: Path, n: int, stack: dict | None = None) -> list[str]:
    """Trial folders as the runner writes them (spec.json, metrics.jsonl, result.json)."""
    rng = random.Random(3)
    dirs = []
    for point in _grid()[:n]:
        p = _measure(point, rng, 0.01)
        d = root / p["id"]
        d.mkdir(parents=True)
        (d / "models").mkdir()
        (d / "models" / "config.json").write_text(json.dumps(p["model"]))
        (d / "spec.json").write_text(json.dumps({"model": str(d / "models" / "config.json"), "layout": p["layout"]}))
        tokens = p["layout"]["micro_batch"] * p["layout"]["seq_len"] * p["layout"]["gpus"]
        speeds = [p["tokens_per_s"] * f for f in (0.5, 1.0, 0.98, 1.02, 1.0, 3.0)]  # warm-up, then a median
        # rank 0's CPU-seconds: the step at the true speed, at half of it for the last step
        cpu = [tokens / p["tokens_per_s"] * f for f in (1.0, 1.0, 1.0, 1.0, 1.0, 2.0)]
        (d / "metrics.jsonl").write_text("".join(json.dumps({"step": i + 1, "tokens": tokens * (i + 1),
                                                             "tokens_per_s": s, "cpu_s": c}) + "\n"
                                                 for i, (s, c) in enumerate(zip(speeds, cpu))))
        (d / "result.json").write_text(json.dumps({"status": "completed", "peak_mem_bytes": p["peak_mem_bytes"],
                                                   "device": p["device"], "stack": stack or software_stack()}))
        dirs.append(str(d))
    return dirs


def test_calibrate_then_plan_shows_intervals_and_keeps_uncalibrated(tmp_path, capsys) -> None:
    dirs = _trial_folders(tmp_path / "runs", 12)
    cal = tmp_path / "cal.json"
    code, out, err = run(capsys, "calibrate", *dirs, "-o", str(cal))
    assert code == 0, err
    assert "e_max" in out and "90% interval" in out and "12 trials" in err
    saved = json.loads(cal.read_text())
    assert saved["version"] == FORMAT_VERSION == 5 and len(saved["trials"]) == 12 and saved["device"]["name"] == "Test CPU"

    code, out, err = run(capsys, "plan", "--model", "trainplan-tiny", "--calibration", str(cal),
                         "--micro-batch", "12", "--seq-len", "128", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    c = doc["calibrated"]
    assert c["tokens_per_s"]["low"] < c["tokens_per_s"]["value"] < c["tokens_per_s"]["high"]
    assert c["tokens_per_s"]["uncalibrated"] == doc["throughput"]["tokens_per_s"]  # the estimate is kept
    assert c["peak_memory_bytes"]["low"] < c["peak_memory_bytes"]["value"] < c["peak_memory_bytes"]["high"]
    assert doc["gpu"]["name"] == "Test CPU" and doc["layout"]["precision"] == "fp32"
    assert c["outside_data"] == []

    code, out, _ = run(capsys, "plan", "--model", "trainplan-tiny", "--calibration", str(cal),
                       "--micro-batch", "512", "--seq-len", "128")
    assert code == 0 and "90% PI" in out and "outside the trials'" in out


def test_calibrate_merges_trials_of_one_layout(tmp_path, capsys) -> None:
    """A trial folder copied (another learning rate, a repeat) is the same layout measured again:
    one point, not two; the file names every trial."""
    import shutil
    dirs = _trial_folders(tmp_path / "runs", 6)
    for d in dirs[:3]:
        shutil.copytree(d, d + "-again")
    cal = tmp_path / "cal.json"
    code, out, err = run(capsys, "calibrate", *dirs, *(d + "-again" for d in dirs[:3]), "-o", str(cal))
    assert code == 0, err
    assert "9 trials of 6 layouts" in err and "9 trials of 6 layouts" in out
    saved = json.loads(cal.read_text())
    first = Path(dirs[0]).name
    assert len(saved["trials"]) == 6 and saved["trials"][0]["repeats"] == [first, first + "-again"]
    assert "repeats" not in saved["trials"][5]
    # three layouts run twice are not five layouts
    code, _, err = run(capsys, "calibrate", *dirs[:3], *(d + "-again" for d in dirs[:3]), "-o", str(cal))
    assert code == 2 and "6 usable trial(s)" in err and "of 3 different layout(s)" in err and "run 2 more" in err



def test_calibrate_reads_a_trial_given_twice_once(tmp_path, capsys) -> None:
    # The same folder named twice, or a run folder and one of its trials: each trial counts once.
    root = tmp_path / "runs"
    dirs = _trial_folders(root, 6)
    cal = tmp_path / "cal.json"
    code, out, err = run(capsys, "calibrate", *dirs, *dirs[:2], str(root), "-o", str(cal))
    assert code == 0, err
    assert "(6 trials)" in err and len(json.loads(cal.read_text())["trials"]) == 6


def test_plan_recommend_uses_the_calibration_and_refuses_what_it_cannot_predict(tmp_path, capsys) -> None:
    cal = tmp_path / "cal.json"
    assert run(capsys, "calibrate", *_trial_folders(tmp_path / "runs", 12), "-o", str(cal))[0] == 0  # 1 ZeRO-3 x 2
    code, _, err = run(capsys, "plan", "--model", "trainplan-tiny", "--calibration", str(cal), "--zero", "3",
                       "--gpus", "2", "--seq-len", "128")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "ZeRO-3 across ranks not calibrated" in err and "--zero 3 --gpus 2" in err

    code, out, err = run(capsys, "plan", "--model", "trainplan-tiny", "--calibration", str(cal), "--recommend",
                         "--max-gpus", "2", "--seq-len", "128", "--global-batch", "16", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    top = doc["top"]
    assert top and all(t["gpu"]["name"] == "Test CPU" and t["layout"]["zero"] != 3 or t["layout"]["gpus"] == 1
                       for t in top)
    for t in top:  # ranked by the calibrated figures, which the JSON marks; the planner's are kept
        c = t["calibrated"]
        assert t["throughput"]["tokens_per_s"] == pytest.approx(c["tokens_per_s"]["value"])
        assert c["tokens_per_s"]["low"] < c["tokens_per_s"]["value"] < c["tokens_per_s"]["high"]
        assert c["tokens_per_s"]["uncalibrated"] != c["tokens_per_s"]["value"]
    hours = [t["time"]["hours"] for t in top]
    assert hours == sorted(hours)


def test_plan_refuses_calibration_of_another_device(tmp_path, capsys) -> None:
    cal = tmp_path / "cal.json"
    assert run(capsys, "calibrate", *_trial_folders(tmp_path / "runs", 8), "-o", str(cal))[0] == 0
    code, out, err = run(capsys, "plan", "--model", "trainplan-tiny", "--calibration", str(cal), "--gpu", "a100-80gb")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("trainplan: error: --calibration: calibrated on the CPU Test CPU") and "A100" in err


def test_plan_refuses_calibration_of_another_software_version(tmp_path, capsys) -> None:
    cal = tmp_path / "cal.json"
    stack = {**software_stack(), "deepspeed": "0.1.0"}
    assert run(capsys, "calibrate", *_trial_folders(tmp_path / "runs", 8, stack), "-o", str(cal))[0] == 0
    code, _, err = run(capsys, "plan", "--model", "trainplan-tiny", "--calibration", str(cal))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "calibrated with deepspeed 0.1.0, this environment has deepspeed" in err


def test_calibrate_refuses_too_few_trials_naming_what_to_run(tmp_path, capsys) -> None:
    code, _, err = run(capsys, "calibrate", *_trial_folders(tmp_path / "runs", 3), "-o", str(tmp_path / "c.json"))
    assert code == 2 and err.strip().splitlines()[-1].startswith("trainplan: error: RUN_DIR: 3 usable trial(s)")
    assert "run 2 more" in err and not (tmp_path / "c.json").exists()


def test_calibrate_reads_the_median_step_and_skips_unusable_trials(tmp_path, capsys) -> None:
    from trainplan.runners._points import trial_points

    dirs = _trial_folders(tmp_path / "runs", 6)
    res = Path(dirs[0]) / "result.json"
    res.write_text(json.dumps({**json.loads(res.read_text()), "status": "crashed"}))
    skipped: list[str] = []
    points = trial_points([tmp_path / "runs"], skipped)
    assert len(points) == 5 and "status crashed" in skipped[0]
    speeds = [json.loads(x)["tokens_per_s"] for x in (Path(dirs[1]) / "metrics.jsonl").read_text().splitlines()]
    point = next(p for p in points if p["id"] == Path(dirs[1]).name)
    assert point["tokens_per_s"] == pytest.approx(sorted(speeds[1:])[2])  # median of steps 2-6
    by_cpu = {p["id"]: p for p in trial_points([tmp_path / "runs"], timing="cpu")}[point["id"]]
    tokens = point["layout"]["micro_batch"] * point["layout"]["seq_len"] * point["layout"]["gpus"]
    cpu = [json.loads(x)["cpu_s"] for x in (Path(dirs[1]) / "metrics.jsonl").read_text().splitlines()]
    assert by_cpu["timing"] == "cpu" and by_cpu["tokens_per_s"] == pytest.approx(tokens / cpu[2])  # steps 3-6


def test_calibrate_warns_when_wall_timing_measured_a_shared_machine(tmp_path, capsys) -> None:
    dirs = _trial_folders(tmp_path / "runs", 8)
    assert "warning" not in run(capsys, "calibrate", *dirs, "-o", str(tmp_path / "a.json"))[2]  # wall ~ CPU time
    for d in dirs:  # rank 0 computed a quarter of each step's wall time: the rest was the neighbours'
        m = Path(d) / "metrics.jsonl"
        rows = [json.loads(x) for x in m.read_text().splitlines()]
        prev = 0
        for r in rows:
            r["cpu_s"] = (r["tokens"] - prev) / r["tokens_per_s"] / 4
            prev = r["tokens"]
        m.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, _, err = run(capsys, "calibrate", *dirs, "-o", str(tmp_path / "b.json"))
    assert code == 0 and "warning: a step took 4.0x rank 0's CPU time" in err and "--timing cpu" in err
    assert "warning" not in run(capsys, "calibrate", *dirs, "--timing", "cpu", "-o", str(tmp_path / "c.json"))[2]


@pytest.mark.parametrize("content", [b"\x00\x01\xff", b"", b"[1, 2]"], ids=["binary", "empty", "not-an-object"])
def test_plan_refuses_an_unreadable_calibration_naming_the_flag(tmp_path, capsys, content: bytes) -> None:
    bad = tmp_path / "cal.json"
    bad.write_bytes(content)
    code, _, err = run(capsys, "plan", "--model", "trainplan-tiny", "--calibration", str(bad))
    assert code == 2 and err.count("\n") == 1 and "--calibration" in err and "Traceback" not in err
