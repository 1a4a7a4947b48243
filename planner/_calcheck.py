"""The values a calibration file must hold, checked when it is loaded.

:meth:`Calibration.from_dict <trainplan.planner._calibration.Calibration.from_dict>` checks the keys;
this checks what they hold, so a file edited by hand or written by another tool is refused with one
error naming the field and what is allowed, instead of failing inside a plan with a ``TypeError``,
a ``KeyError`` or a division by zero (issue 12's bad-input standard). Pure Python.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from trainplan.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from trainplan.planner._calibration import Calibration

__all__ = ["check_calibration"]

_TIMINGS = ("wall", "cpu")
"""``Calibration.timing``: by the clock, or from rank 0's CPU-seconds."""


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any, *, positive: bool = False) -> bool:
    return _finite(value) and (value > 0 if positive else value >= 0)


def _ints(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _bad(key: str, where: str, allowed: str) -> UsageError:
    return UsageError(key, f"malformed calibration file: {where} must be {allowed}")


def _check_device(dev: dict[str, Any], key: str) -> None:
    if dev.get("kind") not in ("cpu", "gpu"):
        raise _bad(key, "device.kind", "cpu or gpu")
    if not _number(dev.get("memory_bytes"), positive=True):
        raise _bad(key, "device.memory_bytes", "a positive number")
    peaks = dev.get("peak_flops")
    if not isinstance(peaks, dict) or not peaks or not all(_number(v, positive=True) for v in peaks.values()):
        raise _bad(key, "device.peak_flops", "an object of positive FLOP/s per precision")
    for name in ("count", "cores"):
        if name in dev and not (_ints([dev[name]]) and dev[name] >= 1):
            raise _bad(key, f"device.{name}", "a positive integer")
    kernels = dev.get("kernels", {})
    if not isinstance(kernels, dict) or not all(_kernel_samples(v) for v in kernels.values()):
        raise _bad(key, "device.kernels", "an object of CPU kernel timings per rank count (runners/_cpubench.py: "
                                          "threads, and linear/sdpa rows of positive numbers)")


def _kernel_samples(samples: Any) -> bool:
    """One rank count's kernel timings: rows of dimensions then seconds (4 per linear, 5 per sdpa)."""
    def rows(name: str, width: int) -> bool:
        table = samples.get(name, [])
        return isinstance(table, list) and all(
            isinstance(r, list) and len(r) >= width and all(_number(v, positive=True) for v in r[:width]) for r in table)

    return (isinstance(samples, dict) and rows("linear", 4) and rows("sdpa", 5)
            and ("threads" not in samples or (_ints([samples["threads"]]) and samples["threads"] >= 1)))


def _check_ranges(r: dict[str, Any], key: str) -> None:
    for name in ("work_flops", "allocated_bytes"):
        pair = r.get(name)
        if not (isinstance(pair, list) and len(pair) == 2 and all(_number(v, positive=True) for v in pair)):
            raise _bad(key, f"ranges.{name}", "[low, high], two positive numbers")
    for name in ("ranks", "zero"):
        if not _ints(r.get(name)):
            raise _bad(key, f"ranges.{name}", "a non-empty list of integers")
    for name in ("zero_across_ranks", "layers"):
        if name in r and not (r[name] == [] or _ints(r[name])):
            raise _bad(key, f"ranges.{name}", "a list of integers")
    if not (isinstance(r.get("precision"), list) and r["precision"] and all(isinstance(p, str) for p in r["precision"])):
        raise _bad(key, "ranges.precision", "a non-empty list of precisions (fp32, bf16, fp16)")
    if not (isinstance(r.get("paths", {}), dict) and all(isinstance(v, list) for v in r.get("paths", {}).values())):
        raise _bad(key, "ranges.paths", "an object of lists (the values each code path took)")
    threads = r.get("threads_per_rank", {})
    if not (isinstance(threads, dict) and all(_ints([v]) and v >= 1 for v in threads.values())):
        raise _bad(key, "ranges.threads_per_rank", "an object of positive integers (threads per rank, by ranks)")


def check_calibration(cal: Calibration, key: str = "--calibration") -> None:
    """Raise a :class:`UsageError` naming ``key`` and the field when ``cal`` (just read from a file)
    holds a value prediction cannot use."""
    _check_device(cal.device, key)
    for group in ("speed", "memory"):
        for name, c in getattr(cal, group).items():
            if not _number(c.value, positive=name == "e_max"):
                raise _bad(key, f"{group}.{name}.value", "a finite number " + ("> 0" if name == "e_max" else ">= 0"))
            for end in ("low", "high"):  # null (NaN once read): not identified by the trials
                if not (_number(getattr(c, end)) or getattr(c, end) != getattr(c, end)):
                    raise _bad(key, f"{group}.{name}.{end}", "a finite number >= 0 or null")
    try:
        widths = {"speed": len(cal._speed_coefs()), "memory": len(cal._mem_coefs())}
    except KeyError as exc:
        raise _bad(key, f"speed/memory {exc}", "present (recalibrate: trainplan calibrate)") from None
    for name in ("tokens_per_s", "memory"):
        if not _number(cal.residual.get(name)):
            raise _bad(key, f"residual.{name}", "a finite number >= 0")
    _check_ranges(cal.ranges, key)
    if missing := [p for p in cal.ranges["precision"] if p not in cal.device["peak_flops"]]:
        raise _bad(key, "device.peak_flops", f"a peak for each precision the trials ran (none for {', '.join(missing)})")
    for group, samples in cal.boot.items():
        if group not in widths or not isinstance(samples, list) or not all(
                isinstance(s, list) and len(s) == widths[group] and all(_finite(v) for v in s) for s in samples):
            raise _bad(key, f"boot.{group}", f"lists of {widths.get(group, 'the fit')} finite coefficients (speed or memory)")
    if not all(isinstance(t, dict) and "id" in t for t in cal.trials):
        raise _bad(key, "trials", "a list of objects, each with an id")
    if not all(isinstance(n, str) for n in cal.notes):
        raise _bad(key, "notes", "a list of strings")
    if cal.timing not in _TIMINGS:
        raise _bad(key, "timing", " or ".join(_TIMINGS))
    if not all(isinstance(v, str) or v is None for v in cal.stack.values()):
        raise _bad(key, "stack", "an object of version strings")
