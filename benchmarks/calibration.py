"""Leave-one-out check of the calibration on real CPU trials (issue 13, "Measure").

    .venv/bin/python benchmarks/calibration.py --out runs/calibration-bench      # run the trials, then fit
    .venv/bin/python benchmarks/calibration.py --out runs/calibration-bench --reuse   # fit only
    .venv/bin/python benchmarks/calibration.py --out runs/calibration-bench --reuse --timing cpu --no-kernels

Runs 16 real ``trainplan run`` DeepSpeed trials of the built-in task on this machine's CPU,
spanning micro-batch, sequence length, model width (64/128/256), ZeRO stage 0-3 and 1-2 ranks
(one thread per rank; ZeRO-3 on one rank twice and on two ranks three times, so that leaving one
out still leaves its terms identified), reads their points the way ``trainplan calibrate`` does,
attaches this machine's CPU kernel timings (runners/_cpubench.py, measured once per machine and
rank count, as ``trainplan calibrate`` does; ``--no-kernels``: FLOPs over the matmul peak instead),
and for each trial fits a calibration on the other 15 and predicts it (or reports the refusal
when the others cannot identify a term it needs). Prints the median and worst relative error of tokens/s and peak
memory, calibrated and uncalibrated (the planner on the device profile the trials recorded, its
assumed efficiency and its allocated bytes). Target (issue 13): median <= 5%, worst <= 10%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from trainplan.errors import UsageError
from trainplan.planner import fit, load_model
from trainplan.planner._calibration import _plan_point
from trainplan.runners import TrialSpec, run_trial
from trainplan.runners._cpubench import with_cpu_kernels
from trainplan.runners._points import trial_points

# (width, micro-batch, seq-len, ZeRO stage, ranks)
GRID = [(128, 16, 128, 0, 1), (128, 4, 128, 0, 1), (128, 32, 64, 1, 1), (64, 16, 256, 2, 1),
        (256, 8, 128, 0, 1), (256, 16, 64, 3, 1), (128, 4, 256, 0, 2), (128, 8, 128, 2, 2),
        (64, 4, 128, 0, 1), (256, 4, 128, 1, 2), (128, 64, 32, 0, 1), (64, 8, 128, 3, 2),
        (128, 8, 128, 3, 1), (128, 4, 128, 3, 2), (256, 4, 64, 3, 2), (64, 8, 256, 1, 1)]
STEPS = 6
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


def _done(d: Path) -> bool:
    """A completed trial whose steps recorded CPU-seconds (both timings can be read from it)."""
    try:
        ok = json.loads((d / "result.json").read_text())["status"] == "completed"
        return ok and "cpu_s" in (d / "metrics.jsonl").read_text()
    except (OSError, ValueError, KeyError):
        return False


def run_grid(out: Path, reuse: bool, grid: slice = slice(None)) -> list[Path]:
    dirs = []
    for width, mb, seq, zero, ranks in GRID[grid]:
        d = out / f"w{width}-mb{mb}-s{seq}-z{zero}-r{ranks}"
        dirs.append(d)
        if reuse and _done(d):
            continue
        spec = TrialSpec(model=model_config(out, width), steps=STEPS, eval_every=1000, eval_tokens=4096,
                         layout={"gpus": ranks, "zero": zero, "micro_batch": mb, "seq_len": seq, "precision": "fp32"})
        t0 = time.perf_counter()
        result = run_trial(spec, d, env=ENV)
        print(f"{d.name}: {result['status']} {result.get('tokens_per_s') or 0:,.0f} tokens/s (mean), "
              f"{(result.get('peak_mem_bytes') or 0) / 2**20:.0f} MiB, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return dirs


def loo(points: list[dict]) -> dict[str, list[float]]:
    """Relative errors (predicted / measured - 1) of each held-out trial the calibration of the
    others predicts (refusals are printed and counted, not predicted)."""
    err: dict[str, list[float]] = {k: [] for k in ("tps_cal", "tps_uncal", "mem_cal", "mem_uncal", "tps_in", "mem_in",
                                                   "inside")}
    rows = []
    for i, held in enumerate(points):
        try:
            cal = fit(points[:i] + points[i + 1:])
        except UsageError as exc:  # the other trials cannot identify the constants without this one
            print(f"- {held['id']} held out: no calibration ({exc.message})")
            continue
        p = _plan_point(held, held["device"])
        try:
            c = cal.apply(p)
        except UsageError as exc:
            print(f"- {held['id']} held out: refused ({exc.message})")
            continue
        tps, mem = float(held["tokens_per_s"]), float(held["peak_mem_bytes"])
        e = {"tps_cal": c.tokens_per_s.value / tps - 1, "tps_uncal": c.tokens_per_s.uncalibrated / tps - 1,
             "mem_cal": c.memory_bytes.value / mem - 1, "mem_uncal": c.memory_bytes.uncalibrated / mem - 1,
             "tps_in": float(c.tokens_per_s.low <= tps <= c.tokens_per_s.high),
             "mem_in": float(c.memory_bytes.low <= mem <= c.memory_bytes.high), "inside": float(not c.outside_data)}
        for k, v in e.items():
            err[k].append(v)
        rows.append((held["id"], tps, c.tokens_per_s, mem, c.memory_bytes, c.outside_data))
    print("| trial | tokens/s measured | calibrated (90% PI) | uncalibrated | peak MiB measured | calibrated (90% PI) "
          "| uncalibrated (allocated) | outside data |")
    print("|---|---|---|---|---|---|---|---|")
    for tid, tps, ct, mem, cm, out in rows:
        print(f"| {tid} | {tps:,.0f} | {ct.value:,.0f} ({ct.low:,.0f}-{ct.high:,.0f}) | {ct.uncalibrated:,.0f} "
              f"| {mem / 2**20:.1f} | {cm.value / 2**20:.1f} ({cm.low / 2**20:.1f}-{cm.high / 2**20:.1f}) "
              f"| {cm.uncalibrated / 2**20:.1f} | {'; '.join(out) or '-'} |")
    return err


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/calibration-bench", help="folder for the trials")
    ap.add_argument("--reuse", action="store_true", help="keep completed trials already in --out")
    ap.add_argument("--grid", default=":", help="run only this slice of the grid, e.g. 0:6 (no fit)")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="more environment for the trials, e.g. MALLOC_MMAP_THRESHOLD_=65536")
    ap.add_argument("--no-kernels", action="store_true",
                    help="calibrate without the CPU kernel timings (FLOPs over the matmul peak, the old model)")
    ap.add_argument("--timing", choices=["wall", "cpu", "both"], default="both", help="which timings to fit")
    ap.add_argument("--trials", nargs="+", type=Path, metavar="DIR",
                    help="leave-one-out over these finished trial folders instead of the CPU grid (e.g. the GPU "
                         "check's trials: the clock's timing, no CPU kernels)")
    args = ap.parse_args()
    if args.trials:
        args.timing, args.no_kernels = "wall", True
        dirs = sorted(args.trials)
        print(f"{len(dirs)} trial folders given; clock timing")
        return _fit_report(dirs, args)
    ENV.update(kv.split("=", 1) for kv in args.env)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.grid != ":":
        run_grid(out, args.reuse, slice(*(int(x) if x else None for x in args.grid.split(":"))))
        return 0
    dirs = run_grid(out, args.reuse)
    print(f"load average now {os.getloadavg()[0]:.1f}; {contention(dirs)}")
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
            status = max(status, report(points))
        except UsageError as exc:
            print(f"calibration: error: {exc}", file=sys.stderr)
            status = 2
    return status


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
    print(f"{len(points)} real trials on {full.device['name']} ({full.device['cores']} cores), "
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
    inside = [i for i, v in enumerate(err["inside"]) if v]
    if inside and len(inside) < n:
        sub = {k: [v[i] for i in inside] for k, v in err.items()}
        print(f"the {len(inside)} held-out trials the calibration did not flag as outside its data:")
        print("  LOO " + line("tokens/s", sub["tps_cal"], sub["tps_uncal"]))
        print("  LOO " + line("peak memory", sub["mem_cal"], sub["mem_uncal"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
