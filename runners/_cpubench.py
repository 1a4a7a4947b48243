"""Timings of the CPU kernels a training step spends its time in, for the CPU step-time model.

A trial on the CPU spends most of a step in three kinds of kernel: the linear layers' matmuls
(forward, and the two matmuls of each backward), the attention core (``scaled_dot_product_attention``
forward and backward) and memory-bound elementwise work. One matmul peak (runners/_device.py) says
what a large square product reaches, not what the narrow, short products of a small model do: here
(AMD EPYC, one thread, 72 GFLOP/s peak) a linear layer's forward + backward ran at 10 GFLOP/s for
128 tokens x 64 -> 64 features and at 63 GFLOP/s for 512 tokens x 256 -> 256. So
:func:`measure_cpu_kernels` times each kind over a grid of shapes that brackets the small models
trainplan runs on a CPU (forward + backward, on ``threads`` intra-op threads, by the thread's
CPU-seconds, best of ``rounds`` passes of ``repeats``, after a warm-up: see ``measure_matmul_peak``
for why CPU time), and planner/_cpu.py fits each kind's cost model to these samples. The samples
are kept once per machine, torch version, thread and rank count, like the matmul peak.

Record (plain JSON; ``device["kernels"][str(ranks)]`` of a calibration point)::

    {"threads": 1, "ranks": 1, "torch": "2.13.0+cpu", "source": "...",
     "linear": [[tokens, in, out, seconds], ...], "sdpa": [[batch, heads, seq, head_dim, seconds], ...],
     "elementwise": [[elements, seconds], ...]}
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

__all__ = ["cached_cpu_kernels", "measure_cpu_kernels"]

TOKENS = (128, 512, 2048)
"""Tokens per micro-batch (rows of the linear layers' products) sampled."""
WIDTHS = ((64, 64), (64, 176), (176, 64), (128, 128), (128, 352), (352, 128), (256, 256), (256, 704),
          (704, 256), (64, 256), (128, 256), (256, 256), (512, 512))
"""(in, out) features sampled: the attention and MLP projections and the LM head of 64-512 wide models."""
SDPA = ((4, 2, 64), (4, 4, 128), (16, 2, 128), (8, 8, 128), (4, 4, 256), (16, 4, 256), (4, 8, 256), (64, 4, 32))
"""(batch, heads, sequence) sampled for causal attention of 32-wide heads."""
ELEMENTS = (2**16, 2**18, 2**20, 2**22)
"""Elements sampled for the elementwise kernel."""


def _best(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up: allocator, kernel selection
    best = float("inf")
    for _ in range(repeats):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return best


def _time_kernels(threads: int, repeats: int) -> dict[str, list[list[float]]]:
    import torch
    import torch.nn.functional as F

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        linear = []
        for t in TOKENS:
            for i, o in WIDTHS:
                x = torch.randn(t, i, requires_grad=True)
                w = torch.randn(o, i, requires_grad=True)
                g = torch.randn(t, o)
                linear.append([t, i, o, _best(lambda: F.linear(x, w).backward(g), repeats)])
        sdpa = []
        for b, h, s in SDPA:
            q, k, v = (torch.randn(b, h, s, 32, requires_grad=True) for _ in range(3))
            g = torch.randn(b, h, s, 32)
            sdpa.append([b, h, s, 32, _best(
                lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(g), repeats)])
        elementwise = []
        for n in ELEMENTS:  # silu(a) * b forward and backward: a SwiGLU's elementwise part
            a, c = torch.randn(n, requires_grad=True), torch.randn(n, requires_grad=True)
            g = torch.randn(n)
            elementwise.append([n, _best(lambda: (F.silu(a) * c).backward(g), repeats)])
    finally:
        torch.set_num_threads(before)
    return {"linear": linear, "sdpa": sdpa, "elementwise": elementwise}


def _neighbour(threads: int, stop: Any) -> None:
    """Another rank's load: the same kernels, over and over, until ``stop`` is set."""
    while not stop.is_set():
        _time_kernels(threads, 1)


def _best_of_rounds(threads: int, repeats: int, rounds: int) -> dict[str, list[list[float]]]:
    """The fastest time of each shape over ``rounds`` passes over the whole grid: a neighbour's burst
    (or a hypervisor's stolen time, which thread CPU-seconds count) then spoils one pass, not a shape."""
    best = _time_kernels(threads, repeats)
    for _ in range(rounds - 1):
        again = _time_kernels(threads, repeats)
        for kind, rows in best.items():
            for row, other in zip(rows, again[kind]):
                row[-1] = min(row[-1], other[-1])
    return best


def measure_cpu_kernels(threads: int = 1, ranks: int = 1, repeats: int = 5, rounds: int = 3) -> dict[str, Any]:
    """Time the step's kernels on this CPU (see the module docstring), about 30 s. With ``ranks`` > 1,
    ``ranks - 1`` other processes run the same kernels meanwhile, as a trial's other ranks do: they
    share the caches and the memory bandwidth, which a rank's kernels feel."""
    import multiprocessing as mp

    import torch

    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    others = [ctx.Process(target=_neighbour, args=(threads, stop), daemon=True) for _ in range(ranks - 1)]
    for p in others:
        p.start()
    try:
        if others:
            time.sleep(5.0)  # let the neighbours import torch and start computing
        samples = _best_of_rounds(threads, repeats, rounds)
    finally:
        stop.set()
        for p in others:
            p.join(30)
    return {"threads": threads, "ranks": ranks, "torch": torch.__version__, **samples,
            "source": f"measured: forward+backward of each shape, best of {rounds} x {repeats} by the thread's CPU-seconds "
                      f"on {threads} intra-op thread(s), {ranks - 1} other rank(s) running the same kernels"}


class _NotKept(Exception):
    """No timing kept on this machine, and the caller asked not to measure one."""


def cached_cpu_kernels(threads: int = 1, ranks: int = 1, *, measure: bool = True) -> dict[str, Any] | None:
    """:func:`measure_cpu_kernels`, kept once per machine, torch version, thread and rank count beside
    the JIT-built ops (a second call on this machine reads the file). ``measure=False``: only what is
    kept (None when nothing is)."""
    import torch

    from trainplan.runners._opcache import kept_per_machine

    def run() -> dict[str, Any]:
        if not measure:
            raise _NotKept
        return measure_cpu_kernels(threads, ranks)

    name = f"cpu-kernels-{{machine}}-{torch.__version__}-t{threads}-r{ranks}.json"
    try:
        return kept_per_machine(name, run)[0]
    except _NotKept:
        return None


def with_cpu_kernels(points: list[dict[str, Any]], *, measure: bool = True) -> tuple[list[dict[str, Any]], str]:
    """``points`` with this machine's kernel samples in each CPU point's ``device["kernels"]``, and a
    line saying what was done. Only when every point ran on this machine's CPU (same model name and
    cores) at one thread count: samples from another machine would time another CPU. ``measure=False``
    (a search, whose trials may be running beside): only timings already kept on this machine."""
    from trainplan.runners._device import _cpu_name

    cpu = [p for p in points if p.get("device", {}).get("kind") == "cpu"]
    if not cpu or len(cpu) < len(points):
        return points, "no CPU kernel timings (the trials did not all run on a CPU)"
    here = {(p["device"].get("name"), p["device"].get("cores")) for p in cpu}
    if here != {(_cpu_name(), os.cpu_count())}:
        return points, "no CPU kernel timings (the trials ran on another machine's CPU)"
    threads = {int(p["device"].get("threads_per_rank") or 1) for p in cpu}
    if len(threads) > 1:
        return points, f"no CPU kernel timings (the trials ran at {sorted(threads)} threads per rank)"
    t = threads.pop()
    kernels = {str(r): cached_cpu_kernels(t, r, measure=measure) for r in sorted({int(p["layout"].get("gpus", 1))
                                                                                   for p in cpu})}
    if missing := sorted(r for r, k in kernels.items() if k is None):
        return points, (f"no CPU kernel timings kept on this machine for {', '.join(missing)} rank(s) at {t} "
                        "thread(s) per rank (trainplan calibrate times them)")
    return [{**p, "device": {**p["device"], "kernels": kernels}} for p in points], \
        f"CPU kernel timings at {sorted(kernels)} concurrent ranks: {kernels['1' if '1' in kernels else max(kernels)]['source']}"
