"""How fast is `trainplan plan`? Cold CLI wall time against DeepSpeed's own estimator, and
`--recommend` over >= 10,000 candidate layouts.

Run: ``.venv/bin/python benchmarks/plan_speed.py`` (or ``make bench``). Each cold figure is the
median of several fresh interpreter starts, imports included, measured in this one run, so the
ratio is against a peer on the same machine at the same time; the ``--recommend`` figure is the
median of as many searches in one process, printed with the fastest and slowest (one search
lasts about a second, so one run alone is at the mercy of whatever else the machine is doing).
Prints the figures with the date, CPU count and load average (1/5/15 min, before and after: the
machine may be shared) and writes the same to ``benchmarks/results/plan_speed.txt``.
Targets (issue 2): plan < 0.5 s cold and >= 10x faster than DeepSpeed's estimator; recommend < 1 s.
"""

from __future__ import annotations

import datetime
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPEATS = 5
PLAN_ARGV = [sys.executable, "-m", "trainplan", "plan", "--model", "llama-2-70b", "--gpu", "h100-sxm",
             "--gpus", "64", "--zero", "3", "--tokens", "2T", "--format", "json"]
# The same model for DeepSpeed: its estimator needs the parameter counts up front (it cannot
# read a config), so we give them: llama-2-70b total and its largest layer (the 32000 x 8192
# embedding). Cold means a fresh interpreter, `import deepspeed` included, as a user runs it.
DS_CODE = (
    "from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs_all_cold as f;"
    "f(total_params=68976648192, largest_layer_params=262144000, num_gpus_per_node=8, num_nodes=8)"
)


def _cold(argv: list[str]) -> float:
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _recommend() -> tuple[list[float], int]:
    """Wall seconds of ``REPEATS`` searches in this process (the first one loads the catalog's model
    and warms the per-model caches, as a CLI run's single search does), and the layouts each evaluates."""
    from trainplan.planner import Layout, LayoutSpace, load_gpu, load_model, recommend

    model, gpu = load_model("llama-2-70b"), load_gpu("h100-sxm")
    base = Layout(seq_len=4096, precision="bf16")
    space = LayoutSpace(max_gpus=2048, pp=(1, 2, 4, 8, 16), micro_batch=(1, 2, 4, 8, 16, 32, 64))
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        rec = recommend(model, gpu, base, global_batch=1024, tokens=2e12, optimize="cost", space=space)
        times.append(time.perf_counter() - t0)
    return times, rec.evaluated


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    load_before = _load()
    plan_s = _cold(PLAN_ARGV)
    ds_s = _cold([sys.executable, "-c", DS_CODE])
    rec_times, evaluated = _recommend()
    rec_s = statistics.median(rec_times)
    lines = [
        f"trainplan plan (cold, median of {REPEATS}):            {plan_s:.3f} s   target < 0.5 s",
        f"deepspeed estimate_zero3_..._cold (cold, median of {REPEATS}): {ds_s:.3f} s",
        f"ratio deepspeed / trainplan:                      {ds_s / plan_s:.1f}x  target >= 10x",
        f"trainplan plan --recommend (median of {REPEATS}): {evaluated:,} candidate layouts in {rec_s:.3f} s "
        f"({rec_s / evaluated * 1e6:.1f} us each; runs {min(rec_times):.3f}-{max(rec_times):.3f} s)   "
        f"target < 1 s for >= 10,000",
        f"measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs; "
        f"load average (1/5/15 min) {load_before} before, {_load()} after",
    ]
    text = "\n".join(lines) + "\n"
    (root / "benchmarks" / "results" / "plan_speed.txt").write_text(text)
    print(text, end="")


if __name__ == "__main__":
    main()
