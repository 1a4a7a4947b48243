"""How long ``trainplan report`` takes on a large study, against optuna.visualization, and how big the page is.

Run from the repository root::

    python benchmarks/report_speed.py              # 500 trials x 100 curve points (the issue's case)
    python benchmarks/report_speed.py --trials 100 --points 50 --out benchmarks/results/report_speed.md

A synthetic study (complete, pruned and failed trials with the search's user attributes) is built
in a SQLite file; then, in the same process, (a) ``build_report`` writes the whole page and (b) the
equivalent figures are built with ``optuna.visualization`` (history, importances, parallel
coordinates, slices, timeline, intermediate values) and written the same way (one plotly.js, one
div each). The ratio a/b compares against a peer measured in the same run, not against a clock.
Targets from the issue: under 10 s and under 8 MB.
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path


def build_study(storage: str, trials: int, points: int):
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState

    rng = random.Random(0)
    dists = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "global_batch": CategoricalDistribution([8, 16, 32]),
             "weight_decay": FloatDistribution(0.0, 0.2), "warmup_fraction": FloatDistribution(0.0, 0.2)}
    study = optuna.create_study(storage=storage, study_name="bench")
    study.set_user_attr("sweep", {"hardware": {"gpu": "a100-80gb"}, "base": {"model": "trainplan-tiny"}})
    study.set_user_attr("objectives", {"names": ["eval_loss"], "directions": ["minimize"]})
    t0 = datetime(2026, 1, 1)
    batch = []
    for i in range(trials):
        params = {"lr": 10 ** rng.uniform(-4, -1), "global_batch": rng.choice([8, 16, 32]),
                  "weight_decay": rng.uniform(0, 0.2), "warmup_fraction": rng.uniform(0, 0.2)}
        final = 1.5 + abs(math.log10(params["lr"]) + 2.5) * 0.4 + rng.gauss(0, 0.05)
        state = TrialState.COMPLETE if i % 10 < 7 else (TrialState.PRUNED if i % 10 < 9 else TrialState.FAIL)
        n = points if state != TrialState.PRUNED else points // 3
        curve = [[s, s * 2048, 0.5 * s, final + 3 * math.exp(-s / 15) + 0.05,
                  final + 3 * math.exp(-s / 15) if s % 5 == 0 else None] for s in range(1, n + 1)]
        layout = {"gpus": 1, "micro_batch": params["global_batch"], "seq_len": 128, "precision": "fp32"}
        attrs = {"status": {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned"}.get(state, "oom"),
                 "reason": "" if state == TrialState.COMPLETE else "synthetic", "trial_dir": f"trials/trial-{i:04d}",
                 "curve": curve, "tokens": n * 2048, "tokens_per_s": 9000 + rng.uniform(-500, 500),
                 "peak_mem_bytes": 5e7 + rng.uniform(0, 1e7), "elapsed_s": 0.5 * n, "gpu_hours": 0.5 * n / 3600,
                 "estimate": {"memory_bytes": 6e7, "tokens_per_s": 9500.0, "fits": True},
                 "config": {"model": "trainplan-tiny", "layout": layout, "hyperparams": {"lr": params["lr"]}}}
        trial = optuna.trial.create_trial(
            state=state, value=curve[-1][4] if state == TrialState.COMPLETE else None, params=params,
            distributions=dists, user_attrs=attrs,
            intermediate_values={c[0]: c[4] for c in curve if c[4] is not None})
        trial.datetime_start = t0 + timedelta(seconds=60 * i)
        trial.datetime_complete = t0 + timedelta(seconds=60 * i + 0.5 * n)
        batch.append(trial)
    study.add_trials(batch)
    return study


def optuna_page(study, out: Path) -> Path:
    """The peer: optuna.visualization's equivalent figures on one page with one plotly.js."""
    import optuna.visualization as vis
    import plotly.offline

    figs = [vis.plot_optimization_history(study), vis.plot_param_importances(study),
            vis.plot_parallel_coordinate(study), vis.plot_slice(study), vis.plot_timeline(study),
            vis.plot_intermediate_values(study)]
    divs = [f.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig{i}") for i, f in enumerate(figs)]
    out.mkdir(parents=True, exist_ok=True)
    path = out / "optuna.html"
    path.write_text(f"<html><head><script>{plotly.offline.get_plotlyjs()}</script></head><body>"
                    + "".join(divs) + "</body></html>")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--out", type=Path, help="also write the result as Markdown here")
    args = parser.parse_args()

    import optuna

    from trainplan.reports import build_report

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        t = time.perf_counter()
        study = build_study(f"sqlite:///{tmp_path / 'study.db'}", args.trials, args.points)
        t_build = time.perf_counter() - t
        # Warm both paths once (imports, plotly validators) so neither pays first-use costs.
        optuna_page(study, tmp_path / "warm")
        build_report(study, tmp_path / "warm")
        study = optuna.load_study(study_name="bench", storage=f"sqlite:///{tmp_path / 'study.db'}")
        t = time.perf_counter()
        page = build_report(study, tmp_path / "report")
        t_report = time.perf_counter() - t
        t = time.perf_counter()
        peer = optuna_page(study, tmp_path / "optuna")
        t_optuna = time.perf_counter() - t
        size = page.stat().st_size / 1e6
        peer_size = peer.stat().st_size / 1e6
        data = sum(f.stat().st_size for f in (page.parent / "report_data").iterdir()) / 1e6
    lines = [
        f"# trainplan report speed ({args.trials} trials x {args.points} curve points)",
        "",
        f"Command: `python benchmarks/report_speed.py --trials {args.trials} --points {args.points}`",
        "",
        "| measure | value |",
        "|---|---|",
        f"| study build (SQLite, not timed below) | {t_build:.2f} s |",
        f"| `build_report` (whole page + data files) | {t_report:.2f} s (target < 10 s) |",
        f"| optuna.visualization, 6 equivalent figures, one page | {t_optuna:.2f} s |",
        f"| ratio report / optuna | {t_report / t_optuna:.2f} |",
        f"| report.html size | {size:.2f} MB (target < 8 MB) |",
        f"| optuna page size | {peer_size:.2f} MB |",
        f"| report_data/ (CSV + JSON) | {data:.2f} MB |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
