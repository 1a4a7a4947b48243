"""The two catalogs, kept as data files: model presets and GPUs.

``data/models.json`` maps a preset name to its Hugging Face config fields (and where they come
from); ``data/gpus.json`` maps a GPU name to its datasheet figures and a default hourly price.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from trainplan.errors import UsageError, close_matches

__all__ = ["GPUSpec", "model_presets", "gpu_catalog", "load_gpu"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GPUSpec:
    """One accelerator, from its datasheet (dense peaks, no sparsity)."""

    key: str
    """Catalog name, e.g. ``h100-sxm``."""
    name: str
    """Marketing name."""
    memory_gib: float
    """Device memory in GiB (2**30 bytes) as the datasheet's GB figure, e.g. 80 for an H100."""
    tflops: dict[str, float]
    """Peak dense TFLOP/s by dtype: fp32, tf32, fp16, bf16, fp8 where supported."""
    hbm_gbps: float
    """Memory bandwidth, GB/s."""
    intra_node_gbps: float
    """GPU-to-GPU bandwidth inside a node, GB/s per direction (NVLink / Infinity Fabric / PCIe)."""
    inter_node_gbps: float
    """Network bandwidth per GPU between nodes, GB/s per direction (typical cluster fabric)."""
    compute_efficiency: float
    """Share of the dense peak that the training matmuls of a very wide model reach on this GPU; the
    planner lowers it for narrower models by the GPU's machine balance (``planner/_perf.py``,
    ``default_efficiency``; ``--mfu`` overrides)."""
    price_per_hour: float
    """Default on-demand USD per GPU-hour; override with ``--price``."""
    source: str = ""
    """Where the figures come from."""
    intra_node_busbw_gbps: float | None = None
    """NCCL bus bandwidth measured for large collectives inside a node, GB/s, where known; else the
    planner takes ``intra_node_gbps`` x its NVLink efficiency."""
    attention_efficiency: float | None = None
    """Share of the dense peak the attention core (flash kernels) reaches, its FLOPs counted over the
    full s x s square as in the MFU; where absent, the matmuls' efficiency."""
    usable_mib: int | None = None
    """Total memory the driver reports (nvidia-smi, MiB), when known; else ``memory_gib``."""

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * 2**30)

    @property
    def usable_bytes(self) -> int:
        """Memory a process can hold on this GPU: nvidia-smi's total where the catalog has it, never
        more than ``memory_gib`` (so a smaller ``memory_gib`` given by a sweep file still counts)."""
        return min(self.usable_mib * 2**20, self.memory_bytes) if self.usable_mib else self.memory_bytes

    def peak_flops(self, precision: str) -> float:
        """Peak dense FLOP/s for a training precision (fp32 math uses TF32 where it exists)."""
        key = {"fp32": "tf32" if "tf32" in self.tflops else "fp32", "bf16-pure": "bf16"}.get(precision, precision)
        if key not in self.tflops:
            raise UsageError("--precision", f"{self.key} has no {precision} peak in the catalog")
        return self.tflops[key] * 1e12


def _load(name: str) -> dict[str, Any]:
    return json.loads(resources.files("trainplan.planner").joinpath("data", name).read_text())


@cache
def model_presets() -> dict[str, dict[str, Any]]:
    """Preset name -> ``{"source": hub id, "config": HF config fields}``."""
    return {k: v for k, v in _load("models.json").items() if not k.startswith("_")}


@cache
def gpu_catalog() -> dict[str, GPUSpec]:
    """GPU name -> :class:`GPUSpec`."""
    return {k: GPUSpec(key=k, **v) for k, v in _load("gpus.json").items() if not k.startswith("_")}


def load_gpu(name: str) -> GPUSpec:
    """Look a GPU up by catalog name (case-insensitive); unknown names list close matches."""
    catalog = gpu_catalog()
    key = name.lower()
    if key in catalog:
        return catalog[key]
    raise UsageError("--gpu", f"unknown GPU {name!r} (see `trainplan gpus`)" + close_matches(name, catalog))
