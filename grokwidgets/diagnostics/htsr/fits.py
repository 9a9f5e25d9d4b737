r"""Fits to an empirical spectral density (ESD): power-law tail and Marchenko–Pastur bulk.

These are the numerical cores of the HTSR family (:mod:`grokwidgets.diagnostics.htsr`),
written to give WeightWatcher 0.7.7's numbers (Martin & Mahoney 2021,
arXiv:2002.06716) at a fraction of its cost. Everything here takes eigenvalues; nothing
here knows about layers.

Power law (Clauset, Shalizi & Newman 2009, arXiv:0706.1062). For each candidate
:math:`x_{\min} = \lambda_i` (all sorted non-zero eigenvalues but the largest), with the
:math:`n = N - i` eigenvalues :math:`\lambda_j \ge x_{\min}` as the tail:

.. math::

    \hat\alpha(x_{\min}) = 1 + n \Big/ \sum_{j \ge i} \ln\frac{\lambda_j}{x_{\min}},
    \qquad
    D(x_{\min}) = \max_{k < n} \Big| 1 - \big(\lambda_{i+k}/x_{\min}\big)^{1-\hat\alpha}
    - k/n \Big|,

and the fit is the candidate with the smallest Kolmogorov–Smirnov distance :math:`D`
(first one on ties). This is WeightWatcher's default ``pl_package="ww"`` estimator, computed
for all candidates at once instead of in a Python loop.

Marchenko–Pastur (Marchenko & Pastur 1967). WeightWatcher rescales the ESD to mean 1
(:math:`\lambda \to \lambda\, M/\sum\lambda`), estimates the density with a linear kernel
(bandwidth 0.1) on 1000 points, and picks the :math:`\sigma` whose MP density
:math:`\rho(\lambda) = \sqrt{(\lambda_+-\lambda)(\lambda-\lambda_-)}\,/\,(2\pi\sigma^2\lambda/Q)`,
:math:`\lambda_\pm = \sigma^2(1 \pm 1/\sqrt{Q})^2`, best matches it: a grid search then a
Nelder–Mead polish (``scipy.optimize.brute`` with ``fmin``), with the same rejection rules.
Spikes are eigenvalues above :math:`\lambda_+` plus a Tracy–Widom margin. For square layers
(:math:`Q = 1`) the singular values are fitted to the quarter-circle law instead. The
kernel density is computed once, not once per :math:`\sigma` as WeightWatcher does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize

EVALS_THRESH = 1e-5  # eigenvalues at or below this are left out of the power-law fit (as WW)
SMALL_N = 20  # fewer non-zero eigenvalues than this: no power-law fit (WW switches estimator)
KDE_BANDWIDTH = 0.1
KDE_POINTS = 1000
KDE_FLOOR = 0.01  # density below this is ignored by the MP residual (as WW)
_PENALTY = 1000.0  # residual per point for a rejected sigma (as WW)
_CHUNK = 1 << 22  # elements per block of the KS-distance computation


@dataclass(frozen=True)
class PowerLawFit:
    """A power-law fit of an ESD tail; NaN fields with ``reason`` set when there is none."""

    alpha: float
    xmin: float
    ks_distance: float
    sigma: float  # standard error of alpha, (alpha - 1) / sqrt(n)
    tail_size: int  # eigenvalues >= xmin
    reason: str = ""


def fit_power_law(evals: np.ndarray | torch.Tensor, *, min_evals: int = SMALL_N) -> PowerLawFit:
    """Fit a power law to the tail of ``evals`` by maximum likelihood, xmin by minimum KS.

    Parameters
    ----------
    evals : array
        Eigenvalues (any order). Those at or below 1e-5 are dropped first, as WeightWatcher
        does.
    min_evals : int
        Fewest non-zero eigenvalues to fit. Below WeightWatcher's small-N cutoff (20) it
        switches to a bias-corrected estimator with a tail-size prior; we return NaN with a
        reason instead of a number from a different estimator.

    Returns
    -------
    PowerLawFit
    """
    x = torch.as_tensor(np.asarray(evals, dtype=np.float64))
    if not bool(torch.isfinite(x).all()):
        return _no_fit("non-finite eigenvalues")
    x = torch.sort(x[x > EVALS_THRESH]).values
    n_all = int(x.numel())
    if n_all < max(min_evals, 2):
        return _no_fit(
            f"too few eigenvalues above {EVALS_THRESH:g} for a power-law fit "
            f"({n_all} < {max(min_evals, 2)})"
        )
    logx = torch.log(x)
    # tail sums of log(x): S_i = sum_{j >= i} log x_j
    tail_log = torch.flip(torch.cumsum(torch.flip(logx, [0]), 0), [0])
    i = torch.arange(n_all - 1, dtype=torch.float64)
    n = n_all - i
    denom = tail_log[:-1] - n * logx[:-1]
    alphas = 1.0 + n / denom  # torch: no warning for a zero denominator
    alphas = torch.where(denom > 0, alphas, torch.full_like(alphas, math.nan))
    ds = _ks_distances(x, alphas)
    best = int(torch.argmin(ds))
    if not math.isfinite(float(alphas[best])) or float(ds[best]) >= 1.0:
        return _no_fit("no candidate xmin gives a power law with alpha > 1")
    alpha = float(alphas[best])
    xmin = float(x[best])
    return PowerLawFit(
        alpha=alpha,
        xmin=xmin,
        ks_distance=float(ds[best]),
        sigma=(alpha - 1.0) / math.sqrt(n_all - best),
        tail_size=n_all - best,
    )


def _no_fit(reason: str) -> PowerLawFit:
    return PowerLawFit(math.nan, math.nan, math.nan, math.nan, 0, reason)


def _ks_distances(x: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """KS distance of each candidate fit (row i: tail x[i:], exponent alphas[i]); 1 if invalid."""
    n_all = x.numel()
    n_cand = n_all - 1
    ds = torch.ones(n_cand, dtype=torch.float64)
    j = torch.arange(n_all, dtype=torch.float64)
    rows = max(1, _CHUNK // n_all)
    for start in range(0, n_cand, rows):
        stop = min(n_cand, start + rows)
        i = torch.arange(start, stop, dtype=torch.float64)
        a = alphas[start:stop, None]
        ratio = x[None, :] / x[start:stop, None]
        k = j[None, :] - i[:, None]  # position in the tail; < 0 before it
        n = (n_all - i)[:, None]
        dev = torch.abs(1.0 - torch.pow(ratio, 1.0 - a) - k / n)
        dev = torch.where(k >= 0, dev, torch.zeros_like(dev))
        block = dev.max(dim=1).values
        valid = torch.isfinite(alphas[start:stop]) & (alphas[start:stop] > 1.0)
        ds[start:stop] = torch.where(valid, block, torch.ones_like(block))
    return torch.nan_to_num(ds, nan=1.0)


@dataclass(frozen=True)
class MPFit:
    """A Marchenko–Pastur fit of an ESD's bulk, in the ESD's own units.

    ``sigma`` is the fitted scale in the rescaled (mean-1) units, as WeightWatcher reports
    ``sigma_mp``; ``bulk_max``/``bulk_min`` are the bulk edges λ± and are in the ESD's units.
    """

    sigma: float
    bulk_max: float
    bulk_min: float
    num_spikes: int
    softrank: float  # bulk_max / lambda_max
    scale: float  # W scale factor applied before fitting (WeightWatcher's W_scale)
    reason: str = ""


def kde_linear(points: np.ndarray, samples: np.ndarray, bandwidth: float) -> np.ndarray:
    r"""Linear-kernel density estimate :math:`\frac{1}{nh}\sum_i \max(0, 1 - |x - x_i|/h)`.

    Equal to scikit-learn's ``KernelDensity(kernel="linear")`` (to round-off). Only samples
    within ``h`` of a point count: with the samples sorted and their prefix sums ``P``, the
    samples in ``(x - h, x]`` contribute ``count·(h - x) + ΣL`` and those in ``(x, x + h)``
    ``count·(h + x) - ΣR``, all over ``h``; ``O((m + n) log n)`` instead of ``m·n``.
    """
    h = float(bandwidth)
    s = np.sort(np.asarray(samples, dtype=np.float64))
    x = np.asarray(points, dtype=np.float64)
    prefix = np.concatenate([[0.0], np.cumsum(s)])
    lo = np.searchsorted(s, x - h, side="right")  # first sample > x - h
    mid = np.searchsorted(s, x, side="right")  # first sample > x
    hi = np.searchsorted(s, x + h, side="left")  # first sample >= x + h
    left = (mid - lo) * (h - x) + (prefix[mid] - prefix[lo])
    right = (hi - mid) * (h + x) - (prefix[hi] - prefix[mid])
    # Each term is >= 0; clip the round-off of the differences of sums.
    return np.maximum(left + right, 0.0) / h / (s.size * h)


class _MPResidual:
    """WeightWatcher's MP residual as a function of sigma, with the density computed once."""

    def __init__(self, to_fit: np.ndarray, q: float) -> None:
        self.q = q
        xde = np.linspace(0.0, float(np.max(to_fit)) + 0.5, KDE_POINTS)
        yde = kde_linear(xde, to_fit, KDE_BANDWIDTH)
        good = yde > KDE_FLOOR
        self.x = xde[good]
        self.y = yde[good]
        self.x_peak = float(self.x[np.argmax(self.y)]) if self.x.size else math.nan
        self.x_max = float(self.x.max()) if self.x.size else math.nan

    def __call__(self, p: np.ndarray | float) -> float:
        """The residual at one sigma (what ``optimize.fmin`` calls, ~35 times per fit).

        The same elementwise arithmetic as :meth:`many` on 1-D arrays, so the same numbers,
        without the broadcasting and ``nan_to_num`` overhead (about half the time per call).
        """
        s = np.atleast_1d(np.asarray(p, dtype=np.float64))[0]  # numpy scalar: 1/0 is inf
        x = self.x
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if self.q == 1.0:
                dens = (1.0 / (np.pi * s * s)) * np.sqrt(4.0 - x**2)
                return float(np.sum((_finite(dens) - self.y) ** 2))
            y = 1.0 / self.q
            b = (s * (1.0 + np.sqrt(1.0 / self.q))) ** 2
            a = (s * (1.0 - np.sqrt(1.0 / self.q))) ** 2
            if b < self.x_peak or b > self.x_max or a > self.x_peak:
                return float(_PENALTY**2 * self.x.size)  # rejected: no density needed
            dens = (1.0 / (2.0 * np.pi * s * s * x * y)) * np.sqrt((b - x) * (x - a))
        return float(np.sum((_finite(dens) - self.y) ** 2))

    def many(self, sigmas: np.ndarray) -> np.ndarray:
        """Sum of squared residuals for each sigma in ``sigmas``.

        Rejected sigmas get the penalty without their density being computed (each row's
        sum is independent of the others, so the kept rows' values are the same).
        """
        x = self.x[None, :]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if self.q == 1.0:
                s = sigmas[:, None]
                dens = np.nan_to_num((1.0 / (np.pi * s * s)) * np.sqrt(4.0 - x**2))
                resid = dens - self.y[None, :]
                return np.sum(resid**2, axis=1)
            y = 1.0 / self.q
            b1 = (sigmas * (1.0 + np.sqrt(1.0 / self.q))) ** 2
            a1 = (sigmas * (1.0 - np.sqrt(1.0 / self.q))) ** 2
            rejected = (b1 < self.x_peak) | (b1 > self.x_max) | (a1 > self.x_peak)
            out = np.full(sigmas.shape, _PENALTY**2 * self.x.size)
            keep = ~rejected
            s, b, a = sigmas[keep, None], b1[keep, None], a1[keep, None]
            dens = np.nan_to_num((1.0 / (2.0 * np.pi * s * s * x * y)) * np.sqrt((b - x) * (x - a)))
        out[keep] = np.sum((dens - self.y[None, :]) ** 2, axis=1)
        return out


def _finite(a: np.ndarray) -> np.ndarray:
    """``np.nan_to_num`` in place, cheaply when there is nothing to replace."""
    if np.isfinite(a).all():
        return a
    return np.nan_to_num(a, copy=False)


def mp_fit(evals: np.ndarray, n: int, m: int) -> MPFit:
    """Fit the Marchenko–Pastur law to the bulk of an ESD, as WeightWatcher's ``mp_fit``.

    Parameters
    ----------
    evals : array
        The ESD (eigenvalues of WᵀW, any order; for pooled Conv layers all slices).
    n, m : int
        The weight matrix's larger and smaller dimension; Q = n / m is its aspect ratio.
    """
    ev = np.asarray(evals, dtype=np.float64)
    if ev.size < 2 or not np.all(np.isfinite(ev)) or float(ev.sum()) <= 0.0:
        why = "non-finite eigenvalues" if not np.all(np.isfinite(ev)) else "an empty spectrum"
        nan = math.nan
        return MPFit(nan, nan, nan, 0, nan, nan, f"no MP fit: {why}")
    q = n / m
    scale = math.sqrt(ev.size) / math.sqrt(float(ev.sum()))
    x = scale * scale * ev
    lambda_max = float(x.max())
    sigma0 = math.sqrt(lambda_max / (1.0 + 1.0 / math.sqrt(q)) ** 2)
    to_fit = np.sqrt(x) if q == 1.0 else x
    resid = _MPResidual(to_fit, q)
    grid = np.mgrid[slice(0.05 * sigma0, 2.0 * sigma0, 0.01 * sigma0)]
    j = resid.many(grid)
    start = float(grid[int(np.argmin(j))])
    polished = optimize.fmin(resid, start, full_output=True, disp=False)
    sigma = float(np.asarray(polished[0]).ravel()[0])
    bulk_max = (sigma * (1.0 + 1.0 / math.sqrt(q))) ** 2
    bulk_min = (sigma * (1.0 - 1.0 / math.sqrt(q))) ** 2
    tw = 1.0 / math.sqrt(q) * bulk_max ** (2.0 / 3.0) * m ** (-2.0 / 3.0)
    num_spikes = int(np.sum(x > bulk_max + math.sqrt(tw)))
    return MPFit(
        sigma=sigma,
        bulk_max=bulk_max / (scale * scale),
        bulk_min=bulk_min / (scale * scale),
        num_spikes=num_spikes,
        softrank=bulk_max / lambda_max,
        scale=scale,
    )


def jensen_shannon_distance(p: np.ndarray, q: np.ndarray) -> float:
    r"""WeightWatcher's ``rand_distance``: the Jensen–Shannon distance between two sorted ESDs.

    Each eigenvalue vector is normalized to sum 1 and read as a distribution over rank:
    :math:`\sqrt{(\mathrm{KL}(p\|m) + \mathrm{KL}(q\|m))/2}`, :math:`m = (p+q)/2`, natural log.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    p = p / p.sum()
    q = q / q.sum()
    m = (p + q) / 2.0

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log(a[mask] / b[mask])))

    return math.sqrt(max(0.0, (kl(p, m) + kl(q, m)) / 2.0))
