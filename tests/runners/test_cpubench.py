"""CPU kernel timings (runners/_cpubench.py): real timings on this machine fit the planner's cost
models, and the timings are attached only to points from this machine at one thread count."""

from __future__ import annotations

import os

from trainplan.planner._cpu import fit_kernels
from trainplan.runners._cpubench import _time_kernels, with_cpu_kernels
from trainplan.runners._device import _cpu_name


def test_real_timings_fit_the_cost_models() -> None:
    samples = _time_kernels(threads=1, repeats=1)
    assert len(samples["linear"]) >= 30 and len(samples["sdpa"]) >= 4
    assert all(row[-1] > 0 for rows in samples.values() for row in rows)
    km = fit_kernels({"threads": 1, **samples})
    assert km is not None
    # the fitted rate of the products is a plausible CPU core: above 1 GFLOP/s, below 1 TFLOP/s
    assert 1e9 < 1 / km.linear[0] < 1e12
    # a 4x wider layer costs more than a narrow one, as timed
    assert km.linear_s(512, 256, 256) > km.linear_s(512, 64, 64)


def _point(name: str, cores: int | None, threads: int = 1) -> dict:
    return {"id": name, "layout": {"gpus": 1}, "device": {"kind": "cpu", "name": name, "cores": cores,
                                                         "threads_per_rank": threads}}


def test_timings_are_not_attached_to_another_machines_trials() -> None:
    other = [_point("Some Other CPU", 64)]
    out, why = with_cpu_kernels(other)
    assert out == other and "another machine" in why
    gpu = [{"id": "g", "layout": {"gpus": 1}, "device": {"kind": "gpu", "name": "H100"}}]
    assert with_cpu_kernels(gpu)[0] == gpu
    mixed = [_point(_cpu_name(), os.cpu_count(), 1), _point(_cpu_name(), os.cpu_count(), 2)]
    out, why = with_cpu_kernels(mixed)
    assert out == mixed and "[1, 2] threads per rank" in why


def test_without_measuring_only_timings_kept_on_this_machine_are_attached(tmp_path, monkeypatch) -> None:
    """The search refits between trials and must not time kernels beside running trials: with
    ``measure=False`` nothing is timed; the timings are attached only once a file keeps them."""
    import trainplan.runners._cpubench as cb

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))

    def never(*_a, **_k):
        raise AssertionError("timed kernels")

    monkeypatch.setattr(cb, "measure_cpu_kernels", never)
    here = [_point(_cpu_name(), os.cpu_count(), 1)]
    out, why = with_cpu_kernels(here, measure=False)
    assert out == here and "no CPU kernel timings kept on this machine for 1 rank(s)" in why
    kept = {"threads": 1, "source": "kept for the test", "linear": [[1, 1, 1, 1e-6]], "sdpa": []}
    monkeypatch.setattr(cb, "measure_cpu_kernels", lambda threads, ranks: kept)
    cb.cached_cpu_kernels(1, 1)  # `trainplan calibrate` timing them once
    monkeypatch.setattr(cb, "measure_cpu_kernels", never)
    out, why = with_cpu_kernels(here, measure=False)
    assert out[0]["device"]["kernels"] == {"1": kept} and "kept for the test" in why
