"""``trainplan search`` (an Optuna sweep over real DeepSpeed trials) and ``trainplan trials``
(export a study's trial records).

    trainplan search                                   # the default sweep on the built-in task
    trainplan search sweep.yaml --workers 2            # two trials at once on this machine
    trainplan search sweep.yaml --storage postgresql://user@host/db   # run on every machine
    trainplan trials sweep.yaml -o trials.parquet

Running the same command again resumes the study. Progress goes to stderr; the best configuration,
its metrics and the command that reruns it go to stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from trainplan.cli._types import Count, Finite

__all__ = ["best_lines", "search", "trials"]

_common = [
    click.argument("sweep_file", required=False, type=click.Path(dir_okay=False, path_type=Path)),
    click.option("--study-name", help="Optuna study name (default: the sweep file's study_name)."),
    click.option("--storage", help="Optuna storage URL or journal file (*.log); default: SQLite in the run folder."),
    click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path),
                 help="Folder for trial folders and the default SQLite file (default: <runs>/search-<study>)."),
]


def _apply(options: list[Any]):  # type: ignore[no-untyped-def]
    def wrap(func):  # type: ignore[no-untyped-def]
        for option in reversed(options):
            func = option(func)
        return func
    return wrap


def _load(sweep_file: Path | None, overrides: dict[str, Any]):  # type: ignore[no-untyped-def]
    from trainplan.search import load_sweep

    return load_sweep(sweep_file, overrides)


@click.command("search")
@_apply(_common)
@click.option("--n-trials", type=Count(1, 10**7), help="Trials in the study, counted across restarts (overrides budget.n_trials).")
@click.option("--timeout", "timeout_s", type=Finite(0, 10**9, low_open=True), help="Start no trial after this many seconds (budget.timeout_s).")
@click.option("--max-gpu-hours", type=Finite(0, 10**12, low_open=True), help="Start no trial once the study used this many GPU-hours.")
@click.option("--workers", type=Count(1, 4096), help="Trials run at once by this command (default: the sweep's workers).")
@click.option("--sampler", help="tpe, gp, cmaes, random or grid (overrides sampler.type).")
@click.option("--pruner", help="successive_halving, hyperband, median or none (overrides pruner.type).")
@click.option("--seed", type=Count(0, 2**32 - 1), help="Sampler seed (overrides sampler.seed).")
@click.option("--export", "export_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the trial table here at the end (.csv, .parquet or .json).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="How the final summary is printed on stdout.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
def search(sweep_file: Path | None, study_name: str | None, storage: str | None, run_dir: Path | None,
           n_trials: int | None, timeout_s: float | None, max_gpu_hours: float | None, workers: int | None,
           sampler: str | None, pruner: str | None, seed: int | None, export_path: Path | None,
           fmt: str, no_progress: bool) -> None:
    """Run (or resume) an Optuna sweep over real DeepSpeed trials; SWEEP_FILE defaults to the
    built-in sweep (a few minutes on a CPU)."""
    from trainplan.safe import mask_argv, mask_url, remember_url, storage_from_env
    from trainplan.search import export_trials, run_search

    storage = storage_from_env(storage)
    sweep = _load(sweep_file, {
        "study_name": study_name, "storage": storage, "workers": workers, "budget.n_trials": n_trials,
        "budget.timeout_s": timeout_s, "budget.max_gpu_hours": max_gpu_hours, "sampler.type": sampler,
        "pruner.type": pruner, "sampler.seed": seed,
    })
    remember_url(sweep.storage)  # a password in the sweep file is masked everywhere too
    from trainplan.cli._types import check_output_file
    from trainplan.search import EXPORT_FORMATS

    check_output_file(export_path, "--export", EXPORT_FORMATS)  # before the sweep, not after it
    _check_workers(sweep)
    _check_data(sweep)
    command = ["trainplan", *sys.argv[1:]]
    from trainplan.cli._signals import interrupt_on_signals

    signals = interrupt_on_signals()
    try:
        with signals:
            result = run_search(sweep, run_dir=run_dir, command=command, progress=not no_progress)
    except KeyboardInterrupt:
        # The workers recorded their running trials as terminated and queued them again.
        import shlex

        click.echo("trainplan: interrupted; the running trials were recorded as terminated and will be retried. "
                   f"Resume with: {shlex.join(mask_argv(command))}", err=True)
        raise click.exceptions.Exit(signals.exit_code) from None
    if export_path is not None:
        import optuna

        from trainplan.search import open_storage

        study = optuna.load_study(study_name=sweep.study_name, storage=open_storage(sweep.storage, result.run_dir, sweep))
        export_trials(study, export_path)
    if fmt == "json":
        click.echo(json.dumps({"study_name": result.study_name, "storage": result.storage,
                               "run_dir": str(result.run_dir), "counts": result.counts, "best": result.best},
                              indent=2, default=str))
        return
    counts = ", ".join(f"{v} {k}" for k, v in sorted(result.counts.items()))
    click.echo(f"study {result.study_name} ({mask_url(result.storage)}): {counts}")
    if not result.best:
        from trainplan.errors import TrainplanError

        raise TrainplanError("no trial completed; see why in the trial table: trainplan trials"
                             + (f" {sweep_file}" if sweep_file else ""))
    for best in result.best:
        for line in best_lines(best, sweep.objectives):
            click.echo(line)


def best_lines(best: dict[str, Any], objectives: tuple[str, ...]) -> list[str]:
    """The text of one best trial (a :func:`trainplan.search.best_trials` entry). Hours are
    GPU-hours, or rank-hours (CPU) for a trial that ran its ranks on the CPU, as in the report."""
    from trainplan.runners._result import ran_on_cpu

    values = ", ".join(f"{name}={value:.6g}" for name, value in zip(objectives, best["values"]))
    lines = [f"best trial #{best['number']}: {values}",
             "  params: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in best["params"].items())]
    tps = best.get("tokens_per_s")
    hours = "rank-hours (CPU)" if ran_on_cpu(best.get("trial_dir")) else "GPU-hours"
    lines.append(f"  measured: tokens {best.get('tokens')}, {tps:.0f} tokens/s, {best.get('elapsed_s', 0):.1f} s, "
                 f"{best.get('gpu_hours', 0):.4f} {hours}" if tps else f"  measured: tokens {best.get('tokens')}")
    lines.append(f"  rerun: trainplan run --spec {Path(best['trial_dir']) / 'spec.json'}")
    return lines


@click.command("trials")
@_apply(_common)
@click.option("-o", "--output", default="-", show_default=True,
              help="File to write (.csv, .parquet, .json), or - for stdout.")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet", "json"]),
              help="Format (default: from the --output suffix; csv on stdout).")
def trials(sweep_file: Path | None, study_name: str | None, storage: str | None, run_dir: Path | None,
           output: str, fmt: str | None) -> None:
    """Export the trials of a study (status, reason, params, metrics, estimates, curve)."""
    import optuna

    from trainplan.errors import UsageError
    from trainplan.safe import csv_cell, mask_url, remember_url, storage_from_env
    from trainplan.search import export_trials, open_storage, search_dir, storage_url, trials_frame
    from trainplan.search._optuna import existing_storage_file

    sweep = _load(sweep_file, {"study_name": study_name, "storage": storage_from_env(storage)})
    remember_url(sweep.storage)
    run_dir = run_dir or search_dir(sweep)
    url = storage_url(sweep.storage, run_dir)
    existing_storage_file(url, "--storage")  # never create a storage just to read it
    store = open_storage(sweep.storage, run_dir, sweep)
    try:
        study = optuna.load_study(study_name=sweep.study_name, storage=store)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(store)]
        raise UsageError("--study-name", f"no study {sweep.study_name!r} in {mask_url(url)}; "
                                         f"studies there: {', '.join(names) or 'none'}") from None
    if output != "-":
        from trainplan.cli._types import check_output_file

        check_output_file(output, "--output")
        click.echo(str(export_trials(study, output, fmt)), err=True)
        return
    fmt = fmt or "csv"
    if fmt == "parquet":
        raise UsageError("--format", "parquet cannot go to stdout; give --output FILE.parquet")
    frame = trials_frame(study)
    if fmt == "json":
        click.echo(frame.to_json(orient="records", indent=2))
    else:
        frame["curve"] = [json.dumps(c) for c in frame.get("curve", [])]
        click.echo(frame.map(csv_cell).to_csv(index=False), nl=False)


def _check_workers(sweep: Any) -> None:
    """On a CPU machine each trial's ranks are processes: more of them than cores only thrash."""
    from trainplan.errors import UsageError
    from trainplan.runners._device import cpu_ranks_exceed_cores

    cores = cpu_ranks_exceed_cores(sweep.workers * sweep.hardware.gpus_per_trial)
    if cores:
        raise UsageError("--workers", f"{sweep.workers} workers x {sweep.hardware.gpus_per_trial} ranks per trial "
                                      f"exceed this machine's {cores} CPU cores (no GPU here)")


def _check_data(sweep: Any) -> None:
    """The base trial's data is read and checked once, before any trial: bad data would otherwise
    be found by every trial of the sweep in turn."""
    from trainplan.runners._data import check_data
    from trainplan.search import resolve_trial

    spec = resolve_trial(sweep, {})
    check_data(spec.data, text_key=spec.text_key, tokenizer=spec.tokenizer, max_bytes=spec.max_data_bytes,
               seq_len=spec.layout.seq_len, eval_tokens=spec.eval_tokens)
