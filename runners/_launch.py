"""Launching a trial with the ``deepspeed`` launcher, watching it, stopping it, recording how it ended.

The parts it uses live beside it: the rendezvous port (_ports.py), the op-build cache and its
locks (_opcache.py), the trial's process group (_procgroup.py) and the trial folder (_folders.py).

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
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from trainplan.runners._data import check_data
from trainplan.runners._folders import log_tail, rotate_trial_files
from trainplan.runners._mempeak import preload_env
from trainplan.runners._opcache import clear_stale_build_locks, extensions_dir
from trainplan.runners._ports import free_port
from trainplan.runners._procgroup import group_alive, reap_adopted, signal_group
from trainplan.runners._result import build_result, classify_exit, planner_estimate, read_metrics, write_json
from trainplan.runners._spec import TrialSpec

__all__ = ["TrialHandle", "build_command", "launch_trial", "prepare_trial", "run_trial"]


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
        return group_alive(self.process.pid)

    def _signal_group(self, sig: int) -> None:
        signal_group(self.process.pid, sig)

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
        cpu_s = reap_adopted(self.process.pid, skip=self.process.pid)
        if cpu_s is not None:
            self.reaped_cpu_s = (self.reaped_cpu_s or 0.0) + cpu_s

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
        stderr_tail = log_tail(self.trial_dir / "stderr.log")
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
    full_env.update(preload_env(full_env))  # the CPU's peak allocated bytes (runners/_mempeak.py)
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
