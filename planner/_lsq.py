"""Small non-negative least squares in relative error, pure Python (the planner imports no numpy).

Shared by the calibration (planner/_calibration.py) and the CPU kernel cost models (planner/_cpu.py).
"""

from __future__ import annotations

__all__ = ["nonneg_rel_lsq", "solve"]


def solve(a: list[list[float]], b: list[float]) -> list[float] | None:
    """Solve ``a x = b`` by Gauss-Jordan elimination with partial pivoting; None when singular."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    scale = max((abs(x) for row in a for x in row), default=0.0)
    for c in range(n):
        piv = max(range(c, n), key=lambda r: abs(m[r][c]))
        if abs(m[piv][c]) <= 1e-12 * scale:  # singular to working precision
            return None
        m[c], m[piv] = m[piv], m[c]
        for r in range(n):
            if r != c:
                f = m[r][c] / m[c][c]
                m[r] = [x - f * y for x, y in zip(m[r], m[c])]
    return [m[i][n] / m[i][i] for i in range(n)]


def nonneg_rel_lsq(rows: list[list[float]], y: list[float]) -> list[float] | None:
    """Coefficients c >= 0 minimising sum((rows_i . c / y_i - 1)^2): least squares in relative error.

    Tries every subset of columns (fine for the <= 8 columns used here) and keeps the best fit whose
    coefficients are all >= 0 (a column left out has coefficient 0); None when no subset fits."""
    k = len(rows[0])
    # each column scaled to unit RMS (the coefficients scaled back below): the regressors differ by
    # up to 1e20 (seconds, FLOPs, parameters), which the elimination's tolerance must not see
    norm = [(sum((r[j] / yi) ** 2 for r, yi in zip(rows, y)) / len(y)) ** 0.5 or 1.0 for j in range(k)]
    x = [[r[j] / yi / norm[j] for j in range(k)] for r, yi in zip(rows, y)]
    # the normal equations of every subset are a sub-matrix of one Gram matrix, and each subset's
    # sum of squares is c'Gc - 2c'g + n: formed once, not once per subset (the calibration's
    # leave-one-out fits this 300 times a fold)
    gram = [[sum(xr[i] * xr[j] for xr in x) for j in range(k)] for i in range(k)]
    g = [sum(xr[i] for xr in x) for i in range(k)]
    best: tuple[float, list[float]] | None = None
    for mask in range(1, 2**k):
        cols = [j for j in range(k) if mask >> j & 1]
        sol = solve([[gram[i][j] for j in cols] for i in cols], [g[i] for i in cols])
        if sol is None or min(sol) < 0:
            continue
        sse = (sum(a * gram[i][j] * b for a, i in zip(sol, cols) for b, j in zip(sol, cols))
               - 2 * sum(a * g[i] for a, i in zip(sol, cols)) + len(y))
        if best is None or sse < best[0] - 1e-12 * len(y):
            full = [0.0] * k
            for j, v in zip(cols, sol):
                full[j] = v / norm[j]
            best = (sse, full)
    return best[1] if best else None
