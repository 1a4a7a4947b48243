"""Compute-optimal training tokens and the loss the Chinchilla parametric fit predicts.

L(N, D) = E + A / N**alpha + B / D**beta  (Hoffmann et al. 2022, "Training Compute-Optimal Large
Language Models", eq. 2), with the constants of the refit by Besiroglu et al. 2024 ("Chinchilla
Scaling: A replication attempt", Table 1): the rounded 2022 constants do not reproduce the paper's
~20 tokens per parameter, the refit does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DataConstrainedPrediction", "ScalingPrediction", "chinchilla", "data_constrained", "effective_tokens",
           "same_compute_sizes"]

E, A, B = 1.8172, 482.01, 2085.43
ALPHA, BETA = 0.3478, 0.3658


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalingPrediction:
    """What the fitted scaling law predicts for a model size (a prediction, not a measurement)."""

    compute_optimal_tokens: float
    """Tokens that minimise loss for this N at the compute 6*N*D they imply."""
    tokens_per_parameter: float
    """compute_optimal_tokens / N."""
    predicted_loss_at_optimal: float
    """L(N, D_opt) in nats per token, for the fit's data (MassiveText); other data shifts E."""
    predicted_loss_at_tokens: float | None
    """L(N, D) at the planned token budget, when one is given."""


def _loss(n: float, d: float) -> float:
    return E + A / n**ALPHA + B / d**BETA


def chinchilla(n_params: float, tokens: float | None = None) -> ScalingPrediction:
    """Compute-optimal tokens for ``n_params`` and the predicted loss.

    Minimising L under C = 6ND gives N_opt = G (C/6)**a with a = beta/(alpha+beta) and
    G = (alpha A / (beta B))**(1/(alpha+beta)) (Hoffmann et al. 2022, eq. 4); solving for the
    compute at which ``n_params`` is optimal gives D_opt = (N/G)**(1/a) / N.
    """
    a = BETA / (ALPHA + BETA)
    g = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
    d_opt = (n_params / g) ** (1 / a) / n_params
    return ScalingPrediction(
        compute_optimal_tokens=d_opt,
        tokens_per_parameter=d_opt / n_params,
        predicted_loss_at_optimal=_loss(n_params, d_opt),
        predicted_loss_at_tokens=_loss(n_params, tokens) if tokens else None,
    )


# Data-constrained scaling (Muennighoff et al. 2023, "Scaling Data-Constrained Language Models",
# arXiv:2305.16264, Sec. 3.1, eq. 5 and its parameter analogue eq. 6): repeated tokens are worth
# less each epoch; their value decays with the fitted half-life-like constants R*_D and R*_N.
R_STAR_D = 15.4
"""R*_D (Muennighoff et al. 2023, Sec. 3.1): repetitions at which repeated data has lost 1-1/e of its value."""
R_STAR_N = 5.3
"""R*_N (same paper, Sec. 3.1): the analogue for parameters in excess of what the unique data supports."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DataConstrainedPrediction:
    """Epochs and effective data for training on ``tokens`` with only ``unique_tokens`` of data."""

    unique_tokens: float
    """U_D: unique tokens the user has."""
    tokens: float
    """D: training tokens planned."""
    epochs: float
    """D / U_D."""
    effective_tokens: float
    """D' = U_D + U_D R*_D (1 - exp(-R_D / R*_D)), R_D = D/U_D - 1 (eq. 5; D' = D while D <= U_D)."""
    effective_params: float
    """N' (eq. 6): N beyond the compute-optimal size for U_D unique tokens is worth less."""
    predicted_loss: float
    """L(N', D') with the Chinchilla form and the Besiroglu et al. 2024 constants (a prediction)."""
    predicted_loss_unconstrained: float
    """L(N, D) as if every token were unique, for comparison."""


def _params_optimal_for(tokens: float) -> float:
    """N whose compute-optimal token count (see :func:`chinchilla`) is ``tokens``: the inverse of
    D_opt(N) = (N/G)**(1/a) / N."""
    a = BETA / (ALPHA + BETA)
    g = (ALPHA * A / (BETA * B)) ** (1 / (ALPHA + BETA))
    return (tokens * g ** (1 / a)) ** (1 / (1 / a - 1))


def effective_tokens(tokens: float, unique_tokens: float, r_star: float = R_STAR_D) -> float:
    """D' of Muennighoff et al. 2023 (arXiv:2305.16264, eq. 5)."""
    if tokens <= unique_tokens:
        return tokens
    repeats = tokens / unique_tokens - 1
    return unique_tokens + unique_tokens * r_star * (1 - math.exp(-repeats / r_star))


def data_constrained(n_params: float, tokens: float, unique_tokens: float) -> DataConstrainedPrediction:
    """Epochs, effective tokens and parameters, and the loss for ``n_params`` trained on ``tokens``
    drawn from ``unique_tokens`` unique tokens (Muennighoff et al. 2023, eqs. 5-6)."""
    if unique_tokens <= 0 or tokens <= 0 or n_params <= 0:
        raise ValueError("parameters, tokens and unique tokens must be positive")
    d_eff = effective_tokens(tokens, unique_tokens)
    u_n = min(n_params, _params_optimal_for(unique_tokens))
    n_eff = effective_tokens(n_params, u_n, R_STAR_N)  # eq. 6 has the form of eq. 5
    return DataConstrainedPrediction(
        unique_tokens=unique_tokens, tokens=tokens, epochs=tokens / unique_tokens,
        effective_tokens=d_eff, effective_params=n_eff,
        predicted_loss=_loss(n_eff, d_eff), predicted_loss_unconstrained=_loss(n_params, tokens),
    )


def same_compute_sizes(n_params: float, tokens: float, unique_tokens: float,
                       factors: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)) -> list[DataConstrainedPrediction]:
    """The data-constrained loss of models ``f x n_params`` trained on ``tokens / f`` (the same
    compute 6ND) from the same unique data: a smaller model on more epochs against a bigger one on
    fewer (Muennighoff et al. 2023, arXiv:2305.16264, Sec. 5 makes this trade-off with eqs. 5-6)."""
    return [data_constrained(f * n_params, tokens / f, unique_tokens) for f in factors]
