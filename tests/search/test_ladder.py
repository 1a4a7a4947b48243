"""Ladder sweeps: the default ladder loads and resolves each size, bad ladders name their key, and a
study's completed trials come back as plain points."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import yaml

from trainplan.errors import UsageError
from trainplan.planner import count_parameters, load_model
from trainplan.search import load_sweep, resolve_trial, sweep_from_dict
from trainplan.search._ladder import default_ladder_path, ladder_points

LADDER_DIR = default_ladder_path().parent


def _raw() -> dict:
    raw = yaml.safe_load(default_ladder_path().read_text())
    for entry in raw["ladder"]:
        entry["model"] = str(LADDER_DIR / entry["model"])
    return raw


def test_default_ladder_resolves_every_size_to_its_model_and_tokens_growing_with_width() -> None:
    sweep = load_sweep(default_ladder_path())
    assert [s.name for s in sweep.ladder] == ["w64", "w96", "w128", "w192"]
    assert sweep.sampler.type == "grid" and sweep.pruner.type == "none"
    grid = math.prod(len(p.choices) for p in sweep.space)
    assert sweep.budget.n_trials == grid  # the whole grid: every size gets every LR and batch
    widths, tokens = [], []
    for size in sweep.ladder:
        spec = resolve_trial(sweep, {"size": size.name, "lr": 0.006, "global_batch": 8})
        assert Path(spec.model).is_file() and spec.total_tokens == size.tokens
        widths.append(load_model(spec.model).hidden_size)
        tokens.append(spec.total_tokens)
    assert widths == [64, 96, 128, 192]
    assert tokens == [1024 * w for w in widths]  # D proportional to the width (~ N^0.5): one path
    assert sweep_from_dict(sweep.to_dict()) == sweep  # the study stores to_dict()


@pytest.mark.parametrize(("change", "key"), [
    ({"sampler": {"type": "tpe"}}, "sampler.type"),
    ({"pruner": {"type": "successive_halving"}}, "pruner.type"),
    ({"ladder": [{"name": "a", "model": "trainplan-tiny"}, {"name": "a", "model": "trainplan-tiny"}]}, "ladder"),
    ({"ladder": [{"name": "a", "model": "no-such-model"}]}, "ladder[0].model"),
    ({"ladder": [{"name": "a", "model": "trainplan-tiny", "tokens": 0}]}, "ladder[0].tokens"),
    ({"ladder": [{"name": "a", "model": "trainplan-tiny", "width": 3}]}, "ladder[0].width"),
])
def test_bad_ladders_name_the_key(change: dict, key: str) -> None:
    raw = _raw()
    raw.update(change)
    with pytest.raises(UsageError) as info:
        sweep_from_dict(raw)
    assert info.value.key == key


def test_a_size_may_carry_its_own_token_budget() -> None:
    raw = _raw()
    raw["ladder"][1]["tokens"] = 65536
    sweep = sweep_from_dict(raw)
    assert resolve_trial(sweep, {"size": "w96", "global_batch": 16}).total_tokens == 65536
    assert resolve_trial(sweep, {"size": "w64", "global_batch": 16}).total_tokens == raw["base"]["tokens"]


def make_study(path: Path, optima: dict[str, float], *, loss_of: callable, lrs=(0.002, 0.005, 0.0125),
               batches=(8, 16), steps_tokens: int | dict[str, int] = 131072) -> str:
    """A real SQLite study holding the records the search stores, with losses from ``loss_of``
    (``steps_tokens`` per size when a mapping)."""
    url = f"sqlite:///{path}"
    study = optuna.create_study(study_name="ladder", storage=url)
    study.set_user_attr("sweep", {"base": {"warmup_fraction": 0.1, "data": "stdlib"}})
    dists = {"size": optuna.distributions.CategoricalDistribution(list(optima)),
             "lr": optuna.distributions.CategoricalDistribution(list(lrs)),
             "global_batch": optuna.distributions.CategoricalDistribution(list(batches))}
    for size in optima:
        model = str(LADDER_DIR / f"ladder-llama-{size}.json")
        n = count_parameters(load_model(model)).non_embedding
        for lr in lrs:
            for gb in batches:
                tokens = steps_tokens[size] if isinstance(steps_tokens, dict) else steps_tokens
                config = {"model": model, "steps": tokens // (gb * 128),
                          "layout": {"gpus": 1, "micro_batch": gb, "grad_accum": 1, "seq_len": 128},
                          "hyperparams": {"lr": lr}}
                study.add_trial(optuna.trial.create_trial(
                    params={"size": size, "lr": lr, "global_batch": gb}, distributions=dists,
                    value=loss_of(n, lr, gb), user_attrs={"config": config, "status": "completed"}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, params={"size": size, "lr": lrs[0],
                    "global_batch": batches[0]}, distributions=dists, user_attrs={"config": config}))
    return url


def test_points_come_back_plain_and_pruned_trials_are_left_out(tmp_path: Path) -> None:
    url = make_study(tmp_path / "s.db", {"w64": 0, "w128": 0}, loss_of=lambda n, lr, gb: 3.0 - 1e-7 * n + lr)
    points = ladder_points(optuna.load_study(study_name="ladder", storage=url))
    assert len(points) == 12
    p = next(p for p in points if p.size == "w128" and p.lr == 0.005 and p.batch_tokens == 16 * 128)
    assert p.n_params == 836736 and p.tokens == 131072 and p.loss == pytest.approx(3.0 - 0.0836736 + 0.005)


def test_a_resumed_or_second_worker_grid_maps_every_id_to_the_same_point() -> None:
    from trainplan.search._optuna import make_sampler

    sweep = load_sweep(default_ladder_path())
    # a worker joining a study that already holds 5 trials gets seed_offset 5: the grid must not move
    assert make_sampler(sweep)._all_grids == make_sampler(sweep, seed_offset=5)._all_grids
