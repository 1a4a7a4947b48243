"""Compute-optimal training tokens and the loss the Chinchilla parametric fit predicts.

L(N, D) = E + A / N**alpha + B / D**beta  (Hoffmann et al. 2022, "Training Compute-Optimal Large
Language Models", eq. 2), with the constants of the refit by Besiroglu et al. 2024 ("Chinchilla
Scaling: A replication attempt", Table 1): the rounded 2022 constants do not reproduce the paper's
~20 tokens per parameter, the refit does.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ScalingPrediction", "chinchilla"]

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
