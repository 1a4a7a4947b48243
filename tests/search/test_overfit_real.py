"""A real DeepSpeed trial (CPU) that memorises a tiny corpus over many epochs: `trainplan search`
detects the overfitting and, with ``overfit.stop``, stops it early; the report marks the curve.

The corpus is the first 2 KB of the built-in one (the standard library's sources): ~1.8k training
tokens, ~190 held out. The 0.9M-parameter tiny Llama at a constant LR of 5e-3 without weight decay
learns the text's statistics in the first ~10 epochs (eval loss falls), then memorises the training
blocks (train loss keeps falling, eval loss rises). Measured on 2026-11-27 (seed 0, load ~10):
stopped at 28,672 of 49,152 tokens (~16 epochs), eval loss 3.223 -> 3.288 over 3 evaluations while
train loss fell 2.49 -> 2.44. The same settings on the first 4 KB, unstopped, kept rising (eval
2.244 -> 2.426 over 4 evaluations from 53k tokens while train fell 2.03 -> 1.73). Tried before and
not overfitting: patterned text (generalised) and random letters (stayed at the unigram loss)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from trainplan.reports._curves import get_curves_info
from trainplan.reports._records import read_study
from trainplan.search._overfit import overfit_at

pytestmark = pytest.mark.slow

TOKENS = 49152  # 96 steps of 8 x 64 tokens, ~27 epochs of the training blocks: the cap, not the stop


def test_a_trial_memorising_a_tiny_corpus_is_detected_and_stopped(tmp_path: Path, run_cli) -> None:
    sweep = {
        "study_name": "overfit",
        "base": {"model": "trainplan-tiny", "data": "stdlib", "max_data_bytes": 2048, "tokens": TOKENS,
                 "layout": {"micro_batch": 8, "seq_len": 64, "precision": "fp32"}, "global_batch": 8,
                 "eval_tokens": 512, "evals_per_trial": 48, "warmup_fraction": 0.02, "seed": 0,
                 "hyperparams": {"lr": 0.005, "weight_decay": 0.0, "schedule": "constant"}},
        "hardware": {"gpu": "a100-80gb"}, "space": {}, "budget": {"n_trials": 1},
        "sampler": {"type": "random", "seed": 0}, "pruner": {"type": "none"},
        "overfit": {"window": 3, "stop": True},
    }
    path = tmp_path / "overfit.yaml"
    path.write_text(yaml.safe_dump(sweep))
    run_dir = tmp_path / "runs" / "overfit"
    # The only trial is stopped, so the search ends with "no trial completed" (exit 1): the study is checked.
    run_cli("search", str(path), "--run-dir", str(run_dir), "--no-progress", runs=tmp_path / "runs", cwd=tmp_path,
            check=False, timeout=600)
    study = optuna.load_study(study_name="overfit", storage=f"sqlite:///{run_dir / 'study.db'}")
    [trial] = study.trials
    a = trial.user_attrs
    o = a["overfit"]
    assert o is not None, f"not detected: {a.get('status')} {a.get('reason')}"
    assert trial.state == optuna.trial.TrialState.PRUNED and a["status"] == "pruned"
    assert a["reason"].startswith("stopped at ") and f"overfitting since step {o['step']}" in a["reason"]
    # the rule held on the real curve: eval rose over the window while train fell, from the best eval on
    assert o["window"] == 3 and o["eval_loss_to"] > o["eval_loss_from"] >= o["best_eval_loss"]
    assert o["train_loss_to"] < o["train_loss_from"]
    assert overfit_at(a["curve"], 3) == o  # the recorded curve gives the same record
    # stopped early: well before the token budget, and at most a few steps after the detection
    assert a["tokens"] < TOKENS and a["curve"][-1][0] - o["step"] <= 8
    # the report marks the curve where it was detected
    [series] = get_curves_info(read_study(study)).series
    assert series.overfit == o and series.step[series.overfit_index] == o["step"]
