"""Launching a trial with the ``deepspeed`` launcher, watching it, stopping it, recording how it ended.

The launcher (and through it every rank) runs in a new process session, so one ``killpg`` reaches
the whole trial: the ``deepspeed`` runner, ``deepspeed.launcher.launch`` and the ranks. On SIGTERM
the ranks finish their step, flush their metrics and write ``result.json``; ``launch.py`` also
forwards SIGTERM to its children and SIGKILLs them after 30 s
(deepspeed/launcher/launch.py, ``sigkill_handler``/``terminate_process_tree``). :meth:`TrialHandle.stop`
SIGKILLs whatever is left after its grace period, so no process outlives a stopped trial.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from trainplan.runners._data import check_data
from trainplan.runners._result import build_result, classify_exit, planner_estimate, read_metrics, write_json
from trainplan.runners._spec import TrialSpec

__all__ = ["TrialHandle", "adopt_orphans", "build_command", "free_port", "is_trial_dir", "launch_trial", "ops_compiled",
           "prepare_trial", "rotate_trial_files", "run_trial"]

_TRIAL_FILES = ("spec.json", "ds_config.json", "cmd.txt", "metrics.jsonl", "result.json", "stdout.log", "stderr.log")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default range starts here


def free_port() -> int:
    """A TCP port for the rendezvous that nothing listens on now, chosen below the kernel's
    ephemeral range.

    A port the kernel hands out for ``bind(0)`` lies in the ephemeral range, where every outgoing
    connection on the machine (gloo's among them) also takes ports: between our check and the
    rank's bind it can be taken (EADDRINUSE, seen with a trial running beside another). Below the
    range only explicit binds compete.
    """
    import random

    high = max(_ephemeral_low() - 1, 20001)
    for _ in range(100):
        port = random.randint(20000, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # everything there is busy
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _deepspeed_exe() -> list[str]:
    # The launcher script of this very environment, so cmd.txt runs the same versions by hand.
    script = Path(sys.executable).with_name("deepspeed")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "deepspeed.launcher.runner"]


def build_command(spec_path: str | Path, *, gpus: int, master_port: int | None, include: str | None = None,
                  hostfile: str | None = None, nodes: int = 1, portable: bool = False) -> list[str]:
    """The launcher command line for a trial whose spec is at ``spec_path`` (``gpus`` per node).

    ``portable`` is for a run on other machines (the report's recommended run): the plain
    ``deepspeed`` launcher and ``spec_path`` as given, instead of this environment's launcher and
    the absolute path.
    """
    cmd = ["deepspeed"] if portable else _deepspeed_exe()
    if hostfile:
        cmd += ["--hostfile", str(hostfile)]
    if nodes > 1:
        cmd += ["--num_nodes", str(nodes)]
    if include:
        cmd += ["--include", include]  # names hosts and devices itself; --num_gpus would conflict
    else:
        cmd += ["--num_gpus", str(gpus)]
    if master_port is not None:
        cmd += ["--master_port", str(master_port)]
    cmd += ["--module", "trainplan.runners.train", "--spec", str(spec_path if portable else Path(spec_path).resolve())]
    return cmd


def extensions_dir() -> Path:
    """Where DeepSpeed's JIT-built ops live for this environment: ``$TORCH_EXTENSIONS_DIR`` or
    ``<venv>/torch_extensions``.

    One cache per virtual environment: two environments sharing torch's default
    ``~/.cache/torch_extensions`` rebuild each other's ops (their build files name different
    include paths) and can leave a trial waiting on the other's build lock.
    """
    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path(sys.prefix) / "torch_extensions")


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


class TrialHandle:
    """A running trial: poll it, tail its metrics, stop it, and collect its ``result.json``."""

    def __init__(self, *, spec: TrialSpec, trial_dir: Path, process: subprocess.Popen[bytes],
                 command: list[str], logs: tuple[Any, Any]) -> None:
        self.spec = spec
        """The trial's resolved spec."""
        self.trial_dir = trial_dir
        """The trial folder."""
        self.process = process
        """The ``deepspeed`` launcher process (leader of the trial's process group)."""
        self.command = command
        """The launch command (also in ``cmd.txt``)."""
        self.started = time.monotonic()
        self._logs = logs
        self._offset = 0
        self._stopped_as: str | None = None
        self.reaped_cpu_s: float | None = None
        """User + system CPU-seconds of the launcher and every descendant that was waited for
        (wait4(2)); set once the launcher has exited. Exact for a trial that ends by itself, and
        for a stopped one where this process adopts orphans (:func:`adopt_orphans`); otherwise
        the ranks of a stopped trial may die unwaited-for and it falls short."""

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        """The launcher's exit code, or None while it runs."""
        return self._reap(block=False)

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the launcher exits (its exit code) or ``timeout`` seconds pass (None)."""
        if timeout is None:
            return self._reap(block=True)
        deadline = time.monotonic() + timeout
        while (code := self._reap(block=False)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return code

    def _reap(self, *, block: bool) -> int | None:
        # wait4 instead of Popen's waitpid, to keep the launcher tree's resource usage.
        if self.process.returncode is not None:
            return self.process.returncode
        try:
            pid, status, usage = os.wait4(self.process.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere; Popen then reports what it can
            return self.process.poll()
        if pid == 0:
            return None
        self.process.returncode = os.waitstatus_to_exitcode(status)
        self.reaped_cpu_s = usage.ru_utime + usage.ru_stime
        return self.process.returncode

    def new_metrics(self) -> list[dict[str, Any]]:
        """The ``metrics.jsonl`` records appended since the previous call."""
        records, self._offset = read_metrics(self.trial_dir / "metrics.jsonl", self._offset)
        return records

    def _group_alive(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # pragma: no cover - a recycled group id we do not own
            return False
        return True

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, grace_s: float = 10.0, *, status: str = "terminated") -> int | None:
        """SIGTERM the whole trial; SIGKILL what is still alive after ``grace_s``. Returns the exit code.

        ``status`` (``terminated`` or ``timeout``) is what :meth:`finalize` records if the trial
        was still running when stopped.
        """
        if self.poll() is None and self._stopped_as is None:
            self._stopped_as = status
        self._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and (self.poll() is None or self._group_alive()):
            self._reap_adopted()  # an adopted process that died is a zombie of ours until then
            time.sleep(0.05)
        if self._group_alive():
            self._signal_group(signal.SIGKILL)
        try:
            return self.wait(timeout=10)
        finally:
            self._reap_group()

    def _reap_group(self) -> None:
        # Ranks re-parented away from the launcher still carry its process group id; where this
        # process adopts orphans (adopt_orphans), they come back to it and are waited for here.
        deadline = time.monotonic() + 5
        while True:
            self._reap_adopted()
            if not self._group_alive() or time.monotonic() >= deadline:
                return
            self._signal_group(signal.SIGKILL)
            time.sleep(0.05)

    def _reap_adopted(self) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == self.process.pid:
                continue
            try:
                if os.getpgid(int(entry)) != self.process.pid:
                    continue
                pid, _, usage = os.wait4(int(entry), os.WNOHANG)
            except (ProcessLookupError, ChildProcessError):  # gone, or not this process's child
                continue
            if pid:
                self.reaped_cpu_s = (self.reaped_cpu_s or 0.0) + usage.ru_utime + usage.ru_stime

    def finalize(self) -> dict[str, Any]:
        """Wait for the trial, complete and return its ``result.json``.

        When rank 0 wrote a result, the launcher's exit code is added; otherwise the parent
        classifies the death from the exit code and stderr (``oom`` or ``crashed``). A trial stopped
        for its time limit is ``timeout`` whatever rank 0 managed to write.
        """
        code = self.wait()
        self._reap_group()
        for log in self._logs:
            log.close()
        path = self.trial_dir / "result.json"
        stderr_tail = _tail(self.trial_dir / "stderr.log")
        records, _ = read_metrics(self.trial_dir / "metrics.jsonl")
        wall = round(time.monotonic() - self.started, 3)
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            if self._stopped_as:
                status, reason = self._stopped_as, f"stopped by trainplan ({self._stopped_as}) before rank 0 wrote a result"
            else:
                status, reason = classify_exit(code, stderr_tail)
            result = build_result(records, status=status, reason=reason, stderr_tail=stderr_tail,
                                  estimate=planner_estimate(self.spec), spec_path=str(self.trial_dir / "spec.json"))
        result["exit_code"] = code
        result["wall_s"] = wall
        if self._stopped_as == "timeout":
            result["status"] = "timeout"
            result["reason"] = f"stopped at the --timeout of {self.spec.timeout_s:g} s after {result.get('steps', 0)} steps"
        if result["status"] in ("crashed", "oom") and not result.get("stderr_tail"):
            result["stderr_tail"] = stderr_tail
        write_json(path, result)
        return result


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - limit))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def rotate_trial_files(trial_dir: Path, names: tuple[str, ...] = _TRIAL_FILES) -> int | None:
    """Move an earlier trial's files in ``trial_dir`` aside as ``<name>.N`` (N: 1 for the first
    earlier trial, then 2, ...), all with one N so they stay together; nothing is deleted or
    overwritten. Returns N, or None when the folder held none of ``names``."""
    present = [name for name in names if (trial_dir / name).exists()]
    if not present:
        return None
    used = [int(p.name.rsplit(".", 1)[1]) for name in _TRIAL_FILES for p in trial_dir.glob(f"{name}.*")
            if p.name.rsplit(".", 1)[1].isdigit()]
    generation = max(used, default=0) + 1
    for name in present:
        (trial_dir / name).rename(trial_dir / f"{name}.{generation}")
    return generation


def is_trial_dir(path: Path) -> bool:
    """``path`` holds (or held) a trial: its ``spec.json`` or ``cmd.txt``, current or rotated."""
    return any(any(path.glob(f"{name}*")) for name in ("spec.json", "cmd.txt"))


def prepare_trial(spec: TrialSpec, trial_dir: str | Path, *, master_port: int | None = None,
                  include: str | None = None, hostfile: str | None = None) -> list[str]:
    """Validate ``spec`` and write ``spec.json``, ``ds_config.json`` and ``cmd.txt``; return the command."""
    spec.validate()
    check_data(spec.data, text_key=spec.text_key, tokenizer=spec.tokenizer, max_bytes=spec.max_data_bytes,
               seq_len=spec.layout.seq_len, eval_tokens=spec.eval_tokens)
    trial_dir = Path(trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    rotate_trial_files(trial_dir)  # a reused folder must not mix two trials' records, nor lose one
    spec_path = spec.to_json(trial_dir / "spec.json")
    (trial_dir / "ds_config.json").write_text(json.dumps(spec.ds_config(), indent=2) + "\n")
    command = build_command(spec_path, gpus=spec.layout.gpus, master_port=master_port or free_port(),
                            include=include, hostfile=hostfile)
    (trial_dir / "cmd.txt").write_text(shlex.join(command) + "\n")
    return command


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


def launch_trial(spec: TrialSpec, trial_dir: str | Path, *, master_port: int | None = None,
                 include: str | None = None, hostfile: str | None = None,
                 env: dict[str, str] | None = None) -> TrialHandle:
    """Write the trial folder and start the launcher in a new session; returns at once."""
    trial_dir = Path(trial_dir)
    command = prepare_trial(spec, trial_dir, master_port=master_port, include=include, hostfile=hostfile)
    stdout = open(trial_dir / "stdout.log", "wb")
    stderr = open(trial_dir / "stderr.log", "wb")
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    full_env.setdefault("TORCH_EXTENSIONS_DIR", str(extensions_dir()))
    clear_stale_build_locks()
    process = subprocess.Popen(command, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                               env=full_env, start_new_session=True)
    return TrialHandle(spec=spec, trial_dir=trial_dir, process=process, command=command, logs=(stdout, stderr))


def run_trial(spec: TrialSpec, trial_dir: str | Path, *, master_port: int | None = None,
              include: str | None = None, hostfile: str | None = None,
              env: dict[str, str] | None = None, grace_s: float = 10.0) -> dict[str, Any]:
    """Launch, wait (up to ``spec.timeout_s``), and return the trial's ``result.json``."""
    handle = launch_trial(spec, trial_dir, master_port=master_port, include=include, hostfile=hostfile, env=env)
    try:
        if handle.wait(spec.timeout_s) is None:
            handle.stop(grace_s, status="timeout")
    except BaseException:  # KeyboardInterrupt included: never leave the trial running
        handle.stop(grace_s)
        raise
    return handle.finalize()
