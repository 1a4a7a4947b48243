"""No orphans: trial process groups die with the search process, however it dies.

The runner starts each trial in a new session (so ``TrialHandle.stop`` can end its whole process
group), which also means a ``kill -9`` of the search would leave the trial running. An
:class:`OrphanGuard` is a tiny watchdog process holding the read end of a pipe whose write end
only the search holds; the search tells it which process groups are live. When the search dies
for any reason the kernel closes the pipe, the watchdog reads end-of-file and ends every group it
was told about (SIGTERM, then SIGKILL). A restarted search also reclaims RUNNING trials of dead
local workers and ends their recorded groups (see ``_study.reclaim_dead_local_trials``).

Run as ``python -m trainplan.search._guard``: that is the watchdog itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable

__all__ = ["OrphanGuard", "group_alive", "kill_group", "process_start_ticks", "session_cpu_ticks"]


class OrphanGuard:
    """Watchdog process that ends registered process groups when this process dies."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()  # non-inheritable: trial processes never hold the write end
        # A session of its own: Ctrl-C in the terminal must reach the search, not the guard.
        self._proc = subprocess.Popen([sys.executable, "-m", "trainplan.search._guard"], stdin=read_fd,
                                      start_new_session=True, close_fds=True)
        os.close(read_fd)
        self._pipe = os.fdopen(write_fd, "w", buffering=1)

    def watch(self, pgid: int) -> None:
        self._pipe.write(f"+{pgid}\n")

    def release(self, pgid: int) -> None:
        self._pipe.write(f"-{pgid}\n")

    def close(self) -> None:
        """Normal exit: nothing registered is left alive; the guard exits on end-of-file."""
        try:
            self._pipe.close()
        finally:
            self._proc.wait(timeout=30)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(pgid: int, grace_s: float = 3.0) -> None:
    """SIGTERM the group, SIGKILL whatever is left after ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and group_alive(pgid):
            time.sleep(0.1)


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after its closing one (proc(5)).
    return text[text.rfind(")") + 2:].split()


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (``/proc/PID/stat`` field 22), or None if
    it is gone: (pid, start) identifies a process even after its pid is reused."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def session_cpu_ticks(session_ids: Iterable[int]) -> dict[int, int]:
    """pid -> user+system CPU ticks of every live process whose session is in ``session_ids``
    (``/proc/PID/stat`` fields 6, 14, 15; proc(5)). The search samples it while a trial runs and
    keeps each pid's last value, since an exited rank's ticks are no longer readable."""
    wanted = set(session_ids)
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields and int(fields[3]) in wanted:
            out[int(entry)] = int(fields[11]) + int(fields[12])
    return out


def _watchdog() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    live: set[int] = set()
    for line in sys.stdin:
        line = line.strip()
        if line.startswith("+"):
            live.add(int(line[1:]))
        elif line.startswith("-"):
            live.discard(int(line[1:]))
    for pgid in live:  # end of file: the search is gone
        kill_group(pgid)


if __name__ == "__main__":
    _watchdog()
