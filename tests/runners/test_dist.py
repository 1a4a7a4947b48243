"""py-cpuinfo's answer kept per machine (runners/_dist.py ``remember_cpu_info``)."""

from __future__ import annotations

import json

import cpuinfo
import pytest

from trainplan.runners._dist import machine_key, remember_cpu_info


@pytest.fixture
def counted(monkeypatch):
    """Stand in for the slow measurement, counting calls; the real function is put back after."""
    calls = []

    def measure():
        calls.append(1)
        return {"arch": "X86_64", "flags": ["avx2", "fma"], "count": 2}

    monkeypatch.setattr(cpuinfo, "get_cpu_info", measure)
    return calls


def test_measures_once_per_machine_then_reads_the_file(counted, tmp_path):
    remember_cpu_info(tmp_path)
    first = cpuinfo.get_cpu_info()
    assert first["arch"] == "X86_64" and counted == [1]
    assert cpuinfo.get_cpu_info() == first and counted == [1]  # no second measurement here

    key = machine_key()
    assert key is not None  # Linux
    saved = tmp_path / f"cpuinfo-{key}.json"
    assert json.loads(saved.read_text()) == first

    # A later process (the next trial): the function is the real one again, the file answers.
    cpuinfo.get_cpu_info = lambda: counted.append(1) or {"arch": "other"}
    remember_cpu_info(tmp_path)
    assert cpuinfo.get_cpu_info() == first and counted == [1]


def test_a_damaged_file_is_measured_again(counted, tmp_path):
    (tmp_path / f"cpuinfo-{machine_key()}.json").write_text("{half a file")
    remember_cpu_info(tmp_path)
    assert cpuinfo.get_cpu_info()["flags"] == ["avx2", "fma"] and counted == [1]
    assert json.loads((tmp_path / f"cpuinfo-{machine_key()}.json").read_text())["arch"] == "X86_64"


def test_installs_once(counted, tmp_path):
    remember_cpu_info(tmp_path)
    wrapped = cpuinfo.get_cpu_info
    remember_cpu_info(tmp_path / "elsewhere")
    assert cpuinfo.get_cpu_info is wrapped


def test_key_ignores_clock_speed_lines(monkeypatch):
    texts = iter(["processor\t: 0\ncpu MHz\t\t: 2596.118\nflags\t: avx2\n",
                  "processor\t: 0\ncpu MHz\t\t: 3101.002\nflags\t: avx2\n",
                  "processor\t: 0\ncpu MHz\t\t: 3101.002\nflags\t: sse4_2\n"])
    monkeypatch.setattr("pathlib.Path.read_text", lambda self, *a, **k: next(texts))
    first, second, other = machine_key(), machine_key(), machine_key()
    assert first == second != other
