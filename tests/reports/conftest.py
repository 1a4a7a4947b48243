"""Studies built the way the search records them (docs/protocol.md), in a real SQLite storage."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

optuna.logging.set_verbosity(optuna.logging.WARNING)

T0 = datetime(2026, 1, 1, 12, 0, 0)
DISTS = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "global_batch": CategoricalDistribution([8, 16, 32]),
         "weight_decay": FloatDistribution(0.0, 0.2)}
SWEEP = {"study_name": "demo", "hardware": {"gpu": "a100-80gb", "gpus_per_trial": 1},
         "base": {"model": "trainplan-tiny", "tokens": 262144}}


def curve(final: float, steps: int = 40, every: int = 10, tokens_per_step: int = 2048) -> list[list[Any]]:
    """A decaying loss curve ending near ``final``; eval every ``every`` steps."""
    out = []
    for s in range(1, steps + 1):
        loss = final + 3.0 * math.exp(-s / 8)
        out.append([s, s * tokens_per_step, 0.5 * s, loss + 0.05, loss if s % every == 0 else None])
    return out


def config(lr: float, batch: int) -> dict[str, Any]:
    return {"model": "trainplan-tiny", "data": "stdlib", "steps": 40,
            "layout": {"gpus": 1, "micro_batch": batch, "grad_accum": 1, "seq_len": 128, "precision": "fp32", "zero": 0},
            "hyperparams": {"lr": lr, "weight_decay": 0.1, "warmup_steps": 4, "total_steps": 40, "betas": [0.9, 0.95]}}


def attrs(status: str, *, final: float | None, steps: int = 40, reason: str = "", trial_dir: str = "",
          lr: float = 3e-3, batch: int = 16) -> dict[str, Any]:
    a: dict[str, Any] = {"status": status, "reason": reason, "trial_dir": trial_dir, "config": config(lr, batch),
                         "estimate": {"memory_bytes": 60e6, "tokens_per_s": 9000.0, "fits": True}}
    if final is not None:
        a.update(curve=curve(final, steps), tokens=steps * 2048, tokens_per_s=8000.0 + 100 * batch,
                 peak_mem_bytes=50e6 + batch * 1e6, elapsed_s=0.5 * steps, gpu_hours=0.5 * steps / 3600)
    return a


def add(study: optuna.Study, i: int, state: TrialState, params: dict[str, Any], user_attrs: dict[str, Any],
        values: list[float] | None = None) -> None:
    trial = optuna.trial.create_trial(state=state, values=values, params=params,
                                      distributions={k: DISTS.get(k, DISTS["lr"]) for k in params},
                                      user_attrs=user_attrs)
    trial.datetime_start = T0 + timedelta(seconds=30 * i)
    trial.datetime_complete = T0 + timedelta(seconds=30 * i + 25)
    study.add_trial(trial)


def build_study(storage: str, name: str = "demo", *, multi: bool = False, trial_dirs: Path | None = None,
                param_name: str | None = None) -> optuna.Study:
    """Complete, pruned, failed (oom, diverged) and infeasible trials; ``multi`` adds gpu_hours."""
    directions = ["minimize", "minimize"] if multi else ["minimize"]
    study = optuna.create_study(storage=storage, study_name=name, directions=directions)
    study.set_user_attr("sweep", SWEEP)
    study.set_user_attr("command", ["trainplan", "search", "--trials", "7"])
    study.set_user_attr("environment", {"python": "3.12", "torch": "2.13", "host": "ci"})
    study.set_user_attr("objectives", {"names": ["eval_loss", "gpu_hours"] if multi else ["eval_loss"],
                                       "directions": directions})

    def folder(i: int) -> str:
        if trial_dirs is None:
            return ""
        d = trial_dirs / f"trial-{i:04d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "cmd.txt").write_text(f"deepspeed --num_gpus 1 --module trainplan.runners.train --spec {d}/spec.json\n")
        return str(d)

    def completed(i: int, lr: float, batch: int, final: float, steps: int = 40) -> None:
        params = {"lr": lr, "global_batch": batch, "weight_decay": 0.05 * (i % 3)}
        if param_name:
            params = {param_name: lr, **params}
        a = attrs("completed", final=final, steps=steps, trial_dir=folder(i), lr=lr, batch=batch)
        values = [a["curve"][-1][3] - 0.05]
        if multi:
            values.append(a["gpu_hours"])
        add(study, i, TrialState.COMPLETE, params, a, values)

    # Insertion order is the trial number: 1 is best on loss; 7 trades loss for fewer GPU-hours.
    completed(0, 3e-3, 16, 2.10)
    completed(1, 1e-2, 8, 1.80)
    add(study, 2, TrialState.PRUNED, {"lr": 9e-2, "global_batch": 8, "weight_decay": 0.1},
        attrs("pruned", final=3.0, steps=20, reason="pruned at 20480 tokens (successive halving)", trial_dir=folder(2)))
    add(study, 3, TrialState.FAIL, {"lr": 1e-3, "global_batch": 32, "weight_decay": 0.0},
        attrs("oom", final=None, reason="CUDA out of memory at step 1", trial_dir=folder(3)))
    add(study, 4, TrialState.FAIL, {"lr": 9e-2, "global_batch": 16, "weight_decay": 0.2},
        attrs("diverged", final=4.0, steps=5, reason="loss became NaN at step 6", trial_dir=folder(4)))
    add(study, 5, TrialState.FAIL, {"lr": 1e-3, "global_batch": 32, "weight_decay": 0.1},
        attrs("infeasible", final=None, reason="planner: needs 90 GiB per GPU, a100-80gb has 80"))
    completed(6, 5e-4, 32, 2.50)
    completed(7, 2e-3, 32, 1.95, steps=20)
    return study


@pytest.fixture
def storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.fixture
def study(storage: str, tmp_path: Path) -> optuna.Study:
    return build_study(storage, trial_dirs=tmp_path / "trials")
