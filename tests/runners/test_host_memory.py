"""The pre-launch host-memory warning of CPU trials (runners/_device.py, issue 12)."""

from __future__ import annotations

from trainplan.planner import Layout, estimate_memory, load_model
from trainplan.runners import _device


def test_warns_only_when_ranks_need_more_than_the_host_has(monkeypatch):
    model, layout = load_model("trainplan-tiny"), Layout(gpus=2, micro_batch=16, seq_len=128, precision="fp32")
    need = 2 * (estimate_memory(model, layout).allocated + _device.RANK_BASELINE_BYTES)
    monkeypatch.setattr(_device, "_available_memory", lambda: need)
    assert _device.host_memory_warning(model, layout) is None
    monkeypatch.setattr(_device, "_available_memory", lambda: need - 1)
    warning = _device.host_memory_warning(model, layout)
    assert warning and "2 CPU rank(s)" in warning and "OOM killer" in warning and "estimate" in warning


def test_a_7b_model_on_this_cpu_is_warned_about():
    assert _device.host_memory_warning(load_model("llama-2-7b"), Layout(gpus=1, seq_len=128)) is not None


def test_a_tiny_zero2_model_is_not_warned_about_buckets_it_never_touches(monkeypatch):
    # ZeRO-2 allocates two 5e8-element gradient buckets (3.7 GiB in fp32) with torch.empty; a CPU
    # rank's resident set holds only the pages its gradients fill (under 1 MiB here).
    model, layout = load_model("trainplan-tiny"), Layout(gpus=2, zero=2, micro_batch=16, seq_len=128, precision="fp32")
    assert estimate_memory(model, layout).allocated > 3 * 2**30
    monkeypatch.setattr(_device, "_available_memory", lambda: 2 * 2**30)
    assert _device.host_memory_warning(model, layout) is None


def test_the_recorded_estimate_on_the_cpu_is_the_resident_one(tmp_path):
    from trainplan.runners import TrialSpec
    from trainplan.runners._result import planner_estimate

    spec = TrialSpec(model="trainplan-tiny", steps=2, layout={"gpus": 1, "zero": 1, "micro_batch": 4, "seq_len": 64,
                                                              "precision": "fp32"})
    est = planner_estimate(spec)
    assert 0 < est["memory_bytes"] < 200 * 2**20, est  # whole, the ZeRO-1 bucket alone is 1.9 GiB
