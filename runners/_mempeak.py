"""The CPU's counterpart of ``torch.cuda.max_memory_allocated`` (docs/protocol.md, "Device and peak memory").

A CPU trial's processes are started with a small allocation counter preloaded (``_malloc_peak.c``,
built once per machine and source with the C compiler DeepSpeed's JIT ops already need, kept beside
those ops). It forwards every ``malloc``/``free`` to glibc and keeps the bytes in use and their peak,
so the rank reads the peak of what it *allocated*, as a GPU's allocator reports it, instead of its
resident set: the resident set counts glibc's retained free memory (1.8-4.3x the live bytes on this
project's trials, growing for hundreds of steps) and only the pages written, which no planner can
predict. Where the counter cannot be used (no C compiler, not glibc, or the user preloads an allocator
of their own: ``LD_PRELOAD`` already set) the trial falls back to the resident set and says so in
``device.peak_memory``.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["counter", "counter_library", "preload_env"]

SOURCE = Path(__file__).with_name("_malloc_peak.c")
_LOADED = "import ctypes; ctypes.CDLL(None).trainplan_peak_bytes"


def counter_library() -> Path | None:
    """The counter's shared library, built on first use (``cc -O2 -shared``) and checked by preloading it
    into a fresh Python; None when it cannot be built or loaded here."""
    from trainplan.runners._opcache import extensions_dir

    if not sys.platform.startswith("linux") or not SOURCE.is_file():
        return None
    tag = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    out = extensions_dir() / f"trainplan_malloc_peak-{tag}.so"
    if out.is_file():
        return out
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        built = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(tmp), str(SOURCE)],
                               capture_output=True, timeout=120).returncode == 0
        # A file the loader skips ("cannot be preloaded ... ignored") or a library of another libc: only
        # one a fresh process has loaded, its counter found, is kept.
        if not built or subprocess.run([sys.executable, "-S", "-c", _LOADED], env={**os.environ, "LD_PRELOAD": str(tmp)},
                                       capture_output=True, timeout=60).returncode != 0:
            return None
        os.replace(tmp, out)  # trials starting together never load half a file
        return out
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        tmp.unlink(missing_ok=True)


def preload_env(env: dict[str, str]) -> dict[str, str]:
    """What to add to a CPU trial's environment ``env``: ``LD_PRELOAD`` of the counter, or nothing (a
    GPU trial, a preload of the user's own, or no counter here)."""
    from trainplan.runners._device import gpu_present

    if gpu_present() or env.get("LD_PRELOAD"):
        return {}
    lib = counter_library()
    return {"LD_PRELOAD": str(lib)} if lib else {}


@functools.cache
def counter() -> Any | None:
    """The counter preloaded into this process (ctypes handle with ``trainplan_peak_bytes``,
    ``trainplan_bytes_in_use``, ``trainplan_reset_peak``), or None; looked up once (a process is
    started with it or not)."""
    try:
        lib = ctypes.CDLL(None)
        lib.trainplan_peak_bytes.restype = ctypes.c_longlong
        lib.trainplan_bytes_in_use.restype = ctypes.c_longlong
        return lib
    except (OSError, AttributeError):
        return None
