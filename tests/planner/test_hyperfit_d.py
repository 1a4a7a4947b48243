"""LR and batch in D (token budget): fitted only when the ladder's budgets identify D, else the prior
with the reason stated. Synthetic sweeps with a known optimum lr* = 0.5 N^-0.3 D^0.25 (CPU, fast)."""

from __future__ import annotations

import math
import random

import pytest

from trainplan.planner._hyperfit import Point, fit_ladder
from trainplan.planner._hyperlaws import STEP_BATCH, STEP_LR

LR_D = 0.25


def _sweep(cells: list[tuple[float, float]], *, noise: float = 0.002, seed: int = 2) -> list[Point]:
    """Per (N, D): 7 LRs around lr* = 0.5 N^-0.3 D^0.25, two batches (the larger better)."""
    rng = random.Random(seed)
    out = []
    for n, d in cells:
        lr_opt = 0.5 * n**-0.3 * (d / 1e8) ** LR_D
        for k in range(-3, 4):
            lr = lr_opt * 2 ** (k + rng.uniform(-0.2, 0.2))
            for batch in (8192, 16384):
                loss = 1.5 + 40 * n**-0.35 + 400 * d**-0.37 + 0.02 * math.log2(lr / lr_opt) ** 2 + 0.08 * (batch == 8192)
                out.append(Point(size=f"n{n:g}", n_params=n, tokens=d, lr=lr, batch_tokens=batch,
                                 loss=loss * (1 + rng.gauss(0, noise))))
    return out


def test_two_budgets_per_size_identify_d_and_recover_its_exponent() -> None:
    cells = [(n, d) for n in (1e5, 3e5, 1e6, 3e6) for d in (5e7, 2e8)]
    fit = fit_ladder(_sweep(cells), 1e7, 1e9, n_boot=100)
    assert fit.mode == "fitted" and fit.d_identified and "2 token budgets" in fit.d_reason
    assert fit.lr_d_exponent.value == pytest.approx(LR_D, abs=0.08)
    assert fit.lr_d_exponent.low <= fit.lr_d_exponent.value <= fit.lr_d_exponent.high
    assert fit.lr_exponent.value == pytest.approx(-0.3, abs=0.06)
    assert fit.lr.value == pytest.approx(0.5 * 1e7**-0.3 * 10**LR_D, rel=0.25)  # D beyond the swept 2e8: the fit's D
    assert any("fitted in D" in n for n in fit.notes)
    d = fit.to_dict()
    assert d["d_identified"] is True and d["lr_d_exponent"]["value"] == fit.lr_d_exponent.value


def test_one_budget_is_not_identified_and_the_prior_carries_d() -> None:
    fit = fit_ladder(_sweep([(n, 1e8) for n in (1e5, 3e5, 1e6)]), 1e6, 1e9, n_boot=30)
    assert not fit.d_identified and "one budget" in fit.d_reason
    assert fit.lr_d_exponent.value == STEP_LR[2] and fit.batch_d_exponent.value == STEP_BATCH[1]
    assert any("the D dependence is a prior" in n for n in fit.notes)


def test_budgets_that_move_with_n_are_refused_by_reason() -> None:
    # every bigger size simply trained more tokens (D = 100 N): N and D cannot be told apart
    fit = fit_ladder(_sweep([(n, 100 * n) for n in (1e5, 3e5, 1e6, 3e6)]), 1e7, 1e9, n_boot=30)
    assert not fit.d_identified and "correlation" in fit.d_reason
    assert fit.lr_d_exponent.value == STEP_LR[2]
    assert any("4 token budgets but D is not identified" in n and "Step Law's prior" in n for n in fit.notes)


def test_one_size_at_three_budgets_fits_d_and_anchors_n() -> None:
    fit = fit_ladder(_sweep([(1e6, d) for d in (3e7, 1e8, 3e8)]), 1e8, 1e9, n_boot=50)
    assert fit.mode == "anchored" and fit.d_identified
    assert fit.lr_d_exponent.value == pytest.approx(LR_D, abs=0.1)
    assert fit.lr_exponent.value == STEP_LR[1]  # N still moves by the prior, and the notes say anchored
    assert any("anchored" in n for n in fit.notes)
    # two budgets of one size: a spare point is missing, so D stays the prior's, said so
    two = fit_ladder(_sweep([(1e6, d) for d in (1e8, 3e8)]), 1e8, 1e9, n_boot=20)
    assert not two.d_identified and "run one more size or budget" in two.d_reason
