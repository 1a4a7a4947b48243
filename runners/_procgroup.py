"""A trial's processes as one group: signal it, tell whether any member lives, and wait for the
members that come back to this process (adopted orphans).

The launcher runs in a new session, so its process group id is its pid and every rank carries it,
also after re-parenting.
"""

from __future__ import annotations

import os
import sys

__all__ = ["adopt_orphans", "group_alive", "reap_adopted", "signal_group"]


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` exists (a zombie counts until it is waited for)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a recycled group id we do not own
        return False
    return True


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to every process of group ``pgid``; a group already gone is fine."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def reap_adopted(pgid: int, skip: int | None = None) -> float | None:
    """Wait for the members of group ``pgid`` that have exited and are this process's children
    (``skip``: a pid left to its own waiter); returns their user + system CPU-seconds, None when
    none was waited for."""
    cpu_s = None
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == skip:
            continue
        try:
            if os.getpgid(int(entry)) != pgid:
                continue
            pid, _, usage = os.wait4(int(entry), os.WNOHANG)
        except (ProcessLookupError, ChildProcessError):  # gone, or not this process's child
            continue
        if pid:
            cpu_s = (cpu_s or 0.0) + usage.ru_utime + usage.ru_stime
    return cpu_s


def adopt_orphans() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux ``PR_SET_CHILD_SUBREAPER``,
    prctl(2)); True if it now is.

    When a trial is stopped, its launcher, DeepSpeed's ``launch.py`` and the ranks die together,
    and a rank whose parent died first is normally waited for by init, its CPU time lost to the
    trial's account. With this, such processes return to the caller, which
    :meth:`TrialHandle.finalize` waits for, so a stopped trial's CPU-seconds are exact too. The
    search calls it once; the setting lasts for the life of the process.
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    pr_set_child_subreaper = 36  # linux/prctl.h
    return ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0) == 0
