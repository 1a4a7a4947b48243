"""``trainplan run``: one real training trial through the ``deepspeed`` launcher.

    trainplan run                                   # default task: tiny Llama on stdlib bytes, 100 steps
    trainplan run --gpus 2 --zero 2 --lr 1e-3       # two ranks (CPU processes where there is no GPU)
    trainplan run --spec trial.json --steps 300     # flags override the file, the file the defaults

Progress (step, loss, tokens/s) goes to stderr from ``metrics.jsonl``; the final ``result.json``
goes to stdout as JSON. The exit code is the launcher's (124 for --timeout).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from trainplan.cli._help import field_help
from trainplan.cli._types import Count, Finite
from trainplan.errors import UsageError
from trainplan.planner import ZERO_STAGES, Hyperparams, Layout
from trainplan.runners._device import cpu_ranks_exceed_cores, gpu_present
from trainplan.runners._spec import SPEC_FLAGS, TrialSpec, resolve_spec, spec_default

__all__ = ["run"]

_SECTIONS: dict[str | None, type] = {None: TrialSpec, "layout": Layout, "hyperparams": Hyperparams}


def _doc(option: str) -> str:
    """The help of a spec option: its field's docstring and the runner's default (runners/_spec.py)."""
    section, name = SPEC_FLAGS[option]
    return field_help(_SECTIONS[section], name, spec_default(section, name))


@click.command()
@click.option("--spec", "spec", type=click.Path(dir_okay=False), help="Trial spec JSON; flags override its values.")
@click.option("--model", help=_doc("model"))
@click.option("--data", help=_doc("data"))
@click.option("--text-key", help=_doc("text_key"))
@click.option("--tokenizer", help=_doc("tokenizer"))
@click.option("--steps", type=Count(), help=_doc("steps"))
@click.option("--seq-len", type=Count(1, 2**24), help=_doc("seq_len"))
@click.option("--micro-batch", type=Count(), help=_doc("micro_batch"))
@click.option("--grad-accum", type=Count(), help=_doc("grad_accum"))
@click.option("--global-batch", type=Count(), help="Sequences per step; sets --grad-accum.")
@click.option("--lr", type=Finite(0, 10, low_open=True), help=_doc("lr"))
@click.option("--min-lr-ratio", type=Finite(0, 1), help=_doc("min_lr_ratio"))
@click.option("--weight-decay", type=Finite(0, 10), help=_doc("weight_decay"))
@click.option("--warmup-steps", type=Count(0), help=_doc("warmup_steps"))
@click.option("--schedule", help=_doc("schedule"))
@click.option("--beta1", type=Finite(0, 1, high_open=True), help="AdamW beta1. [default: 0.9]")
@click.option("--beta2", type=Finite(0, 1, high_open=True), help="AdamW beta2. [default: 0.95]")
@click.option("--eps", type=Finite(0, 1, low_open=True), help=_doc("eps"))
@click.option("--grad-clip", type=Finite(0, 1e6), help=_doc("grad_clip"))
@click.option("--dropout", type=Finite(0, 1, high_open=True), help=_doc("dropout"))
@click.option("--zero", type=click.IntRange(min(ZERO_STAGES), max(ZERO_STAGES)), help=_doc("zero"))
@click.option("--offload", help="none, cpu or nvme (needs --zero >= 1).")
@click.option("--precision", help="fp32, bf16 or fp16. [default: bf16 on a GPU, fp32 on the CPU]")
@click.option("--attention", help=_doc("attention"))
@click.option("--gpus", type=Count(1, 2**20), help="GPUs to use; on the CPU, the number of ranks. [default: 1]")
@click.option("--include", "include", help="Passed to deepspeed --include (e.g. localhost:0,1).")
@click.option("--hostfile", type=click.Path(dir_okay=False), help="Passed to deepspeed --hostfile.")
@click.option("--seed", type=Count(0, 2**32 - 1), help=_doc("seed"))
@click.option("--eval-every", type=Count(), help=_doc("eval_every"))
@click.option("--eval-tokens", type=Count(), help=_doc("eval_tokens"))
@click.option("--log-every", type=Count(), help=_doc("log_every"))
@click.option("--max-data-bytes", type=Count(1, 2**40), help=_doc("max_data_bytes"))
@click.option("--timeout", type=Finite(0, 10**9, low_open=True), help=_doc("timeout"))
@click.option("--estimate-gpu", help=_doc("estimate_gpu"))
@click.option("--out", type=click.Path(file_okay=False), help="Trial folder. [default: $TRAINPLAN_RUNS/run-<time>]")
@click.option("--dry-run", is_flag=True, help="Write the trial folder and print the command; do not launch.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(**options: Any) -> None:
    """Run one real training trial through the deepspeed launcher."""
    from trainplan.paths import new_run_dir
    from trainplan.runners import ops_compiled, prepare_trial
    from trainplan.runners._data import check_data
    from trainplan.runners._folders import check_trial_folder

    spec = resolve_spec(options, options["spec"])
    # The data is read and checked here, before any process starts (launch_trial checks it again).
    check_data(spec.data, text_key=spec.text_key, tokenizer=spec.tokenizer, max_bytes=spec.max_data_bytes,
               seq_len=spec.layout.seq_len, eval_tokens=spec.eval_tokens)
    if options["hostfile"] and not Path(options["hostfile"]).is_file():
        raise UsageError("--hostfile", f"{options['hostfile']} does not exist")
    if options["out"]:
        check_trial_folder(Path(options["out"]), "--out")
    cores = cpu_ranks_exceed_cores(spec.layout.gpus)
    if cores and not (options["hostfile"] or options["include"]):  # other hosts have their own cores
        raise UsageError("--gpus", f"{spec.layout.gpus} CPU ranks exceed this machine's {cores} cores (no GPU here); "
                                   f"use --gpus 1..{cores}")
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
    warning = _host_memory_warning(spec)
    if warning:
        click.echo(f"trainplan run: {warning}", err=True)
    if not ops_compiled():
        say("first DeepSpeed run on this machine: compiling its C++ ops (about 100 s on a small CPU); "
            "later runs start in seconds")
    result, signal_code = _launch_watched(spec, trial_dir, launch, quiet=options["quiet"])
    click.echo(json.dumps(result, indent=2))
    say(_summary(result, trial_dir))
    if signal_code is not None:
        raise click.exceptions.Exit(signal_code)
    code = result["exit_code"]
    if result["status"] == "timeout":
        code = 124  # coreutils timeout's convention
    elif code is not None and code < 0:
        code = 128 - code  # killed by a signal: the shell's 128 + N
    if code:
        raise click.exceptions.Exit(code)


def _host_memory_warning(spec: TrialSpec) -> str | None:
    """On the CPU, whether the ranks' estimated memory exceeds what the host has free."""
    from trainplan.runners._spec import is_checkpoint

    if gpu_present() or is_checkpoint(spec.model):
        return None
    from trainplan.planner import load_model
    from trainplan.runners._device import host_memory_warning

    return host_memory_warning(load_model(spec.model), spec.layout)


def _launch_watched(spec: TrialSpec, trial_dir: Path, launch: dict[str, Any], *,
                    quiet: bool) -> tuple[dict[str, Any], int | None]:
    """Launch the trial and follow it to its end; returns its result and, when a signal stopped
    it, the exit code for that signal.

    As for search trials: the watchdog ends the trial's process group if this process dies (even
    by SIGKILL); SIGTERM/SIGINT/SIGHUP stop the whole tree here and record ``terminated``.
    """
    from trainplan.cli._signals import ignore_signals, interrupt_on_signals
    from trainplan.runners import adopt_orphans, launch_trial
    from trainplan.search._guard import OrphanGuard

    adopt_orphans()  # a stopped trial's ranks come back here to be waited for, not to init
    guard = OrphanGuard()
    signals = interrupt_on_signals()
    handle = None
    try:
        with signals:
            handle = launch_trial(spec, trial_dir, **launch)
            guard.watch(handle.pid)
            _follow(handle, spec, quiet=quiet)
    except KeyboardInterrupt:
        ignore_signals()  # a second signal must not cut the stop short
        if handle is None:
            guard.close()
            raise click.exceptions.Exit(signals.exit_code) from None
        handle.stop(10.0)
        result = handle.finalize()
        guard.release(handle.pid)
        guard.close()
        return result, signals.exit_code
    except BaseException:
        guard.close()
        raise
    guard.release(handle.pid)
    guard.close()
    return handle.finalize(), None


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
