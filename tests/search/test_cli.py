"""The ``search`` and ``trials`` verbs: help text and their place in the CLI."""

from __future__ import annotations

from click.testing import CliRunner

from trainplan.cli import cli


def test_search_help_lists_the_flags_a_user_needs() -> None:
    out = CliRunner().invoke(cli, ["search", "--help"]).output
    for flag in ("--n-trials", "--workers", "--storage", "--study-name", "--timeout", "--max-gpu-hours",
                 "--sampler", "--pruner", "--export", "--no-progress"):
        assert flag in out
    assert "built-in sweep" in out


def test_trials_help_names_the_formats() -> None:
    out = CliRunner().invoke(cli, ["trials", "--help"]).output
    assert "--output" in out and "csv" in out and "parquet" in out and "json" in out


def test_trials_on_stdout_refuses_parquet(tmp_path, monkeypatch) -> None:
    from trainplan.cli import main
    from trainplan.search import load_sweep, open_study, search_dir

    monkeypatch.setenv("TRAINPLAN_RUNS", str(tmp_path))
    open_study(load_sweep(), search_dir(load_sweep()))
    assert main(["trials", "--format", "parquet"]) == 2
