"""The sweep file: the shipped default loads, bad input names its key, derived values follow the rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trainplan.errors import UsageError
from trainplan.search import default_sweep_path, load_sweep, resolve_trial, sweep_from_dict


def _raw() -> dict:
    return yaml.safe_load(default_sweep_path().read_text())


def test_default_sweep_loads_and_resolves_every_batch_to_the_same_tokens() -> None:
    sweep = load_sweep()
    assert sweep.objectives == ("eval_loss",) and sweep.directions == ["minimize"]
    assert sweep.sampler.type == "tpe" and sweep.pruner.type == "successive_halving"
    tokens = {b: resolve_trial(sweep, {"global_batch": b}) for b in (8, 16, 32)}
    for batch, spec in tokens.items():
        assert spec.layout.global_batch == batch
        assert spec.steps * spec.tokens_per_step == sweep.base["tokens"]
        assert spec.hyperparams.total_steps == spec.steps
        assert spec.hyperparams.warmup_steps == round(0.1 * spec.steps)
        assert spec.eval_every == spec.steps // 8
    # micro-batch 16 cannot carry a global batch of 8: it shrinks; 32 accumulates two micro-batches.
    assert (tokens[8].layout.micro_batch, tokens[8].layout.grad_accum) == (8, 1)
    assert (tokens[32].layout.micro_batch, tokens[32].layout.grad_accum) == (16, 2)


def test_searched_values_override_the_base() -> None:
    spec = resolve_trial(load_sweep(), {"lr": 0.02, "weight_decay": 0.0, "warmup_fraction": 0.0, "beta2": 0.99,
                                        "dropout": 0.1, "schedule": "linear", "grad_clip": 0.5})
    hp = spec.hyperparams
    assert (hp.lr, hp.weight_decay, hp.betas[1], hp.schedule, hp.grad_clip) == (0.02, 0.0, 0.99, "linear", 0.5)
    assert spec.dropout == 0.1
    assert hp.warmup_steps == 1  # DeepSpeed's warm-up schedulers refuse 0 steps


@pytest.mark.parametrize(("change", "key"), [
    ({"space": {"lr": {"low": 0, "high": 1e-2, "log": True}}}, "space.lr.low"),
    ({"space": {"lr": {"low": 1e-2, "high": 1e-3}}}, "space.lr.low"),
    ({"space": {"learning_rate": {"low": 1e-3, "high": 1e-2}}}, "space.learning_rate"),
    ({"space": {"schedule": {"choices": ["cosine", "step"]}}}, "space.schedule.choices[1]"),
    ({"space": {"zero": {"low": 0, "high": 3}}}, "space.zero"),
    ({"space": {"dropout": {"low": 0.0, "high": 1.0}}}, "space.dropout.high"),
    ({"space": {"steps": {"low": 10, "high": 20}, "tokens": {"low": 1000, "high": 2000}}}, "space.tokens"),
    ({"sampler": {"type": "tpee"}}, "sampler.type"),
    ({"pruner": {"type": "asha"}}, "pruner.type"),
    ({"budget": {"n_trials": 0}}, "budget.n_trials"),
    ({"budget": {"n_trial": 3}}, "budget.n_trial"),
    ({"objectives": ["eval_loss", "cost"]}, "objectives"),
    ({"objectives": ["eval_loss", "gpu_hours"], "pruner": {"type": "median"}}, "pruner.type"),
    ({"hardware": {"gpu": "a100"}}, "hardware.gpu"),
    ({"hardware": {"gpu": "a100-80gb", "memory_gib": -1}}, "hardware.memory_gib"),
    ({"workers": 0}, "workers"),
    ({"worker": 2}, "worker"),
    ({"sampler": {"type": "grid"}}, "space.lr"),
])
def test_bad_sweeps_name_the_key(change: dict, key: str) -> None:
    raw = _raw()
    raw.update(change)
    with pytest.raises(UsageError) as info:
        sweep_from_dict(raw)
    assert info.value.key == key


def test_bad_base_keys_are_named_under_base() -> None:
    raw = _raw()
    raw["base"] = {**raw["base"], "layout": {**raw["base"]["layout"], "micro_bach": 4}}
    with pytest.raises(UsageError, match="micro_bach") as info:
        sweep_from_dict(raw)
    assert info.value.key.startswith("base.")


def test_several_objectives_switch_the_default_pruner_off() -> None:
    raw = _raw()
    raw.pop("pruner")
    raw["objectives"] = ["eval_loss", "gpu_hours"]
    sweep = sweep_from_dict(raw)
    assert sweep.pruner.type == "none" and sweep.directions == ["minimize", "minimize"]


def test_cli_overrides_beat_the_file(tmp_path: Path) -> None:
    sweep = load_sweep(None, {"budget.n_trials": 3, "workers": 2, "sampler.type": "random", "storage": "x.log"})
    assert (sweep.budget.n_trials, sweep.workers, sweep.sampler.type, sweep.storage) == (3, 2, "random", "x.log")
    assert sweep.budget.timeout_s is None  # untouched keys keep the file's value


def test_unreadable_sweep_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        load_sweep(tmp_path / "missing.yaml")
    assert info.value.key == "--sweep"
    (tmp_path / "bad.yaml").write_text("space: [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        load_sweep(tmp_path / "bad.yaml")


def test_the_resolved_sweep_round_trips() -> None:
    # The study stores sweep.to_dict(); a report or a rerun must be able to read it back.
    sweep = load_sweep()
    assert sweep_from_dict(sweep.to_dict()) == sweep
