"""Leave-one-out check of the calibration on real CPU trials (issue 13, "Measure").

    .venv/bin/python benchmarks/calibration.py --out runs/calibration-bench      # run the trials, then fit
    .venv/bin/python benchmarks/calibration.py --out runs/calibration-bench --reuse   # fit only
    .venv/bin/python benchmarks/calibration.py --out runs/calibration-bench --reuse --timing cpu --no-kernels
    # each configuration 3 times, ~24 s of steps a trial, in pieces (a pass over the grid each), then the fit:
    .venv/bin/python benchmarks/calibration.py --out runs/cal3 --repeats 1 --steps 20 --seconds 24 --grid 0:18
    .venv/bin/python benchmarks/calibration.py --out runs/cal3 --repeats 2 --steps 20 --seconds 24 --grid 0:18 --reuse
    .venv/bin/python benchmarks/calibration.py --out runs/cal3 --repeats 3 --steps 20 --seconds 24 --grid 0:18 --reuse
    .venv/bin/python benchmarks/calibration.py --out runs/cal3 --repeats 3 --steps 20 --seconds 24 --reuse

Runs 18 real ``trainplan run`` DeepSpeed trials of the built-in task on this machine's CPU,
spanning micro-batch, sequence length, model width (64/128/256), ZeRO stage 0-3 and 1-2 ranks
(one thread per rank; ZeRO-3 on one rank twice and on two ranks four times, twice at width 256, so
that leaving one out still leaves its terms identified), reads their points the way ``trainplan calibrate`` does,
attaches this machine's CPU kernel timings (runners/_cpubench.py, measured once per machine and
rank count, as ``trainplan calibrate`` does; ``--no-kernels``: FLOPs over the matmul peak instead),
and for each trial fits a calibration on the other 17 and predicts it (or reports the refusal
when the others cannot identify a term it needs). Prints the median and worst relative error of tokens/s and peak
memory, calibrated and uncalibrated (the planner on the device profile the trials recorded, its
assumed efficiency and its allocated bytes). Target (issue 13): median <= 5%, worst <= 10%.

``--repeats R`` runs each configuration R times, round-robin (the whole grid once, then again), so
that a slow spell of a shared machine falls on every configuration alike; repeat k > 0 is the folder
``<name>-rep<k>``. The held-out unit is then a configuration with all its repeats: each
configuration enters the fit as one point, the median of its repeats (tokens/s and peak memory), and
the prediction is compared with the held-out configuration's median. One point per configuration,
not one per repeat, because the fit's pairs bootstrap and its too-few/too-alike checks count points
as independent layouts: repeats counted apart would narrow the intervals with pseudo-replicates and
let 3 layouts run twice pass a 5-trial minimum (the least-squares centre is the same either way with
equal repeats). Beside it the run prints the repeat-to-repeat spread of each configuration (max /
min - 1), the noise floor to read the leave-one-out errors against, and the leave-one-out of each
repeat alone (R = 1 from the same trials).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path

from trainplan.errors import UsageError
from trainplan.planner import fit, load_model
from trainplan.planner._calibration import _plan_point, merge_repeats
from trainplan.runners import TrialSpec, run_trial
from trainplan.runners._cpubench import with_cpu_kernels
from trainplan.runners._points import trial_points

# (width, micro-batch, seq-len, ZeRO stage, ranks)
GRID = [(128, 16, 128, 0, 1), (128, 4, 128, 0, 1), (128, 32, 64, 1, 1), (64, 16, 256, 2, 1),
        (256, 8, 128, 0, 1), (256, 16, 64, 3, 1), (128, 4, 256, 0, 2), (128, 8, 128, 2, 2),
        (64, 4, 128, 0, 1), (256, 4, 128, 1, 2), (128, 64, 32, 0, 1), (64, 8, 128, 3, 2),
        (128, 8, 128, 3, 1), (128, 4, 128, 3, 2), (256, 4, 64, 3, 2), (64, 8, 256, 1, 1),
        (256, 8, 64, 3, 2), (256, 4, 256, 2, 1)]
"""The last two were added so that holding out any one width-256 trial leaves its terms measured at
that width: with one 2-rank ZeRO-3 trial at width 256, holding it out left its per-layer gathers 4x
beyond every other trial's (the 26.5% worst miss of the 16-configuration grid)."""
STEPS = 6
"""Steps a trial runs (``--steps``). Tokens/s is the median step after the first (wall) or the median
of steps 3+ (CPU timing: each CPU-timed step is the difference of two records), runners/_points.py."""
STEP_S = {(128, 16, 128, 0, 1): 0.395, (128, 4, 128, 0, 1): 0.112, (128, 32, 64, 1, 1): 0.362,
          (64, 16, 256, 2, 1): 0.303, (256, 8, 128, 0, 1): 0.503, (256, 16, 64, 3, 1): 0.665,
          (128, 4, 256, 0, 2): 0.235, (128, 8, 128, 2, 2): 0.242, (64, 4, 128, 0, 1): 0.053,
          (256, 4, 128, 1, 2): 0.383, (128, 64, 32, 0, 1): 0.344, (64, 8, 128, 3, 2): 0.209,
          (128, 8, 128, 3, 1): 0.246, (128, 4, 128, 3, 2): 0.245, (256, 4, 64, 3, 2): 0.396,
          (64, 8, 256, 1, 1): 0.162, (256, 8, 64, 3, 2): 0.55, (256, 4, 256, 2, 1): 0.6}
"""Seconds a step of each configuration took on the 2-core machine this benchmark was written on
(median of the 2026-11-28 repeats, 20 steps each; the last two estimated), used only to choose
``--seconds``' step counts. The machine's speed wanders with a long correlation time (one process
training the width-128 model for 4 minutes: medians of 5 s windows vary 8.1% (sd), of 30 s windows
6.4%, of 60 s windows 1.9%; repeats of 20 steps, 1-13 s, disagreed by up to 37% on a quiet machine),
so a trial's timed steps must span tens of seconds, whatever the step's own length."""


def steps_for(config: tuple[int, int, int, int, int], seconds: float | None, steps: int) -> int:
    """Steps of one configuration: ``steps``, or with ``seconds`` enough for that many seconds of
    steps (by :data:`STEP_S`), never fewer than ``steps``."""
    if seconds is None:
        return steps
    return max(steps, math.ceil(seconds / STEP_S[config]))
ENV = {"OMP_NUM_THREADS": "1"}
"""One thread per rank: on a 2-core machine shared with other work, a rank's two OpenMP threads
spin-wait for each other (10x the CPU-seconds per step measured here, and 5x slower by the clock)."""


def model_config(out: Path, width: int) -> str:
    """A config.json for the built-in Llama at another width (heads of 32 dims, MLP 2.75x)."""
    cfg = {**load_model("trainplan-tiny").hf_config, "hidden_size": width, "intermediate_size": int(width * 2.75),
           "num_attention_heads": width // 32, "num_key_value_heads": width // 32}
    path = out / "models" / f"width{width}" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg, indent=2) + "\n")
    return str(path)


REP = re.compile(r"-rep(\d+)$")


def trial_name(config: tuple[int, int, int, int, int], rep: int = 0) -> str:
    """The folder of one trial: ``w128-mb16-s128-z0-r1`` for the first repeat, ``...-rep<k>`` after."""
    width, mb, seq, zero, ranks = config
    return f"w{width}-mb{mb}-s{seq}-z{zero}-r{ranks}" + (f"-rep{rep}" if rep else "")


def config_of(name: str) -> str:
    """The configuration a trial folder belongs to (its name without ``-rep<k>``)."""
    return REP.sub("", name)


def rep_of(name: str) -> int:
    m = REP.search(name)
    return int(m.group(1)) if m else 0


def schedule(grid: list[tuple[int, int, int, int, int]], repeats: int) -> list[tuple[int, tuple[int, ...]]]:
    """(repeat, configuration) in the order they run: round-robin, every configuration once per pass."""
    return [(rep, config) for rep in range(repeats) for config in grid]


def _done(d: Path, steps: int) -> bool:
    """A completed trial whose steps recorded CPU-seconds (both timings can be read from it). One of
    another step count is an error: it would be mixed with these as if it measured the same."""
    try:
        ok = json.loads((d / "result.json").read_text())["status"] == "completed"
        ran = json.loads((d / "spec.json").read_text())["steps"]
        done = ok and "cpu_s" in (d / "metrics.jsonl").read_text()
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if done and ran != steps:
        raise UsageError("--steps", f"{steps} for {d.name}, but {d} ran {ran} steps; give the --steps "
                                    "and --seconds it ran with, or another --out")
    return done


def run_grid(out: Path, reuse: bool, grid: slice = slice(None), repeats: int = 1, steps: int = STEPS,
             seconds: float | None = None) -> list[Path]:
    dirs = []
    for rep, config in schedule(GRID[grid], repeats):
        width, mb, seq, zero, ranks = config
        d = out / trial_name(config, rep)
        dirs.append(d)
        n = steps_for(config, seconds, steps)
        if reuse and _done(d, n):
            continue
        spec = TrialSpec(model=model_config(out, width), steps=n, eval_every=1000, eval_tokens=4096,
                         layout={"gpus": ranks, "zero": zero, "micro_batch": mb, "seq_len": seq, "precision": "fp32"})
        t0 = time.perf_counter()
        result = run_trial(spec, d, env=ENV)
        print(f"{time.strftime('%H:%M:%S', time.gmtime())} {d.name}: {result['status']} "
              f"{result.get('tokens_per_s') or 0:,.0f} tokens/s (mean), "
              f"{(result.get('peak_mem_bytes') or 0) / 2**20:.0f} MiB, {time.perf_counter() - t0:.0f} s, "
              f"load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    return dirs


def group_repeats(points: list[dict]) -> list[dict]:
    """One point per configuration: the median of its repeats' tokens/s and peak memory, as the fit
    itself merges them (planner ``merge_repeats``), named by the configuration (``config_of``), with
    the repeats in repeat order. Repeats of one name that ran different layouts are refused."""
    points = sorted(points, key=lambda p: rep_of(p["id"]))  # stable: repeat 0 of every configuration first
    groups = merge_repeats(points)
    names = [config_of(g["id"]) for g in groups]
    for g, name in zip(groups, names):
        if names.count(name) > 1 or any(config_of(i) != name for i in g.get("repeats", {}).get("ids", [])):
            raise UsageError("--out", f"the trials named {name}(-rep<k>) ran different layouts or models")
    return [{**g, "id": name, "repeats": g.get("repeats") or
             {"ids": [g["id"]], "tokens_per_s": [g["tokens_per_s"]], "peak_mem_bytes": [g["peak_mem_bytes"]]}}
            for g, name in zip(groups, names)]


def spread(groups: list[dict]) -> dict[str, dict[str, float]]:
    """Repeat-to-repeat spread (max / min - 1) of tokens/s and peak memory per configuration with 2+
    repeats: the noise floor of one configuration's median, measured in the same run."""
    return {g["id"]: {k: max(v) / min(v) - 1 for k, v in g["repeats"].items() if k != "ids"}
            for g in groups if len(g["repeats"]["ids"]) > 1}


def loo(points: list[dict], table: bool = True) -> dict[str, list[float]]:
    """Relative errors (predicted / measured - 1) of each held-out trial the calibration of the
    others predicts (refusals are counted, not predicted; ``table``: print them and each prediction)."""
    err: dict[str, list[float]] = {k: [] for k in ("tps_cal", "tps_uncal", "mem_cal", "mem_uncal", "tps_in", "mem_in",
                                                   "inside", "refused", "zero")}
    rows = []
    for i, held in enumerate(points):
        try:
            cal = fit(points[:i] + points[i + 1:])
        except UsageError as exc:  # the other trials cannot identify the constants without this one
            if table:
                print(f"- {held['id']} held out: no calibration ({exc.message})")
            err["refused"].append(held["id"])
            continue
        p = _plan_point(held, held["device"])
        try:
            c = cal.apply(p)
        except UsageError as exc:
            if table:
                print(f"- {held['id']} held out: refused ({exc.message})")
            err["refused"].append(held["id"])
            continue
        tps, mem = float(held["tokens_per_s"]), float(held["peak_mem_bytes"])
        e = {"tps_cal": c.tokens_per_s.value / tps - 1, "tps_uncal": c.tokens_per_s.uncalibrated / tps - 1,
             "mem_cal": c.memory_bytes.value / mem - 1, "mem_uncal": c.memory_bytes.uncalibrated / mem - 1,
             "tps_in": float(c.tokens_per_s.low <= tps <= c.tokens_per_s.high),
             "mem_in": float(c.memory_bytes.low <= mem <= c.memory_bytes.high), "inside": float(not c.outside_data),
             "zero": float(p.layout.zero)}
        for k, v in e.items():
            err[k].append(v)
        rows.append((held["id"], tps, c.tokens_per_s, mem, c.memory_bytes, c.outside_data))
    if not table:
        return err
    print("| trial | tokens/s measured | calibrated (90% PI) | uncalibrated | peak MiB measured | calibrated (90% PI) "
          "| uncalibrated (allocated) | outside data |")
    print("|---|---|---|---|---|---|---|---|")
    for tid, tps, ct, mem, cm, out in rows:
        print(f"| {tid} | {tps:,.0f} | {ct.value:,.0f} ({ct.low:,.0f}-{ct.high:,.0f}) | {ct.uncalibrated:,.0f} "
              f"| {mem / 2**20:.1f} | {cm.value / 2**20:.1f} ({cm.low / 2**20:.1f}-{cm.high / 2**20:.1f}) "
              f"| {cm.uncalibrated / 2**20:.1f} | {'; '.join(out) or '-'} |")
    return err


def _grid_slice(text: str) -> slice:
    try:
        parts = [int(x) if x.strip() else None for x in text.split(":")]
        if len(parts) != 2:
            raise ValueError
    except ValueError:
        raise UsageError("--grid", f"{text!r}; give a slice of the {len(GRID)} configurations as a:b, e.g. 0:8") from None
    return slice(*parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/calibration-bench", help="folder for the trials")
    ap.add_argument("--reuse", action="store_true", help="keep completed trials already in --out")
    ap.add_argument("--grid", default=":", help="run only this slice of the grid, e.g. 0:6, every repeat (no fit)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs of each configuration, round-robin over the grid; repeat k>0 in <name>-rep<k> (default 1)")
    ap.add_argument("--steps", type=int, default=STEPS, help=f"steps per trial, 4 or more (default {STEPS})")
    ap.add_argument("--seconds", type=float, default=None,
                    help="run each configuration for about this many seconds of steps (at least --steps): "
                         "the step counts come from this machine's step times (STEP_S)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="more environment for the trials, e.g. MALLOC_MMAP_THRESHOLD_=65536")
    ap.add_argument("--no-kernels", action="store_true",
                    help="calibrate without the CPU kernel timings (FLOPs over the matmul peak, the old model)")
    ap.add_argument("--timing", choices=["wall", "cpu", "both"], default="both", help="which timings to fit")
    ap.add_argument("--trials", nargs="+", type=Path, metavar="DIR",
                    help="leave-one-out over these finished trial folders instead of the CPU grid (e.g. the GPU "
                         "check's trials: the clock's timing, no CPU kernels)")
    args = ap.parse_args()
    try:
        return _main(args)
    except UsageError as exc:
        print(f"calibration: error: {exc}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise UsageError("--repeats", f"{args.repeats}; give 1 or more")
    if args.steps < 4:  # the CPU timing needs 2+ timed steps after the two it leaves out
        raise UsageError("--steps", f"{args.steps}; give 4 or more")
    if args.seconds is not None and not (math.isfinite(args.seconds) and 0 < args.seconds <= 3600):
        raise UsageError("--seconds", f"{args.seconds}; give a number of seconds in (0, 3600]")
    if args.trials:
        args.timing, args.no_kernels = "wall", True
        dirs = sorted(args.trials)
        print(f"{len(dirs)} trial folders given; clock timing")
        return _fit_report(dirs, args)
    if bad := [kv for kv in args.env if "=" not in kv]:
        raise UsageError("--env", f"{bad[0]!r}; give KEY=VALUE")
    ENV.update(kv.split("=", 1) for kv in args.env)
    grid = _grid_slice(args.grid)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.grid != ":":
        run_grid(out, args.reuse, grid, args.repeats, args.steps, args.seconds)
        return 0
    dirs = run_grid(out, args.reuse, repeats=args.repeats, steps=args.steps, seconds=args.seconds)
    steps = f"{args.steps} steps each" if args.seconds is None else \
        f"about {args.seconds:g} s of steps each ({min(steps_for(c, args.seconds, args.steps) for c in GRID)}-" \
        f"{max(steps_for(c, args.seconds, args.steps) for c in GRID)} steps)"
    print(f"{len(dirs)} trials ({len(GRID)} configurations x {args.repeats}, {steps}); "
          f"load average now {os.getloadavg()[0]:.1f}; {contention(dirs)}")
    return _fit_report(dirs, args)


def _fit_report(dirs: list[Path], args: argparse.Namespace) -> int:
    status = 0
    for timing in ("wall", "cpu") if args.timing == "both" else (args.timing,):
        print(f"\n## {timing} timing: " + ("tokens/s by the clock" if timing == "wall" else
              "contention-free tokens/s (each step's tokens over rank 0's CPU-seconds / its threads)") + "\n")
        try:
            points = trial_points(dirs, timing=timing)
            if not args.no_kernels:
                points, how = with_cpu_kernels(points)
                print(how + "\n")
            groups = group_repeats(points)
            if len(groups) < len(points):
                print_spread(groups)
            status = max(status, report(groups))
            reps = sorted({rep_of(p["id"]) for p in points})
            if len(reps) > 1:
                print("\nThe same, each repeat alone (one trial per configuration, R = 1, from the same run):")
                for k in reps:
                    alone = [p for p in points if rep_of(p["id"]) == k]
                    err = loo(alone, table=False)
                    print(f"- repeat {k} ({len(alone)} trials): tokens/s {_med_worst(err['tps_cal'])}, peak memory {_med_worst(err['mem_cal'])} "
                          f"({len(err['tps_cal'])} predicted"
                          + (f"; refused: {', '.join(err['refused'])})" if err["refused"] else ")"))
        except UsageError as exc:
            print(f"calibration: error: {exc}", file=sys.stderr)
            status = 2
    return status


def _med_worst(errors: list[float]) -> str:
    return f"median {statistics.median(abs(e) for e in errors):.1%} / worst {max(abs(e) for e in errors):.1%}" \
        if errors else "none predicted"


def print_spread(groups: list[dict]) -> None:
    """The repeats of each configuration and their spread (max / min - 1): the noise floor."""
    s = spread(groups)
    print("| configuration | repeats | tokens/s per repeat | spread | peak MiB per repeat | spread |")
    print("|---|---|---|---|---|---|")
    for g in groups:
        r = g["repeats"]
        print(f"| {g['id']} | {len(r['ids'])} | {' / '.join(f'{v:,.0f}' for v in r['tokens_per_s'])} | "
              + (f"{s[g['id']]['tokens_per_s']:.1%}" if g["id"] in s else "-") + " | "
              + " / ".join(f"{v / 2**20:.1f}" for v in r["peak_mem_bytes"]) + " | "
              + (f"{s[g['id']]['peak_mem_bytes']:.1%}" if g["id"] in s else "-") + " |")
    if s:
        print(f"\nrepeat-to-repeat spread (max/min - 1) over {len(s)} configurations: tokens/s median "
              f"{statistics.median(v['tokens_per_s'] for v in s.values()):.1%}, worst "
              f"{max(v['tokens_per_s'] for v in s.values()):.1%}; peak memory median "
              f"{statistics.median(v['peak_mem_bytes'] for v in s.values()):.1%}, worst "
              f"{max(v['peak_mem_bytes'] for v in s.values()):.1%}")
    if len({len(g["repeats"]["ids"]) for g in groups}) > 1:
        print("(configurations have different numbers of repeats: a piece of the run is missing)")
    print()


def contention(dirs: list[Path]) -> str:
    """Wall-clock over rank 0's CPU-seconds per step (median over steps 2+, then over trials; 1 on a
    machine the trial had to itself) and the load averages the trials started at."""
    ratios, loads = [], []
    for d in dirs:
        rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines() if x.strip()]
        rows = [r for r in rows if r.get("step", 0) >= 2 and r.get("cpu_s")]
        walls = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(rows, rows[1:])]
        ratios += [statistics.median(w / b["cpu_s"] for w, b in zip(walls, rows[1:]))] if walls else []
        load = json.loads((d / "result.json").read_text()).get("device", {}).get("load_avg_1m")
        loads += [load] if load is not None else []
    return (f"wall / CPU time per step: median {statistics.median(ratios):.2f}, range {min(ratios):.2f}-"
            f"{max(ratios):.2f}; 1-min load average at trial start "
            + (f"{min(loads):.1f}-{max(loads):.1f}" if loads else "not recorded"))


def report(points: list[dict]) -> int:
    full = fit(points)
    n_trials = sum(len(p.get("repeats", {}).get("ids", [p["id"]])) for p in points)
    what = f"{len(points)} configurations ({n_trials} real trials, each configuration the median of its repeats)" \
        if n_trials > len(points) else f"{len(points)} real trials"
    print(f"{what} on {full.device['name']} ({full.device['cores']} cores), "
          f"stack {full.stack}; matmul peak {full.device['peak_flops']['fp32'] / 1e9:.1f} GFLOP/s\n")
    for group in (full.speed, full.memory):
        for name, c in group.items():
            print(f"- {name} = {c.value:.4g} (90% interval {c.low:.4g}-{c.high:.4g}) {c.unit}")
    print(f"- residual sd: tokens/s {full.residual['tokens_per_s']:.1%}, memory {full.residual['memory']:.1%}\n")
    err = loo(points)
    print()

    def line(name: str, cal: list[float], uncal: list[float]) -> str:
        med = statistics.median
        return (f"{name}: calibrated median {med(abs(e) for e in cal):.1%} worst {max(abs(e) for e in cal):.1%}; "
                f"uncalibrated median {med(abs(e) for e in uncal):.1%} worst {max(abs(e) for e in uncal):.1%}")

    print("LOO " + line("tokens/s", err["tps_cal"], err["tps_uncal"]))
    print("LOO " + line("peak memory", err["mem_cal"], err["mem_uncal"]))
    n = len(err["inside"])
    print(f"{n} of {len(points)} held-out trials predicted (the rest refused above)")
    print(f"held-out measurements inside the 90% prediction interval: tokens/s {sum(err['tps_in']):.0f}/{n}, "
          f"memory {sum(err['mem_in']):.0f}/{n}")
    zero0 = [i for i, z in enumerate(err["zero"]) if z == 0]
    if zero0 and len(zero0) < n:
        # DeepSpeed's 5e8-element gradient buckets (ZeRO-1-3) can be most of those trials' allocated bytes
        # and are easy to predict; the ZeRO-0 trials are states, activations and logits only.
        print(f"  peak memory of the {len(zero0)} ZeRO-0 held-out trials (no gradient buckets): "
              + line("LOO", [err["mem_cal"][i] for i in zero0], [err["mem_uncal"][i] for i in zero0]))
    inside = [i for i, v in enumerate(err["inside"]) if v]
    if inside and len(inside) < n:
        sub = {k: [v[i] for i in inside] for k, v in err.items() if k != "refused"}
        print(f"the {len(inside)} held-out trials the calibration did not flag as outside its data:")
        print("  LOO " + line("tokens/s", sub["tps_cal"], sub["tps_uncal"]))
        print("  LOO " + line("peak memory", sub["mem_cal"], sub["mem_uncal"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
