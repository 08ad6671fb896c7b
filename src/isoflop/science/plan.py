"""Budget planning from a scaling law: how to spend C training FLOPs.

Throughout, N is the **total** parameter count (Hoffmann et al. 2022's N, embeddings included), D the training
tokens, and C = 6·N·D. The law is of Chinchilla form L(N, D) = E + A/N^α + B/D^β unless a function says
otherwise (a law without those five parameters, e.g. Kaplan's joint law, only gets `compute_optimal`).

    compute_optimal     N_opt = G·(C/6)^a, D_opt = C/(6·N_opt) (Hoffmann eq. 4), with the predicted loss
    flops_from_gpu_hours C = H · 3600 · P · MFU
    allocation_curve    N_opt, D_opt, D/N and loss over many budgets, with an interval band when the law carries
                        parameter uncertainty (`Uncertainty`, e.g. from `isoflop fit --bootstrap`)

Beyond the compute-optimal point, each in its own module: inference_plan.py (Sardana et al. 2024: training plus
inference FLOPs), data_constrained.py (Muennighoff et al. 2023: repeated data) and overhead.py (de Vries 2023: a
smaller model trained longer).

Interval method (documented in `Uncertainty`): by default Epoch AI's (Besiroglu et al. 2024, §2.2 of the reference
notes): 10,000 draws from a multivariate normal centred on the point estimate of (log A, log B, log E, α, β) with
the covariance of the bootstrap fits' log-parameters, then percentiles of each derived quantity.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from isoflop.science.laws import ChinchillaLaw, MuennighoffLaw

PARAMS = ("E", "A", "B", "alpha", "beta")
DEFAULT_LEVEL = 0.8
"""Interval level: Epoch AI report compute-optimal bands as 10th-90th percentiles (80 %), as Hoffmann's Table 2."""
INDEPENDENT_NOTE = ("standard errors only: the correlations between A, B, alpha and beta are ignored, which "
                    "typically widens the band several-fold; give a fit with bootstrap samples")


def chinchilla_params(law: Any) -> tuple[float, float, float, float, float]:
    """(E, A, B, alpha, beta) of a Chinchilla-form law (a Muennighoff law's base); ValueError for any other."""
    law = law.base if isinstance(law, MuennighoffLaw) else law
    try:
        E, A, B, alpha, beta = (float(getattr(law, k)) for k in PARAMS)
    except AttributeError:
        raise ValueError(f"{type(law).__name__} is not of Chinchilla form E + A/N^alpha + B/D^beta") from None
    return E, A, B, alpha, beta


def positive(key: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{key}: must be a positive finite number, got {value}")
    return value


# --- compute-optimal ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The compute-optimal allocation of one budget."""

    flops: float
    N_opt: float
    D_opt: float
    loss: float

    @property
    def tokens_per_param(self) -> float:
        return self.D_opt / self.N_opt

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "tokens_per_param": self.tokens_per_param}


def flops_from_gpu_hours(gpu_hours: float, mfu: float, peak_flops: float) -> float:
    """Training FLOPs bought by H GPU-hours at peak P FLOP/s per GPU and model-FLOPs utilisation MFU."""
    positive("gpu_hours", gpu_hours)
    positive("peak_flops", peak_flops)
    if not (math.isfinite(mfu) and 0 < mfu <= 1):
        raise ValueError(f"mfu: must be in (0, 1], got {mfu}")
    return gpu_hours * 3600.0 * peak_flops * mfu


def _loss(law: Any, N: float, D: float) -> float:
    try:
        E, A, B, alpha, beta = chinchilla_params(law)
    except ValueError:
        return float(law.loss(N, D))
    return E + A / N**alpha + B / D**beta


def compute_optimal(law: Any, flops: float) -> Plan:
    """Hoffmann et al. 2022 eq. 4; D_opt is C/(6·N_opt) so that 6·N_opt·D_opt = C to rounding."""
    C = positive("flops", flops)
    try:
        E, A, B, alpha, beta = chinchilla_params(law)
    except ValueError:
        N = _numeric_optimal_n(law, C)
    else:
        N = float(_optimal_n(A, B, alpha, beta, C))
    D = C / (6.0 * N)
    return Plan(flops=C, N_opt=N, D_opt=D, loss=_loss(law, N, D))


def optimal_tokens(law: Any, n_params: float) -> Plan:
    """The budget for which a model of `n_params` is compute-optimal: D = G⁻¹·(N/G)^(b/a)."""
    N = positive("n_params", n_params)
    E, A, B, alpha, beta = chinchilla_params(law)
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    D = (N / G) ** (alpha / beta) / G
    return Plan(flops=6.0 * N * D, N_opt=N, D_opt=D, loss=_loss(law, N, D))


def _optimal_n(A: Any, B: Any, alpha: Any, beta: Any, C: Any) -> Any:
    G = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    return G * (C / 6.0) ** (beta / (alpha + beta))


def argmin_log_n(loss: Any, center: float, decades: float = 6.0) -> float:
    """argmin of loss(N) over log N: a log grid ±`decades` around `center`, then Brent between the best grid
    point's neighbours (robust to the kinks of the data-constrained law)."""
    grid = math.log(center) + np.linspace(-decades, decades, 1201) * math.log(10)
    values = np.array([loss(math.exp(x)) for x in grid])
    i = int(np.nanargmin(values))
    if i in (0, len(grid) - 1):
        raise ValueError(f"no minimum within {decades:g} decades of N = {center:.3g}")
    res = minimize_scalar(lambda x: loss(math.exp(x)), bounds=(grid[i - 1], grid[i + 1]), method="bounded",
                          options={"xatol": 1e-11})
    return float(math.exp(res.x))


def _numeric_optimal_n(law: Any, C: float) -> float:
    """N minimising law.loss(N, C/(6N)) for a law with no closed form (Kaplan's joint law)."""
    return argmin_log_n(lambda n: float(law.loss(n, C / (6.0 * n))), center=math.sqrt(C / 120.0))


# --- intervals -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Uncertainty:
    """Parameter uncertainty of a fitted law, and how to carry it into a plan.

    method
        mvn          (default with bootstrap samples) Epoch AI's: draws from N(θ̂, Σ) with θ = (log A, log B,
                     log E, α, β), θ̂ the point estimate and Σ the covariance of the bootstrap fits' θ; keeps the
                     strong correlations between A, B, α and β that set the width of the band.
        percentile   the bootstrap fits themselves, each giving one allocation.
        independent  only standard errors are known: independent normals on θ (sd of log A = se_A/A, ...).
                     It ignores the correlations, which typically widens the band several-fold (on Epoch's
                     fit, D/N at 5.88e23: 0.7-511 against 10.7-31.7 with the bootstrap covariance); the plan
                     says so in a `note`. Prefer a fit with samples.
    """

    samples: np.ndarray | None = None
    """(S, 5) bootstrap fits, columns (E, A, B, alpha, beta)."""
    cov_log: np.ndarray | None = None
    """(5, 5) covariance of the bootstrap fits' (log A, log B, log E, α, β); computed from `samples` if None."""
    se: Mapping[str, float] | None = None
    ci: Mapping[str, tuple[float, float]] | None = None
    method: str = "mvn"

    def draws(self, law: Any, n: int = 10_000, seed: int = 0) -> np.ndarray:
        """(n', 5) parameter sets (E, A, B, alpha, beta) with alpha, beta > 0."""
        point = np.array(chinchilla_params(law))
        rng = np.random.default_rng(seed)
        if self.method == "percentile" and self.samples is not None:
            out = np.asarray(self.samples, dtype=float)
        elif self.method in ("mvn", "independent"):
            mean = _to_theta(point[None])[0]
            if self.method == "mvn" and self.cov_log is not None:
                cov = np.asarray(self.cov_log, dtype=float)
            elif self.method == "mvn" and self.samples is not None:
                cov = np.cov(_to_theta(np.asarray(self.samples, dtype=float)), rowvar=False)
            elif self.se is not None and all(k in self.se for k in PARAMS):
                E, A, B = point[:3]
                sd = [self.se["A"] / A, self.se["B"] / B, self.se["E"] / E, self.se["alpha"], self.se["beta"]]
                cov = np.diag(np.square(sd))
            else:
                raise ValueError(f"uncertainty: method {self.method!r} needs cov_log, samples or se of {PARAMS}")
            out = _from_theta(rng.multivariate_normal(mean, cov, size=n, method="svd"))
        else:
            raise ValueError(f"uncertainty: unknown method {self.method!r} (mvn, percentile, independent)")
        return out[(out[:, 3] > 0) & (out[:, 4] > 0) & np.all(np.isfinite(out), axis=1)]


def _to_theta(p: np.ndarray) -> np.ndarray:
    return np.stack([np.log(p[:, 1]), np.log(p[:, 2]), np.log(p[:, 0]), p[:, 3], p[:, 4]], axis=1)


def _from_theta(t: np.ndarray) -> np.ndarray:
    return np.stack([np.exp(t[:, 2]), np.exp(t[:, 0]), np.exp(t[:, 1]), t[:, 3], t[:, 4]], axis=1)


def allocation_curve(law: Any, flops: Sequence[float] | np.ndarray, uncertainty: Uncertainty | None = None,
                     level: float = DEFAULT_LEVEL, n_draws: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """N_opt, D_opt, tokens_per_param and loss at each budget; with `uncertainty`, also `<key>_lo`, `<key>_hi`
    and `<key>_median` (percentiles (1 ∓ level)/2 and 0.5 over the parameter draws) and `a_lo`, `a_hi`, ..."""
    C = np.asarray(flops, dtype=float)
    if not (np.all(np.isfinite(C)) and np.all(C > 0)):
        raise ValueError("flops: must be positive finite numbers")
    plans = [compute_optimal(law, c) for c in C]
    out: dict[str, Any] = {"flops": C}
    for key in ("N_opt", "D_opt", "tokens_per_param", "loss"):
        out[key] = np.array([getattr(p, key) for p in plans])
    if uncertainty is None:
        return out
    if not 0 < level < 1:
        raise ValueError(f"level: must be in (0, 1), got {level}")
    p = uncertainty.draws(law, n_draws, seed)
    if len(p) < 2:
        raise ValueError("uncertainty: fewer than 2 usable parameter draws")
    E, A, B, alpha, beta = (p[:, i : i + 1] for i in range(5))
    N = _optimal_n(A, B, alpha, beta, C[None, :])
    D = C[None, :] / (6.0 * N)
    a = (beta / (alpha + beta))[:, 0]
    derived = {"N_opt": N, "D_opt": D, "tokens_per_param": D / N,
               "loss": E + A / N**alpha + B / D**beta, "a": a, "b": 1.0 - a}
    q = [(1 - level) / 2, 0.5, (1 + level) / 2]
    for key, values in derived.items():
        lo, med, hi = np.quantile(values, q, axis=0)
        out[f"{key}_lo"], out[f"{key}_median"], out[f"{key}_hi"] = lo, med, hi
    out.update(level=level, method=uncertainty.method, n_draws=len(p))
    return out


def budget_intervals(law: Any, flops: float, uncertainty: Uncertainty, level: float = DEFAULT_LEVEL,
                     n_draws: int = 10_000, seed: int = 0) -> dict[str, Any]:
    """The intervals of one budget as plain floats: {key: [lo, hi]} plus median, level, method and draws."""
    curve = allocation_curve(law, [flops], uncertainty, level, n_draws, seed)
    out: dict[str, Any] = {"level": level, "method": uncertainty.method, "n_draws": curve["n_draws"]}
    for key in ("N_opt", "D_opt", "tokens_per_param", "loss", "a", "b"):
        lo, hi, med = (float(np.ravel(curve[f"{key}_{s}"])[0]) for s in ("lo", "hi", "median"))
        out[key] = [lo, hi]
        out[f"{key}_median"] = med
    if uncertainty.method == "independent":
        out["note"] = INDEPENDENT_NOTE
    if uncertainty.ci:
        out["fit_ci"] = {k: list(v) for k, v in uncertainty.ci.items()}
    return out


def law_from_fit(fit: Mapping[str, Any]) -> tuple[ChinchillaLaw, Uncertainty | None]:
    """A law (and its uncertainty, if bootstrapped) from `isoflop fit --json` output: E, A, B, alpha, beta at
    the top level. Uncertainty, at the top level or under `bootstrap` (first found wins):
    `cov_log` (5 x 5 covariance of the refits' [log A, log B, log E, α, β]), `theta` (refits' log-space rows
    [a, b, e, α, β]) or `samples` (refits: a list of {E, A, B, alpha, beta} objects, an object of lists, or rows
    whose first five columns are E, A, B, alpha, beta) give the MVN band; `se` alone the independent one;
    `ci` is passed through."""
    if not isinstance(fit, Mapping):
        raise ValueError("fit: expected a JSON object")
    values = {}
    for key in PARAMS:
        value = fit.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{key}: missing or not a finite number in the fit")
        values[key] = float(value)
    law = ChinchillaLaw(**values)
    places = [fit] + ([fit["bootstrap"]] if isinstance(fit.get("bootstrap"), Mapping) else [])

    def find(key: str) -> Any:
        return next((place[key] for place in places if place.get(key) is not None), None)

    samples, theta, cov = find("samples"), find("theta"), find("cov_log")
    array = None
    if theta is not None:
        array = _from_theta(_matrix("theta", theta, 5))
    elif samples is not None:
        array = _samples_array(samples)
    cov_log = _matrix("cov_log", cov, 5) if cov is not None else None
    if cov_log is not None and cov_log.shape != (5, 5):
        raise ValueError("cov_log: expected a 5 x 5 matrix")
    se = find("se")
    se = {k: float(v) for k, v in se.items() if isinstance(v, (int, float))} if isinstance(se, Mapping) else None
    ci = {k: (float(v[0]), float(v[1])) for k, v in _ci_items(find("ci"))} or None
    if cov_log is not None or (array is not None and len(array) >= 2):
        return law, Uncertainty(samples=array, cov_log=cov_log, se=se, ci=ci, method="mvn")
    if se is not None and all(k in se for k in PARAMS):
        return law, Uncertainty(se=se, ci=ci, method="independent")
    return law, None


def _matrix(key: str, value: Any, columns: int) -> np.ndarray:
    try:
        array = np.array(value, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{key}: expected rows of {columns} numbers") from None
    if array.ndim != 2 or array.shape[1] != columns or not np.all(np.isfinite(array)):
        raise ValueError(f"{key}: expected finite rows of {columns} numbers")
    return array


def _samples_array(samples: Any) -> np.ndarray:
    try:
        if isinstance(samples, Mapping):
            array = np.array([samples[k] for k in PARAMS], dtype=float).T
        elif len(samples) and isinstance(samples[0], Mapping):
            array = np.array([[s[k] for k in PARAMS] for s in samples], dtype=float)
        else:  # rows, first five columns (E, A, B, alpha, beta), as fit.KEYS orders them
            array = np.array(samples, dtype=float)[:, :5]
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ValueError(f"samples: expected bootstrap fits with keys {', '.join(PARAMS)} ({e})") from None
    if array.ndim != 2 or array.shape[1] != 5 or not np.all(np.isfinite(array)):
        raise ValueError("samples: expected finite bootstrap fits, one row of (E, A, B, alpha, beta) each")
    return array


def _ci_items(ci: Any) -> Iterable[tuple[str, Sequence[float]]]:
    if not isinstance(ci, Mapping):
        return []
    items = []
    for key, value in ci.items():
        if isinstance(value, Mapping):
            value = (value.get("lo", value.get("low")), value.get("hi", value.get("high")))
        if isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
            items.append((key, value))
    return items
