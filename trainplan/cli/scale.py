"""``trainplan scale``: from a finished ladder study to the target run.

Examples::

    trainplan search search/data/default_ladder.yaml --run-dir runs/ladder
    trainplan scale --run-dir runs/ladder --target-model llama-2-7b --tokens 2T --gpu h100-sxm --max-gpus 256
    trainplan scale --storage sqlite:///runs/ladder/study.db --target-model trainplan-tiny --tokens 131072 \\
        --dataset-tokens 50000 --format json

Fits per size the near-optimal LR and batch, then power laws in N (with bootstrap intervals and the
published priors beside them), predicts the target's LR, global batch, warm-up, steps and final
loss, asks the planner for the layout, and writes ``spec.json``, ``ds_config.json``, ``cmd.txt``
and ``scale.json`` into ``--out``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from trainplan.cli._format import human_count, human_hours, parse_count, print_table
from trainplan.cli._types import Count, Finite
from trainplan.errors import UsageError

__all__ = ["scale"]


def _open_study(storage: str | None, run_dir: Path | None, study_name: str | None) -> Any:
    import optuna

    from trainplan.cli.report import _study_name
    from trainplan.search._optuna import existing_storage_file

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage and run_dir:
        raise UsageError("--storage", "give --storage or --run-dir, not both")
    if storage is None:
        if run_dir is None:
            raise UsageError("--run-dir", "give the ladder study: --run-dir FOLDER (holding study.db) or --storage URL")
        db = run_dir / "study.db"
        if not db.is_file():
            raise UsageError("--run-dir", f"no study.db in {run_dir}; run `trainplan search <ladder.yaml> --run-dir {run_dir}` first")
        storage = f"sqlite:///{db.resolve()}"
    existing_storage_file(storage)  # never create a storage just to read it
    return optuna.load_study(study_name=_study_name(storage, study_name), storage=storage)


def _interval(iv: dict[str, float], fmt: str = ".3g") -> str:
    return f"{iv['value']:{fmt}} [{iv['low']:{fmt}}, {iv['high']:{fmt}}]"


def _rows(d: dict[str, Any]) -> list[list[str]]:
    t, fit, lay = d["target"], d["fit"], d["layout"]
    rows = [["mode", f"{d['mode']}: " + ("power laws fitted across " + str(len(fit["data"])) + " sizes"
                                          if d["mode"] == "fitted" else "one size; priors' exponents anchored on its optimum")]]
    for o in fit["data"]:
        rows.append([f"  size {o['size']}", f"N {human_count(o['n_params'])} non-embedding, {human_count(o['tokens'])} tokens: "
                                           f"best loss {o['loss']:.4f}; near-optimal ({o['near_optimal']} of {o['trials']} trials "
                                           f"within {fit['tolerance']:.0%}) LR {o['lr']:.3g}, batch {human_count(o['batch_tokens'])} tokens"])
    rows += [
        ["fit (95% bootstrap)", f"LR ~ N^{_interval(fit['lr_exponent'])}, batch ~ N^{_interval(fit['batch_exponent'])}, "
                                f"loss alpha {_interval(fit['loss_alpha'])}" + ("" if fit["alpha_fitted"] else " (prior)")
                                + f", E {_interval(fit['loss_e'])}"],
        ["D (tokens)", (f"identified: LR ~ D^{_interval(fit['lr_d_exponent'])}, batch ~ D^{_interval(fit['batch_d_exponent'])} "
                        f"(fitted; {fit['d_reason']})") if fit.get("d_identified") else
                       (f"not identified ({fit.get('d_reason', 'one budget')}): LR ~ D^{fit['lr_d_exponent']['value']:.3g}, "
                        f"batch ~ D^{fit['batch_d_exponent']['value']:.3g} (Step Law prior)")],
        ["target", f"{t['model']}: N {human_count(t['non_embedding_params'])} non-embedding, {human_count(t['tokens'])} tokens"],
        ["peak LR", f"{t['lr']:.3g} in the spec (from {t['hyperparams_from']}); fit {_interval(fit['target']['lr'])} (predicted)"],
        ["global batch", f"{t['global_batch']:,} sequences of {t['seq_len']} = {human_count(t['global_batch'] * t['seq_len'])} tokens "
                         f"(from {t['hyperparams_from']}; fit {_interval(fit['target']['batch_tokens'])} tokens; {t['batch_rounding']})"],
        ["steps / warm-up", f"{t['steps']:,} steps, {t['warmup_steps']:,} warm-up"],
        ["final loss", f"{_interval(t['predicted_loss'], '.4f')} at {human_count(t['predicted_loss_tokens'])} tokens "
                       "(predicted, 95% for one run; the ladder's data and tokenizer"
                       + (")" if t["predicted_loss_tokens"] == t["tokens"] else "; NOT at the target's tokens, see the notes)")],
    ]
    for p in d["priors"]:
        rows.append([f"prior ({p['law']})", f"LR {p['lr']:.3g}, batch {human_count(p['batch_tokens'])} tokens ({p['source']})"])
    if d["data"]:
        dc = d["data"]
        rows.append(["data", f"{dc['epochs']:.2f} epochs of {human_count(dc['unique_tokens'])} unique tokens, worth "
                             f"{human_count(dc['effective_tokens'])} (Muennighoff et al. 2023"
                             + ("; loss above includes it)" if t["predicted_loss_tokens"] == t["tokens"] else ")")])
        t_tokens = d["target"]["tokens"]
        best = min(d["same_compute"], key=lambda a: a["predicted_loss"])
        rows.append(["same compute", "; ".join(f"N x{t_tokens / a['tokens']:.2g}: {a['epochs']:.1f} epochs, loss "
                                               f"{a['predicted_loss']:.3f}" for a in d["same_compute"])
                     + f" (data-constrained law, Chinchilla units; lowest at N x{t_tokens / best['tokens']:.2g})"])
    ll = lay["layout"]
    rows += [
        ["layout", f"{ll['gpus']} x {lay['gpu']['key']}, ZeRO-{ll['zero']}, micro {ll['micro_batch']} x accum "
                   f"{ll['grad_accum']}, checkpointing {ll['checkpointing']}, offload {ll['offload']} (estimate)"],
        ["time / cost", f"{human_hours(lay['time']['hours'])}, {lay['time']['gpu_hours']:,.0f} GPU-hours, "
                        f"${lay['cost']['usd']:,.0f} (estimate)"],
    ]
    rows += [["note", n] for n in d["notes"]]
    return rows


@click.command("scale")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), help="Ladder search folder holding study.db.")
@click.option("--storage", metavar="URL", help="Optuna storage URL of the ladder study (instead of --run-dir).")
@click.option("--study", "study_name", metavar="NAME", help="Study name (default: the storage's only study).")
@click.option("--target-model", required=True, help="Target model: preset, config.json or hub id.")
@click.option("--tokens", default=None, help="Target training tokens, e.g. 2T [compute-optimal].")
@click.option("--seq-len", type=Count(1, 2**24), default=None, help="Target sequence length [2048 or the model's maximum].")
@click.option("--gpu", default="h100-sxm", show_default=True, help="GPU from the catalog.")
@click.option("--max-gpus", type=Count(), default=64, show_default=True, help="Most GPUs the layout may use.")
@click.option("--budget", type=Finite(0, 1e15, low_open=True), default=None, help="Most USD the run may cost (the layout is chosen under it).")
@click.option("--optimize", type=click.Choice(["time", "cost", "gpus"]), default="time", show_default=True)
@click.option("--dataset-tokens", default=None, help="Unique tokens of the data: epochs and the data-constrained loss.")
@click.option("--data", default=None, help="Training data of the target spec [the ladder's].")
@click.option("--hyperparams-from", "hyper_source", type=click.Choice(["auto", "fit", "step_law", "deepseek"]),
              default="auto", show_default=True,
              help="LR and batch written to the spec: the fit, a prior, or auto (the fit unless the target is >10x "
                   "beyond the swept N or tokens, then Step Law).")
@click.option("--tolerance", type=float, default=0.02, show_default=True,
              help="Near-optimal set: trials within this fraction of each size's best loss.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for spec.json, ds_config.json, cmd.txt, scale.json [<run-dir>/target].")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write an HTML page of the fit and the target's decision here.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def scale(run_dir: Path | None, storage: str | None, study_name: str | None, target_model: str, tokens: str | None,
          seq_len: int | None, gpu: str, max_gpus: int, budget: float | None, optimize: str,
          dataset_tokens: str | None, data: str | None, tolerance: float, out_dir: Path | None,
          report_path: Path | None, hyper_source: str, fmt: str) -> None:
    """Fit LR, batch and loss laws on a ladder study and plan the target run."""
    from trainplan.planner import load_model
    from trainplan.runners._folders import check_trial_folder
    from trainplan.search._ladder import ladder_points, scale_target, write_target
    from trainplan.search._records import read_study_attrs

    try:
        load_model(target_model)
    except UsageError as exc:  # the planner names --model; this verb's flag is --target-model
        raise UsageError("--target-model", exc.message) from None
    target_tokens = parse_count(tokens, "--tokens") if tokens is not None else None
    unique = parse_count(dataset_tokens, "--dataset-tokens") if dataset_tokens is not None else None
    out = out_dir or ((run_dir or Path(".")) / "target")
    check_trial_folder(out, "--out")  # never over someone's other files
    try:
        study = _open_study(storage, run_dir, study_name)
        base = read_study_attrs(study).sweep.get("base")
        base = base if isinstance(base, dict) else {}
        points = ladder_points(study)
        decision = scale_target(
            points, target_model, tokens=target_tokens, gpu=gpu, max_gpus=max_gpus, budget=budget,
            optimize=optimize, dataset_tokens=unique, seq_len=seq_len, tolerance=tolerance,
            warmup_fraction=float(base.get("warmup_fraction", 0.01)), data=data or base.get("data", "stdlib"),
            hyper_source=hyper_source,
        )
    except UsageError as exc:  # the study's errors name --storage; the user may have typed --run-dir
        if run_dir is None or exc.key != "--storage":
            raise
        raise UsageError("--run-dir", exc.message) from None
    paths = write_target(decision, out)
    d = decision.to_dict()
    if report_path is not None:
        from trainplan.reports._scaleup import build_scale_report

        click.echo(f"wrote {build_scale_report(points, d, report_path)}", err=True)
    if fmt == "json":
        click.echo(json.dumps({**d, "files": [str(p) for p in paths]}, indent=2, default=str))
    else:
        print_table(f"trainplan scale: {target_model} from {len(d['fit']['data'])} swept size(s) "
                    f"({d['mode']}; predictions, not measurements)", ["", "value"], _rows(d))
        click.echo(f"wrote {', '.join(str(p) for p in paths)}", err=True)
        click.echo(f"launch: {(out / 'cmd.txt').read_text().strip()}")
