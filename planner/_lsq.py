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

    Lawson and Hanson's active-set method ("Solving Least Squares Problems", 1974, ch. 23) on the
    normal equations: the problem is convex, so it reaches the same minimum as trying every subset of
    columns, in a handful of solves instead of 2^k (the calibration's leave-one-out runs it 300 times
    a fold). A column left out has coefficient 0; None when no column fits with a positive one."""
    k = len(rows[0])
    # each column scaled to unit RMS (the coefficients scaled back below): the regressors differ by
    # up to 1e20 (seconds, FLOPs, parameters), which the elimination's tolerance must not see
    norm = [(sum((r[j] / yi) ** 2 for r, yi in zip(rows, y)) / len(y)) ** 0.5 or 1.0 for j in range(k)]
    x = [[r[j] / yi / norm[j] for j in range(k)] for r, yi in zip(rows, y)]
    gram = [[sum(xr[i] * xr[j] for xr in x) for j in range(k)] for i in range(k)]
    g = [sum(xr[i] for xr in x) for i in range(k)]
    tol = 1e-10 * max(1.0, max(abs(v) for v in g))
    c = [0.0] * k
    active: list[int] = []  # the columns free to be positive
    barred: set[int] = set()  # columns whose addition made the system singular (collinear)

    def gradient() -> list[float]:  # minus half the gradient of the sum of squares at c
        return [g[i] - sum(gram[i][j] * c[j] for j in range(k)) for i in range(k)]

    for _ in range(3 * k + 3):  # each pass adds a column; removals are bounded too
        w = gradient()
        free = [j for j in range(k) if j not in active and j not in barred and w[j] > tol]
        if not free:
            break
        active.append(max(free, key=lambda j: w[j]))
        while True:
            sol = solve([[gram[i][j] for j in active] for i in active], [g[i] for i in active])
            if sol is None:  # collinear with the active columns: never add it again
                barred.add(active.pop())
                break
            if min(sol) > 0:
                for j, v in zip(active, sol):
                    c[j] = v
                break
            # step from c towards sol until the first active coefficient reaches 0, and drop it
            alpha = min(c[j] / (c[j] - v) for j, v in zip(active, sol) if v <= 0)
            for j, v in zip(active, sol):
                c[j] += alpha * (v - c[j])
            active = [j for j in active if c[j] > 1e-15]
            for j in range(k):
                if j not in active:
                    c[j] = 0.0
            if not active:
                break
    if not any(v > 0 for v in c):
        return None
    return [v / norm[j] for j, v in enumerate(c)]
