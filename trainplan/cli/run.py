"""``trainplan run``: one real training trial through the ``deepspeed`` launcher.

    trainplan run                                   # default task: tiny Llama on stdlib bytes, 100 steps
    trainplan run --gpus 2 --zero 2 --lr 1e-3       # two ranks (CPU processes where there is no GPU)
    trainplan run --spec trial.json --steps 300     # flags override the file, the file the defaults

Progress (step, loss, tokens/s) goes to stderr from ``metrics.jsonl``; the final ``result.json``
goes to stdout as JSON. The exit code is the launcher's (124 for --timeout).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from trainplan.cli._types import Count, Finite
from trainplan.errors import UsageError

__all__ = ["run", "resolve_spec"]

# flag name (click parameter) -> (section of TrialSpec, field); section None is the top level.
_FIELDS: dict[str, tuple[str | None, str]] = {
    "model": (None, "model"), "data": (None, "data"), "text_key": (None, "text_key"),
    "tokenizer": (None, "tokenizer"), "steps": (None, "steps"), "dropout": (None, "dropout"),
    "seed": (None, "seed"), "eval_every": (None, "eval_every"), "eval_tokens": (None, "eval_tokens"),
    "log_every": (None, "log_every"), "max_data_bytes": (None, "max_data_bytes"),
    "timeout": (None, "timeout_s"), "estimate_gpu": (None, "gpu"),
    "gpus": ("layout", "gpus"), "zero": ("layout", "zero"), "offload": ("layout", "offload"),
    "seq_len": ("layout", "seq_len"), "micro_batch": ("layout", "micro_batch"),
    "grad_accum": ("layout", "grad_accum"), "precision": ("layout", "precision"),
    "attention": ("layout", "attention"),
    "lr": ("hyperparams", "lr"), "min_lr_ratio": ("hyperparams", "min_lr_ratio"),
    "weight_decay": ("hyperparams", "weight_decay"), "warmup_steps": ("hyperparams", "warmup_steps"),
    "schedule": ("hyperparams", "schedule"), "eps": ("hyperparams", "eps"),
    "grad_clip": ("hyperparams", "grad_clip"),
}


def gpu_present() -> bool:
    """A CUDA device is visible, checked without importing torch (the driver's /proc entries)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir()) and os.environ.get("CUDA_VISIBLE_DEVICES", "x") != ""


def resolve_spec(options: dict[str, Any]) -> Any:
    """One precedence rule: command line > ``--spec`` file > defaults. Returns a validated TrialSpec."""
    from trainplan.runners import TrialSpec

    base: dict[str, Any] = {}
    if options.get("spec"):
        base = TrialSpec.from_json(options["spec"]).to_dict()
        file_sets_precision = "precision" in json.loads(Path(options["spec"]).read_text()).get("layout", {})
    else:
        file_sets_precision = False
    base.setdefault("layout", {})
    base.setdefault("hyperparams", {})
    for name, (section, key) in _FIELDS.items():
        value = options.get(name)
        if value is None:
            continue
        (base if section is None else base[section])[key] = value
    if options.get("beta1") is not None or options.get("beta2") is not None:
        betas = list(base["hyperparams"].get("betas", (0.9, 0.95)))
        betas[0] = options["beta1"] if options.get("beta1") is not None else betas[0]
        betas[1] = options["beta2"] if options.get("beta2") is not None else betas[1]
        base["hyperparams"]["betas"] = betas
    if options.get("precision") is None and not file_sets_precision:
        base["layout"]["precision"] = "bf16" if gpu_present() else "fp32"
    spec = TrialSpec.from_dict(base)
    if options.get("global_batch") is not None:
        if options.get("grad_accum") is not None:
            raise UsageError("--global-batch", "give --global-batch or --grad-accum, not both")
        spec = spec.with_(layout=spec.layout.with_global_batch(options["global_batch"]))  # the planner's one rule
    spec = spec.validate()
    if spec.layout.precision == "fp16" and not gpu_present():
        raise UsageError("--precision", "fp16 needs a GPU; use fp32 (or bf16) on the CPU")
    return spec


@click.command()
@click.option("--spec", "spec", type=click.Path(dir_okay=False), help="Trial spec JSON; flags override its values.")
@click.option("--model", help="Preset, config.json (from scratch) or checkpoint folder (fine-tune). [default: trainplan-tiny]")
@click.option("--data", help="'stdlib', a .txt/.jsonl/.parquet file or folder, or hf:NAME. [default: stdlib]")
@click.option("--text-key", help="Text field of JSONL/Parquet/datasets rows. [default: text]")
@click.option("--tokenizer", help="Local Hugging Face tokenizer folder. [default: bytes]")
@click.option("--steps", type=Count(), help="Optimizer steps. [default: 100]")
@click.option("--seq-len", type=Count(1, 2**24), help="Tokens per sequence. [default: 128]")
@click.option("--micro-batch", type=Count(), help="Sequences per rank per forward. [default: 16]")
@click.option("--grad-accum", type=Count(), help="Micro-batches per optimizer step. [default: 1]")
@click.option("--global-batch", type=Count(), help="Sequences per step; sets --grad-accum.")
@click.option("--lr", type=Finite(0, 10, low_open=True), help="Peak learning rate. [default: 3e-3]")
@click.option("--min-lr-ratio", type=Finite(0, 1), help="Final lr as a fraction of the peak. [default: 0.1]")
@click.option("--weight-decay", type=Finite(0, 10), help="AdamW decoupled weight decay. [default: 0.1]")
@click.option("--warmup-steps", type=Count(0), help="Linear warm-up steps. [default: 5]")
@click.option("--schedule", help="cosine, linear or constant. [default: cosine]")
@click.option("--beta1", type=Finite(0, 1, high_open=True), help="AdamW beta1. [default: 0.9]")
@click.option("--beta2", type=Finite(0, 1, high_open=True), help="AdamW beta2. [default: 0.95]")
@click.option("--eps", type=Finite(0, 1, low_open=True), help="AdamW epsilon. [default: 1e-8]")
@click.option("--grad-clip", type=Finite(0, 1e6), help="Gradient-norm clip, 0 disables. [default: 1.0]")
@click.option("--dropout", type=Finite(0, 1, high_open=True), help="Dropout probability. [default: 0]")
@click.option("--zero", type=click.IntRange(0, 3), help="ZeRO stage 0-3. [default: 0]")
@click.option("--offload", help="none, cpu or nvme (needs --zero >= 1).")
@click.option("--precision", help="fp32, bf16 or fp16. [default: bf16 on a GPU, fp32 on the CPU]")
@click.option("--attention", help="eager, sdpa or flash. [default: sdpa]")
@click.option("--gpus", type=Count(1, 2**20), help="GPUs to use; on the CPU, the number of ranks. [default: 1]")
@click.option("--include", "include", help="Passed to deepspeed --include (e.g. localhost:0,1).")
@click.option("--hostfile", type=click.Path(dir_okay=False), help="Passed to deepspeed --hostfile.")
@click.option("--seed", type=Count(0, 2**32 - 1), help="Seed for init, data order and RNG. [default: 0]")
@click.option("--eval-every", type=Count(), help="Evaluate every N steps (and after the last). [default: 25]")
@click.option("--eval-tokens", type=Count(), help="Held-out tokens at the end of the data. [default: 16384]")
@click.option("--log-every", type=Count(), help="Write a metrics record every N steps. [default: 1]")
@click.option("--max-data-bytes", type=Count(1, 2**40), help="Cap on the text read. [default: 4000000]")
@click.option("--timeout", type=Finite(0, 10**9, low_open=True), help="Stop the trial after this many seconds (status timeout).")
@click.option("--estimate-gpu", help="GPU catalog name for the planner's estimate in result.json.")
@click.option("--out", type=click.Path(file_okay=False), help="Trial folder. [default: $TRAINPLAN_RUNS/run-<time>]")
@click.option("--dry-run", is_flag=True, help="Write the trial folder and print the command; do not launch.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(**options: Any) -> None:
    """Run one real training trial through the deepspeed launcher."""
    from trainplan.paths import new_run_dir
    from trainplan.runners import launch_trial, ops_compiled, prepare_trial
    from trainplan.runners._spec import is_checkpoint

    from trainplan.runners._data import check_data

    spec = resolve_spec(options)
    # The data is read and checked here, before any process starts (launch_trial checks it again).
    check_data(spec.data, text_key=spec.text_key, tokenizer=spec.tokenizer, max_bytes=spec.max_data_bytes,
               seq_len=spec.layout.seq_len, eval_tokens=spec.eval_tokens)
    if options["hostfile"] and not Path(options["hostfile"]).is_file():
        raise UsageError("--hostfile", f"{options['hostfile']} does not exist")
    if options["out"]:
        _check_out(Path(options["out"]))
    if not (options["hostfile"] or options["include"]):  # other hosts have their own cores
        _check_ranks(spec)
    trial_dir = Path(options["out"]) if options["out"] else new_run_dir("run")
    launch = dict(include=options["include"], hostfile=options["hostfile"])
    if options["dry_run"]:
        command = prepare_trial(spec, trial_dir, **launch)
        click.echo(json.dumps({"trial_dir": str(trial_dir), "command": command}))
        return
    say = (lambda text: None) if options["quiet"] else (lambda text: click.echo(text, err=True))
    say(f"trial folder: {trial_dir}")
    say(f"{spec.model}: {spec.steps} steps x {spec.tokens_per_step:,} tokens on {spec.layout.gpus} "
        f"{'GPU' if gpu_present() else 'CPU rank'}(s), ZeRO {spec.layout.zero}, {spec.layout.precision}")
    if not gpu_present() and not is_checkpoint(spec.model):
        from trainplan.planner import load_model
        from trainplan.runners._device import host_memory_warning

        warning = host_memory_warning(load_model(spec.model), spec.layout)
        if warning:
            click.echo(f"trainplan run: {warning}", err=True)
    if not ops_compiled():
        say("first DeepSpeed run on this machine: compiling its C++ ops (about 100 s on a small CPU); "
            "later runs start in seconds")
    from trainplan.cli._signals import ignore_signals, interrupt_on_signals
    from trainplan.runners import adopt_orphans
    from trainplan.search._guard import OrphanGuard

    # As for search trials: the watchdog ends the trial's process group if this process dies
    # (even by SIGKILL); SIGTERM/SIGINT/SIGHUP stop the whole tree here and record `terminated`.
    adopt_orphans()  # a stopped trial's ranks come back here to be waited for, not to init
    guard = OrphanGuard()
    signals = interrupt_on_signals()
    handle = None
    try:
        with signals:
            handle = launch_trial(spec, trial_dir, **launch)
            guard.watch(handle.pid)
            _follow(handle, spec, quiet=options["quiet"])
    except KeyboardInterrupt:
        ignore_signals()  # a second signal must not cut the stop short
        if handle is None:
            guard.close()
            raise click.exceptions.Exit(signals.exit_code) from None
        handle.stop(10.0)
        result = handle.finalize()
        guard.release(handle.pid)
        guard.close()
        click.echo(json.dumps(result, indent=2))
        say(_summary(result, trial_dir))
        raise click.exceptions.Exit(signals.exit_code) from None
    except BaseException:
        guard.close()
        raise
    guard.release(handle.pid)
    guard.close()
    result = handle.finalize()
    click.echo(json.dumps(result, indent=2))
    say(_summary(result, trial_dir))
    code = result["exit_code"]
    if result["status"] == "timeout":
        code = 124  # coreutils timeout's convention
    elif code is not None and code < 0:
        code = 128 - code  # killed by a signal: the shell's 128 + N
    if code:
        raise click.exceptions.Exit(code)


def _follow(handle: Any, spec: Any, *, quiet: bool) -> None:
    """Draw a progress bar from metrics.jsonl until the launcher exits (or the timeout stops it)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    deadline = time.monotonic() + spec.timeout_s if spec.timeout_s else None
    columns = [TextColumn("step"), MofNCompleteColumn(), BarColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn()]
    progress = Progress(*columns, console=Console(file=sys.stderr), disable=quiet, transient=False)
    with progress:
        task = progress.add_task("train", total=spec.steps, info="starting deepspeed...")
        while handle.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                handle.stop(10.0, status="timeout")
                break
            for record in handle.new_metrics():
                progress.update(task, completed=record["step"], info=_info(record))
            time.sleep(0.2)
        for record in handle.new_metrics():
            progress.update(task, completed=record["step"], info=_info(record))


def _info(record: dict[str, Any]) -> str:
    parts = []
    if record.get("train_loss") is not None:
        parts.append(f"loss {record['train_loss']:.3f}")
    if record.get("eval_loss") is not None:
        parts.append(f"eval {record['eval_loss']:.3f}")
    if record.get("tokens_per_s"):
        parts.append(f"{record['tokens_per_s']:,.0f} tok/s")
    return "  ".join(parts)


def _summary(result: dict[str, Any], trial_dir: Path) -> str:
    loss = result.get("final_eval_loss")
    text = f"{result['status']} after {result['steps']} steps"
    if loss is not None:
        text += f", measured eval loss {loss:.4f}"
    if result.get("reason"):
        text += f" ({result['reason']})"
    return f"{text}; trial folder: {trial_dir}"


def _check_out(path: Path) -> None:
    """``--out`` is a new or empty folder, or a trial folder (whose earlier files are kept as
    ``<name>.N``): never a folder of someone's other files."""
    from trainplan.runners._folders import is_trial_dir

    if path.exists() and not path.is_dir():
        raise UsageError("--out", f"{path} is a file; give a folder")
    if path.is_dir() and any(path.iterdir()) and not is_trial_dir(path):
        raise UsageError("--out", f"{path} is not empty and holds no trial (no spec.json); give a new or empty "
                                  "folder, or a trial folder to rerun in")


def _check_ranks(spec: Any) -> None:
    """On the CPU each rank is a process: more ranks than cores only thrash (and gloo may time out)."""
    cores = os.cpu_count() or 1
    if not gpu_present() and spec.layout.gpus > cores:
        raise UsageError("--gpus", f"{spec.layout.gpus} CPU ranks exceed this machine's {cores} cores (no GPU here); "
                                   f"use --gpus 1..{cores}")
