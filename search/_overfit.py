"""Overfitting in a learning curve: eval loss rising while train loss falls, over a stated window.

Rule (one place): at an evaluation k, with ``window`` = w, the trial is overfitting when the eval
loss rose at each of the last w evaluations (e_{k-w} < e_{k-w+1} < ... < e_k) while the train loss,
averaged over the steps since the previous evaluation, fell over the same span (t_k < t_{k-w}).
Averaging the train loss between evaluations keeps one noisy step from deciding. This is the
signature of memorising repeated data (Muennighoff et al. 2023, arXiv:2305.16264, Sec. 6: many
epochs of the same tokens raise the held-out loss).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["overfit_at"]


def _evals(curve: Sequence[Sequence[Any]]) -> list[tuple[int, int, float, float]]:
    """(step, tokens, eval loss, mean train loss since the previous eval) per evaluation."""
    out, train = [], []
    for step, tokens, _elapsed, train_loss, eval_loss in curve:
        if isinstance(train_loss, (int, float)) and math.isfinite(train_loss):
            train.append(float(train_loss))
        if isinstance(eval_loss, (int, float)) and math.isfinite(eval_loss) and train:
            out.append((int(step or 0), int(tokens or 0), float(eval_loss), sum(train) / len(train)))
            train = []
    return out


def overfit_at(curve: Sequence[Sequence[Any]], window: int = 3) -> dict[str, Any] | None:
    """The first evaluation at which the curve ``[step, tokens, elapsed_s, train_loss, eval_loss]``
    shows overfitting over ``window`` evaluations, as a record; None when it does not."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    evals = _evals(curve)
    for k in range(window, len(evals)):
        span = evals[k - window:k + 1]
        rising = all(b[2] > a[2] for a, b in zip(span, span[1:]))
        if rising and span[-1][3] < span[0][3]:
            return {"step": span[-1][0], "tokens": span[-1][1], "window": window,
                    "eval_loss_from": span[0][2], "eval_loss_to": span[-1][2],
                    "train_loss_from": span[0][3], "train_loss_to": span[-1][3],
                    "best_eval_loss": min(e[2] for e in evals[:k + 1])}
    return None
