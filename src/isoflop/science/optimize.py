"""Batched unconstrained minimisation in numpy: many independent problems advance together.

`lbfgs` runs limited-memory BFGS (Nocedal & Wright 2006, Alg. 7.4/7.5: two-loop recursion) on a batch of S
starting points at once: the two-loop recursion and a weak-Wolfe bisection line search (Lewis & Overton 2013,
"Nonsmooth optimization via quasi-Newton methods") are vectorised across rows, and each trial step
evaluates the objective only on the rows still searching. `newton` polishes a batch with exact Hessians.

Both are invariant to the scale of the objective (f → c·f, c > 0, gives the same iterates): the first step is
set in parameter units, L-BFGS scales its initial Hessian by sᵀy/yᵀy, and every stopping rule is a ratio
(relative decrease, step length in parameter units, gradient relative to the starting gradient). This is the
point: Hoffmann et al.'s fit stopped early because the absolute tolerances of L-BFGS met a small objective
(Besiroglu et al. 2024, arXiv 2404.10102, v2: the optimiser stopped before converging under a poorly chosen
loss scale).

`fun(x, rows)` takes x (m, k) and the indices `rows` (m,) of those rows in the batch (so a batch of problems
can differ, e.g. bootstrap resamples), and returns f (m,) and the gradient (m, k). Non-finite values count as
failed trial steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

ValueGrad = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
Hessian = Callable[[np.ndarray, np.ndarray], np.ndarray]

# status codes of a row
STEP, DECREASE, GRADIENT, MAX_ITER, LINE_SEARCH, NONFINITE = range(6)
MESSAGES = {
    STEP: "step below xtol (parameter units)",
    DECREASE: "relative decrease below ftol",
    GRADIENT: "gradient below gtol relative to the start",
    MAX_ITER: "iteration limit reached",
    LINE_SEARCH: "line search found no decrease (at rounding level)",
    NONFINITE: "objective not finite at the start",
}


@dataclass(frozen=True, eq=False)
class BatchResult:
    """End state of every row: x (S, k), f (S,), grad (S, k), iterations (S,), status (S,) codes above."""

    x: np.ndarray
    f: np.ndarray
    grad: np.ndarray
    iterations: np.ndarray
    status: np.ndarray
    evaluations: int
    """Total rows evaluated (one row = one objective-and-gradient evaluation of one problem)."""


def lbfgs(fun: ValueGrad, x0: np.ndarray, *, memory: int = 10, max_iter: int = 1000, xtol: float = 1e-10,
          ftol: float = 1e-13, gtol: float = 1e-12, first_step: float = 1e-2, max_ls: int = 40,
          min_step: float = 1e-13, c1: float = 1e-4, c2: float = 0.9) -> BatchResult:
    """Minimise each row of x0 (S, k) independently by L-BFGS; all rows advance in one vectorised loop.

    A row stops when its step is below xtol·(1 + |x|∞), its decrease below ftol·|f|, its gradient below
    gtol·(starting gradient) (all scale-free), when the line search finds no decrease, or at max_iter.
    `first_step` is the length (∞-norm, parameter units) of the first trial step along −g; a line search
    gives up below min_step·(1 + |x|∞) (set it near the rounding level of the objective's precision).
    """
    x = np.array(x0, dtype=float, copy=True)
    S, k = x.shape
    f, g = fun(x, np.arange(S))
    f, g = np.asarray(f, dtype=float).copy(), np.asarray(g, dtype=float).copy()
    evaluations = S
    status = np.full(S, -1, dtype=np.int8)
    status[~(np.isfinite(f) & np.all(np.isfinite(g), axis=1))] = NONFINITE
    iterations = np.zeros(S, dtype=np.int64)
    g_scale = np.max(np.abs(g), axis=1)
    status[(status < 0) & (g_scale == 0)] = GRADIENT
    s_mem = np.zeros((memory, S, k))
    y_mem = np.zeros((memory, S, k))
    rho = np.zeros((memory, S))  # 0 marks an empty or skipped slot: it then drops out of the recursion
    gamma = np.zeros(S)
    has_pair = np.zeros(S, dtype=bool)

    for it in range(max_iter):
        act = np.flatnonzero(status < 0)
        if act.size == 0:
            break
        ga = g[act]
        # two-loop recursion over the ring buffer, newest pair first
        q = ga.copy()
        order = [(it - 1 - j) % memory for j in range(min(it, memory))]
        alphas = []
        for slot in order:
            a_j = rho[slot, act] * np.einsum("ij,ij->i", s_mem[slot, act], q)
            q -= a_j[:, None] * y_mem[slot, act]
            alphas.append(a_j)
        r = gamma[act, None] * q
        for slot, a_j in zip(reversed(order), reversed(alphas), strict=True):
            b_j = rho[slot, act] * np.einsum("ij,ij->i", y_mem[slot, act], r)
            r += s_mem[slot, act] * (a_j - b_j)[:, None]
        p = -r
        dg0 = np.einsum("ij,ij->i", ga, p)
        # rows without curvature information (or with a non-descent direction) step along −g, first_step long
        fresh = ~has_pair[act] | ~(dg0 < 0)
        if fresh.any():
            p[fresh] = -ga[fresh]
            dg0[fresh] = -np.einsum("ij,ij->i", ga[fresh], ga[fresh])
        t0 = np.ones(act.size)
        t0[fresh] = first_step / np.max(np.abs(ga[fresh]), axis=1)

        x_new, f_new, g_new, ok, n_eval = _wolfe(fun, act, x[act], f[act], p, dg0, t0, max_ls, min_step,
                                                        c1, c2)
        evaluations += n_eval
        iterations[act[ok]] += 1
        # a failed L-BFGS direction gets one retry along −g with the memory cleared; a failed −g ends the row
        retry = act[~ok & ~fresh]
        has_pair[retry] = False
        rho[:, retry] = 0.0
        status[act[~ok & fresh]] = LINE_SEARCH

        rows = act[ok]
        s = x_new[ok] - x[rows]
        yv = g_new[ok] - g[rows]
        sy = np.einsum("ij,ij->i", s, yv)
        yy = np.einsum("ij,ij->i", yv, yv)
        # keep a pair only with safely positive curvature (scale-free: sᵀy against |s|·|y|)
        good = sy > 1e-12 * np.sqrt(np.einsum("ij,ij->i", s, s) * yy)
        slot = it % memory
        s_mem[slot, rows] = s
        y_mem[slot, rows] = yv
        rho[slot, rows] = np.where(good, 1.0 / np.where(good, sy, 1.0), 0.0)
        gamma[rows[good]] = sy[good] / yy[good]
        has_pair[rows[good]] = True

        f_old = f[rows]
        x[rows], f[rows], g[rows] = x_new[ok], f_new[ok], g_new[ok]
        step = np.max(np.abs(s), axis=1)
        small_step = step <= xtol * (1.0 + np.max(np.abs(x[rows]), axis=1))
        small_dec = (f_old - f[rows]) <= ftol * np.abs(f_old)
        small_grad = np.max(np.abs(g[rows]), axis=1) <= gtol * g_scale[rows]
        status[rows[small_grad]] = GRADIENT
        status[rows[small_dec & ~small_grad]] = DECREASE
        status[rows[small_step & ~small_dec & ~small_grad]] = STEP
    status[status < 0] = MAX_ITER
    return BatchResult(x=x, f=f, grad=g, iterations=iterations, status=status, evaluations=evaluations)


def _wolfe(fun: ValueGrad, rows: np.ndarray, x: np.ndarray, f0: np.ndarray, p: np.ndarray, dg0: np.ndarray,
           t: np.ndarray, max_ls: int, min_step: float, c1: float, c2: float):
    """Weak-Wolfe line search by bisection and doubling (Lewis & Overton 2013, Math. Program. 141), per row.

    Returns the accepted (x, f, g), a mask of rows that moved, and the number of row evaluations. A row that
    satisfies only the sufficient-decrease condition within max_ls trials moves to its best such point.
    """
    m, k = x.shape
    lo, hi = np.zeros(m), np.full(m, np.inf)
    x_out, f_out, g_out = x.copy(), f0.copy(), np.zeros((m, k))
    done = np.zeros(m, dtype=bool)
    fallback = np.zeros(m, dtype=bool)
    searching = np.arange(m)
    p_len = np.max(np.abs(p), axis=1)
    floor = min_step * (1.0 + np.max(np.abs(x), axis=1))
    n_eval = 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(max_ls):
            if searching.size == 0:
                break
            ts = t[searching]
            xs = x[searching] + ts[:, None] * p[searching]
            fs, gs = fun(xs, rows[searching])
            n_eval += searching.size
            finite = np.isfinite(fs) & np.all(np.isfinite(gs), axis=1)
            armijo = finite & (fs <= f0[searching] + c1 * ts * dg0[searching]) & (fs < f0[searching])
            curv = np.einsum("ij,ij->i", gs, p[searching]) >= c2 * dg0[searching]
            accept = armijo & curv
            better = armijo & (fs < f_out[searching])  # best sufficient-decrease point so far, as a fallback
            idx = searching[better | accept]
            sel = (better | accept)
            x_out[idx], f_out[idx], g_out[idx] = xs[sel], fs[sel], gs[sel]
            fallback[idx] = True
            done[searching[accept]] = True
            hi[searching[~armijo]] = ts[~armijo]
            lo[searching[armijo & ~curv]] = ts[armijo & ~curv]
            searching = searching[~accept]
            t[searching] = np.where(np.isfinite(hi[searching]), 0.5 * (lo[searching] + hi[searching]),
                                    2.0 * t[searching])
            # a bracket narrower than the rounding level cannot be resolved: stop (keeping any fallback)
            width = np.where(np.isfinite(hi[searching]), hi[searching] - lo[searching], t[searching])
            searching = searching[width * p_len[searching] > floor[searching]]
    return x_out, f_out, g_out, done | fallback, n_eval


def newton(fun: ValueGrad, hess: Hessian, x0: np.ndarray, *, max_iter: int = 50, xtol: float = 1e-13,
           max_halvings: int = 40) -> tuple[BatchResult, np.ndarray]:
    """Polish each row by Newton's method with the exact Hessian and backtracking; returns the result and
    the final Newton step length ‖H⁻¹g‖∞ of each row (parameter units; inf where H is not positive definite).

    Where H is indefinite the step uses |eigenvalues| (a saddle-free Newton step), so the iteration still
    descends; the reported Newton step then says the point is not a strict local minimum.
    """
    x = np.array(x0, dtype=float, copy=True)
    S, _ = x.shape
    everything = np.arange(S)
    f, g = fun(x, everything)
    f, g = np.asarray(f, dtype=float).copy(), np.asarray(g, dtype=float).copy()
    evaluations = S
    status = np.full(S, -1, dtype=np.int8)
    status[~np.isfinite(f)] = NONFINITE
    iterations = np.zeros(S, dtype=np.int64)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for _ in range(max_iter):
            act = np.flatnonzero(status < 0)
            if act.size == 0:
                break
            p, _ = _newton_step(hess(x[act], act), g[act])
            dg0 = np.einsum("ij,ij->i", g[act], p)
            t = np.ones(act.size)
            moved = np.zeros(act.size, dtype=bool)
            searching = np.flatnonzero(dg0 < 0)
            for _ in range(max_halvings):
                if searching.size == 0:
                    break
                xs = x[act[searching]] + t[searching, None] * p[searching]
                fs, gs = fun(xs, act[searching])
                evaluations += searching.size
                ok = np.isfinite(fs) & (fs <= f[act[searching]] + 1e-4 * t[searching] * dg0[searching])
                ok &= fs < f[act[searching]]
                rows = act[searching[ok]]
                x[rows], f[rows], g[rows] = xs[ok], fs[ok], gs[ok]
                moved[searching[ok]] = True
                searching = searching[~ok]
                t[searching] *= 0.5
            iterations[act[moved]] += 1
            status[act[~moved]] = LINE_SEARCH
            step = np.max(np.abs(t[:, None] * p), axis=1)
            small = moved & (step <= xtol * (1.0 + np.max(np.abs(x[act]), axis=1)))
            status[act[small]] = STEP
        status[status < 0] = MAX_ITER
        _, newton_len = _newton_step(hess(x, everything), g)
    result = BatchResult(x=x, f=f, grad=g, iterations=iterations, status=status, evaluations=evaluations)
    return result, newton_len


def _newton_step(H: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """−H⁻¹g per row via eigh (with |λ|, floored at 1e-14·max|λ|), and ‖H⁻¹g‖∞ (inf unless H is PD)."""
    lam, V = np.linalg.eigh(0.5 * (H + np.swapaxes(H, 1, 2)))
    top = np.max(np.abs(lam), axis=1, keepdims=True)
    mag = np.maximum(np.abs(lam), 1e-14 * np.maximum(top, np.finfo(float).tiny))
    coef = np.einsum("mkj,mk->mj", V, g) / mag
    p = -np.einsum("mkj,mj->mk", V, coef)
    pd = np.all(lam > 1e-14 * top, axis=1) & np.all(np.isfinite(lam), axis=1)
    length = np.where(pd, np.max(np.abs(p), axis=1), np.inf)
    return p, length
