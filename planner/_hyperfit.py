"""Hyperparameter and loss laws fitted from plain points of a ladder sweep, with bootstrap intervals.

The planner never reads a study: ``search`` hands it :class:`Point` values (parameters, tokens,
lr, batch, final loss of each completed trial). Method, written once:

1. Per size (one N and D), the *near-optimal set*: trials whose loss is within ``tolerance`` (a
   fraction, default 2%) of that size's best. The size's optimal LR (and batch) is the
   loss-weighted geometric mean of the set, weight ``1 / (1 + (L - L_best) / (tolerance L_best))``
   (1 for the best trial, 1/2 at the edge): one lucky trial does not decide, as Step Law
   (arXiv:2503.04715, Sec. 2) found the landscape flat near the optimum.
2. Power laws in N: ``lr* = k N^a`` and ``B* = k N^b`` by least squares in log space (the form of
   DeepSeek LLM, arXiv:2401.02954, eq. 1, and Step Law). When the ladder trained several token
   budgets and they *identify* D (see :func:`d_identified`: 2+ budgets, a spare optimum beyond the
   parameters, and log D not moving with log N), ``lr* = k N^a D^c`` and ``B* = k N^b D^d`` are
   fitted (Step Law's form, arXiv:2503.04715, eq. 1-2) and ``d_identified`` is True. Otherwise the
   D dependence at the target is Step Law's exponent (a prior), applied from the ladder's path
   tokens at the target's N (step 3) to the target's tokens, since the fitted N slope already holds
   the path's own D; ``d_reason`` and ``notes`` say why D was not fitted.
3. Loss along the ladder's *path*: the tokens each size trained, ``D = k N^g`` by least squares
   in log space (g = 0 for one budget; :func:`ladder_path`). When the budgets lie on that path
   (one budget, or log D moving with log N, |correlation| > 0.95) the data term cannot be told from
   the size term, so the loss is fitted along the path. One budget: ``L = E + A N^-alpha``
   (Hoffmann et al. 2022, arXiv:2203.15556, eq. 2, the data term constant); alpha is profiled over
   a grid when 4+ sizes exist, otherwise held at the Besiroglu et al. 2024 value 0.3478 (the prior
   for few data). Tokens growing with N (g > 0): the data term falls too, as N^-(g beta), slower
   than the size term, so one exponent alpha misstates the path; the loss is
   ``L = E + s (A N^-alpha + B D(N)^-beta)`` with D(N) = k N^g, i.e. the Besiroglu law's shape
   along the ladder's path (its A, B, alpha, beta), and only E and the scale s fitted. It is
   predicted at the path's tokens for the target's N (``loss_tokens`` says so when the target's
   tokens differ from those by more than 10%). Fitting E, A and B freely on such a path is
   ill-conditioned (3 sizes at D ~ N^0.5 gave E = -40 and a loss of 0.09 at the next size); on the
   default ladder (seed 0) holding one exponent at 0.3478 predicted the held-out size 3.4% high,
   the path shape 1.9% (benchmarks/results/transfer.md). When the budgets do separate D from
   N (3+ sizes, 2+ budgets, off one path), ``L = E + A N^-alpha + B D^-beta`` with both exponents
   at the Besiroglu prior and E, A, B fitted. Chinchilla's own B is in its data's nats and at a
   tiny D swamps everything (tried: -27 nats at 2T from 131k tokens), so it is never borrowed.
4. Intervals: 400 bootstrap resamples of the trials within each size (seeded), the whole fit
   redone each time; 2.5/97.5 percentiles. Resampling a size's few trials says how much the choice
   of LR moves the fit, not how much a trial's loss would move if it were run again (another seed:
   init and data order), which on the default ladder is ~2% a trial and, carried 2x beyond the
   fitted sizes, larger than the fit's own spread (benchmarks/results/transfer.md: a seed whose
   measured loss fell outside the resampled interval). So the loss interval is for *one run's*
   final loss: each replicate also scales every trial's loss by exp(N(0, sigma^2)) and the
   prediction by one more such draw (the target run's own noise), sigma being the trial noise
   :func:`trial_noise` measures on the ladder itself (the residual of each size's loss against
   ln LR about a parabola; 0, and said so, when no size swept 4+ learning rates).

With one size only, the priors' exponents (Step Law for LR and batch, Besiroglu for loss) are
anchored on the measured optimum, and every output says so (``mode == "anchored"``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from trainplan.errors import UsageError
from trainplan.planner._hyperlaws import STEP_BATCH, STEP_LR
from trainplan.planner._interval import Interval  # value with its 2.5-97.5 percentile bootstrap interval
from trainplan.planner._scaling import ALPHA, BETA
from trainplan.planner._scaling import A as CHIN_A, B as CHIN_B

__all__ = ["FitResult", "Interval", "Point", "SizeOptimum", "fit_ladder", "ladder_path", "size_optima"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Point:
    """One completed trial (measured)."""

    size: str
    n_params: float
    """Non-embedding parameters."""
    tokens: float
    lr: float
    batch_tokens: float
    loss: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SizeOptimum:
    """One size's near-optimal LR, batch and loss (from its near-optimal set)."""

    size: str
    n_params: float
    tokens: float
    lr: float
    batch_tokens: float
    loss: float
    """Best measured loss of the size."""
    trials: int
    """Completed trials of the size."""
    near_optimal: int
    """Trials within the tolerance of the best."""
    lr_at_edge: bool = False
    """The best trial's LR is the smallest or largest swept for the size: the optimum may lie beyond."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FitResult:
    """Laws fitted (or anchored) from a ladder, and their prediction at a target."""

    mode: str
    """``fitted`` (2+ sizes) or ``anchored`` (one size: the priors' exponents on its optimum)."""
    tolerance: float
    """Near-optimal set: within this fraction of each size's best loss."""
    optima: tuple[SizeOptimum, ...]
    lr_exponent: Interval
    """a in lr* = k N^a."""
    batch_exponent: Interval
    """b in B* = k N^b."""
    loss_alpha: Interval
    """alpha in L = E + A N^-alpha (the prior's value when held fixed)."""
    loss_e: Interval
    """E in L = E + A N^-alpha."""
    alpha_fitted: bool
    d_identified: bool
    """LR and batch were fitted in D (several budgets that separate D from N); else D is the prior's."""
    d_reason: str
    """Why D was (not) identified, in words."""
    lr_d_exponent: Interval
    """c in lr* = k N^a D^c (Step Law's 0.307 when D is not identified)."""
    batch_d_exponent: Interval
    """d in B* = k N^b D^d (Step Law's 0.571 when D is not identified)."""
    target_n: float
    target_tokens: float
    lr: Interval
    batch_tokens: Interval
    loss: Interval
    loss_tokens: float
    """The tokens the loss prediction is for (the ladder's when it cannot reach the target's)."""
    fitted_n_range: tuple[float, float]
    fitted_tokens: tuple[float, float]
    extrapolation: float
    """target N / largest fitted N (or smallest / target N when below): 1 inside the data."""
    trial_noise: float = 0.0
    """Relative sd of one trial's final loss (:func:`trial_noise`), in the loss interval; 0 when not measurable."""
    trial_noise_dof: int = 0
    """Degrees of freedom behind ``trial_noise`` (0: not measurable)."""
    notes: tuple[str, ...] = field(default=())
    """What is a prior rather than a fit, and any extrapolation warning."""

    def to_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode, "tolerance": self.tolerance,
            "data": [vars_of(o) for o in self.optima],
            "lr_exponent": self.lr_exponent.to_dict(), "batch_exponent": self.batch_exponent.to_dict(),
            "loss_alpha": self.loss_alpha.to_dict(), "loss_e": self.loss_e.to_dict(),
            "alpha_fitted": self.alpha_fitted,
            "d_identified": self.d_identified, "d_reason": self.d_reason,
            "lr_d_exponent": self.lr_d_exponent.to_dict(), "batch_d_exponent": self.batch_d_exponent.to_dict(),
            "target": {"non_embedding_params": self.target_n, "tokens": self.target_tokens,
                       "lr": self.lr.to_dict(), "batch_tokens": self.batch_tokens.to_dict(),
                       "loss": self.loss.to_dict(), "loss_tokens": self.loss_tokens},
            "fitted_n_range": list(self.fitted_n_range), "fitted_tokens": list(self.fitted_tokens),
            "extrapolation": self.extrapolation,
            "trial_noise": {"relative_sd": self.trial_noise, "dof": self.trial_noise_dof}, "notes": list(self.notes),
        }


def vars_of(o: SizeOptimum) -> dict[str, object]:
    return {k: getattr(o, k) for k in SizeOptimum.__dataclass_fields__}


def size_optima(points: Sequence[Point], tolerance: float = 0.02) -> list[SizeOptimum]:
    """Each size's near-optimal LR and batch (method step 1), smallest size first."""
    groups: dict[tuple[float, float], list[Point]] = {}
    for p in points:
        groups.setdefault((p.n_params, p.tokens), []).append(p)
    out = []
    for (n, d), group in sorted(groups.items()):
        best = min(p.loss for p in group)
        tol = tolerance * best
        near = [p for p in group if p.loss <= best + tol]
        w = [1 / (1 + (p.loss - best) / tol) if tol > 0 else 1.0 for p in near]
        total = sum(w)
        out.append(SizeOptimum(
            size=group[0].size, n_params=n, tokens=d,
            lr=math.exp(sum(wi * math.log(p.lr) for wi, p in zip(w, near)) / total),
            batch_tokens=math.exp(sum(wi * math.log(p.batch_tokens) for wi, p in zip(w, near)) / total),
            loss=best, trials=len(group), near_optimal=len(near),
            lr_at_edge=min(group, key=lambda p: p.loss).lr in (min(p.lr for p in group), max(p.lr for p in group))))
    return out


def _line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares intercept and slope."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx > 0 else 0.0
    return my - slope * mx, slope


def _loss_fit(ns: Sequence[float], ls: Sequence[float], alpha: float | None) -> tuple[float, float, float]:
    """E, A, alpha of L = E + A N^-alpha; alpha profiled over a grid when ``None``."""
    def for_alpha(a: float) -> tuple[float, float, float]:
        e, slope = _line([n ** -a for n in ns], ls)
        sse = sum((e + slope * n ** -a - y) ** 2 for n, y in zip(ns, ls))
        return sse, e, slope

    if alpha is not None:
        _, e, a_coef = for_alpha(alpha)
        return e, a_coef, alpha
    grid = [0.02 * i for i in range(1, 76)]  # alpha in (0, 1.5]
    best = min(grid, key=lambda a: for_alpha(a)[0])
    # refine around the best grid point
    lo, hi = max(1e-3, best - 0.02), best + 0.02
    for _ in range(40):
        m1, m2 = lo + (hi - lo) / 3, hi - (hi - lo) / 3
        if for_alpha(m1)[0] < for_alpha(m2)[0]:
            hi = m2
        else:
            lo = m1
    a = (lo + hi) / 2
    _, e, a_coef = for_alpha(a)
    return e, a_coef, a


def _solve(rows: Sequence[Sequence[float]], ys: Sequence[float]) -> list[float]:
    """Least squares by the normal equations and Gaussian elimination (a handful of columns)."""
    k = len(rows[0])
    m = [[sum(r[i] * r[j] for r in rows) for j in range(k)] + [sum(r[i] * y for r, y in zip(rows, ys))]
         for i in range(k)]
    for c in range(k):
        piv = max(range(c, k), key=lambda r: abs(m[r][c]))
        m[c], m[piv] = m[piv], m[c]
        if abs(m[c][c]) < 1e-300:
            raise ValueError("singular design: the sizes do not separate N from D")
        for r in range(k):
            if r != c:
                f = m[r][c] / m[c][c]
                m[r] = [a - f * b for a, b in zip(m[r], m[c])]
    return [m[i][k] / m[i][i] for i in range(k)]


def d_identified(optima: Sequence[SizeOptimum]) -> tuple[bool, str]:
    """Whether the sizes' optima identify how LR and batch move with D, and why (not).

    Needs 2+ token budgets, one optimum more than the fitted parameters (intercept, D slope, and an
    N slope when there are 2+ sizes), and log D not (nearly) a linear function of log N across the
    optima (|correlation| <= 0.95): a ladder whose bigger sizes simply train more tokens cannot tell
    the N exponent from the D exponent.
    """
    ds, ns = sorted({o.tokens for o in optima}), {o.n_params for o in optima}
    if len(ds) < 2:
        return False, f"every size trained the same {ds[0]:.3g} tokens (one budget)"
    if len(ns) >= 2:
        _, g, r = ladder_path(optima)
        if r > PATH_CORRELATION:
            return False, (f"log D moves with log N across the ladder (correlation {math.copysign(r, g):.2f}): the D "
                           "effect cannot be told from the N effect; give one size two budgets")
    k = 3 if len(ns) >= 2 else 2
    if len(optima) < k + 1:
        return False, (f"{len(optima)} size x budget optima for {k} parameters: run one more size or budget "
                       "(ladder entries' tokens)")
    return True, f"{len(ds)} token budgets ({ds[0]:.3g}-{ds[-1]:.3g}) across {len(optima)} size x budget optima"


def ladder_path(optima: Sequence[SizeOptimum]) -> tuple[float, float, float]:
    """``ln k``, ``g`` and |correlation| of the ladder's tokens against its sizes, ``D = k N^g`` by
    least squares in log space: the path the sizes trained along (g = 0 and correlation 1 for one
    budget; correlation 0 when the sizes share one N)."""
    x, z = [math.log(o.n_params) for o in optima], [math.log(o.tokens) for o in optima]
    mx, mz = sum(x) / len(x), sum(z) / len(z)
    sxx, szz = sum((a - mx) ** 2 for a in x), sum((b - mz) ** 2 for b in z)
    if szz < 1e-12:
        return mz, 0.0, 1.0
    if sxx < 1e-12:
        return mz, 0.0, 0.0
    sxz = sum((a - mx) * (b - mz) for a, b in zip(x, z))
    return mz - sxz / sxx * mx, sxz / sxx, abs(sxz) / math.sqrt(sxx * szz)


PATH_CORRELATION = 0.95
"""|correlation| of log D with log N above which the budgets lie on one path (D not identified)."""


def _power_fit(optima: Sequence[SizeOptimum], key: str, fit_n: bool, fit_d: bool) -> tuple[float, float, float]:
    """ln k, N exponent, D exponent of ``key`` ~ k N^a D^c (a or c is 0.0 where not fitted)."""
    ys = [math.log(getattr(o, key)) for o in optima]
    if fit_n and fit_d:
        k, a, c = _solve([[1.0, math.log(o.n_params), math.log(o.tokens)] for o in optima], ys)
        return k, a, c
    if fit_d:
        k, c = _line([math.log(o.tokens) for o in optima], ys)
        return k, 0.0, c
    k, a = _line([math.log(o.n_params) for o in optima], ys)
    return k, a, 0.0


def _one_fit(optima: Sequence[SizeOptimum], target_n: float, target_d: float, fit_alpha: bool,
             loss_d: float, nd_loss: bool, fit_d: bool = False, path_shape: bool = False) -> dict[str, float]:
    ns = [o.n_params for o in optima]
    ln_k, g, _ = ladder_path(optima)
    d_fit = math.exp(ln_k + g * math.log(target_n))  # the path's tokens at the target's N
    k_lr, a_lr, c_lr = _power_fit(optima, "lr", True, fit_d)
    k_b, a_b, c_b = _power_fit(optima, "batch_tokens", True, fit_d)
    if fit_d:  # the fit's own D exponents, at the target's tokens
        lr = math.exp(k_lr + a_lr * math.log(target_n) + c_lr * math.log(target_d))
        batch = math.exp(k_b + a_b * math.log(target_n) + c_b * math.log(target_d))
    else:  # fitted along the ladder's path; carried from its tokens to the target's by Step Law's D exponents
        c_lr, c_b = STEP_LR[2], STEP_BATCH[1]
        lr = math.exp(k_lr + a_lr * math.log(target_n)) * (target_d / d_fit) ** c_lr
        batch = math.exp(k_b + a_b * math.log(target_n)) * (target_d / d_fit) ** c_b
    out = {"lr_exp": a_lr, "batch_exp": a_b, "lr_d_exp": c_lr, "batch_d_exp": c_b, "lr": lr, "batch": batch}
    if nd_loss:  # sizes at several token budgets: L = E + A N^-alpha + B D^-beta, exponents the prior's
        e, a_coef, b_coef = _solve([[1.0, o.n_params ** -ALPHA, o.tokens ** -BETA] for o in optima],
                                   [o.loss for o in optima])
        return {**out, "alpha": ALPHA, "e": e, "loss": e + a_coef * target_n ** -ALPHA + b_coef * loss_d ** -BETA}
    if path_shape:  # tokens grow along the path: the prior law's shape along it, E and scale fitted
        def shape(n: float) -> float:
            return CHIN_A * n**-ALPHA + CHIN_B * math.exp(ln_k + g * math.log(n)) ** -BETA

        e, scale = _line([shape(n) for n in ns], [o.loss for o in optima])
        return {**out, "alpha": ALPHA, "e": e, "loss": e + scale * shape(target_n)}
    # one budget (D constant): L = E + A N^-alpha, at the path's tokens for target_n
    e, a_coef, alpha = _loss_fit(ns, [o.loss for o in optima], None if fit_alpha else ALPHA)
    return {**out, "alpha": alpha, "e": e, "loss": e + a_coef * target_n ** -alpha}


def _anchored(optima: Sequence[SizeOptimum], target_n: float, target_d: float, fit_d: bool = False) -> dict[str, float]:
    # One size (one N), maybe at several budgets: the budget nearest the target's tokens anchors.
    o = min(optima, key=lambda q: abs(math.log(q.tokens / target_d)))
    n_ratio, d_ratio = target_n / o.n_params, target_d / o.tokens
    # The prior's constants are in its own units (MassiveText nats): only the shape of its N term
    # is borrowed, as a ratio at the measured size's tokens.
    from trainplan.planner._scaling import A as CHIN_A, E as CHIN_E

    shape = (CHIN_E + CHIN_A * target_n ** -ALPHA) / (CHIN_E + CHIN_A * o.n_params ** -ALPHA)
    out = {"lr_exp": STEP_LR[1], "batch_exp": 0.0, "alpha": ALPHA, "e": o.loss * CHIN_E / (CHIN_E + CHIN_A * o.n_params ** -ALPHA),
           "lr_d_exp": STEP_LR[2], "batch_d_exp": STEP_BATCH[1],
           "lr": o.lr * n_ratio ** STEP_LR[1] * d_ratio ** STEP_LR[2],
           "batch": o.batch_tokens * d_ratio ** STEP_BATCH[1], "loss": o.loss * shape}
    if fit_d:  # the size's budgets fit the D exponents; N still moves by the prior
        k_lr, _, c_lr = _power_fit(optima, "lr", False, True)
        k_b, _, c_b = _power_fit(optima, "batch_tokens", False, True)
        out.update(lr_d_exp=c_lr, batch_d_exp=c_b, lr=math.exp(k_lr + c_lr * math.log(target_d)) * n_ratio ** STEP_LR[1],
                   batch=math.exp(k_b + c_b * math.log(target_d)))
    return out


def trial_noise(points: Sequence[Point]) -> tuple[float, int]:
    """Relative sd of one trial's final loss and its degrees of freedom, measured on the sweep itself.

    Per size, token budget and batch with 4+ distinct learning rates, ln L is fitted by a parabola in
    ln lr (a smooth bowl: Step Law, arXiv:2503.04715, found the loss landscape in LR and batch convex
    about its optimum); the residuals, pooled over those groups by their degrees of freedom (trials - 3
    each), estimate the noise of one trial. A parabola over a wide LR range is an approximation whose
    misfit counts as noise, so the estimate errs high (an interval too wide, not too narrow). (0.0, 0)
    when no group has 4 learning rates.
    """
    groups: dict[tuple[str, float, float], list[Point]] = {}
    for p in points:
        groups.setdefault((p.size, p.tokens, p.batch_tokens), []).append(p)
    sse, dof = 0.0, 0
    for group in groups.values():
        if len({p.lr for p in group}) < 4 or min(p.loss for p in group) <= 0:  # a loss of 0 has no log
            continue
        xs, ys = [math.log(p.lr) for p in group], [math.log(p.loss) for p in group]
        mx = sum(xs) / len(xs)  # centred: the normal equations stay well conditioned
        try:
            c0, c1, c2 = _solve([[1.0, x - mx, (x - mx) ** 2] for x in xs], ys)
        except ValueError:
            continue
        sse += sum((y - (c0 + c1 * (x - mx) + c2 * (x - mx) ** 2)) ** 2 for x, y in zip(xs, ys))
        dof += len(group) - 3
    return (math.sqrt(sse / dof), dof) if dof else (0.0, 0)


def _group_by_size(points: Sequence[Point]) -> dict[tuple[str, float], list[Point]]:
    """Trials per size and token budget (the bootstrap resamples within each)."""
    out: dict[tuple[str, float], list[Point]] = {}
    for p in points:
        out.setdefault((p.size, p.tokens), []).append(p)
    return out


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    i = q * (len(s) - 1)
    lo = int(math.floor(i))
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (i - lo)


def fit_ladder(points: Sequence[Point], target_n: float, target_tokens: float, *, tolerance: float = 0.02,
               min_trials: int = 3, n_boot: int = 400, seed: int = 0) -> FitResult:
    """Fit (2+ sizes) or anchor (1 size) the laws and predict at the target.

    Raises :class:`UsageError` naming what to run when no size has ``min_trials`` completed trials.
    """
    if not 0 < tolerance < 1:
        raise UsageError("--tolerance", f"must lie in (0, 1), got {tolerance}")
    counts: dict[str, int] = {}
    for p in points:
        counts[p.size] = counts.get(p.size, 0) + 1
    usable = [p for p in points if counts[p.size] >= min_trials]
    if not usable:
        found = ", ".join(f"{s}: {c}" for s, c in sorted(counts.items())) or "no completed trials"
        raise UsageError("--storage", f"too few trials to fit: each size needs >= {min_trials} completed trials "
                                      f"with different learning rates (found {found}); run a ladder sweep "
                                      "(trainplan search search/data/default_ladder.yaml) or more trials of one size")
    optima = size_optima(usable, tolerance)
    ns = [o.n_params for o in optima]
    fit_alpha = len(optima) >= 4
    notes = []
    d_lo, d_hi = min(o.tokens for o in optima), max(o.tokens for o in optima)
    n_budgets, n_sizes = len({o.tokens for o in optima}), len(set(ns))
    ln_k, g, r_path = ladder_path(optima)
    on_path = n_budgets == 1 or (n_sizes >= 2 and r_path > PATH_CORRELATION)
    nd_loss = len(optima) >= 3 and n_budgets >= 2 and n_sizes >= 2 and not on_path
    if n_sizes >= 2:  # the path's tokens at the target's N (one budget: that budget)
        path_tokens = math.exp(ln_k + g * math.log(target_n))
        near = abs(math.log(target_tokens / path_tokens)) <= math.log(1.1)
    else:  # one size: its budgets' range
        path_tokens, near = math.exp(ln_k), d_lo / 1.1 <= target_tokens <= d_hi * 1.1
    loss_tokens = target_tokens if nd_loss or near else path_tokens
    path_shape = on_path and n_budgets > 1 and n_sizes >= 2
    if path_shape:
        notes.append(f"the ladder's tokens grow with its sizes (D ~ N^{g:.2f}, correlation {r_path:.2f}): the loss is "
                     f"fitted along that path as E + s (A N^-{ALPHA} + B D(N)^-{BETA}), the Besiroglu et al. 2024 law's "
                     "shape (its A, B and exponents) with E and the scale s fitted")
    if loss_tokens != target_tokens:
        why = ("every size trained the same tokens" if n_budgets == 1
               else "one size cannot separate the data term from the size term" if n_sizes == 1
               else "the ladder's tokens move with its sizes")
        where = "the ladder's path's" if n_budgets > 1 and n_sizes >= 2 else "the ladder's"
        notes.append(f"final loss is predicted at {where} {loss_tokens:.3g} tokens, not the target's "
                     f"{target_tokens:.3g}: {why}, so the data term is not fitted "
                     "(give 2+ ladder sizes several token budgets, off one path, to fit it)")
    elif nd_loss:
        notes.append(f"loss fitted as E + A N^-{ALPHA} + B D^-{BETA} (exponents: the Besiroglu et al. 2024 prior)")
    fit_d, d_reason = d_identified(optima)
    if fit_d:
        notes.append(f"LR and batch fitted in D too (lr ~ D^c, B ~ D^d): {d_reason}")
    elif n_budgets > 1:
        notes.append(f"the ladder has {n_budgets} token budgets but D is not identified ({d_reason}): LR and batch "
                     f"move with D by Step Law's prior exponents (LR D^{STEP_LR[2]}, batch D^{STEP_BATCH[1]}) from the "
                     f"ladder's path ({path_tokens:.3g} tokens at the target's N)")
    if len(set(ns)) == 1:
        mode, fit = "anchored", (lambda opt: _anchored(opt, target_n, target_tokens, fit_d))
        in_d = "" if fit_d else f", {STEP_LR[2]} in D; batch {STEP_BATCH[1]} in D"
        notes.append(f"one size swept ({optima[0].size}): the priors' exponents (Step Law LR {STEP_LR[1]} in N{in_d}; "
                     f"Besiroglu alpha {ALPHA}) are anchored on its measured optimum; nothing here is fitted across sizes")
    else:
        mode = "fitted"
        fit = (lambda opt: _one_fit(opt, target_n, target_tokens, fit_alpha and not nd_loss and not path_shape,
                                    loss_tokens, nd_loss, fit_d, path_shape))
        if not fit_alpha and not nd_loss and not path_shape:
            notes.append(f"{len(optima)} sizes: loss exponent alpha held at the Besiroglu et al. 2024 prior {ALPHA} "
                         "(4+ sizes fit it)")
    if not (d_lo <= target_tokens <= d_hi) and not fit_d:
        notes.append(f"target tokens {target_tokens:.3g} outside the swept {d_lo:.3g}-{d_hi:.3g}: the D dependence is "
                     f"a prior (Step Law LR D^{STEP_LR[2]}, batch D^{STEP_BATCH[1]})")
    batches = {p.batch_tokens for p in usable}
    if len(batches) == 1:
        notes.append(f"the ladder swept one batch ({next(iter(batches)):.0f} tokens): the batch is not fitted, only "
                     f"carried to the target's tokens by Step Law's D^{STEP_BATCH[1]}")
    lrs_per_size = min(len({p.lr for p in group}) for group in _group_by_size(usable).values())
    if lrs_per_size < 3:
        notes.append(f"a size has only {lrs_per_size} distinct learning rates: its optimum may lie outside what was swept")
    edge = [o.size for o in optima if o.lr_at_edge]
    if edge:
        notes.append(f"best LR at the edge of the swept range for {', '.join(edge)}: widen the LR choices there")
    central = fit(optima)
    sigma, sigma_dof = trial_noise(usable)
    if sigma_dof:
        notes.append(f"loss interval: one run's final loss (95%), with a trial's own noise {sigma:.1%} (sd, measured on "
                     f"this ladder: each size's loss about a parabola in ln LR, {sigma_dof} degrees of freedom)")
    else:
        notes.append("loss interval: the fit's spread over the swept LRs only; a trial's own noise (another seed) is "
                     "not in it: no size swept 4+ learning rates to measure it")
    by_size = _group_by_size(usable)
    rng = random.Random(seed)
    boots: list[dict[str, float]] = []
    for _ in range(n_boot):
        sample = [rng.choice(group) for group in by_size.values() for _ in group]
        if sigma:
            sample = [replace(p, loss=p.loss * math.exp(rng.gauss(0.0, sigma))) for p in sample]
        try:
            b = fit(size_optima(sample, tolerance))
        except (ValueError, ZeroDivisionError, OverflowError):
            continue
        if sigma:
            b["loss"] *= math.exp(rng.gauss(0.0, sigma))  # the target run's own noise
        boots.append(b)

    def interval(key: str) -> Interval:
        vals = [b[key] for b in boots if math.isfinite(b[key])]
        if not vals:
            return Interval(value=central[key], low=central[key], high=central[key])
        return Interval(value=central[key], low=min(_percentile(vals, 0.025), central[key]),
                        high=max(_percentile(vals, 0.975), central[key]))

    lo_n, hi_n = min(ns), max(ns)
    extrap = target_n / hi_n if target_n > hi_n else (lo_n / target_n if target_n < lo_n else 1.0)
    if extrap > 1:
        far = " FAR" if extrap > 10 else ""
        notes.append(f"WARNING: target N {target_n:.3g} is{far} outside the fitted range {lo_n:.3g}-{hi_n:.3g} "
                     f"({extrap:.3g}x beyond): an extrapolation of the fit, not a measurement")
    return FitResult(
        mode=mode, tolerance=tolerance, optima=tuple(optima),
        lr_exponent=interval("lr_exp"), batch_exponent=interval("batch_exp"),
        loss_alpha=interval("alpha"), loss_e=interval("e"),
        alpha_fitted=fit_alpha and mode == "fitted" and not nd_loss and not path_shape,
        d_identified=fit_d, d_reason=d_reason, lr_d_exponent=interval("lr_d_exp"), batch_d_exponent=interval("batch_d_exp"),
        target_n=target_n, target_tokens=target_tokens,
        lr=interval("lr"), batch_tokens=interval("batch"), loss=interval("loss"), loss_tokens=loss_tokens,
        fitted_n_range=(lo_n, hi_n), fitted_tokens=(d_lo, d_hi), extrapolation=extrap,
        trial_noise=sigma, trial_noise_dof=sigma_dof, notes=tuple(notes),
    )


