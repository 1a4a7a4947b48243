"""``trainplan calibrate``: fit the planner's constants to measured trials on one device and stack.

Examples::

    trainplan calibrate runs/run-*/ -o calibration.json              # trial folders
    trainplan calibrate runs/search-default -o calibration.json      # every trial of a search run
    trainplan calibrate --storage sqlite:///runs/search-default/study.db -o calibration.json
    trainplan plan --model trainplan-tiny --calibration calibration.json --micro-batch 64 --seq-len 128

Prints the fitted constants with their 90% intervals on stdout (``--format json``: the file's
content); trials that could not be used are listed on stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from trainplan.errors import UsageError

if TYPE_CHECKING:
    from trainplan.planner import Calibration, GPUSpec, Layout, Plan

__all__ = ["calibrate", "calibrated_dict", "calibrated_rows", "use_calibration"]


@click.command("calibrate")
@click.argument("run_dirs", nargs=-1, type=click.Path(file_okay=False, path_type=Path))
@click.option("--storage", metavar="URL", help="Optuna storage URL of a search, instead of RUN_DIR.")
@click.option("--study", "study_name", metavar="NAME", help="Study name (default: the storage's only study).")
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("calibration.json"),
              show_default=True, help="Calibration file to write.")
@click.option("--timing", type=click.Choice(["wall", "cpu"]), default="wall", show_default=True,
              help="tokens/s by the clock, or contention-free from rank 0's CPU-seconds (a shared machine).")
@click.option("--kernels/--no-kernels", default=True, show_default=True,
              help="CPU trials run on this machine: time the step's matmul and attention shapes here (once per "
                   "machine, ~15 s per rank count) and model the compute from them instead of one efficiency.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def calibrate(run_dirs: tuple[Path, ...], storage: str | None, study_name: str | None, out: Path, timing: str,
              kernels: bool, fmt: str) -> None:
    """Fit compute efficiency, exposed communication and memory overhead to measured trials."""
    from trainplan.cli._types import check_output_file
    from trainplan.planner import fit

    if bool(run_dirs) == bool(storage):
        raise UsageError("RUN_DIR", "give trial or search folders, or --storage URL (one of them)")
    check_output_file(out, "--out")  # before the fit, not after it
    skipped: list[str] = []
    if storage:
        import optuna

        from trainplan.cli.report import _study_name
        from trainplan.search._optuna import existing_storage_file
        from trainplan.search._points import study_points

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        existing_storage_file(storage)  # never create a storage just to read it
        study = optuna.load_study(study_name=_study_name(storage, study_name), storage=storage)
        points = study_points(study, skipped, timing)
        key = "--storage"
    else:
        from trainplan.runners._points import trial_points

        points = trial_points(run_dirs, skipped, timing)
        key = "RUN_DIR"
    # (fewer than 5 points: fit() refuses them anyway; no timing spent on them)
    if kernels and len(points) >= 5 and all(p.get("device", {}).get("kind") == "cpu" for p in points):
        from trainplan.runners._cpubench import with_cpu_kernels

        points, how = with_cpu_kernels(points)
        click.echo(f"trainplan calibrate: {how}", err=True)
    try:
        cal = fit(points, key=key)
    except UsageError as exc:  # one line: the refusal, and why trials were left out
        raise UsageError(exc.key, exc.message + (f" ({len(skipped)} skipped; first: {skipped[0]})" if skipped else "")) from None
    for why in skipped:
        click.echo(f"trainplan calibrate: skipped {why}", err=True)
    if timing == "wall" and cal.device.get("kind") == "cpu" and (ratio := _wall_over_cpu(points)) > 1.3:
        click.echo(f"trainplan calibrate: warning: a step took {ratio:.1f}x rank 0's CPU time by the clock (median "
                   "over the trials): the machine was shared, and wall timing fits the neighbours' load as well; "
                   "--timing cpu fits contention-free tokens/s (docs/protocol.md)", err=True)
    cal.save(out)
    click.echo(f"wrote {out} ({cal.trial_count()})", err=True)
    if fmt == "json":
        click.echo(json.dumps(cal.to_dict(), indent=1))
        return
    d = cal.device
    click.echo(f"calibration of {d['kind'].upper()} {d['name']} ({d['cores']} cores/SMs, "
               f"{d['memory_bytes'] / 2**30:.0f} GiB; matmul peak "
               f"{', '.join(f'{k} {v / 1e9:,.1f} GFLOP/s' for k, v in d['peak_flops'].items())}) from "
               f"{cal.trial_count()} ({cal.timing} timing); stack "
               f"{', '.join(f'{k} {v}' for k, v in cal.stack.items())}")
    for group in (cal.speed, cal.memory):
        for name, c in group.items():
            span = "not calibrated" if c.low != c.low else f"90% interval {c.low:.4g} - {c.high:.4g}"
            click.echo(f"  {name:<18} {c.value:>12.4g} {c.unit:<14} ({span}): {c.doc}")
    click.echo(f"  residual scatter: tokens/s {cal.residual['tokens_per_s']:.1%}, memory {cal.residual['memory']:.1%}")
    for note in cal.notes:
        click.echo(f"  note: {note}")


def _wall_over_cpu(points: list[dict[str, Any]]) -> float:
    """Median over the trials of a step's wall time over rank 0's CPU-seconds (1 on a machine the
    trials had to themselves; read from each trial's metrics.jsonl), 0 when not recorded."""
    import statistics

    from trainplan.runners._result import read_metrics

    ratios = []
    for p in points:
        if not p.get("source"):
            continue
        rows, _ = read_metrics(Path(p["source"]) / "metrics.jsonl")
        rows = [r for r in rows if r.get("step", 0) >= 2 and r.get("cpu_s") and r.get("tokens_per_s")]
        steps = [(b["tokens"] - a["tokens"]) / b["tokens_per_s"] / b["cpu_s"] for a, b in zip(rows, rows[1:])]
        if steps:
            ratios.append(statistics.median(steps))
    return statistics.median(ratios) if ratios else 0.0


# ``trainplan plan --calibration FILE`` ------------------------------------------------------------
def _same_gpu(device: dict[str, Any], gpu: GPUSpec) -> bool:
    """Whether a catalog GPU is the recorded GPU: its model (e.g. ``h100``) named in the device's
    name and the memory within 10%."""
    name = str(device.get("name", "")).lower().replace(" ", "")
    model = gpu.key.split("-")[0]
    mem = float(device.get("memory_bytes") or 0)
    return device.get("kind") == "gpu" and model in name and abs(mem / gpu.memory_bytes - 1) < 0.1


def use_calibration(o: dict[str, Any], layout: Layout, gpu: GPUSpec) -> tuple[Calibration, GPUSpec, Layout]:
    """Load and check ``--calibration``; return it, the calibrated device's profile and the layout
    (its precision defaults to the trials' when ``--precision`` was not given)."""
    from click.core import ParameterSource

    from trainplan.planner import load_calibration
    from trainplan.planner._device import device_label, software_stack

    ctx = click.get_current_context()
    cal = load_calibration(o["calibration"])
    cal.check(stack=software_stack())
    if ctx.get_parameter_source("gpu") == ParameterSource.COMMANDLINE and not _same_gpu(cal.device, gpu):
        raise UsageError("--calibration", f"calibrated on {device_label(cal.device)}, not {gpu.name} "
                                          f"(--gpu {o['gpu']}); drop --gpu to plan on the calibrated device")
    if ctx.get_parameter_source("precision") != ParameterSource.COMMANDLINE:
        layout = layout.with_(precision=cal.ranges["precision"][0])
    return cal, cal.profile(layout.gpus), layout


def calibrated_dict(cal: Calibration, p: Plan, path: str) -> dict[str, Any]:
    """The ``calibrated`` object of ``plan --format json``: each calibrated figure with its 90%
    prediction interval and the uncalibrated estimate, and where the calibration came from."""
    c = cal.apply(p)
    return {
        "calibration": {"file": str(path), "device": cal.device, "stack": cal.stack,
                        "trials": [i for t in cal.trials for i in t.get("repeats", [t["id"]])],
                        "constants": {k: {"value": v.value, "low": v.low, "high": v.high, "unit": v.unit}
                                      for g in (cal.speed, cal.memory) for k, v in g.items()},
                        "not_calibrated": cal.uncalibrated(), "notes": cal.notes},
        "interval": "90% prediction interval",
        "timing": cal.timing,
        "tokens_per_s": _figure(c.tokens_per_s), "step_time_s": _figure(c.step_time_s),
        "peak_memory_bytes": {**_figure(c.memory_bytes), "measured_as": "max_memory_allocated on a GPU; on the CPU "
                              "the peak allocated bytes (the preloaded allocation counter; the resident set without it) from "
                              "the model build, per rank (docs/protocol.md)"},
        "compute_efficiency": c.efficiency,
        "fits_upper_bound": c.memory_bytes.high <= p.gpu.memory_bytes,
        "outside_data": c.outside_data,
    }


def _figure(fig: Any) -> dict[str, float]:
    return {k: getattr(fig, k) for k in ("value", "low", "high", "uncalibrated")}


def calibrated_rows(cal: Calibration, p: Plan) -> list[list[str]]:
    from trainplan.cli._format import human_bytes

    c = cal.apply(p)
    t, s, m = c.tokens_per_s, c.step_time_s, c.memory_bytes
    rows = [
        ["throughput", f"{t.value:,.0f} tokens/s (90% PI {t.low:,.0f} - {t.high:,.0f}); uncalibrated {t.uncalibrated:,.0f}"],
        ["step time", f"{s.value:.4g} s (90% PI {s.low:.4g} - {s.high:.4g}); uncalibrated {s.uncalibrated:.4g}; "
                      f"compute efficiency {c.efficiency:.1%}"],
        ["peak memory / rank", f"{human_bytes(m.value)} (90% PI {human_bytes(m.low)} - {human_bytes(m.high)}); "
                               f"uncalibrated (allocated) {human_bytes(m.uncalibrated)}; upper bound "
                               + ("fits" if m.high <= p.gpu.memory_bytes else "DOES NOT FIT")],
        ["from", f"{cal.trial_count()} on {cal.device['name']}, {cal.timing} timing"
                 + (f"; not calibrated: {', '.join(cal.uncalibrated())}" if cal.uncalibrated() else "")],
    ]
    rows.append(["outside the data", "; ".join(c.outside_data) if c.outside_data else "no: within the trials' range"])
    return rows
