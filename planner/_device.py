"""A device profile built from the plain numbers a trial recorded (``result.json`` ``device``).

The GPU catalog describes datasheets; a calibration describes the machine the trials really ran
on, which may be a GPU missing from the catalog or the host CPU. :func:`device_profile` turns the
recorded ``device`` object (runners/_device.py; docs/protocol.md, "Device and peak memory") into
a :class:`GPUSpec` the planner's formulas accept. Pure Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata
from typing import Any

from trainplan.errors import UsageError
from trainplan.planner._catalog import GPUSpec

__all__ = ["PEAK_ALLOCATED", "PEAK_RESIDENT", "STACK_PACKAGES", "cpu_peak_memory", "device_key", "device_label",
           "device_profile", "measures_resident", "software_stack"]

CPU_LINK_GBPS = 5.0
"""Rank-to-rank bandwidth of gloo over loopback on one host, GB/s (assumption; the calibration
fits the exposed share of the communication time this implies)."""
GPU_LINK_GBPS = 100.0
"""GPU-to-GPU bandwidth for a GPU the trial recorded, GB/s (assumption, as for CPU_LINK_GBPS)."""
STACK_PACKAGES = ("torch", "deepspeed", "transformers")
"""The packages whose versions a calibration depends on (kernels, engine buffers, modeling code)."""
UNCALIBRATED_EFFICIENCY = 0.5
"""Share of the measured matmul peak a training step is assumed to reach before calibration."""


def device_key(device: Mapping[str, Any]) -> str:
    """Identity of a device for calibration: kind, model name, cores and memory (GiB, rounded), and on
    the CPU what its peak memory counts (``peak_memory``: ``allocated`` bytes, or the ``resident`` set,
    which trials before the allocation counter recorded; docs/protocol.md).

    Two machines with the same key are treated as the same device; the matmul peak is not part
    of it (it is a measurement, and varies with load)."""
    mem = device.get("memory_bytes")
    gib = f"{round(mem / 2**30)}GiB" if mem else "?GiB"
    key = f"{device.get('kind')}:{device.get('name')}:{device.get('cores')}cores:{gib}"
    return key + f":peak-{cpu_peak_memory(device)}" if device.get("kind") == "cpu" else key


PEAK_ALLOCATED, PEAK_RESIDENT = "allocated", "resident"
"""A CPU trial's ``device.peak_memory``: the allocation counter's peak allocated bytes, or the resident
set (VmHWM), the fallback and what every trial before the counter measured (runners/_mempeak.py)."""


def cpu_peak_memory(device: Mapping[str, Any]) -> str:
    """What a CPU trial's peak memory counts: :data:`PEAK_ALLOCATED` or :data:`PEAK_RESIDENT`."""
    return str(device.get("peak_memory", PEAK_RESIDENT))


def measures_resident(profile_key: str) -> bool:
    """Whether a device profile (``device_profile(...).key``) is a CPU whose trials measured their resident set."""
    return profile_key.startswith("measured:cpu:") and profile_key.endswith(f":peak-{PEAK_RESIDENT}")


def device_label(device: Mapping[str, Any]) -> str:
    """Human text, e.g. ``the CPU Intel Xeon ... (2 cores, allocated peak memory, 24 GiB)``."""
    mem = device.get("memory_bytes")
    what = "the CPU" if device.get("kind") == "cpu" else "the GPU"
    cores = f"{device.get('cores')} {'cores' if device.get('kind') == 'cpu' else 'SMs'}"
    if device.get("kind") == "cpu":
        cores += f", {cpu_peak_memory(device)} peak memory"
    return f"{what} {device.get('name')} ({cores}, {mem / 2**30:.0f} GiB)" if mem else f"{what} {device.get('name')} ({cores})"


def device_profile(device: Mapping[str, Any], ranks: int = 1, threads: int | None = None) -> GPUSpec:
    """A :class:`GPUSpec` for the recorded ``device``, per rank of a ``ranks``-rank trial.

    On the CPU the ranks share the host: each gets ``1/ranks`` of its memory and ``threads/cores``
    of its all-core matmul peak (``threads`` per rank: the trial's recorded ``threads_per_rank``,
    else what the runner gives each rank, ``cores // ranks``). On a GPU each rank has its own
    device. Bandwidths are the stated assumptions above; the price is 0 (unknown)."""
    kind = device.get("kind")
    peaks = device.get("peak_flops") or {}
    if kind not in ("cpu", "gpu") or not peaks or not device.get("memory_bytes"):
        raise UsageError("device", f"a device needs kind (cpu|gpu), peak_flops and memory_bytes; got {dict(device)}")
    share, flop_share = 1.0, 1.0
    if kind == "cpu":
        cores = int(device.get("cores") or 1)
        share = float(ranks)
        flop_share = min(cores, max(1, threads or cores // ranks)) / cores
    link = CPU_LINK_GBPS if kind == "cpu" else GPU_LINK_GBPS
    return GPUSpec(
        key=f"measured:{device_key(device)}", name=str(device.get("name")),
        memory_gib=float(device["memory_bytes"]) / share / 2**30,
        tflops={k: float(v) * flop_share / 1e12 for k, v in peaks.items()},
        hbm_gbps=0.0, intra_node_gbps=link, inter_node_gbps=link,
        compute_efficiency=UNCALIBRATED_EFFICIENCY, price_per_hour=0.0,
        source=f"recorded by a trial: {device.get('peak_source', 'measured matmul peak')}",
    )


def software_stack() -> dict[str, str | None]:
    """Installed versions of :data:`STACK_PACKAGES` (None where absent); never imports them."""
    out: dict[str, str | None] = {}
    for name in STACK_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
