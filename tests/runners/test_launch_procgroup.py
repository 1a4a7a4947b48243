"""runners/_procgroup.py on real processes: one signal ends a trial's whole group, and with
``adopt_orphans`` the orphaned members come back to be waited for (their CPU time counted)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from trainplan.runners._procgroup import group_alive, reap_adopted, signal_group


def _gone(pgid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap_adopted(pgid)  # where this process adopts orphans (another test may have set it)
        if not group_alive(pgid):
            return True
        time.sleep(0.05)
    return False


def test_one_signal_ends_the_group_with_its_grandchildren() -> None:
    # A leader with a background grandchild, both in a new session (as a trial's launcher is).
    leader = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60"], start_new_session=True)
    try:
        time.sleep(0.2)
        assert group_alive(leader.pid)
        signal_group(leader.pid, signal.SIGKILL)
        leader.wait(timeout=5)
        assert _gone(leader.pid)
        signal_group(leader.pid, signal.SIGKILL)  # a group already gone is no error
    finally:
        if leader.poll() is None:
            leader.kill()
            leader.wait()


_ORPHAN = """
import subprocess, sys, time
from trainplan.runners._procgroup import adopt_orphans, group_alive, reap_adopted
adopted = adopt_orphans() if sys.argv[1] == "adopt" else False
# The leader exits at once; its child burns CPU for a moment, an orphan then.
leader = subprocess.Popen(["sh", "-c", "(i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done) & exit 0"],
                          start_new_session=True)
leader.wait()
cpu, deadline = None, time.monotonic() + 20
while group_alive(leader.pid) and time.monotonic() < deadline:
    got = reap_adopted(leader.pid)
    cpu = got if cpu is None else cpu + (got or 0.0)
    time.sleep(0.02)
print(adopted, cpu, group_alive(leader.pid))
"""


def test_adopted_orphans_are_waited_for_and_their_cpu_counted() -> None:
    out = subprocess.run([sys.executable, "-c", _ORPHAN, "adopt"], capture_output=True, text=True, timeout=60, check=True)
    adopted, cpu, alive = out.stdout.split()
    assert adopted == "True" and alive == "False"
    assert float(cpu) > 0  # the orphan came back to this process: its CPU time is not lost


def test_without_adoption_init_takes_the_orphans() -> None:
    out = subprocess.run([sys.executable, "-c", _ORPHAN, "no"], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "None", "False"]
