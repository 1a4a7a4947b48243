"""Starting DeepSpeed's process group for a trial, without its CPU shared-memory all-reduce.

On the CPU accelerator, ``deepspeed.init_distributed`` JIT-builds and loads the
``deepspeed_shm_comm`` op and every rank creates a 64 MiB+ segment named
``/dev/shm/deepspeed_allreduce_buffer_<uid>_<addr>_<port>_<rank>`` that is never unlinked
(deepspeed/comm/torch.py ``TorchBackend.__init__``; ops/csrc/cpu/comm/shm.cpp ``shm_initialize``).
The op only serves ``inference_all_reduce`` (tensor-parallel inference); training reduces through
gloo. A sweep of a few hundred trials filled 21 GB of RAM-backed ``/dev/shm`` that way, and where
``/dev/shm`` is small (containers default to 64 MiB) the first rank cannot even start. So trials
mark the op incompatible before DeepSpeed looks at it: no build, no segment, nothing left behind.

The same start-up also answers py-cpuinfo's questions from a file (:func:`remember_cpu_info`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

SHM_COMM_OP = "deepspeed_shm_comm"
"""``ShareMemCommBuilder.NAME`` in deepspeed/ops/op_builder/cpu/comm.py."""


def machine_key() -> str | None:
    """A digest of ``/proc/cpuinfo`` without its clock-speed lines (they change from one read to
    the next), or None where there is no such file."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    stable = "\n".join(line for line in lines if not line.startswith("cpu MHz"))
    return hashlib.sha256(stable.encode()).hexdigest()[:16]


def remember_cpu_info(cache_dir: Path) -> None:
    """Answer py-cpuinfo's ``get_cpu_info()`` from ``<cache_dir>/cpuinfo-<machine key>.json``.

    DeepSpeed's CPU op builders ask it twice each time an op is loaded, already built or not,
    for the ``-march`` and SIMD-width flags that are part of the build's hash
    (deepspeed/ops/op_builder/builder.py ``cpu_arch``, ``simd_width``). Each call runs py-cpuinfo
    in a subprocess that busy-waits about a second to time the clock: 2.3 CPU-seconds and 2.3 s
    of start-up per rank per trial on a 2-core machine, before any training. The answer depends
    on the CPU only, so the first one is kept and reused. Without ``/proc/cpuinfo`` the answer is
    kept for this process only.
    """
    try:
        import cpuinfo
    except ImportError:  # DeepSpeed then falls back to lscpu itself
        return
    if getattr(cpuinfo.get_cpu_info, "_trainplan_cached", False):
        return
    measure = cpuinfo.get_cpu_info
    key = machine_key()
    path = cache_dir / f"cpuinfo-{key}.json" if key else None
    kept: dict = {}

    def get_cpu_info() -> dict:
        if not kept and path is not None:
            try:
                kept.update(json.loads(path.read_text()))
            except (OSError, ValueError):
                pass
        if not kept:
            kept.update(measure())
            if path is not None:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(f".{os.getpid()}.tmp")
                    tmp.write_text(json.dumps(kept))
                    os.replace(tmp, path)  # ranks starting together never read half a file
                except OSError:
                    pass
        return dict(kept)

    get_cpu_info._trainplan_cached = True  # type: ignore[attr-defined]
    cpuinfo.get_cpu_info = get_cpu_info  # the builders import it from the package at call time


def init_distributed(backend: str | None = None) -> None:
    """``deepspeed.init_distributed`` with the shared-memory all-reduce op switched off and
    py-cpuinfo's answers kept beside the JIT-built ops."""
    import deepspeed
    import deepspeed.ops

    from trainplan.runners._opcache import extensions_dir

    remember_cpu_info(extensions_dir())

    # build_shm_op() returns None for an op missing from this table (deepspeed/comm/torch.py).
    deepspeed.ops.__compatible_ops__[SHM_COMM_OP] = False
    if backend is None:
        deepspeed.init_distributed()
    else:
        deepspeed.init_distributed(dist_backend=backend)
