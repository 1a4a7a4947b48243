"""The trial's records: ``metrics.jsonl`` lines and the final ``result.json``.

Both the training entry (rank 0) and the parent that launched it write results through
:func:`build_result`, so a trial that died before rank 0 could write one still gets a
``result.json`` with the same keys (docs/protocol.md, "Trial protocol"). Pure Python.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from trainplan.runners._device import recorded_device, software_stack

__all__ = [
    "STATUSES", "EXIT_CODES", "METRIC_KEYS", "build_result", "classify_exit", "planner_estimate", "ran_on_cpu",
    "read_metrics", "write_json",
]

STATUSES = ("completed", "oom", "diverged", "crashed", "terminated", "timeout")

EXIT_CODES = {"completed": 0, "crashed": 1, "diverged": 3, "oom": 4, "terminated": 143}
"""Exit code of the training entry per status; the launcher passes it through to ``trainplan run``.
143 = 128 + SIGTERM, the shell convention for a process ended by that signal."""

METRIC_KEYS = ("step", "tokens", "elapsed_s", "train_loss", "eval_loss", "lr", "grad_norm",
               "tokens_per_s", "peak_mem_bytes")

OOM_MARKERS = ("CUDA out of memory", "OutOfMemoryError", "out of memory",
               "DefaultCPUAllocator: can't allocate memory")
"""Text of an out-of-memory error: torch.cuda.OutOfMemoryError's message, and the CPU allocator's
``RuntimeError`` (c10/core/impl/alloc_cpu.cpp) when host memory runs out."""


def is_oom_message(text: str) -> bool:
    """Whether an exception message or stderr tail says the trial ran out of memory."""
    return any(marker in text for marker in OOM_MARKERS)


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN/inf: a non-finite number is recorded as null."""
    return value if value is not None and math.isfinite(value) else None


def read_metrics(path: str | Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete records of ``metrics.jsonl`` from byte ``offset``; returns them and the new offset.

    A line still being written (no trailing newline yet) is left for the next call.
    """
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            chunk = fh.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n") + 1
    records = [json.loads(line) for line in chunk[:end].splitlines() if line.strip()]
    return records, offset + end


def write_json(path: str | Path, value: dict[str, Any]) -> None:
    """Write atomically (temp file + rename) so a reader never sees half a result."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)


def classify_exit(exit_code: int | None, stderr_tail: str) -> tuple[str, str]:
    """Status and reason for a trial that ended without writing ``result.json``."""
    if is_oom_message(stderr_tail):
        return "oom", "out of memory (see stderr_tail)"
    if exit_code in (-9, 256 - 9):  # the launcher itself, or a rank's -9 passed on as sys.exit(-9)
        return "crashed", "killed by signal 9 (SIGKILL; often the kernel's out-of-memory killer, see dmesg)"
    if exit_code is not None and exit_code < 0:
        return "crashed", f"killed by signal {-exit_code}"
    last = next((line for line in reversed(stderr_tail.splitlines()) if line.strip()), "")
    return "crashed", f"exit code {exit_code}: {last[:300]}" if last else f"exit code {exit_code}"


def planner_estimate(spec: Any) -> dict[str, Any] | None:
    """The planner's numbers for the trial's layout: ``memory_bytes`` (its estimate of the figure the
    trial measures as ``peak_mem_bytes``: the allocated bytes, ``max_memory_allocated`` on a GPU and the
    preloaded counter's peak on the CPU; without the counter the CPU's resident set, which holds
    DeepSpeed's gradient buckets only as far as a step writes them, ``estimate_memory(first_touch=True)``)
    and ``tokens_per_s``.

    ``tokens_per_s`` needs a GPU from the catalog (``spec.gpu``); on the CPU it is null. When the
    planner cannot estimate this model the numbers are null and ``error`` says why (the trial
    itself still runs).
    """
    from trainplan.planner import estimate_memory, load_gpu, load_model
    from trainplan.planner import plan as make_plan
    from trainplan.runners._device import gpu_present
    from trainplan.runners._mempeak import counter

    try:
        model = load_model(spec.model)
        on_cpu = not gpu_present()
        cpu_bytes = estimate_memory(model, spec.layout, first_touch=counter() is None).allocated if on_cpu else None
        if not spec.gpu:
            memory = cpu_bytes if on_cpu else estimate_memory(model, spec.layout).allocated
            return {"memory_bytes": memory, "tokens_per_s": None, "gpu": None}
        result = make_plan(model, spec.layout, load_gpu(spec.gpu), tokens=spec.total_tokens)
        return {"memory_bytes": cpu_bytes if on_cpu else result.memory.allocated,
                "tokens_per_s": result.perf.tokens_per_s, "gpu": spec.gpu}
    except Exception as exc:  # an estimate is a side note: never fail the trial over it
        return {"memory_bytes": None, "tokens_per_s": None, "gpu": spec.gpu, "error": f"{type(exc).__name__}: {exc}"}


def build_result(records: list[dict[str, Any]], *, status: str, reason: str = "",
                 exit_code: int | None = None, elapsed_s: float | None = None,
                 diverged_at_step: int | None = None, stderr_tail: str = "",
                 estimate: dict[str, Any] | None = None, spec_path: str | None = None) -> dict[str, Any]:
    """The ``result.json`` object for a trial whose metric records are ``records``."""
    if status not in STATUSES:
        raise ValueError(f"unknown trial status {status!r}")
    last = records[-1] if records else {}
    evals = [r["eval_loss"] for r in records if r.get("eval_loss") is not None]
    speeds = [r["tokens_per_s"] for r in records if r.get("tokens_per_s")]
    speeds = speeds[1:] if len(speeds) > 2 else speeds  # the first interval pays for warm-up
    peaks = [r["peak_mem_bytes"] for r in records if r.get("peak_mem_bytes")]
    reserved = [r["peak_reserved_bytes"] for r in records if r.get("peak_reserved_bytes")]
    return {
        "status": status,
        "reason": reason,
        "exit_code": exit_code,
        "steps": last.get("step", 0),
        "tokens": last.get("tokens", 0),
        "final_eval_loss": evals[-1] if evals else None,
        "best_eval_loss": min(evals) if evals else None,
        "final_train_loss": last.get("train_loss"),
        # Mean over logged intervals (bar the first), not the last one alone.
        "tokens_per_s": sum(speeds) / len(speeds) if speeds else None,
        "peak_mem_bytes": max(peaks) if peaks else None,
        "peak_reserved_bytes": max(reserved) if reserved else None,  # GPU only
        "elapsed_s": elapsed_s if elapsed_s is not None else last.get("elapsed_s"),
        "diverged_at_step": diverged_at_step,
        "stderr_tail": stderr_tail,
        "estimate": estimate,
        "spec": spec_path,
        "device": recorded_device(),  # where the trial ran (docs/protocol.md); None if it never started
        "stack": software_stack(),
    }


def ran_on_cpu(trial_dir: str | Path | None) -> bool:
    """Whether the trial in ``trial_dir`` ran its ranks on the CPU, by the ``device`` its
    ``result.json`` records (docs/protocol.md): its ``gpu_hours`` are then CPU rank-hours."""
    if not trial_dir:
        return False
    try:
        device = json.loads((Path(trial_dir) / "result.json").read_text()).get("device")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(device, dict) and device.get("kind") == "cpu"
