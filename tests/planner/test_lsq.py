"""planner/_lsq.py: the active-set non-negative least squares reaches the minimum that trying every
subset of columns finds (the problem is convex), on scaled, sparse and collinear columns alike."""

from __future__ import annotations

import random

import pytest

from trainplan.planner._lsq import nonneg_rel_lsq, solve


def _sse(rows: list[list[float]], y: list[float], c: list[float]) -> float:
    return sum((sum(a * b for a, b in zip(r, c)) / yi - 1) ** 2 for r, yi in zip(rows, y))


def _every_subset(rows: list[list[float]], y: list[float]) -> float | None:
    """The reference: the least sum of squares over every column subset whose solution is >= 0."""
    k, best = len(rows[0]), None
    for mask in range(1, 2**k):
        cols = [j for j in range(k) if mask >> j & 1]
        x = [[r[j] / yi for j in cols] for r, yi in zip(rows, y)]
        sol = solve([[sum(a[i] * a[j] for a in x) for j in range(len(cols))] for i in range(len(cols))],
                    [sum(a[i] for a in x) for i in range(len(cols))])
        if sol is None or min(sol) < 0:
            continue
        full = [0.0] * k
        for j, v in zip(cols, sol):
            full[j] = v
        best = _sse(rows, y, full) if best is None else min(best, _sse(rows, y, full))
    return best


@pytest.mark.parametrize("seed", range(6))
def test_reaches_the_every_subset_minimum(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(25):
        k, n = rng.randint(1, 6), rng.randint(6, 14)
        scale = [10 ** rng.uniform(-3, 3) for _ in range(k)]
        rows = [[abs(rng.gauss(1, 1)) * scale[j] * (rng.random() > 0.2) for j in range(k)] for _ in range(n)]
        if k > 1 and rng.random() < 0.3:  # a collinear column
            for r in rows:
                r[-1] = 2 * r[0]
        truth = [max(0.0, rng.gauss(0.5, 1)) / scale[j] for j in range(k)]
        y = [sum(a * b for a, b in zip(r, truth)) * (1 + 0.05 * rng.gauss(0, 1)) for r in rows]
        if min(y) <= 0:
            continue
        ref, got = _every_subset(rows, y), nonneg_rel_lsq(rows, y)
        assert (ref is None) == (got is None)
        if got is not None:
            assert min(got) >= 0
            assert _sse(rows, y, got) == pytest.approx(ref, rel=1e-6, abs=1e-9)


def test_exact_data_are_recovered_and_a_negative_coefficient_is_clamped() -> None:
    rows = [[1.0, x, x * x] for x in (1.0, 2.0, 3.0, 5.0, 8.0)]
    assert nonneg_rel_lsq(rows, [2 + 0.5 * r[1] for r in rows]) == pytest.approx([2.0, 0.5, 0.0], abs=1e-9)
    # y falls with x: the best non-negative fit leaves the x columns out
    c = nonneg_rel_lsq(rows, [10 - r[1] for r in rows])
    assert c[1] == 0 and c[2] == 0 and c[0] > 0
