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


def _path_sweep(widths: tuple[int, ...], *, noise: float = 0.002, jitter: float = 0.2, seed: int = 5) -> list[Point]:
    """A ladder whose tokens grow with the width (D = 1024 w, so D ~ N^0.5 as the default ladder):
    per size 5 LRs around Step Law's optimum, loss = E + A N^-alpha + B D^-beta at the prior's exponents."""
    rng = random.Random(seed)
    out = []
    for w in widths:
        n, d = 12.0 * 4 * w * w, 1024.0 * w
        lr_opt = STEP_LR[0] * n ** STEP_LR[1] * d ** STEP_LR[2]
        for k in range(-2, 3):
            lr = lr_opt * 2 ** (k + rng.uniform(-jitter, jitter))
            loss = 1.2 + 60 * n**-0.3478 + 30 * d**-0.3658 + 0.03 * math.log2(lr / lr_opt) ** 2
            out.append(Point(size=f"w{w}", n_params=n, tokens=d, lr=lr, batch_tokens=512,
                             loss=loss * (1 + rng.gauss(0, noise))))
    return out


def _true_path_loss(w: int) -> float:
    return 1.2 + 60 * (48.0 * w * w) ** -0.3478 + 30 * (1024.0 * w) ** -0.3658


def test_the_prior_shape_along_a_path_recovers_its_offset_and_scale() -> None:
    # Truth: E + s (A N^-alpha + B D^-beta) with the Besiroglu constants along D = 1024 w; E and s come back.
    from trainplan.planner._scaling import A, B

    widths = (64, 96, 128, 192)
    pts = [Point(size=f"w{w}", n_params=48.0 * w * w, tokens=1024.0 * w, lr=lr, batch_tokens=512,
                 loss=0.9 + 0.04 * (A * (48.0 * w * w) ** -0.3478 + B * (1024.0 * w) ** -0.3658) + 0.03 * k * k)
           for w in widths for k, lr in ((-1, 0.002), (0, 0.004), (1, 0.008))]
    fit = fit_ladder(pts, 48.0 * 384 * 384, 1024.0 * 384, n_boot=0)
    assert fit.loss_e.value == pytest.approx(0.9, abs=1e-6)
    assert fit.loss.value == pytest.approx(0.9 + 0.04 * (A * (48.0 * 384 * 384) ** -0.3478 + B * (1024.0 * 384) ** -0.3658),
                                           rel=1e-6)


def test_tokens_growing_with_size_are_fitted_along_the_path() -> None:
    # Fitted on 3 widths, the 4th (2.25x N beyond, on the path) comes back within 1.5% even though the
    # truth's term sizes (60 : 30) are not the prior's; the loss is predicted at the target's own tokens.
    # Fitting E + A N^-a + B D^-b freely on such a path is ill-conditioned (E = -40 on the default
    # ladder's widths): the path fit is what works.
    pts = _path_sweep((64, 96, 128))
    fit = fit_ladder(pts, 48.0 * 192 * 192, 1024.0 * 192, n_boot=100)
    assert not fit.d_identified and "correlation 1.00" in fit.d_reason
    assert fit.loss_tokens == 1024.0 * 192
    assert fit.loss.value == pytest.approx(_true_path_loss(192), rel=0.015)
    assert fit.loss.low <= fit.loss.value <= fit.loss.high
    assert any("grow with its sizes (D ~ N^0.50" in n for n in fit.notes)
    # The fitted LR slope already holds the path's D: a target on the path is not carried again by
    # Step Law's D^0.307 (that would put it (D_target / D_ladder)^0.307 ~ 1.25x too high). Noise-free
    # LRs here, so the optima are exact.
    exact = fit_ladder(_path_sweep((64, 96, 128), noise=0.0, jitter=0.0), 48.0 * 192 * 192, 1024.0 * 192, n_boot=0)
    truth = STEP_LR[0] * (48.0 * 192 * 192) ** STEP_LR[1] * (1024.0 * 192) ** STEP_LR[2]
    assert exact.lr.value == pytest.approx(truth, rel=0.02)
    assert exact.lr_exponent.value == pytest.approx(STEP_LR[1] + 0.5 * STEP_LR[2], abs=0.01)  # the path's slope


def test_a_target_off_the_path_gets_the_path_loss_and_the_prior_carries_d() -> None:
    pts = _path_sweep((64, 96, 128, 192))
    n_t = 48.0 * 256 * 256
    fit = fit_ladder(pts, n_t, 1e9, n_boot=50)
    assert not fit.alpha_fitted  # on a path the shape is the prior's; E and the scale are fitted
    assert fit.loss_tokens == pytest.approx(1024.0 * 256, rel=0.02)  # the path's tokens at the target's N
    assert any("path's" in n and "not the target's" in n for n in fit.notes)
    on_path = fit_ladder(pts, n_t, 1024.0 * 256, n_boot=0)
    assert fit.lr.value == pytest.approx(on_path.lr.value * (1e9 / fit.loss_tokens) ** STEP_LR[2], rel=1e-6)
