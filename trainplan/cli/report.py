"""``trainplan report``: one self-contained HTML page from a study and the plan of its hardware.

Examples::

    trainplan report                                   # the latest runs/search-* folder
    trainplan report --storage sqlite:///runs/search-default/study.db --study default --gpu h100-sxm
    trainplan report --storage postgresql://host/db --study big --out reports/ --top-k 20 --tokens 300B

Prints the page's path on stdout; the data of every figure is written beside it (report_data/).
"""

from __future__ import annotations

from pathlib import Path

import click

from trainplan.errors import UsageError, close_matches

__all__ = ["report"]


def _default_storage() -> tuple[str, Path]:
    from trainplan.paths import latest_run_dir, runs_root

    run_dir = latest_run_dir("search")
    if run_dir is None or not (run_dir / "study.db").is_file():
        raise UsageError("--storage", f"no {runs_root()}/search-*/study.db found; pass --storage URL and --study NAME")
    return f"sqlite:///{(run_dir / 'study.db').resolve()}", run_dir


def _study_name(storage: str, name: str | None) -> str:
    import optuna

    from trainplan.safe import mask_url, redact

    shown = mask_url(storage)
    try:
        names = sorted(optuna.get_all_study_names(storage=storage))
    except Exception as exc:  # noqa: BLE001 - any driver/URL error is the user's --storage
        detail = redact(f"{type(exc).__name__}: {exc}").splitlines()[0]
        raise UsageError("--storage", f"cannot open {shown}: {detail}") from None
    if name is None:
        if len(names) == 1:
            return names[0]
        listed = ", ".join(names) if names else "none"
        raise UsageError("--study", f"{shown} holds {len(names)} studies ({listed}); pass --study NAME")
    if name not in names:
        raise UsageError("--study", f"no study {name!r} in {shown}" + close_matches(name, names))
    return name


def _sqlite_dir(storage: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(storage[len(prefix):]).parent if storage.startswith(prefix) else None


@click.command("report")
@click.option("--storage", metavar="URL", help="Optuna storage URL (default: the latest runs/search-*/study.db).")
@click.option("--study", "study_name", metavar="NAME", help="Study name (default: the storage's only study).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.html and report_data/ (default: the study's run folder).")
@click.option("--gpu", metavar="NAME", help="Target GPU from the catalog (default: the sweep's hardware.gpu).")
@click.option("--tokens", metavar="N", help="Token budget of the full run, e.g. 300B (default: compute-optimal).")
@click.option("--top-k", type=int, metavar="K", help="Learning curves shown when the page opens (default: all).")
@click.option("--generated", metavar="TEXT", help="Text of the page's 'generated' line (default: last trial end).")
def report(storage: str | None, study_name: str | None, out_dir: Path | None, gpu: str | None,
           tokens: str | None, top_k: int | None, generated: str | None) -> None:
    """Write one self-contained HTML report of a study."""
    import os

    # Offline by design: a model id stored in the study is never resolved on the hub (the planner
    # then says it cannot rebuild the configuration, and the page says so).
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import optuna

    from trainplan.cli._format import parse_count
    from trainplan.safe import storage_from_env
    from trainplan.search._optuna import existing_storage_file, storage_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_dir = None
    storage = storage_from_env(storage)
    if storage is None:
        storage, run_dir = _default_storage()
    if top_k is not None and top_k < 1:
        raise UsageError("--top-k", f"must be a positive integer, got {top_k}")
    if tokens is not None:
        parse_count(tokens, "--tokens")
    if "://" not in storage:  # a plain path, as search and trials take it
        storage = storage_url(storage, Path("."))
    existing_storage_file(storage)  # never create a storage just to read it
    if storage.startswith("journal:") or storage.endswith((".log", ".jsonl", ".journal")):
        raise UsageError("--storage", "report reads RDB storages (sqlite:///, postgresql://); "
                                      "journal files: export with `trainplan trials` instead")
    from trainplan.reports import build_report

    name = _study_name(storage, study_name)
    study = optuna.load_study(study_name=name, storage=storage)
    out = out_dir or run_dir or _sqlite_dir(storage) or Path("report")
    path = build_report(study, out, gpu=gpu, tokens=parse_count(tokens, "--tokens") if tokens else None,
                        top_k=top_k, generated=generated)
    click.echo(str(path))
