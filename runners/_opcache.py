"""DeepSpeed's JIT-built C++ ops: where this environment keeps them, whether they are built, and
the build locks a killed build leaves behind.

``make setup`` builds the ops once, so neither a user's first trial nor the test suite pays for it::

    python -c "from trainplan.runners._opcache import main; main()"
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["STALE_LOCK_S", "build_ops", "clear_stale_build_locks", "extensions_dir", "kept_per_machine", "ops_compiled"]

T = TypeVar("T")


def extensions_dir() -> Path:
    """Where DeepSpeed's JIT-built ops live for this environment: ``$TORCH_EXTENSIONS_DIR`` or
    ``<venv>/torch_extensions``.

    One cache per virtual environment: two environments sharing torch's default
    ``~/.cache/torch_extensions`` rebuild each other's ops (their build files name different
    include paths) and can leave a trial waiting on the other's build lock.
    """
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path(sys.prefix) / "torch_extensions")


def kept_per_machine(name: str, measure: Callable[[], T], read: Callable[[Any], T] = lambda v: v) -> tuple[T, Path | None]:
    """A per-machine measurement kept beside the JIT-built ops: ``name`` (``{machine}`` in it is
    replaced by this machine's key, runners/_dist.py) read back through ``read`` when the file is
    there and ``read`` accepts it, else ``measure()`` written there, to a temp file and renamed (ranks
    starting together never read half a file). Returns the value and the file that holds it (None:
    no machine key, or the file could not be written)."""
    from trainplan.runners._dist import machine_key

    machine = machine_key()
    path = extensions_dir() / name.format(machine=machine) if machine else None
    if path is not None:
        try:
            return read(json.loads(path.read_text())), path
        except (OSError, ValueError, KeyError, TypeError):
            pass
    value = measure()
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(value))
            os.replace(tmp, path)
        except OSError:
            path = None
    return value, path


def ops_compiled() -> bool:
    """Whether DeepSpeed's C++ Adam op is already built in :func:`extensions_dir`.

    The first DeepSpeed run in an environment JIT-compiles it (about 100 s on a 2-core CPU); torch
    keeps builds under ``$TORCH_EXTENSIONS_DIR[/py<XY>_<cu|cpu>]/<op>/``
    (torch/utils/cpp_extension.py, ``_get_build_directory``).
    """
    root = extensions_dir()
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    return any(root.glob(f"{tag}*/fused_adam/*.so")) or any(root.glob("fused_adam/*.so"))


STALE_LOCK_S = 900.0
"""A build lock older than this is left over from a killed build (a build takes ~100 s here)."""


def clear_stale_build_locks() -> list[Path]:
    """Remove build locks that a killed JIT build left behind; return what was removed.

    torch waits, without a time limit, for a ``lock`` file in an op's build folder to disappear
    (torch/utils/file_baton.py, ``FileBaton.wait``), so one build killed mid-way (a timeout, a
    Ctrl-C) would hang every later DeepSpeed launch in this environment.
    """
    removed = []
    for lock in extensions_dir().glob("**/lock"):
        try:
            if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
                lock.unlink()
                removed.append(lock)
        except FileNotFoundError:  # another process finished its build meanwhile
            continue
    for lock in removed:
        print(f"trainplan: removed a stale DeepSpeed build lock {lock} (left by a killed build)", file=sys.stderr)
    return removed


def build_ops() -> bool:
    """Build DeepSpeed's Adam op into :func:`extensions_dir` now, unless it is already built; return
    whether a build ran.

    The same build a first trial would run (``FusedAdamBuilder().load()``, what DeepSpeed's
    ``FusedAdam`` calls; deepspeed/ops/adam/fused_adam.py), in the same cache, with py-cpuinfo's
    answer kept as trials keep it (runners/_dist.py), so the trials that follow load it without building.
    """
    if ops_compiled():
        return False
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(extensions_dir()))
    clear_stale_build_locks()
    from deepspeed.ops.op_builder import FusedAdamBuilder

    from trainplan.runners._dist import remember_cpu_info

    remember_cpu_info(extensions_dir())
    FusedAdamBuilder().load(verbose=False)
    return True


def main() -> None:
    """``make setup``'s step: build the ops once, saying so; a failed build warns and leaves the
    build to the first trial (which reports its error in the trial's ``stderr.log``)."""
    if ops_compiled():
        return
    print(f"trainplan: building DeepSpeed's C++ ops once, into {extensions_dir()} (about 100 s on a 2-core CPU; "
          "no trial builds them again)", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        build_ops()
    except Exception as exc:  # noqa: BLE001 -- any build failure: setup goes on, the first trial retries
        print(f"trainplan: warning: DeepSpeed's ops did not build ({type(exc).__name__}: {exc}); "
              "the first trial will try again", file=sys.stderr)
        return
    print(f"trainplan: DeepSpeed's ops built in {time.monotonic() - started:.0f} s", file=sys.stderr)
