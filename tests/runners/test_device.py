"""The device a real trial records (runners/_device.py) and the peak memory it measures on the CPU,
and `trainplan calibrate` reading those real trials."""

from __future__ import annotations

import pytest

from tests._proc import ONE_THREAD

from trainplan.cli import main
from trainplan.planner import device_profile, estimate_memory, load_model
from trainplan.planner._device import software_stack
from trainplan.runners import TrialSpec, launch_trial
from trainplan.runners._dist import machine_key
from trainplan.runners._opcache import extensions_dir

SMALL = dict(eval_tokens=2048, max_data_bytes=300_000, eval_every=100, steps=3)


def test_cpu_matmul_peak_is_timed_by_thread_cpu_seconds_and_restores_threads(monkeypatch):
    """On the CPU the peak is one thread's product timed by its CPU-seconds, times the cores: a
    clock that jumps (what a descheduled process sees) changes nothing."""
    import time

    import torch

    from trainplan.runners._device import measure_matmul_peak

    before = torch.get_num_threads()
    real = time.perf_counter
    monkeypatch.setattr(time, "perf_counter", lambda: real() * 100)  # a wall clock 100x slow would show
    peak = measure_matmul_peak(torch.device("cpu"), ("fp32",), size=256, repeats=3)["fp32"]
    assert torch.get_num_threads() == before
    monkeypatch.undo()
    cores = __import__("os").cpu_count()
    one = 2 * 256**3 / min(_thread_timed_product(256) for _ in range(3))
    assert 1e8 < peak and 0.3 < peak / (one * cores) < 3


def _thread_timed_product(n):
    import time

    import torch

    a, b, threads = torch.randn(n, n), torch.randn(n, n), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.thread_time()
        (a @ b).sum()
        return time.thread_time() - t0
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_real_trials_record_device_and_peak_growth_then_calibrate(tmp_path, capsys):
    # Both trials at once (most of a 3-step trial is process start-up), one thread each; the
    # second starts once the machine's matmul peak is kept, so that it reads what the first (or an
    # earlier trial) measured rather than measuring it again beside it.
    kept = extensions_dir() / f"matmul-peak-{machine_key()}-cpu-thread-time.json"
    handles = {4: launch_trial(TrialSpec(layout={"micro_batch": 4, "seq_len": 64}, **SMALL), tmp_path / "mb4",
                               env=ONE_THREAD)}
    try:
        while not kept.is_file() and handles[4].wait(0.2) is None:
            pass
        handles[32] = launch_trial(TrialSpec(layout={"micro_batch": 32, "seq_len": 64}, **SMALL), tmp_path / "mb32",
                                   env=ONE_THREAD)
        for handle in handles.values():
            assert handle.wait(300) is not None, "a 3-step trial ran past 300 s"
    finally:
        for handle in handles.values():
            if handle.poll() is None:
                handle.stop(grace_s=10)
    results = {mb: handle.finalize() for mb, handle in handles.items()}
    for mb, result in results.items():
        assert result["status"] == "completed", (mb, result.get("stderr_tail"))
    dev = results[4]["device"]
    assert dev["kind"] == "cpu" and dev["count"] == 1 and dev["cores"] >= 1 and dev["memory_bytes"] > 2**30
    assert dev["peak_flops"]["fp32"] > 1e8 and "measured" in dev["peak_source"]
    assert results[32]["device"]["peak_flops"] == dev["peak_flops"]  # measured once per machine, then kept
    assert results[4]["stack"] == software_stack() and results[4]["stack"]["deepspeed"]
    # The CPU's max_memory_allocated (the preloaded counter, runners/_mempeak.py) from the model build:
    # the model states and activations, not the ~400 MB of imports, and close to the planner's
    # allocated bytes (a few MiB over them: the engine's own small buffers; 3.6 MiB on the
    # calibration grid's ZeRO-0 trials, benchmarks/results/calibration.md).
    assert dev["peak_memory"] == "allocated"
    model = load_model("trainplan-tiny")
    for mb, r in results.items():
        allocated = estimate_memory(model, TrialSpec(layout={"micro_batch": mb, "seq_len": 64}).layout).allocated
        assert allocated <= r["peak_mem_bytes"] <= 1.1 * allocated + 8 * 2**20, (mb, r["peak_mem_bytes"], allocated)
    assert results[32]["peak_mem_bytes"] > results[4]["peak_mem_bytes"]
    assert device_profile(dev, 2).peak_flops("fp32") == pytest.approx(dev["peak_flops"]["fp32"] / 2)

    code = main(["calibrate", str(tmp_path), "-o", str(tmp_path / "cal.json")])
    err = capsys.readouterr().err
    assert code == 2 and "RUN_DIR: 2 usable trial(s)" in err and "run 3 more" in err
