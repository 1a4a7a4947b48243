"""Overfitting detection on learning curves: the stated rule, and the sweep option."""

from __future__ import annotations

import pytest

from trainplan.errors import UsageError
from trainplan.search import load_sweep, sweep_from_dict
from trainplan.search._overfit import overfit_at


def _curve(train: list[float], evals: list[float], every: int = 4) -> list[list]:
    """Records per step; an eval every ``every`` steps."""
    out = []
    for i, t in enumerate(train):
        step = i + 1
        out.append([step, step * 100, float(step), t, evals[step // every - 1] if step % every == 0 else None])
    return out


def test_eval_rising_while_train_falls_is_overfitting_at_the_stated_window() -> None:
    train = [3.0 - 0.05 * i for i in range(24)]  # falls throughout
    evals = [2.9, 2.7, 2.6, 2.65, 2.7, 2.8]      # best at the 3rd eval, then rises 3 times
    rec = overfit_at(_curve(train, evals), window=3)
    assert rec is not None and rec["step"] == 24 and rec["best_eval_loss"] == 2.6
    assert rec["eval_loss_from"] == 2.6 and rec["eval_loss_to"] == 2.8
    assert overfit_at(_curve(train, evals), window=4) is None  # only 3 rises


def test_no_overfitting_when_both_rise_or_eval_falls() -> None:
    rising_train = [2.0 + 0.05 * i for i in range(24)]  # divergence, not overfitting
    assert overfit_at(_curve(rising_train, [2.6, 2.65, 2.7, 2.8, 2.9, 3.0]), 3) is None
    falling = [3.0 - 0.05 * i for i in range(24)]
    assert overfit_at(_curve(falling, [2.9, 2.7, 2.6, 2.5, 2.45, 2.4]), 3) is None
    assert overfit_at([], 3) is None


def test_sweep_option_validates_and_round_trips() -> None:
    raw = load_sweep().to_dict()
    raw["overfit"] = {"window": 2, "stop": True}
    sweep = sweep_from_dict(raw)
    assert sweep.overfit.window == 2 and sweep.overfit.stop and sweep_from_dict(sweep.to_dict()) == sweep
    for bad, key in (({"window": 0}, "overfit.window"), ({"stop": "yes"}, "overfit.stop"), ({"windw": 2}, "overfit.windw")):
        raw["overfit"] = bad
        with pytest.raises(UsageError) as info:
            sweep_from_dict(raw)
        assert info.value.key == key
