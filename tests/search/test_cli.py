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


def test_best_trial_hours_are_rank_hours_for_a_cpu_trial(tmp_path) -> None:
    import json

    from trainplan.cli.search import best_lines

    best = {"number": 3, "values": [2.5], "params": {"lr": 0.003}, "tokens": 1024, "tokens_per_s": 500.0,
            "elapsed_s": 36.0, "gpu_hours": 0.01, "trial_dir": str(tmp_path)}
    (tmp_path / "result.json").write_text(json.dumps({"status": "completed", "device": {"kind": "cpu", "count": 1}}))
    cpu = best_lines(best, ("eval_loss",))
    assert "0.0100 rank-hours (CPU)" in cpu[2] and "GPU-hours" not in "\n".join(cpu)
    (tmp_path / "result.json").write_text(json.dumps({"status": "completed", "device": {"kind": "gpu", "count": 1}}))
    assert best_lines(best, ("eval_loss",))[2].endswith("0.0100 GPU-hours")
    assert cpu[0] == "best trial #3: eval_loss=2.5" and cpu[-1].endswith("spec.json")


def test_the_watchdog_module_is_not_imported_by_the_package() -> None:
    # `python -m trainplan.search._guard` runs the watchdog; had the package imported it first,
    # runpy would warn on the search's stderr (and run a second copy of the module).
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, trainplan.search, trainplan.cli.search; "
                          "print('trainplan.search._guard' in sys.modules)"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
