"""runners/_opcache.py: one op-build cache per environment, and build locks a killed build left."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from trainplan.runners import _opcache


def test_stale_build_lock_is_removed_and_fresh_one_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    stale = tmp_path / "py311_cpu" / "fused_adam" / "lock"
    fresh = tmp_path / "py311_cpu" / "deepspeed_shm_comm" / "lock"
    for lock in (stale, fresh):
        lock.parent.mkdir(parents=True)
        lock.touch()
    old = time.time() - _opcache.STALE_LOCK_S - 60
    os.utime(stale, (old, old))
    assert _opcache.clear_stale_build_locks() == [stale]
    assert not stale.exists() and fresh.exists()


def test_a_lock_that_a_finished_build_removed_meanwhile_is_no_error(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    lock = tmp_path / "py311_cpu" / "fused_adam" / "lock"
    lock.parent.mkdir(parents=True)
    lock.touch()
    real_stat = Path.stat

    def vanishing(self: Path, **kw):  # the build ends between the glob and the stat
        if self.name == "lock":
            self.unlink(missing_ok=True)
        return real_stat(self, **kw)

    monkeypatch.setattr(Path, "stat", vanishing)
    assert _opcache.clear_stale_build_locks() == []


def test_cache_is_the_environments_own_unless_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    assert _opcache.extensions_dir() == Path(sys.prefix) / "torch_extensions"
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert _opcache.extensions_dir() == tmp_path


def test_ops_compiled_looks_for_this_pythons_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert not _opcache.ops_compiled()
    other = tmp_path / "py27_cpu" / "fused_adam"
    other.mkdir(parents=True)
    (other / "fused_adam.so").touch()
    assert not _opcache.ops_compiled()  # another Python's build does not count
    mine = tmp_path / f"py{sys.version_info.major}{sys.version_info.minor}_cpu" / "fused_adam"
    mine.mkdir(parents=True)
    (mine / "fused_adam.so").touch()
    assert _opcache.ops_compiled()


def test_setup_step_is_silent_when_built_and_says_what_it_builds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    built: list[Path] = []

    def build() -> bool:  # stands in for the ~100 s compile; what main says around it is under test
        built.append(_opcache.extensions_dir())
        return True

    monkeypatch.setattr(_opcache, "build_ops", build)
    _opcache.main()
    err = capsys.readouterr().err
    assert built == [tmp_path]
    assert f"building DeepSpeed's C++ ops once, into {tmp_path}" in err and "built in" in err

    mine = tmp_path / f"py{sys.version_info.major}{sys.version_info.minor}_cpu" / "fused_adam"
    mine.mkdir(parents=True)
    (mine / "fused_adam.so").touch()
    _opcache.main()
    assert built == [tmp_path] and capsys.readouterr().err == ""  # built already: nothing to do, nothing said


def test_a_failed_build_warns_in_one_line_and_leaves_it_to_the_first_trial(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))

    def fail() -> bool:
        raise RuntimeError("Error building extension 'fused_adam'")

    monkeypatch.setattr(_opcache, "build_ops", fail)
    _opcache.main()  # returns: setup goes on
    warning = capsys.readouterr().err.splitlines()[-1]
    assert warning.startswith("trainplan: warning: DeepSpeed's ops did not build (RuntimeError: Error building")
    assert warning.endswith("the first trial will try again")


def test_per_machine_measurements_are_kept_read_back_and_remeasured_when_unreadable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One cache for the matmul peak and the CPU kernel timings: measured once, read back after, and a
    file that does not parse (or that ``read`` rejects) is measured again and rewritten whole."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr("trainplan.runners._dist.machine_key", lambda: "m1")
    calls: list[int] = []

    def measure() -> dict:
        calls.append(1)
        return {"peak": 2.5}

    def read(d: dict) -> dict:
        return {"peak": float(d["peak"])}

    value, path = _opcache.kept_per_machine("peak-{machine}.json", measure, read)
    assert value == {"peak": 2.5} and path == tmp_path / "peak-m1.json" and len(calls) == 1
    assert _opcache.kept_per_machine("peak-{machine}.json", measure, read) == ({"peak": 2.5}, path)
    assert len(calls) == 1  # read back, not measured
    for junk in ("{not json", '{"other": 1}', '{"peak": "fast"}'):
        path.write_text(junk)
        assert _opcache.kept_per_machine("peak-{machine}.json", measure, read)[0] == {"peak": 2.5}
    assert len(calls) == 4 and not list(tmp_path.glob("*.tmp"))
    monkeypatch.setattr("trainplan.runners._dist.machine_key", lambda: None)  # no key: measured, not kept
    assert _opcache.kept_per_machine("peak-{machine}.json", measure, read) == ({"peak": 2.5}, None)
