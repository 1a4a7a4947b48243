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

__all__ = ["OrphanGuard", "group_alive", "kill_group", "kill_trial_processes", "process_start_ticks", "session_cpu_ticks",
           "trial_marker", "verified_trial_pids"]


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


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def trial_marker(trial_dir: str | os.PathLike[str]) -> str:
    """The argument every process of a trial carries on its command line: its spec's absolute
    path (the launcher's, DeepSpeed's ``launch.py``'s and each rank's ``--spec``)."""
    return os.path.join(os.path.realpath(trial_dir), "spec.json")


def verified_trial_pids(pgid: int, leader_start: int | None, trial_dir: str | os.PathLike[str] | None) -> list[int]:
    """Live processes of process group ``pgid`` that verifiably belong to the trial in
    ``trial_dir`` whose launcher (the group's leader) started at ``leader_start`` clock ticks.

    A stored trial record is not proof: a pid and a process group id are reused, and anyone who
    can write the study can name any group. Each process must be in the group and in the session
    the launcher opened (``start_new_session``: both equal the leader's pid), have started no
    earlier than the leader, and carry the trial's spec path on its command line; if the leader
    is still alive, its start time must match too. Nothing is verified without a recorded start
    time and folder.
    """
    if not pgid or leader_start is None or not trial_dir:
        return []
    marker = trial_marker(trial_dir)
    leader = process_start_ticks(pgid)
    if leader is not None and leader != leader_start:
        return []  # the pid now belongs to another process: not our launcher, not our group
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        # proc(5): fields[2] pgrp, fields[3] session, fields[19] starttime.
        if not fields or int(fields[2]) != pgid or int(fields[3]) != pgid or int(fields[19]) < leader_start:
            continue
        if any(marker == arg or arg.endswith("=" + marker) for arg in _cmdline(int(entry))):
            found.append(int(entry))
    return found


def kill_trial_processes(worker: dict, trial_dir: str | None, grace_s: float = 3.0) -> list[int]:
    """End the processes of a dead worker's trial that :func:`verified_trial_pids` confirms
    (SIGTERM, SIGKILL after ``grace_s``); a group it cannot verify is left alone. Returns the pids
    signalled."""
    try:
        pgid, start = int(worker.get("pgid") or 0), worker.get("leader_start")
    except (TypeError, ValueError):
        return []
    pids = verified_trial_pids(pgid, int(start) if isinstance(start, int) else None, trial_dir)
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0.0)):
        for pid in pids:
            with _quiet():
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
            time.sleep(0.1)
    return pids


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, *rest: object) -> bool:
        return kind is not None and issubclass(kind, (ProcessLookupError, PermissionError))


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
