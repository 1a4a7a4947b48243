"""Search efficiency: the default trainplan search against plain Optuna random search.

    python benchmarks/search_efficiency.py                 # 3 seeds, the default sweep's budget
    python benchmarks/search_efficiency.py --n-trials 6 --tokens 131072

On the built-in task, with the same trial budget, both arms run real DeepSpeed trials through the
same trial loop; they differ only in what trainplan adds:

- trainplan: the default sweep as shipped (seeded TPE, successive-halving pruning on eval loss
  against tokens seen, planner screening);
- baseline: Optuna's ``RandomSampler`` with no pruning (screening changes nothing here: every
  configuration of the default space fits the catalog GPU).

For each of 3 seeds it prints the best eval loss and the training compute (tokens trained and
CPU-seconds of the trial processes) of each arm, then the ratios trainplan / baseline of the
means. Target: an equal or better best loss for at most 60% of the compute. The table is also
written to ``benchmarks/results/search_efficiency.md``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _arm(name: str, seed: int, n_trials: int, tokens: int | None, root: Path,
         changes: dict[str, Any] | None = None) -> dict[str, Any]:
    import optuna

    from trainplan.search import load_sweep, run_search

    overrides: dict[str, Any] = {"study_name": f"{name}-{seed}", "budget.n_trials": n_trials, "sampler.seed": seed}
    if name == "baseline":
        overrides.update({"sampler.type": "random", "pruner.type": "none"})
    else:
        overrides.update(changes or {})
    sweep = load_sweep(None, overrides)
    if tokens is not None:
        from trainplan.search import sweep_from_dict

        raw = sweep.to_dict()
        raw["base"] = {**raw["base"], "tokens": tokens}
        sweep = sweep_from_dict(raw)
    start = time.monotonic()
    result = run_search(sweep, run_dir=root / f"{name}-{seed}", progress=False)
    study = optuna.load_study(study_name=sweep.study_name, storage=result.storage)
    trials = study.get_trials(deepcopy=False)
    return {
        "arm": name, "seed": seed, "best": study.best_value if result.best else float("nan"),
        "tokens": sum(int(t.user_attrs.get("tokens") or 0) for t in trials),
        "cpu_s": sum(float(t.user_attrs.get("cpu_seconds") or 0) for t in trials),
        "wall_s": time.monotonic() - start, "counts": result.counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-trials", type=int, default=None, help="Trials per study (default: the sweep's).")
    parser.add_argument("--tokens", type=int, default=None, help="Tokens per trial (default: the sweep's).")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "search_efficiency.md")
    parser.add_argument("--arms", nargs="+", choices=("trainplan", "baseline"), default=["trainplan", "baseline"],
                        help="Run only some arms (for trying settings; the table needs both).")
    parser.add_argument("--set", dest="changes", action="append", default=[], metavar="KEY=VALUE",
                        help="Change a sweep key of the trainplan arm, e.g. pruner.n_startup_trials=3.")
    args = parser.parse_args()
    import yaml

    changes = {k: yaml.safe_load(v) for k, v in (c.split("=", 1) for c in args.changes)}

    from trainplan.search import load_sweep

    n_trials = args.n_trials or load_sweep().budget.n_trials
    rows = []
    with tempfile.TemporaryDirectory(prefix="trainplan-bench-") as tmp:
        for seed in args.seeds:
            for arm in args.arms:
                row = _arm(arm, seed, n_trials, args.tokens, Path(tmp), changes)
                rows.append(row)
                print(f"seed {seed} {arm:9s} best {row['best']:.4f}  tokens {row['tokens']:>9d}  "
                      f"cpu {row['cpu_s']:8.1f} s  wall {row['wall_s']:6.1f} s  {row['counts']}", flush=True)

    if len(args.arms) < 2:
        return

    def mean(arm: str, key: str) -> float:
        return statistics.fmean(r[key] for r in rows if r["arm"] == arm)

    ratios = {key: mean("trainplan", key) / mean("baseline", key) for key in ("best", "tokens", "cpu_s")}
    wins = sum(t["best"] <= b["best"] for t, b in zip(rows[0::2], rows[1::2]))
    lines = [
        "# Search efficiency: trainplan default search vs Optuna random search without pruning",
        "",
        f"Built-in task, {n_trials} trials per study, tokens per trial: {args.tokens or 'sweep default'}, "
        f"seeds {args.seeds}. Command: `python benchmarks/search_efficiency.py"
        + (f" --n-trials {args.n_trials}" if args.n_trials else "") + (f" --tokens {args.tokens}" if args.tokens else "")
        + "".join(f" --set {c}" for c in args.changes) + "`",
        "",
        "| seed | arm | best eval loss | tokens trained | CPU-seconds | wall s | trials |",
        "|---|---|---|---|---|---|---|",
        *[f"| {r['seed']} | {r['arm']} | {r['best']:.4f} | {r['tokens']} | {r['cpu_s']:.1f} | {r['wall_s']:.1f} | {r['counts']} |"
          for r in rows],
        "",
        f"Ratios trainplan / baseline (means over seeds): best eval loss {ratios['best']:.3f}, "
        f"tokens {ratios['tokens']:.3f}, CPU-seconds {ratios['cpu_s']:.3f}.",
        f"trainplan's best loss was equal or better in {wins} of {len(args.seeds)} seeds.",
        f"Target (best loss ratio <= 1 at <= 0.60 of the compute): "
        f"{'met' if ratios['best'] <= 1 and ratios['cpu_s'] <= 0.6 and ratios['tokens'] <= 0.6 else 'NOT met'}.",
    ]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
