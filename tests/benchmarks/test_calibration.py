"""benchmarks/calibration.py's repeats: the round-robin order, the folder names, one point per
configuration (the median of its repeats) and the repeat spread. Pure Python, no trial is run."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from trainplan.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("calibration_bench", ROOT / "benchmarks" / "calibration.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _point(tid: str, tps: float, mem: int, mb: int = 4) -> dict:
    return {"id": tid, "model": {"hidden_size": 128}, "layout": {"gpus": 1, "zero": 0, "micro_batch": mb},
            "tokens_per_s": tps, "peak_mem_bytes": mem, "device": {"kind": "cpu"}}


def test_round_robin_order_and_names(bench):
    grid = bench.GRID[:3]
    order = bench.schedule(grid, 2)
    # every configuration once, then every one again: a slow spell hits all alike
    assert order == [(0, grid[0]), (0, grid[1]), (0, grid[2]), (1, grid[0]), (1, grid[1]), (1, grid[2])]
    names = [bench.trial_name(c, k) for k, c in order]
    assert names[0] == "w128-mb16-s128-z0-r1"  # repeat 0 keeps today's folder names
    assert names[3] == "w128-mb16-s128-z0-r1-rep1"
    assert [bench.config_of(n) for n in names[3:]] == names[:3]
    assert [bench.rep_of(n) for n in names] == [0, 0, 0, 1, 1, 1]
    assert bench.schedule(grid, 1) == [(0, c) for c in grid]


def test_one_point_per_configuration_is_the_median_of_its_repeats(bench):
    points = [_point("a", 100.0, 300), _point("b", 50.0, 200, mb=8), _point("a-rep1", 120.0, 330),
              _point("b-rep1", 40.0, 200, mb=8), _point("a-rep2", 90.0, 310)]
    groups = bench.group_repeats(points)
    assert [g["id"] for g in groups] == ["a", "b"]
    a, b = groups
    assert a["tokens_per_s"] == 100.0 and a["peak_mem_bytes"] == 310  # median of 3
    assert b["tokens_per_s"] == 45.0 and b["peak_mem_bytes"] == 200  # median of 2 = mean
    assert a["repeats"]["ids"] == ["a", "a-rep1", "a-rep2"] and a["layout"]["micro_batch"] == 4
    s = bench.spread(groups)
    assert s["a"]["tokens_per_s"] == pytest.approx(120 / 90 - 1)
    assert s["a"]["peak_mem_bytes"] == pytest.approx(330 / 300 - 1)
    assert s["b"] == {"tokens_per_s": pytest.approx(0.25), "peak_mem_bytes": 0.0}
    # one repeat: the point is the trial itself, and no spread is claimed
    single = bench.group_repeats([_point("a", 100.0, 300)])
    assert single[0]["tokens_per_s"] == 100.0 and bench.spread(single) == {}


def test_repeats_of_different_layouts_are_refused(bench):
    with pytest.raises(UsageError, match="different layouts"):
        bench.group_repeats([_point("a", 100.0, 300), _point("a-rep1", 100.0, 300, mb=8)])


def test_reuse_refuses_a_trial_of_another_step_count(bench, tmp_path):
    d = tmp_path / "w128-mb16-s128-z0-r1"
    d.mkdir()
    (d / "result.json").write_text(json.dumps({"status": "completed"}))
    (d / "spec.json").write_text(json.dumps({"steps": 6}))
    (d / "metrics.jsonl").write_text(json.dumps({"step": 2, "cpu_s": 0.3}) + "\n")
    assert bench._done(d, 6)
    with pytest.raises(UsageError, match="--steps: 20 for w128-mb16-s128-z0-r1, but .* ran 6 steps"):
        bench._done(d, 20)
    assert not bench._done(tmp_path / "missing", 20)


def test_seconds_choose_each_configurations_steps(bench):
    slow, fast = max(bench.GRID, key=bench.STEP_S.get), min(bench.GRID, key=bench.STEP_S.get)
    assert set(bench.STEP_S) == set(bench.GRID)  # every configuration has a step time
    assert bench.steps_for(slow, None, 20) == bench.steps_for(fast, None, 20) == 20  # no --seconds: --steps
    # ~24 s of steps each: the fast configuration runs many more steps than the slow one, never fewer than --steps
    assert bench.steps_for(fast, 24, 20) * bench.STEP_S[fast] >= 24 > (bench.steps_for(fast, 24, 20) - 1) * bench.STEP_S[fast]
    assert bench.steps_for(fast, 24, 20) > 5 * bench.steps_for(slow, 24, 20)
    assert bench.steps_for(slow, 0.5, 20) == 20


@pytest.mark.parametrize("argv, flag", [(["--repeats", "0"], "--repeats"), (["--steps", "3"], "--steps"),
                                        (["--grid", "3"], "--grid"), (["--env", "X"], "--env"),
                                        (["--seconds", "nan"], "--seconds"), (["--seconds", "-1"], "--seconds"),
                                        (["--seconds", "inf"], "--seconds")])
def test_bad_flags_are_one_line_exit_2(bench, argv, flag, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["calibration.py", "--out", str(tmp_path / "o"), *argv])
    assert bench.main() == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"calibration: error: {flag}") and "\n" not in err
