"""``trainplan report``: finds the latest sweep, writes the page, and names the flag at fault."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.reports.conftest import build_study

from trainplan.cli import main


def test_report_from_explicit_storage(storage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_study(storage, "demo")
    code = main(["report", "--storage", storage, "--study", "demo", "--out", str(tmp_path / "out"),
                 "--top-k", "2", "--gpu", "h100-sxm", "--tokens", "1B"])
    out = capsys.readouterr().out.strip()
    assert code == 0 and out == str(tmp_path / "out" / "report.html")
    page = Path(out).read_text()
    assert "h100-sxm" in page and "1e+09 (--tokens)" in page


def test_report_defaults_to_the_latest_search_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "runs" / "search-demo"
    run_dir.mkdir(parents=True)
    build_study(f"sqlite:///{run_dir / 'study.db'}", "demo")
    monkeypatch.setenv("TRAINPLAN_RUNS", str(tmp_path / "runs"))
    assert main(["report"]) == 0
    assert capsys.readouterr().out.strip() == str(run_dir / "report.html")
    assert (run_dir / "report_data" / "learning-curves.csv").is_file()


@pytest.mark.parametrize(("argv", "key", "hint"), [
    (["--study", "demi"], "--study", "did you mean demo"),
    (["--gpu", "a100"], "--gpu", "a100-80gb"),
    (["--top-k", "0"], "--top-k", "positive"),
    (["--tokens", "lots"], "--tokens", "not a number"),
])
def test_bad_input_names_the_flag(storage: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  argv: list[str], key: str, hint: str) -> None:
    build_study(storage, "demo")
    code = main(["report", "--storage", storage, "--out", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and f"error: {key}:" in err and hint in err


def test_several_studies_need_a_name(storage: str, capsys: pytest.CaptureFixture[str]) -> None:
    build_study(storage, "a")
    build_study(storage, "b")
    assert main(["report", "--storage", storage]) == 2
    assert "holds 2 studies (a, b); pass --study NAME" in capsys.readouterr().err


def test_no_sweep_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TRAINPLAN_RUNS", str(tmp_path / "runs"))
    assert main(["report"]) == 2
    assert "--storage" in capsys.readouterr().err
