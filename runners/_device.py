"""The device a trial runs on, recorded in ``result.json`` so the planner can be calibrated to it.

A trial records one ``device`` object (docs/protocol.md, "Device and peak memory"):
``kind`` (``gpu`` or ``cpu``), ``name`` (the GPU model, or the host CPU's model name), ``count``
(ranks of the trial), ``cores`` (host CPU cores, or the GPU's multiprocessors), on the CPU
``threads_per_rank`` (torch's intra-op threads in each rank), ``memory_bytes``
(GPU memory, or host RAM), ``peak_flops`` (dense matmul FLOP/s by dtype, of one GPU or of the whole
host CPU, *measured* here) and ``peak_source`` (how). The matmul peak is measured once per machine
and kept beside the JIT-built ops, like py-cpuinfo's answer (runners/_dist.py): a trial must not
pay for it twice, and every trial on one machine must divide by the same number.

Peak memory, defined to match what the planner predicts (``MemoryEstimate.allocated``): on a GPU
``torch.cuda.max_memory_allocated``; on the CPU the peak of the bytes the rank's ``malloc`` has handed
out (runners/_mempeak.py's preloaded counter) over those in use just before the model is built, i.e.
after the imports, the process group and the corpus; without the counter, the growth of the peak
resident set (``VmHWM``, reset through ``/proc/self/clear_refs``), recorded as ``peak_memory``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from trainplan.planner._device import PEAK_ALLOCATED, PEAK_RESIDENT, software_stack
from trainplan.runners._mempeak import counter

__all__ = ["RANK_BASELINE_BYTES", "cpu_peak_growth", "cpu_ranks_exceed_cores", "describe_device", "gpu_present",
           "host_memory_warning", "measure_matmul_peak", "recorded_device", "reset_peak", "software_stack"]

RANK_BASELINE_BYTES = 640 * 2**20
"""Host memory a CPU rank holds before its model: torch, DeepSpeed and transformers' Llama imported
(0.39 GiB peak RSS measured here with torch 2.13, DeepSpeed 0.19, transformers 5.24), plus the
corpus and gloo's buffers (assumed 0.25 GiB)."""

_recorded: dict[str, Any] = {}
_baseline: list[int] = []


def gpu_present() -> bool:
    """A CUDA device is visible, checked without importing torch (the driver's /proc entries)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir()) and os.environ.get("CUDA_VISIBLE_DEVICES", "x") != ""


def cpu_ranks_exceed_cores(ranks: int) -> int | None:
    """This machine's CPU cores when ``ranks`` CPU processes would outnumber them (no GPU here:
    each rank is a process, and more of them than cores only thrash, gloo may time out); else None."""
    cores = os.cpu_count() or 1
    return cores if not gpu_present() and ranks > cores else None


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak(device: Any) -> None:
    """Start the peak-memory measurement now. On a GPU: ``torch.cuda.reset_peak_memory_stats``.
    On the CPU: the preloaded counter's peak reset to the bytes in use, which become the baseline;
    without it, ``VmHWM`` reset to the current resident set (proc(5), ``clear_refs`` value 5) and
    that resident set the baseline."""
    if device.type == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats(device)
        return
    if (lib := counter()) is not None:
        lib.trainplan_reset_peak()
        _baseline[:] = [int(lib.trainplan_bytes_in_use())]
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux, or not allowed: fall back to the lifetime peak (ru_maxrss)
        pass
    rss = _status_kib("VmRSS")
    _baseline[:] = [rss * 1024] if rss is not None else []


def cpu_peak_growth() -> int:
    """Bytes the rank's peak allocated bytes (or, without the counter, its peak resident set) grew
    above the baseline of :func:`reset_peak`."""
    import resource

    if (lib := counter()) is not None:
        return max(0, int(lib.trainplan_peak_bytes()) - (_baseline[0] if _baseline else 0))

    hwm = _status_kib("VmHWM")
    peak = hwm * 1024 if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return max(0, peak - (_baseline[0] if _baseline else 0))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def _meminfo_bytes(field: str) -> int | None:
    """One ``/proc/meminfo`` figure (``MemTotal``, ``MemAvailable``) in bytes, or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _available_memory() -> int | None:
    return _meminfo_bytes("MemAvailable")


def host_memory_warning(model: Any, layout: Any) -> str | None:
    """A warning when ``layout``'s CPU ranks will likely not fit in the host's available memory:
    per rank the planner's resident bytes (an estimate: DeepSpeed's buckets only as far as a step
    writes them, ``first_touch``) plus :data:`RANK_BASELINE_BYTES`."""
    from trainplan.planner import estimate_memory

    available = _available_memory()
    if available is None:
        return None
    need = layout.gpus * (estimate_memory(model, layout, first_touch=True).allocated + RANK_BASELINE_BYTES)
    if need <= available:
        return None
    gib = 2**30
    return (f"warning: {layout.gpus} CPU rank(s) need about {need / gib:.1f} GiB (estimate: the planner's "
            f"memory plus {RANK_BASELINE_BYTES / gib:.2f} GiB of imports per rank) but {available / gib:.1f} GiB "
            f"is available; the trial may be killed by the OOM killer")


def _host_memory() -> int | None:
    return _meminfo_bytes("MemTotal")


def measure_matmul_peak(device: Any, dtypes: tuple[str, ...], *, size: int = 1024, repeats: int = 8) -> dict[str, float]:
    """Dense matmul FLOP/s by dtype on ``device``: the best of ``repeats`` ``size``-cubed products
    (2 size**3 FLOPs each) after one warm-up.

    On a GPU, timed by the clock (synchronized). On the CPU, timed by the *thread's* CPU-seconds
    (``time.thread_time``) on one intra-op thread, times the host's cores: a product timed by the
    clock on a machine shared with other work measures the neighbours' load as well (the peak cached
    before issue 13's rework was 12.7 GFLOP/s by the clock at load ~15 on 2 cores), while the CPU
    time a thread spends in the product is what the core delivers when it runs. Not wholly: a
    neighbour on the same physical core (SMT) or cache still slows it (111 vs 150 GFLOP/s measured
    here at load 4 and 2), hence the best of many. Assumes the all-core peak is cores x one core's
    (no shared-bandwidth or clock drop when every core computes)."""
    import torch

    threads = torch.get_num_threads()
    cpu = device.type == "cpu"
    if cpu:
        torch.set_num_threads(1)
    clock = time.thread_time if cpu else time.perf_counter
    try:
        out = {}
        for name in dtypes:
            dtype = getattr(torch, {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[name])
            a = torch.randn(size, size, device=device, dtype=dtype)
            b = torch.randn(size, size, device=device, dtype=dtype)
            best = float("inf")
            for i in range(repeats + 1):
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = clock()
                (a @ b).sum()  # the sum keeps the product from being skipped and syncs on the CPU
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i:  # the first product pays for warm-up
                    best = min(best, clock() - t0)
            out[name] = 2 * size**3 / best * ((os.cpu_count() or 1) if cpu else 1)
        return out
    finally:
        torch.set_num_threads(threads)


def _cached_peak(key: str, measure: Any) -> tuple[dict[str, float], str]:
    from trainplan.runners._opcache import kept_per_machine

    fresh = []

    def run() -> dict[str, Any]:
        peak, source = measure()
        fresh.append(True)
        return {"peak_flops": peak, "source": source}

    kept, path = kept_per_machine(f"matmul-peak-{{machine}}-{key}.json", run, lambda d: {
        "peak_flops": {k: float(v) for k, v in d["peak_flops"].items()}, "source": str(d["source"])})
    source = kept["source"] + (f", kept in {path}" if fresh and path is not None else "")
    return kept["peak_flops"], source


def _load_avg() -> float | None:
    """The host's 1-minute load average when the trial started (contention on a shared machine)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def describe_device(device: Any, ranks: int) -> dict[str, Any]:
    """The ``device`` object of ``result.json`` for a trial of ``ranks`` ranks on ``device``;
    also kept for :func:`recorded_device`."""
    import torch

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        dtypes = ("fp32", "bf16", "fp16") if torch.cuda.is_bf16_supported() else ("fp32", "fp16")
        key = props.name.replace(" ", "_").replace("/", "_")
        peak, source = _cached_peak(key, lambda: (measure_matmul_peak(device, dtypes, size=4096, repeats=10),
                                                  "measured: best of 10 4096^3 matmuls per dtype"))
        info = {"kind": "gpu", "name": props.name, "count": ranks, "cores": props.multi_processor_count,
                "memory_bytes": int(props.total_memory), "peak_flops": peak, "peak_source": source}
    else:
        cores = os.cpu_count() or 1
        peak, source = _cached_peak("cpu-thread-time", lambda: (
            measure_matmul_peak(device, ("fp32",), repeats=32),
            f"measured: best of 32 fp32 1024^3 matmuls on one thread, by its CPU-seconds, x {cores} cores"))
        info = {"kind": "cpu", "name": _cpu_name(), "count": ranks, "cores": cores,
                "threads_per_rank": torch.get_num_threads(), "memory_bytes": _host_memory(),
                "peak_flops": peak, "peak_source": source, "load_avg_1m": _load_avg(),
                "peak_memory": PEAK_ALLOCATED if counter() is not None else PEAK_RESIDENT}
    _recorded.clear()
    _recorded.update(info)
    return info


def recorded_device() -> dict[str, Any] | None:
    """The device this process's trial described (None in a process that ran no training loop)."""
    return dict(_recorded) if _recorded else None
