"""Representation geometry: closed forms, brute-force references, invariances, the diagnostic."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import grokwidgets as gw
import grokwidgets.diagnostics.probes  # noqa: F401  (registers "probes")
from grokwidgets.diagnostics._features import RowSubsets
from grokwidgets.diagnostics.geometry import (
    class_separation,
    effective_rank,
    linear_cka,
    participation_ratio,
    rsa,
    spearman,
)

scipy_stats = pytest.importorskip("scipy.stats")
scipy_distance = pytest.importorskip("scipy.spatial.distance")


def with_singular_values(sigma, n, seed=0):
    """An (n, d) matrix with zero column means and exactly the singular values ``sigma``."""
    rng = np.random.default_rng(seed)
    d = len(sigma)
    a = rng.normal(size=(n, d))
    a -= a.mean(axis=0)  # columns orthogonal to the ones vector, so centring changes nothing
    u, _ = np.linalg.qr(a)
    v, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return u @ np.diag(sigma) @ v.T + rng.normal(size=d)  # plus a constant row offset


def hsic(k, m):
    """HSIC(K, M) = tr(K H M H) / (n - 1)²."""
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ m @ h) / (n - 1) ** 2


def brute_force_cka(x, y):
    k, m = x @ x.T, y @ y.T
    return hsic(k, m) / math.sqrt(hsic(k, k) * hsic(m, m))


# -- dimension ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sigma",
    [np.ones(6), np.array([3.0, 0, 0, 0, 0]), np.array([5.0, 2.0, 1.0, 0.5]), np.arange(1.0, 9)],
)
def test_effective_rank_and_participation_ratio_closed_forms(sigma):
    x = with_singular_values(sigma, n=40)
    p = sigma / sigma.sum()
    p = p[p > 0]
    assert effective_rank(x) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-9)
    lam = sigma**2
    assert participation_ratio(x) == pytest.approx(lam.sum() ** 2 / (lam**2).sum(), rel=1e-9)
    # participation ratio from numpy's covariance eigenvalues, independently of any SVD
    ev = np.linalg.eigvalsh(np.cov(x, rowvar=False))
    assert participation_ratio(x) == pytest.approx(ev.sum() ** 2 / (ev**2).sum(), rel=1e-9)


def test_isotropic_is_full_rank_and_rank_one_is_one():
    x = with_singular_values(np.full(7, 2.5), n=30, seed=1)
    assert effective_rank(x) == pytest.approx(7, rel=1e-9)
    assert participation_ratio(x) == pytest.approx(7, rel=1e-9)
    rank1 = np.outer(np.random.default_rng(0).normal(size=25), np.arange(1.0, 6))
    assert effective_rank(rank1) == pytest.approx(1, rel=1e-9)
    assert participation_ratio(rank1) == pytest.approx(1, rel=1e-9)
    assert math.isnan(effective_rank(np.ones((5, 3))))
    assert math.isnan(participation_ratio(np.ones((5, 3))))


@pytest.mark.parametrize("shape", [(300, 64), (40, 90)])
def test_dimension_of_relu_features_with_dead_and_duplicate_units_matches_an_svd(shape):
    """The Gram-eigenvalue route against numpy's SVD, where rank deficiency is exact."""
    n, d = shape
    rng = np.random.default_rng(3)
    h = np.maximum(rng.normal(size=(n, 16)) @ rng.normal(size=(16, d)), 0.0)
    h[:, :7] = 0.0  # dead units
    h[:, 7:12] = h[:, 12:17] * 2.0  # duplicated units
    sv = np.linalg.svd(h - h.mean(axis=0), compute_uv=False)
    p = sv / sv.sum()
    p = p[p > 0]
    assert effective_rank(h) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-9)
    lam = sv**2
    assert participation_ratio(h) == pytest.approx(lam.sum() ** 2 / (lam**2).sum(), rel=1e-9)
    # rank deficient (so zero singular values are compared), yet not low-dimensional
    assert np.linalg.matrix_rank(h - h.mean(axis=0)) <= min(n - 1, d - 12)
    assert effective_rank(h) > 10


def test_dimension_of_a_graded_spectrum_stays_within_the_documented_bound_of_an_svd():
    """Singular values down to 1e-9 of the largest: below the Gram route's resolution."""
    rng = np.random.default_rng(7)
    x = (rng.normal(size=(1024, 256)) * np.logspace(0, -9, 256)).astype(np.float32)
    x = x.astype(np.float64)
    sv = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    p = sv / sv.sum()
    assert effective_rank(x) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-6)
    lam = sv**2
    assert participation_ratio(x) == pytest.approx(lam.sum() ** 2 / (lam**2).sum(), rel=1e-12)


# -- class separation ----------------------------------------------------------------------------


def test_class_separation_known_answer_and_scatter_matrices():
    a = 3.0
    x = np.array([[-a - 1], [-a + 1], [a - 1], [a + 1]])
    y = np.array([0, 0, 1, 1])
    # tr S_B = 2·a² + 2·a², tr S_W = 4 · 1²
    assert class_separation(x, y) == pytest.approx(a**2, rel=1e-12)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 4)) + np.repeat(rng.normal(size=(5, 4)) * 2, 10, axis=0)
    y = np.repeat(np.arange(5), 10)
    mu = x.mean(0)
    s_b = sum(
        (y == c).sum() * np.outer(x[y == c].mean(0) - mu, x[y == c].mean(0) - mu) for c in range(5)
    )
    s_w = sum((x[y == c] - x[y == c].mean(0)).T @ (x[y == c] - x[y == c].mean(0)) for c in range(5))
    assert class_separation(x, y) == pytest.approx(np.trace(s_b) / np.trace(s_w), rel=1e-10)
    assert math.isnan(class_separation(x, np.zeros(50, dtype=int)))


# -- CKA -----------------------------------------------------------------------------------------


def test_cka_equals_brute_force_hsic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5))
    y = x @ rng.normal(size=(5, 7)) + 0.5 * rng.normal(size=(30, 7))
    assert linear_cka(x, y) == pytest.approx(brute_force_cka(x, y), rel=1e-10)
    wide = rng.normal(size=(12, 40))  # d > n takes the Gram-matrix path
    assert linear_cka(wide, wide[:, :25] ** 2) == pytest.approx(
        brute_force_cka(wide, wide[:, :25] ** 2), rel=1e-10
    )
    assert linear_cka(x, x) == pytest.approx(1.0, rel=1e-12)
    assert math.isnan(linear_cka(x, np.ones((30, 2))))


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(4, 30),
    d=st.integers(1, 12),
    scale=st.floats(1e-3, 1e3),
)
def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling(seed, n, d, scale):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = np.tanh(x @ rng.normal(size=(d, 6))) + 0.3 * rng.normal(size=(n, 6))
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    base = linear_cka(x, y)
    assert linear_cka(scale * x @ q, y) == pytest.approx(base, rel=1e-7, abs=1e-9)
    assert linear_cka(x, y / scale) == pytest.approx(base, rel=1e-7, abs=1e-9)
    assert linear_cka(y, x) == pytest.approx(base, rel=1e-9, abs=1e-12)
    assert -1e-12 <= base <= 1 + 1e-12


# -- RSA -----------------------------------------------------------------------------------------


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 5, size=200).astype(float)
    b = a + rng.integers(0, 3, size=200)
    assert spearman(a, b) == pytest.approx(scipy_stats.spearmanr(a, b).statistic, rel=1e-12)


@pytest.mark.parametrize("labels", ["classes", "floats"])
def test_rsa_matches_a_scipy_reference(labels):
    rng = np.random.default_rng(5)
    y = rng.integers(0, 4, size=40) if labels == "classes" else rng.normal(size=(40, 2))
    centres = rng.normal(size=(4, 6)) * 2
    x = (centres[y] if labels == "classes" else y @ rng.normal(size=(2, 6))) + rng.normal(
        size=(40, 6)
    )
    label_rdm = (
        scipy_distance.pdist(y.reshape(-1, 1), lambda u, v: float(u[0] != v[0]))
        if labels == "classes"
        else scipy_distance.pdist(y)
    )
    expected = scipy_stats.spearmanr(scipy_distance.pdist(x), label_rdm).statistic
    assert rsa(x, y) == pytest.approx(expected, rel=1e-10)
    assert rsa(x, y) > 0.2  # structured data: same-label rows are closer
    assert math.isnan(rsa(x, np.zeros(40, dtype=int)))


def test_rsa_against_classes_with_tied_distances_matches_scipy():
    """The point-biserial route where many dissimilarities tie (duplicated, integer rows)."""
    rng = np.random.default_rng(6)
    y = rng.integers(0, 3, size=30)
    x = rng.integers(0, 3, size=(30, 2)).astype(float) + y[:, None]  # few distinct distances
    x[5] = x[4]
    x[9] = x[4]  # zero distances, tied
    label_rdm = scipy_distance.pdist(y.reshape(-1, 1), lambda u, v: float(u[0] != v[0]))
    d = scipy_distance.pdist(x)
    assert len(np.unique(d)) < len(d) / 20  # heavily tied
    expected = scipy_stats.spearmanr(d, label_rdm).statistic
    assert rsa(x, y) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(rsa(np.ones((6, 2)), np.array([0, 1, 0, 1, 0, 1])))  # all distances equal


# -- the registered diagnostic -------------------------------------------------------------------


def test_geometry_through_a_monitor(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=16, depth=2, embed_dim=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    with gw.Monitor(model, mod_task, diagnostics=["geometry"], cadence=3) as mon:
        for step in range(7):
            mon.step(step)
            if step == 6:
                break  # the model stays as recorded at step 6
            loss = torch.nn.functional.cross_entropy(model(mod_task.x_train), mod_task.y_train)
            opt.zero_grad()
            loss.backward()
            opt.step()
    ds = mon.dataset()
    metrics = ds["metrics"]
    info = ds.attrs["metric_info"]
    for name in ("effective_rank", "participation_ratio", "class_separation", "cka_init", "rsa"):
        assert info[name]["description"] and info[name]["unit"] and info[name]["source"]
    first = metrics.sel(step=0)
    for layer in ("embed", "encoder.0", "encoder.2", "readout"):
        assert float(first.sel(layer=layer, metric="cka_init")) == pytest.approx(1, rel=1e-12)
        assert np.isnan(float(first.sel(layer=layer, metric="cka_prev")))
    assert ds.attrs["nan_reasons"]["cka_prev"]["readout"] == "no previous record of this layer"
    # At step 6 the values equal the functions applied to hand-computed representations.
    rows = RowSubsets().rows("test", mod_task.n_test)
    with torch.no_grad():
        emb = model.embed(mod_task.x_test[rows]).flatten(1)
        h2 = torch.relu(model.encoder[2](torch.relu(model.encoder[0](emb))))
    y = mod_task.y_test[rows]
    last = metrics.sel(step=6, layer="readout")
    assert float(last.sel(metric="effective_rank")) == pytest.approx(effective_rank(h2), rel=1e-9)
    assert float(last.sel(metric="participation_ratio")) == pytest.approx(
        participation_ratio(h2), rel=1e-9
    )
    assert float(last.sel(metric="class_separation")) == pytest.approx(
        class_separation(h2, y), rel=1e-9
    )
    assert float(last.sel(metric="rsa")) == pytest.approx(rsa(h2, y), rel=1e-9)
    assert float(metrics.sel(step=6, layer="embed", metric="effective_rank")) == pytest.approx(
        effective_rank(emb), rel=1e-9
    )
    assert ds["step"].values.tolist() == [0, 3, 6]
    cka = metrics.sel(metric="cka_init", layer="readout").values
    assert 0 < cka[2] < 1 - 1e-6  # the representation moved
    prev = metrics.sel(metric="cka_prev", layer="readout").values
    assert np.isfinite(prev[1:]).all() and prev[1] == pytest.approx(cka[1], rel=1e-12)


def test_geometry_on_regression_explains_class_separation(reg_task):
    model = gw.models.MLP.for_task(reg_task, width=16, depth=1)
    mon = gw.Monitor(model, reg_task, diagnostics=["geometry"])
    mon.record(0)
    ds = mon.dataset()
    m = ds["metrics"].sel(step=0, layer="readout")
    assert np.isnan(float(m.sel(metric="class_separation")))
    assert "regression" in ds.attrs["nan_reasons"]["class_separation"]["readout"]
    for name in ("effective_rank", "participation_ratio", "cka_init", "rsa"):
        assert np.isfinite(float(m.sel(metric=name)))


def test_geometry_non_finite_layer_gives_nan_with_reason(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=8, depth=2, embed_dim=4)
    mon = gw.Monitor(model, mod_task, diagnostics=["geometry"])
    with torch.no_grad():
        model.encoder[0].bias.fill_(float("nan"))
    mon.record(0)
    ds = mon.dataset()
    assert np.isnan(float(ds["metrics"].sel(step=0, layer="encoder.0", metric="effective_rank")))
    assert "non-finite" in ds.attrs["nan_reasons"]["effective_rank"]["encoder.0"]
    assert np.isfinite(float(ds["metrics"].sel(step=0, layer="embed", metric="effective_rank")))
