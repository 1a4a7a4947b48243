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
