"""The CPU's peak allocated bytes (runners/_mempeak.py, _malloc_peak.c): the counter preloaded into
a real process, the launch environment that preloads it, and its fallbacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from trainplan.runners import _mempeak
from trainplan.runners._mempeak import counter_library, preload_env

MIB = 2**20

PROBE = textwrap.dedent("""
    import ctypes, json
    import torch
    from trainplan.runners._mempeak import counter
    lib = counter()
    libc = ctypes.CDLL(None)  # the process's own symbols: the preloaded ones first, as a C caller sees them
    libc.calloc.restype = libc.realloc.restype = ctypes.c_void_p
    libc.calloc.argtypes, libc.realloc.argtypes = [ctypes.c_size_t] * 2, [ctypes.c_void_p, ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    def rss():
        return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) * 1024
    out = {}
    lib.trainplan_reset_peak()
    base, rss0 = lib.trainplan_bytes_in_use(), rss()
    big = torch.empty(50_000_000)  # 200 MB through posix_memalign, never written
    out["empty_in_use"], out["empty_rss"] = lib.trainplan_bytes_in_use() - base, rss() - rss0
    del big
    out["after_free"] = lib.trainplan_bytes_in_use() - base
    p = libc.calloc(1, 2**20)
    q = libc.realloc(p, 5 * 2**20)  # grows (and may move) the block
    out["realloc_in_use"] = lib.trainplan_bytes_in_use() - base
    libc.free(q)
    out["end_in_use"] = lib.trainplan_bytes_in_use() - base
    out["peak"] = lib.trainplan_peak_bytes() - base
    print(json.dumps(out))
""")


@pytest.fixture
def own_extensions(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    return tmp_path


def test_counter_counts_allocated_bytes_not_resident_pages(own_extensions):
    # The CPU's max_memory_allocated: a torch.empty of 200 MB counts whole though none of its pages
    # are written (the resident set barely moves), a free gives it back, calloc/realloc/free balance.
    lib = counter_library()
    assert lib is not None and lib.parent == own_extensions, "this machine has a C compiler (DeepSpeed's ops need it)"
    assert counter_library() == lib  # built once, then found by its source hash
    env = {**os.environ, "LD_PRELOAD": str(lib)}
    out = json.loads(subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                                    check=True, timeout=120).stdout)
    assert 200e6 <= out["empty_in_use"] < 200e6 + MIB and out["empty_rss"] < 20 * MIB
    assert abs(out["after_free"]) < MIB
    assert 5 * MIB <= out["realloc_in_use"] < 6 * MIB
    assert abs(out["end_in_use"]) < MIB
    assert 200e6 <= out["peak"] < 200e6 + 2 * MIB


def test_a_process_without_the_counter_has_none():
    assert _mempeak.counter() is None  # pytest itself is not preloaded


def test_cpu_trials_get_the_counter_unless_something_is_preloaded(own_extensions, monkeypatch):
    monkeypatch.setattr("trainplan.runners._device.gpu_present", lambda: False)
    assert preload_env({}) == {"LD_PRELOAD": str(counter_library())}
    # A user's own allocator (jemalloc, tcmalloc) stays: the trial falls back to its resident set.
    assert preload_env({"LD_PRELOAD": "/usr/lib/libjemalloc.so"}) == {}
    monkeypatch.setattr("trainplan.runners._device.gpu_present", lambda: True)
    assert preload_env({}) == {}  # a GPU reports max_memory_allocated itself


def test_no_compiler_means_no_counter_and_no_half_built_file(own_extensions, monkeypatch):
    monkeypatch.setenv("CC", str(own_extensions / "no-such-cc"))
    assert counter_library() is None
    assert list(own_extensions.iterdir()) == []


def test_a_library_that_does_not_load_is_not_kept(own_extensions, monkeypatch, tmp_path_factory):
    # A compiler that "succeeds" but leaves no loadable library (another libc, a broken toolchain).
    fake = tmp_path_factory.mktemp("cc") / "cc"
    fake.write_text('#!/bin/sh\nwhile [ "$1" != "-o" ]; do shift; done; echo junk > "$2"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    assert counter_library() is None
    assert list(own_extensions.iterdir()) == []
