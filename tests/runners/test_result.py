"""metrics.jsonl reading and result.json records, as the search and the report consume them."""

from __future__ import annotations

import json

import pytest

from trainplan.runners import METRIC_KEYS, STATUSES, build_result, read_metrics
from trainplan.runners._result import classify_exit


def _record(step, train, eval_=None):
    return {"step": step, "tokens": step * 100, "elapsed_s": step * 0.5, "train_loss": train,
            "eval_loss": eval_, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 200.0 + step,
            "peak_mem_bytes": 1000 + step}


def test_read_metrics_leaves_a_half_written_line_for_later(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(_record(1, 5.0)) + "\n" + '{"step": 2, "tok')
    records, offset = read_metrics(path)
    assert [r["step"] for r in records] == [1]
    with path.open("a") as fh:
        fh.write('ens": 200}\n')
    more, _ = read_metrics(path, offset)
    assert more == [{"step": 2, "tokens": 200}]


def test_missing_metrics_file_is_empty(tmp_path):
    assert read_metrics(tmp_path / "none.jsonl") == ([], 0)


def test_build_result_summarises_the_curve():
    records = [_record(1, 5.0), _record(2, 4.0, 4.5), _record(3, 3.5), _record(4, 3.0, 3.2)]
    result = build_result(records, status="completed", spec_path="x/spec.json")
    assert set(METRIC_KEYS) <= set(records[0])
    assert result["steps"] == 4 and result["tokens"] == 400
    assert result["final_eval_loss"] == 3.2 and result["best_eval_loss"] == 3.2
    assert result["final_train_loss"] == 3.0 and result["peak_mem_bytes"] == 1004
    assert result["tokens_per_s"] == pytest.approx((202 + 203 + 204) / 3)  # first interval dropped
    with pytest.raises(ValueError):
        build_result(records, status="exploded")
    assert "completed" in STATUSES and "timeout" in STATUSES


@pytest.mark.parametrize(("code", "tail", "status", "needle"), [
    (1, "RuntimeError: CUDA out of memory. Tried to allocate", "oom", "out of memory"),
    (1, "Traceback...\nValueError: bad config\n", "crashed", "ValueError: bad config"),
    (1, "RuntimeError: [enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
        "you tried to allocate 34359738368 bytes. Error code 12 (Cannot allocate memory)", "oom", "out of memory"),
    (-9, "", "crashed", "out-of-memory killer"),
    (247, "", "crashed", "signal 9"),  # deepspeed's launch.py passes a rank's -9 on as sys.exit(-9)
    (-15, "", "crashed", "signal 15"),
])
def test_classify_exit(code, tail, status, needle):
    got_status, reason = classify_exit(code, tail)
    assert got_status == status and needle in reason
