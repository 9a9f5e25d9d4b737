"""Power-law and Marchenko–Pastur fits against brute force, powerlaw and closed forms."""

import math
import warnings

import numpy as np
import pytest

from grokwidgets.diagnostics.htsr.fits import (
    _MPResidual,
    fit_power_law,
    jensen_shannon_distance,
    kde_linear,
    mp_fit,
)


def brute_force_fit(x):
    """Clauset et al. written out as a plain loop, one candidate xmin at a time."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    x = x[x > 1e-5]
    best = (math.inf, None, None)
    for i in range(len(x) - 1):
        tail = x[i:]
        n = len(tail)
        alpha = 1 + n / sum(math.log(v / x[i]) for v in tail)
        if alpha <= 1:
            continue
        d = max(abs(1 - (v / x[i]) ** (1 - alpha) - k / n) for k, v in enumerate(tail))
        if d < best[0]:
            best = (d, alpha, x[i])
    return best


def pareto_sample(rng, alpha, n_tail=300, n_bulk=150, xmin=0.5):
    tail = (rng.pareto(alpha - 1, size=n_tail) + 1) * xmin
    return np.concatenate([tail, rng.uniform(0.05, xmin, size=n_bulk)])


@pytest.mark.parametrize("alpha", [1.8, 2.5, 4.0])
def test_fit_equals_brute_force_loop(alpha):
    x = pareto_sample(np.random.default_rng(3), alpha, n_tail=120, n_bulk=60)
    fit = fit_power_law(x)
    d, a, xmin = brute_force_fit(x)
    assert fit.alpha == pytest.approx(a, rel=1e-12)
    assert fit.xmin == xmin
    assert fit.ks_distance == pytest.approx(d, rel=1e-10)
    assert fit.tail_size == int(np.sum(x >= xmin))


@pytest.mark.parametrize("alpha", [2.0, 3.0, 4.5])
def test_fit_equals_powerlaw_package(alpha):
    powerlaw = pytest.importorskip("powerlaw")
    x = pareto_sample(np.random.default_rng(1), alpha)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # powerlaw 2 limits alpha to [0, 3] by default; Clauset's method does not.
        ref = powerlaw.Fit(x, verbose=False, parameter_ranges={"alpha": [1, None]})
    fit = fit_power_law(x)
    assert fit.alpha == pytest.approx(ref.power_law.alpha, rel=1e-9)
    assert fit.xmin == pytest.approx(ref.power_law.xmin, rel=1e-12)
    assert fit.ks_distance == pytest.approx(ref.power_law.D, rel=1e-9)


@pytest.mark.parametrize("alpha", [1.8, 2.5, 3.5])
def test_recovers_known_tail_exponent(alpha):
    rng = np.random.default_rng(7)
    fits = [fit_power_law(pareto_sample(rng, alpha, n_tail=2000, n_bulk=500)) for _ in range(5)]
    est = np.mean([f.alpha for f in fits])
    assert abs(est - alpha) < 4 * np.mean([f.sigma for f in fits]) / math.sqrt(5) + 0.05


def test_too_few_eigenvalues_is_nan_with_reason():
    fit = fit_power_law(np.linspace(1, 2, 19))
    assert math.isnan(fit.alpha)
    assert "too few eigenvalues" in fit.reason
    assert math.isnan(fit_power_law(np.zeros(100)).alpha)
    assert "non-finite" in fit_power_law(np.array([1.0, np.inf] * 20)).reason


def test_kde_matches_scikit_learn():
    kd = pytest.importorskip("sklearn.neighbors")
    rng = np.random.default_rng(0)
    s = rng.gamma(2.0, size=400)
    pts = np.linspace(0, s.max() + 0.5, 1000)
    ref = np.exp(
        kd.KernelDensity(kernel="linear", bandwidth=0.1).fit(s[:, None]).score_samples(pts[:, None])
    )
    np.testing.assert_allclose(kde_linear(pts, s, 0.1), ref, atol=1e-12)


def test_mp_fit_on_gaussian_matrix_finds_its_bulk_and_no_spikes():
    rng = np.random.default_rng(0)
    n, m = 800, 200
    w = rng.standard_normal((n, m))
    evals = np.linalg.svd(w, compute_uv=False) ** 2
    fit = mp_fit(evals, n, m)
    q = n / m
    # Closed form: entries of variance 1 give lambda+ = n (1 + 1/sqrt(q))^2 for W^T W.
    assert fit.bulk_max == pytest.approx(n * (1 + 1 / math.sqrt(q)) ** 2, rel=0.05)
    assert fit.num_spikes == 0
    spiked = w + 3.0 * np.outer(rng.standard_normal(n), rng.standard_normal(m)) / math.sqrt(m)
    spiked_evals = np.linalg.svd(spiked, compute_uv=False) ** 2
    assert mp_fit(spiked_evals, n, m).num_spikes >= 1


def test_js_distance_closed_forms():
    p = np.array([1.0, 2.0, 3.0])
    assert jensen_shannon_distance(p, 2 * p) == pytest.approx(0.0, abs=1e-12)
    # disjoint supports: divergence ln 2
    assert jensen_shannon_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(
        math.sqrt(math.log(2))
    )
    scipy_spatial = pytest.importorskip("scipy.spatial")
    q = np.array([2.0, 1.0, 5.0])
    ref = scipy_spatial.distance.jensenshannon(p, q)
    assert jensen_shannon_distance(p, q) == pytest.approx(ref, rel=1e-12)


def test_mp_residual_at_one_sigma_is_the_vectorized_residual():
    """``optimize.fmin``'s scalar path returns exactly what ``many`` does (WeightWatcher's)."""
    rng = np.random.default_rng(0)
    for q in (1.0, 1.3, 3.7):
        for _ in range(5):
            ev = rng.gamma(2.0, 1.0, size=int(rng.integers(20, 300)))
            resid = _MPResidual(np.sqrt(ev) if q == 1.0 else ev, q)
            sigmas = np.r_[rng.uniform(0.01, 3.0, 40), 0.0]  # incl. rejected ones and 1/0
            scalar = np.array([resid(s) for s in sigmas])
            np.testing.assert_array_equal(scalar, resid.many(sigmas))
