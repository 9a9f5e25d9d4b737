"""Linear probes, readout misalignment/train bias, and the feature capture they rest on."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

import grokwidgets as gw
import grokwidgets.diagnostics.geometry  # noqa: F401  (registers "geometry")
from grokwidgets.diagnostics._features import RowSubsets, capture, representation_points
from grokwidgets.diagnostics.probe import Probe
from grokwidgets.diagnostics.probes import DEFAULT_L2, RECORD_TOL, linear_probe

sklearn_lm = pytest.importorskip("sklearn.linear_model")
sklearn_pre = pytest.importorskip("sklearn.preprocessing")

SHARED_MNIST = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist.npz"
).resolve()


def sklearn_logistic(x_tr, y_tr, x_te, l2=DEFAULT_L2):
    """scikit-learn's multinomial logistic regression with the probe's objective."""
    scaler = sklearn_pre.StandardScaler().fit(x_tr)
    clf = sklearn_lm.LogisticRegression(C=1.0 / (l2 * len(y_tr)), max_iter=10_000, tol=1e-10)
    clf.fit(scaler.transform(x_tr), y_tr)
    return clf, scaler.transform(x_te)


def assert_matches_sklearn(x_tr, y_tr, x_te, y_te):
    x_tr, x_te = np.asarray(x_tr, np.float64), np.asarray(x_te, np.float64)
    y_tr, y_te = np.asarray(y_tr), np.asarray(y_te)
    ours = linear_probe(x_tr, y_tr, x_te, y_te)
    clf, z_te = sklearn_logistic(x_tr, y_tr, x_te)
    assert ours.converged
    assert ours.test_acc == pytest.approx(clf.score(z_te, y_te), abs=0.01)
    assert ours.train_acc == pytest.approx(
        clf.score(sklearn_pre.StandardScaler().fit(x_tr).transform(x_tr), y_tr), abs=0.01
    )
    # Stronger: the same fitted model, compared through its test probabilities.
    ours_p = torch.softmax(ours.predict(x_te), dim=1).numpy()
    classes = clf.classes_
    np.testing.assert_allclose(ours_p[:, classes], clf.predict_proba(z_te), atol=2e-3)
    return ours


def gaussian_mixture(n, k=4, d=12, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.2, size=(k, d))
    y = rng.integers(0, k, size=n)
    x = centres[y] + rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, size=d)
    return x, y


def test_logistic_probe_matches_sklearn_on_a_gaussian_mixture():
    x, y = gaussian_mixture(900, seed=1)
    ours = assert_matches_sklearn(x[:500], y[:500], x[500:], y[500:])
    assert 0.4 < ours.test_acc < 0.98  # overlapping classes: the comparison is not trivial


def test_logistic_probe_matches_sklearn_on_model_features(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=32, depth=2, embed_dim=8)
    gw.train(mod_task, model, steps=40, lr=1e-2, progress=False)
    probe = Probe(model, mod_task, 40, None, {})
    train, test = capture(probe, "train"), capture(probe, "test")
    for layer in ("embed", "encoder.0", "readout"):
        assert_matches_sklearn(
            train.features[layer], train.targets, test.features[layer], test.targets
        )


@pytest.mark.skipif(not SHARED_MNIST.is_file(), reason="MNIST not in ../shared/data")
def test_logistic_probe_matches_sklearn_on_mnist_features():
    task = gw.tasks.mnist(n_train=1000, n_test=1000, path=str(SHARED_MNIST), download=False)
    model = gw.models.MLP.for_task(task, width=200, depth=2, init_scale=8.0)
    probe = Probe(model, task, 0, None, {})
    train, test = capture(probe, "train"), capture(probe, "test")
    ours = assert_matches_sklearn(
        train.features["readout"], train.targets, test.features["readout"], test.targets
    )
    assert ours.test_acc > 0.5  # random features of MNIST probe well (PAPERS.md: 0.785)


def test_ridge_probe_matches_closed_form_least_squares(reg_task):
    rng = np.random.default_rng(0)
    x_tr, x_te = rng.normal(size=(60, 7)) * 3 + 1, rng.normal(size=(40, 7)) * 3 + 1
    w = rng.normal(size=(7, 2))
    y_tr, y_te = x_tr @ w + rng.normal(size=(60, 2)), x_te @ w + rng.normal(size=(40, 2))
    l2 = 0.05
    ours = linear_probe(x_tr, y_tr, x_te, y_te, l2=l2)
    # Independent: standardize, then solve the penalised least squares as one augmented system.
    mu, sd = x_tr.mean(0), x_tr.std(0)
    z_tr, z_te = (x_tr - mu) / sd, (x_te - mu) / sd
    n, d = z_tr.shape
    a = np.block([[z_tr, np.ones((n, 1))], [np.sqrt(n * l2) * np.eye(d), np.zeros((d, 1))]])
    b = np.vstack([y_tr, np.zeros((d, 2))])
    coef, *_ = np.linalg.lstsq(a, b, rcond=None)
    np.testing.assert_allclose(ours.coef.numpy(), coef, rtol=1e-9, atol=1e-10)
    expected = np.mean((np.c_[z_te, np.ones(len(z_te))] @ coef - y_te) ** 2)
    assert ours.test_loss == pytest.approx(expected, rel=1e-10)
    assert np.isnan(ours.test_acc) and ours.kind == "regression"
    sk = sklearn_lm.Ridge(alpha=n * l2).fit(z_tr, y_tr)
    np.testing.assert_allclose(ours.predict(x_te).numpy(), sk.predict(z_te), rtol=1e-8)


def test_warm_start_reaches_the_same_probe_in_fewer_iterations():
    x, y = gaussian_mixture(600, k=5, seed=3)
    cold = linear_probe(x[:400], y[:400], x[400:], y[400:])
    moved = x * 1.02 + 0.01
    warm = linear_probe(moved[:400], y[:400], moved[400:], y[400:], init=cold.coef)
    again = linear_probe(moved[:400], y[:400], moved[400:], y[400:])
    assert warm.n_iter < again.n_iter
    torch.testing.assert_close(warm.coef, again.coef, atol=1e-4, rtol=1e-4)
    assert warm.test_acc == again.test_acc


def test_linear_probe_bad_input_raises_clear_errors():
    x, y = gaussian_mixture(50, seed=0)
    with pytest.raises(ValueError, match="single class"):
        linear_probe(x, np.zeros(50, dtype=np.int64), x, y)
    bad = x.copy()
    bad[3, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        linear_probe(bad, y, x, y)
    with pytest.raises(ValueError, match="same layer"):
        linear_probe(x, y, x[:, :3], y)
    with pytest.raises(ValueError, match="rows"):
        linear_probe(x, y[:10], x, y)
    with pytest.raises(ValueError, match=r"\[0, n_classes=2\)"):
        linear_probe(x, y, x, y, n_classes=2)


def test_embedding_factored_fit_is_the_dense_fit():
    """The probe on an embedding's output, solved on the table rows, equals the dense solve."""
    gen = torch.Generator().manual_seed(4)
    table = torch.randn(13, 5, generator=gen, dtype=torch.float64)
    ids = torch.randint(0, 13, (300, 3), generator=gen)
    ids[:, 2] = ids[:, 0]  # a token repeated within a row
    x = table[ids].reshape(300, 15)
    y = (ids[:, 0] + 2 * ids[:, 1]) % 4
    dense = linear_probe(x[:200], y[:200], x[200:], y[200:], tol=1e-7)
    fact = linear_probe(x[:200], y[:200], x[200:], y[200:], tol=1e-7, embedding=(ids[:200], table))
    assert dense.converged and fact.converged
    torch.testing.assert_close(fact.coef, dense.coef, rtol=1e-6, atol=1e-6)
    assert (fact.train_acc, fact.test_acc) == (dense.train_acc, dense.test_acc)
    # The same objective in float32 iterations, to the recorded tolerance.
    f32 = linear_probe(
        x[:200].float(),
        y[:200],
        x[200:].float(),
        y[200:],
        tol=RECORD_TOL,
        solver_dtype=torch.float32,
        embedding=(ids[:200], table.float()),
    )
    assert f32.test_acc == pytest.approx(dense.test_acc, abs=2 / 100)
    with pytest.raises(ValueError, match="not table\\[ids\\]"):
        linear_probe(x[:200], y[:200], x[200:], y[200:], embedding=(ids[:200] % 12, table))
    with pytest.raises(ValueError, match="T·e = 15"):
        linear_probe(x[:200], y[:200], x[200:], y[200:], embedding=(ids[:200, :2], table))
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 13\)"):
        linear_probe(x[:200], y[:200], x[200:], y[200:], embedding=(ids[:200] + 13, table))


def test_nan_check_sees_through_an_overflowing_sum():
    from grokwidgets.diagnostics._shared import finite_float64

    huge = torch.full((4, 2), 1e308, dtype=torch.float64)  # finite, but the sum overflows
    assert torch.equal(finite_float64(huge, "x"), huge)
    for bad in (math.nan, math.inf, -math.inf):
        x = torch.ones(4, 2, dtype=torch.float64)
        x[2, 1] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            finite_float64(x, "x")


# -- feature capture -------------------------------------------------------------------------


def test_capture_reads_each_hidden_layer_and_the_readout_input(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=16, depth=2, embed_dim=4)
    sets = RowSubsets(n_train=20, n_test=2048, seed=3)
    cap = capture(Probe(model, mod_task, 0, None, {}), "train", sets)
    assert cap.layers == ["embed", "encoder.0", "encoder.2", "readout"]
    assert cap.aliases == {"encoder.2": "readout"}
    rows = torch.randperm(mod_task.n_train, generator=torch.Generator().manual_seed(3))[:20]
    torch.testing.assert_close(cap.rows, rows)
    with torch.no_grad():
        emb = model.embed(mod_task.x_train[rows]).flatten(1)
        h1 = torch.relu(model.encoder[0](emb))
        h2 = torch.relu(model.encoder[2](h1))
    torch.testing.assert_close(cap.features["embed"], emb)
    ids, table = cap.embeddings["embed"]  # the embedding's factors, for the probes' solver
    assert torch.equal(ids, mod_task.x_train[rows]) and torch.equal(table, model.embed.weight)
    assert list(cap.embeddings) == ["embed"]
    torch.testing.assert_close(cap.features["encoder.0"], h1)
    torch.testing.assert_close(cap.features["readout"], h2)
    torch.testing.assert_close(cap.outputs, model(mod_task.x_train[rows]).detach())
    # every test row (61 < 2048), once per record: the cache returns the same object
    probe = Probe(model, mod_task, 0, None, {})
    test = capture(probe, "test", sets)
    assert len(test.rows) == mod_task.n_test and capture(probe, "test", sets) is test


def test_transformer_layers_are_embedding_mlp_hidden_and_readout_input(mod_task):
    model = gw.models.Transformer.for_task(mod_task, d_model=16, n_heads=2, d_mlp=24)
    cap = capture(Probe(model, mod_task, 0, None, {}), "test")
    assert cap.layers == ["embed", "encoder.mlp.0", "readout"]
    n = mod_task.n_test
    assert cap.features["embed"].shape == (n, 3 * 16)
    assert cap.features["encoder.mlp.0"].shape == (n, 24)
    assert cap.features["readout"].shape == (n, 16)


def test_centred_mlp_hooks_see_only_the_live_network(mod_task):
    """The g0 pass of a centred MLP must not fire the hooks (nor be mistaken for a layer)."""
    model = gw.models.MLP.for_task(mod_task, width=16, depth=1, embed_dim=4, centred=True)
    with torch.no_grad():
        model.encoder[0].weight.mul_(3.0)  # live network differs from g0
    cap = capture(Probe(model, mod_task, 0, None, {}), "test")
    assert cap.skipped == {} and cap.layers == ["embed", "encoder.0", "readout"]
    with torch.no_grad():
        h = torch.relu(model.encoder[0](model.embed(mod_task.x_test[cap.rows]).flatten(1)))
    torch.testing.assert_close(cap.features["readout"], h)


class NoLinear(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.embed = nn.Embedding(p, p)

    def forward(self, x):
        return self.embed(x).sum(1)


@pytest.mark.parametrize("family", ["probes", "geometry"])
def test_model_without_linear_layer_is_refused_at_setup(mod_task, family):
    with pytest.raises(ValueError, match="no nn.Linear layer"):
        gw.Monitor(NoLinear(11), mod_task, diagnostics=[family])
    with pytest.raises(ValueError, match="no nn.Linear layer"):
        representation_points(NoLinear(11))


# -- the registered diagnostic ---------------------------------------------------------------


def test_probes_through_train_match_their_definitions(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=32, depth=2, embed_dim=8)
    run = gw.train(
        mod_task,
        model,
        steps=30,
        lr=1e-2,
        diagnostics=["basic", "probes"],
        cadence=10,
        progress=False,
    )
    ds = run.dataset()
    m = ds["metrics"].sel(step=30)
    info = ds.attrs["metric_info"]
    for name in ("probe_test_acc", "readout_misalignment", "readout_train_bias"):
        assert info[name]["description"] and info[name]["source"]
    # The last record's probes equal probes fitted here on hand-computed features.
    with torch.no_grad():
        emb_tr = model.embed(mod_task.x_train).flatten(1)
        emb_te = model.embed(mod_task.x_test).flatten(1)
        h_tr = torch.relu(model.encoder[2](torch.relu(model.encoder[0](emb_tr))))
        h_te = torch.relu(model.encoder[2](torch.relu(model.encoder[0](emb_te))))
    rows_tr = RowSubsets().rows("train", mod_task.n_train)
    ref = linear_probe(h_tr[rows_tr], mod_task.y_train[rows_tr], h_te, mod_task.y_test)
    assert float(m.sel(layer="readout", metric="probe_test_acc")) == pytest.approx(
        ref.test_acc, abs=1e-12
    )
    # Warm- and cold-started L-BFGS stop at gradient max-norm 1e-6 of a λ=1e-3 strongly convex
    # objective: the same optimum to ~1e-4 in the (near-separable, large) test loss.
    assert float(m.sel(layer="readout", metric="probe_test_loss")) == pytest.approx(
        ref.test_loss, rel=1e-3
    )
    # encoder.2's output is the readout's input: the same values under both names
    for metric in ("probe_train_acc", "probe_test_acc", "probe_test_loss"):
        assert float(m.sel(layer="encoder.2", metric=metric)) == float(
            m.sel(layer="readout", metric=metric)
        )
    # Every fixed row is a split row here (< 2048), so the definitions close exactly.
    acc = {s: float(m.sel(layer="model", metric=f"{s}_acc")) for s in ("train", "test")}
    p_acc = {s: float(m.sel(layer="readout", metric=f"probe_{s}_acc")) for s in ("train", "test")}
    assert float(m.sel(layer="model", metric="readout_misalignment")) == pytest.approx(
        p_acc["test"] - acc["test"], abs=1e-12
    )
    assert float(m.sel(layer="model", metric="readout_train_bias")) == pytest.approx(
        (acc["train"] - acc["test"]) - (p_acc["train"] - p_acc["test"]), abs=1e-12
    )
    probe_acc = ds["metrics"].sel(metric="probe_test_acc", layer=["embed", "encoder.0"])
    assert np.isfinite(probe_acc.sel(step=[0, 10, 20, 30]).values).all()


def test_regression_task_uses_a_ridge_probe_and_explains_the_missing_accuracy(reg_task):
    model = gw.models.MLP.for_task(reg_task, width=16, depth=1)
    with gw.Monitor(model, reg_task, diagnostics=["loss", "probes"]) as mon:
        mon.record(0)
    ds = mon.dataset()
    m = ds["metrics"].sel(step=0)
    assert np.isnan(float(m.sel(layer="readout", metric="probe_test_acc")))
    assert "ridge" in ds.attrs["nan_reasons"]["probe_test_acc"]["readout"]
    with torch.no_grad():
        h_tr = torch.relu(model.encoder[0](reg_task.x_train))
        h_te = torch.relu(model.encoder[0](reg_task.x_test))
    ref = linear_probe(h_tr, reg_task.y_train, h_te, reg_task.y_test)
    assert float(m.sel(layer="readout", metric="probe_test_loss")) == pytest.approx(ref.test_loss)
    assert float(m.sel(layer="model", metric="readout_misalignment")) == pytest.approx(
        float(m.sel(layer="model", metric="test_loss")) - ref.test_loss, rel=1e-5
    )


def test_non_finite_activations_give_nan_with_reason(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=8, depth=2, embed_dim=4)
    with torch.no_grad():
        model.encoder[2].weight[0, 0] = float("inf")
    mon = gw.Monitor(model, mod_task, diagnostics=["probes"])
    mon.record(0)
    ds = mon.dataset()
    assert ds["layer"].values.tolist() == ["model", "embed", "encoder.0", "encoder.2", "readout"]
    m = ds["metrics"].sel(step=0)
    assert np.isfinite(float(m.sel(layer="encoder.0", metric="probe_test_acc")))
    reasons = ds.attrs["nan_reasons"]
    for layer in ("encoder.2", "readout"):
        assert np.isnan(float(m.sel(layer=layer, metric="probe_test_acc")))
        assert "non-finite activations" in reasons["probe_test_acc"][layer]
    assert np.isnan(float(m.sel(layer="model", metric="readout_misalignment")))
    assert "readout" in reasons["readout_misalignment"]["model"]


def test_single_class_probe_set_gives_nan_with_reason():
    x = torch.randn(30, 5)
    task = gw.tasks.from_tensors(
        x[:20], torch.zeros(20, dtype=torch.int64), x[20:], torch.arange(10) % 2, n_outputs=2
    )
    model = gw.models.MLP.for_task(task, width=8, depth=1)
    mon = gw.Monitor(model, task, diagnostics=["probes"])
    mon.record(0)
    ds = mon.dataset()
    assert np.isnan(ds["metrics"].sel(step=0, layer="readout", metric="probe_test_acc"))
    assert "single class" in ds.attrs["nan_reasons"]["probe_test_acc"]["readout"]


def test_resume_reproduces_probe_and_geometry_records(tmp_path, mod_task):
    kw = dict(
        lr=1e-2,
        batch_size=10,
        progress=False,
        diagnostics=["probes", "geometry"],
        cadence=1,
        checkpoint_cadence=5,
    )

    def model():
        return gw.models.MLP.for_task(mod_task, width=16, depth=2, embed_dim=4, seed=0)

    gw.train(mod_task, model(), steps=10, dir=tmp_path / "full", **kw)
    gw.train(mod_task, model(), steps=6, dir=tmp_path / "cut", **kw)
    gw.train(mod_task, model(), steps=10, dir=tmp_path / "cut", resume=True, **kw)
    full = gw.open_run(tmp_path / "full")["metrics"]
    cut = gw.open_run(tmp_path / "cut")["metrics"]
    xr.testing.assert_identical(full, cut)
    assert np.isfinite(full.sel(metric="cka_prev", layer="readout").values[1:]).all()


@pytest.mark.skipif(not SHARED_MNIST.is_file(), reason="MNIST not in ../shared/data")
def test_recorded_setting_float32_solver_stays_within_sklearn_on_real_digits():
    """The diagnostic's solver (float32 iterations, RECORD_TOL) against scikit-learn."""
    task = gw.tasks.mnist(n_train=1000, n_test=1000, path=str(SHARED_MNIST), download=False)
    model = gw.models.MLP.for_task(task, width=200, depth=2, init_scale=8.0)
    probe = Probe(model, task, 0, None, {})
    train, test = capture(probe, "train"), capture(probe, "test")
    x_tr, x_te = train.features["encoder.0"], test.features["encoder.0"]
    assert x_tr.dtype == torch.float32
    ours = linear_probe(
        x_tr, train.targets, x_te, test.targets, tol=RECORD_TOL, solver_dtype=torch.float32
    )
    clf, z_te = sklearn_logistic(x_tr.double().numpy(), train.targets.numpy(), x_te.double())
    assert ours.converged
    assert abs(ours.test_acc - clf.score(z_te, test.targets.numpy())) <= 0.015
    # The same fitted model up to the looser tolerance: a few rows' probabilities move by a
    # few hundredths, the average by far less.
    gap = np.abs(torch.softmax(ours.predict(x_te), dim=1).numpy() - clf.predict_proba(z_te))
    assert gap.max() < 0.05 and gap.mean() < 1e-3
    with pytest.raises(ValueError, match="solver_dtype"):
        linear_probe(x_tr, train.targets, x_te, test.targets, solver_dtype=torch.float16)


def _two_loop(pairs, g):
    """Nocedal & Wright's two-loop recursion (Algorithm 7.4), H0 = (s·y / y·y) I."""
    q = g.clone()
    alphas = []
    for s, y in reversed(pairs):
        a = (s @ q) / (y @ s)
        alphas.append(a)
        q = q - a * y
    s, y = pairs[-1]
    r = (s @ y) / (y @ y) * q
    for (s, y), a in zip(pairs, reversed(alphas), strict=True):
        b = (y @ r) / (y @ s)
        r = r + s * (a - b)
    return r


def test_compact_lbfgs_product_equals_the_two_loop_recursion_across_the_ring():
    from grokwidgets.diagnostics.probes import _CurvaturePairs

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(12, 12, generator=gen, dtype=torch.float64)
    hess = a @ a.T + 0.5 * torch.eye(12, dtype=torch.float64)  # pairs of a convex quadratic
    ring = _CurvaturePairs(4, 12, torch.float64)
    pairs = []
    for i in range(7):  # past the ring's size, so the oldest slots are overwritten
        s = torch.randn(12, generator=gen, dtype=torch.float64)
        y = hess @ s
        ring.add(s, y)
        pairs = [*pairs[-3:], (s, y)]
        g = torch.randn(12, generator=gen, dtype=torch.float64)
        got = ring.inverse_hessian_times(g)
        torch.testing.assert_close(got, _two_loop(pairs, g), rtol=1e-10, atol=1e-12)
        assert ring.count == min(i + 1, 4)
