"""Published hyperparameter laws, the data-constrained law, and fits from plain points.

Golden values: DeepSeek LLM (arXiv:2401.02954, eq. 1) worked at C = 1e20 in the issue (and by
hand: 0.3118 x 10^-2.5 = 9.86e-4; 0.2920 x 10^6.542 = 1.017e6 tokens); Step Law
(arXiv:2503.04715) at its validation model, ~1B non-embedding parameters on 100B tokens;
Muennighoff et al. 2023 (arXiv:2305.16264): four epochs are worth ~93% of unique data, the value of
repetition saturates at (1 + R*) U = 16.4 U.
"""

from __future__ import annotations

import math
import random

import pytest

from trainplan.errors import UsageError
from trainplan.planner._hyperfit import Point, fit_ladder, size_optima
from trainplan.planner._hyperlaws import deepseek, deepseek_flops_per_token, step_law, suggest_hyperparams
from trainplan.planner._scaling import ALPHA, data_constrained, effective_tokens


def test_deepseek_reproduces_its_worked_values_at_1e20_flops() -> None:
    s = deepseek(1e20)
    assert s.lr == pytest.approx(9.86e-4, rel=2e-3)
    assert s.batch_tokens == pytest.approx(1.017e6, rel=5e-3)
    assert "2401.02954" in s.source


def test_deepseek_m_counts_non_embedding_flops_per_token() -> None:
    # 72 n d^2 + 12 n d l: Llama-2-7B shape (32 layers, d 4096) at 4096 tokens.
    assert deepseek_flops_per_token(32, 4096, 4096) == 72 * 32 * 4096**2 + 12 * 32 * 4096 * 4096


def test_step_law_at_its_1b_100b_validation_model() -> None:
    s = step_law(1e9, 1e11)
    assert s.lr == pytest.approx(1.79 * 1e9**-0.713 * 1e11**0.307, rel=1e-12)
    assert s.lr == pytest.approx(1.63e-3, rel=1e-2)
    assert s.batch_tokens == pytest.approx(1.108e6, rel=1e-2)
    # Batch does not depend on N, LR falls with N and rises with D.
    assert step_law(1e10, 1e11).batch_tokens == s.batch_tokens
    assert step_law(1e10, 1e11).lr < s.lr < step_law(1e9, 1e12).lr


def test_suggestions_name_both_laws_in_order() -> None:
    out = suggest_hyperparams(n_layer=32, d_model=4096, seq_len=4096, non_embedding_params=6.5e9, tokens=2e12)
    assert [s.law for s in out] == ["deepseek", "step_law"]
    assert out[0].batch_sequences(4096) == round(out[0].batch_tokens / 4096)


def test_data_constrained_law_reproduces_the_papers_values() -> None:
    assert effective_tokens(4.0, 1.0) == pytest.approx(3.726, abs=1e-3)  # 4 epochs ~ 93% as good
    assert effective_tokens(4.0, 1.0) / 4 > 0.93
    assert effective_tokens(1e6, 1.0) == pytest.approx(16.4, rel=1e-3)  # saturates at (1 + R*) U
    assert effective_tokens(0.5, 1.0) == 0.5  # under one epoch every token is unique
    pred = data_constrained(7e9, 1.4e12, 0.35e12)
    assert pred.epochs == 4.0
    assert pred.predicted_loss > pred.predicted_loss_unconstrained
    # far more epochs cost much more loss than four
    assert data_constrained(7e9, 1.4e12, 0.035e12).predicted_loss - pred.predicted_loss_unconstrained > \
        10 * (pred.predicted_loss - pred.predicted_loss_unconstrained)


def _synthetic(sizes: list[float], *, lr_k: float = 0.5, lr_a: float = -0.3, e: float = 1.5, a: float = 40.0,
               alpha: float = 0.35, noise: float = 0.003, seed: int = 1) -> list[Point]:
    rng = random.Random(seed)
    points = []
    for n in sizes:
        lr_opt = lr_k * n**lr_a
        for k in range(-3, 4):
            lr = lr_opt * 2 ** (k + rng.uniform(-0.2, 0.2))
            for batch in (8192, 16384):
                loss = e + a * n**-alpha + 0.02 * math.log2(lr / lr_opt) ** 2 + 0.08 * (batch == 8192)
                points.append(Point(size=f"n{n:g}", n_params=n, tokens=1e8, lr=lr, batch_tokens=batch,
                                    loss=loss * (1 + rng.gauss(0, noise))))
    return points


def test_fit_recovers_known_exponents_and_constants_from_noisy_points() -> None:
    sizes = [1e5, 3e5, 1e6, 3e6, 1e7]
    fit = fit_ladder(_synthetic(sizes), 1e7, 1e8)
    assert fit.mode == "fitted" and fit.alpha_fitted
    assert fit.lr_exponent.low <= -0.3 <= fit.lr_exponent.high
    assert fit.lr_exponent.value == pytest.approx(-0.3, abs=0.06)
    assert fit.loss_alpha.value == pytest.approx(0.35, abs=0.12)
    assert fit.loss_e.value == pytest.approx(1.5, abs=0.1)
    assert fit.lr.value == pytest.approx(0.5 * 1e7**-0.3, rel=0.2)
    assert fit.lr.low < fit.lr.value < fit.lr.high
    assert fit.batch_tokens.value == pytest.approx(16384, rel=0.1)
    assert fit.extrapolation == 1.0 and not any("WARNING" in n for n in fit.notes)


def test_held_out_largest_size_is_predicted_from_the_smaller_ones() -> None:
    pts = _synthetic([1e5, 3e5, 1e6, 3e6, 3e7])
    small = [p for p in pts if p.n_params < 3e7]
    fit = fit_ladder(small, 3e7, 1e8)
    true_lr = 0.5 * 3e7**-0.3
    assert fit.lr.low <= true_lr * 1.1 and true_lr * 0.9 <= fit.lr.high
    assert fit.loss.value == pytest.approx(1.5 + 40 * 3e7**-0.35, rel=0.03)
    assert any("outside the fitted range" in n for n in fit.notes)


def test_near_optimal_set_is_not_the_single_best_trial() -> None:
    pts = [Point(size="s", n_params=1e6, tokens=1e8, lr=lr, batch_tokens=8192, loss=loss)
           for lr, loss in ((1e-3, 3.00), (2e-3, 2.995), (4e-3, 2.99), (8e-3, 3.2))]
    (opt,) = size_optima(pts, 0.01)
    assert opt.near_optimal == 3 and 1e-3 < opt.lr < 4e-3


def test_far_target_is_warned() -> None:
    fit = fit_ladder(_synthetic([1e5, 3e5, 1e6]), 1e10, 1e8, n_boot=50)
    assert any("FAR outside" in n for n in fit.notes) and fit.extrapolation > 1000
    assert not fit.alpha_fitted and fit.loss_alpha.value == ALPHA


def test_one_size_anchors_the_priors_and_says_so() -> None:
    fit = fit_ladder(_synthetic([1e6]), 1e8, 1e8, n_boot=50)
    assert fit.mode == "anchored" and any("anchored" in n for n in fit.notes)
    assert fit.lr_exponent.value == -0.713
    (opt,) = fit.optima
    assert fit.lr.value == pytest.approx(opt.lr * 100**-0.713)


def test_too_few_trials_is_refused_naming_what_to_run() -> None:
    pts = _synthetic([1e6])[:2]
    with pytest.raises(UsageError, match="default_ladder.yaml"):
        fit_ladder(pts, 1e8, 1e8)


def test_plan_prints_and_emits_the_priors_and_the_data_limit(capsys) -> None:
    import json

    from trainplan.cli import main

    base = ["plan", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--gpus", "64", "--zero", "3",
            "--global-batch", "1024", "--seq-len", "4096", "--tokens", "2T"]
    assert main([*base, "--format", "json", "--dataset-tokens", "500B"]) == 0
    doc = json.loads(capsys.readouterr().out)
    suggested = doc["hyperparams"]["suggested"]
    assert [s["law"] for s in suggested] == ["deepseek", "step_law"]
    assert suggested[1]["lr"] == pytest.approx(step_law(doc["parameters"]["non_embedding"], 2e12).lr)
    assert "2401.02954" in suggested[0]["source"] and "2503.04715" in suggested[1]["source"]
    dc = doc["scaling"]["data_constrained"]
    assert dc["epochs"] == 4.0 and dc["effective_tokens"] == pytest.approx(500e9 * 3.7259, rel=1e-4)
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "LR / batch (deepseek)" in out and "LR / batch (step_law)" in out and "prior" in out
    assert main([*base, "--dataset-tokens", "0"]) == 2
    assert "--dataset-tokens" in capsys.readouterr().err


def test_loss_at_other_tokens_is_fitted_only_when_the_ladder_varies_tokens() -> None:
    # One token budget: the loss is predicted at the ladder's tokens, and the note says so.
    fit = fit_ladder(_synthetic([1e5, 3e5, 1e6, 3e6]), 1e7, 1e12, n_boot=50)
    assert fit.loss_tokens == pytest.approx(1e8) and any("not the target's" in n for n in fit.notes)
    assert fit.loss.value == pytest.approx(1.5 + 40 * 1e7**-0.35, rel=0.03)
    # Several budgets, L = E + A N^-a + B D^-b with the prior's exponents: E, A, B come back.
    rng = random.Random(3)
    pts = []
    for n, d in ((1e5, 1e8), (3e5, 3e8), (1e6, 1e8), (3e6, 1e9), (1e7, 3e8)):
        for k in range(-2, 3):
            lr = 0.01 * 2**k
            loss = 1.7 + 400 * n**-ALPHA + 900 * d**-0.3658 + 0.02 * k**2
            pts.append(Point(size=f"{n:g}/{d:g}", n_params=n, tokens=d, lr=lr, batch_tokens=8192,
                             loss=loss * (1 + rng.gauss(0, 0.001))))
    fit = fit_ladder(pts, 1e8, 1e10, n_boot=50)
    assert fit.loss_tokens == 1e10
    assert fit.loss.value == pytest.approx(1.7 + 400 * 1e8**-ALPHA + 900 * 1e10**-0.3658, rel=0.02)


def test_an_optimum_at_the_edge_of_the_swept_range_is_flagged() -> None:
    pts = [Point(size="s", n_params=1e6, tokens=1e8, lr=lr, batch_tokens=8192, loss=3.0 - lr)
           for lr in (1e-3, 2e-3, 4e-3)]
    fit = fit_ladder(pts, 1e6, 1e8, n_boot=20)
    assert fit.optima[0].lr_at_edge and any("edge of the swept range for s" in n for n in fit.notes)
    assert not fit_ladder(_synthetic([1e6]), 1e6, 1e8, n_boot=20).optima[0].lr_at_edge


def _noisy_path_ladder(noise: float, seed: int) -> tuple[list[Point], float]:
    """A 4-width ladder on a path (D ~ N^0.5), 5 LRs a width, every loss times exp(N(0, noise^2)); the
    points of the three smaller widths and one noisy run of the largest at its optimal LR."""
    from trainplan.planner._scaling import A, B

    rng = random.Random(seed)

    def truth(w: int, lr: float) -> float:
        n, d = 48.0 * w * w, 1024.0 * w
        lr_opt = 0.3 * n ** -0.4
        return 0.9 + 0.04 * (A * n ** -ALPHA + B * d ** -0.3658) + 0.02 * math.log2(lr / lr_opt) ** 2

    pts = [Point(size=f"w{w}", n_params=48.0 * w * w, tokens=1024.0 * w, lr=lr, batch_tokens=512,
                 loss=truth(w, lr) * math.exp(rng.gauss(0, noise)))
           for w in (64, 96, 128) for lr in (0.3 * (48.0 * w * w) ** -0.4 * 2.0 ** k for k in (-2, -1, 0, 1, 2))]
    n_t = 48.0 * 192 * 192
    return pts, truth(192, 0.3 * n_t ** -0.4) * math.exp(rng.gauss(0, noise))


def test_trial_noise_is_measured_from_each_sizes_lr_curve() -> None:
    from trainplan.planner._hyperfit import trial_noise

    pts = [Point(size=f"{p.size}-seed{s}", n_params=p.n_params, tokens=p.tokens, lr=p.lr, batch_tokens=p.batch_tokens,
                 loss=p.loss) for s in range(3, 9) for p in _noisy_path_ladder(0.02, seed=s)[0]]
    sigma, dof = trial_noise(pts)
    assert dof == 18 * 2  # 18 curves of 5 LRs, a parabola's 3 constants each
    assert 0.013 < sigma < 0.03
    three_lrs = [p for p in _noisy_path_ladder(0.02, seed=3)[0] if p.lr <= 0.3 * p.n_params ** -0.4 * 1.01]
    assert trial_noise(three_lrs) == (0.0, 0)  # 3 LRs a size: not measurable


def test_the_loss_interval_covers_one_noisy_run_of_the_target() -> None:
    # 2% noise a trial, the default ladder's measured order: the interval is for what one run of the
    # target will measure. Resampling the trials alone (no noise term) covered 18 of these 30 draws.
    inside = 0
    for seed in range(30):
        pts, measured = _noisy_path_ladder(0.02, seed)
        fit = fit_ladder(pts, 48.0 * 192 * 192, 1024.0 * 192, n_boot=100, seed=seed)
        assert fit.trial_noise_dof == 6 and any("a trial's own noise" in n for n in fit.notes)
        inside += fit.loss.low <= measured <= fit.loss.high
    assert inside >= 26
