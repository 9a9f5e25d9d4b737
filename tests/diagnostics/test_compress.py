"""Diagonal Fisher (closed forms, per-sample gradients two ways) and the pruning curves."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import grokwidgets as gw
from grokwidgets.diagnostics import compress  # noqa: F401  (registers "compress")
from grokwidgets.diagnostics._fisher import FisherOptions, diagonal_fisher
from grokwidgets.diagnostics.compress import CompressOptions, kept_grid, pruning_curve


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models: threads only add synchronization (slow on a shared 2-core machine)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


KINDS = [
    ("empirical", "categorical", None),
    ("true", "categorical", True),
    ("true", "categorical", False),
    ("empirical", "gaussian", None),
    ("true", "gaussian", True),
    ("true", "gaussian", False),
]


def softmax_regression(d=5, c=4, n=30, seed=0):
    gen = torch.Generator().manual_seed(seed)
    model = nn.Linear(d, c).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(c, d, generator=gen, dtype=torch.float64))
        model.bias.copy_(torch.randn(c, generator=gen, dtype=torch.float64))
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=gen)
    return model, x, y


# -- the Fisher ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["structured", "vmap"])
def test_softmax_regression_fisher_closed_forms(method):
    model, x, y = softmax_regression()
    with torch.no_grad():
        p = torch.softmax(model(x), dim=1)
    onehot = F.one_hot(y, 4).double()
    x2 = x.square()
    # empirical: the score of W_kj is (1[y=k] - p_k) x_j
    emp = diagonal_fisher(model, x, y, kind="empirical", method=method)
    torch.testing.assert_close(emp["weight"], ((onehot - p).square().T @ x2) / len(x))
    torch.testing.assert_close(emp["bias"], (onehot - p).square().mean(0))
    # true: E_k[(1[y=k] - p_k)^2] = p_k (1 - p_k)
    true = diagonal_fisher(model, x, kind="true", exact=True, method=method)
    torch.testing.assert_close(true["weight"], ((p * (1 - p)).T @ x2) / len(x))
    torch.testing.assert_close(true["bias"], (p * (1 - p)).mean(0))
    # Gaussian (unit variance) on the outputs: J^T J, the logits' Jacobian is x per output
    gauss = diagonal_fisher(model, x, kind="true", likelihood="gaussian", exact=True, method=method)
    torch.testing.assert_close(gauss["weight"], x2.mean(0).expand(4, 5))
    torch.testing.assert_close(gauss["bias"], torch.ones(4, dtype=torch.float64))


def test_monte_carlo_true_fisher_converges_to_the_exact_one():
    model, x, _ = softmax_regression(n=10)
    with torch.no_grad():
        model.weight.mul_(0.3)  # no tiny probabilities: every entry's error is ~1/sqrt(p draws)
    reps = 20_000  # one label per row, each row repeated: as n_samples=20000, in one pass
    for likelihood in ("categorical", "gaussian"):
        exact = diagonal_fisher(model, x, kind="true", likelihood=likelihood, exact=True)
        gen = torch.Generator().manual_seed(3)
        xs = x.repeat(reps, 1)
        mc = diagonal_fisher(
            model, xs, kind="true", likelihood=likelihood, generator=gen, chunk_size=len(xs)
        )
        for name in exact:
            rel = (mc[name] - exact[name]).abs() / exact[name]
            assert float(rel.max()) < 0.05, (likelihood, name)
            assert float(rel.max()) > 0.0  # an estimate, not the exact value
    few = diagonal_fisher(model, x, n_samples=3, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(few["weight"], exact["weight"])


@pytest.mark.parametrize("centred", [False, True])
@pytest.mark.parametrize(("kind", "likelihood", "exact"), KINDS)
def test_structured_equals_per_sample_vmap_on_an_embedding_mlp(
    mod_task, centred, kind, likelihood, exact
):
    # token pairs (a, a) put one token twice in a row: its cotangents add before squaring
    model = gw.models.MLP.for_task(mod_task, width=12, depth=2, embed_dim=4, centred=centred)
    x = torch.cat([mod_task.x_train[:20], torch.arange(11).repeat(2, 1).T])
    y = torch.cat([mod_task.y_train[:20], (2 * torch.arange(11)) % 11])
    assert bool((x[:, 0] == x[:, 1]).any())
    lab = y if likelihood == "categorical" else F.one_hot(y, 11).float()
    kw = dict(kind=kind, likelihood=likelihood, exact=exact, chunk_size=13)
    a = diagonal_fisher(model, x, lab, method="structured", generator=torch.Generator(), **kw)
    b = diagonal_fisher(model, x, lab, method="vmap", generator=torch.Generator(), **kw)
    assert set(a) == {n for n, _ in model.named_parameters()}
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-7 * float(b[name].max()))
        assert float(a[name].max()) > 0


def test_auto_falls_back_to_vmap_where_the_structured_path_does_not_apply():
    torch.manual_seed(0)
    x = torch.randn(20, 3)
    inplace = nn.Sequential(nn.Linear(3, 5), nn.ReLU(inplace=True), nn.Linear(5, 2))
    normed = nn.Sequential(nn.Linear(3, 5), nn.LayerNorm(5), nn.Linear(5, 2))
    shared = nn.Linear(3, 3)
    twice = nn.Sequential(shared, nn.Tanh(), shared)
    for model in (inplace, normed, twice):
        auto = diagonal_fisher(model, x, exact=True)
        ref = diagonal_fisher(model, x, exact=True, method="vmap")
        for name in ref:
            torch.testing.assert_close(auto[name], ref[name])
    for model in (normed, inplace):
        with pytest.raises(ValueError, match="method='vmap'"):
            diagonal_fisher(model, x, method="structured")


def test_fisher_bad_input():
    model, x, y = softmax_regression()
    with pytest.raises(ValueError, match="observed labels"):
        diagonal_fisher(model, x, kind="empirical")
    with pytest.raises(ValueError, match="class ids"):
        diagonal_fisher(model, x, y.double(), kind="empirical")
    with pytest.raises(ValueError, match="kind must be one of"):
        diagonal_fisher(model, x, kind="emprical")
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="not finite"):
        diagonal_fisher(model, x)
    with pytest.raises(ValueError, match="n_rows"):
        FisherOptions(n_rows=0)


# -- pruning curves against brute-force masking -------------------------------------------------


@pytest.fixture(scope="module")
def trained():
    """A small modular-addition MLP trained once for the module (tests do not change it)."""
    task = gw.tasks.modular_arithmetic(p=11, op="+", train_fraction=0.5, seed=0)
    # tanh: no dead units, so no exact ties (zeros) among Fisher scores
    model = gw.models.MLP.for_task(task, width=16, depth=1, embed_dim=4, activation="tanh")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gw.train(task, model, steps=150, lr=1e-2, cadence=10**9, diagnostics=[], progress=False)
    finally:
        torch.set_num_threads(n)
    return task, model


def masked_loss(model, keep_fn, x, y):
    pruned = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, p in pruned.named_parameters():
            p.copy_(keep_fn(name, p.detach().clone()))
        out = pruned(x)
    return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).double().mean())


@pytest.mark.parametrize("method", ["fisher", "magnitude"])
def test_score_pruning_matches_brute_force_masking(trained, method):
    mod_task, model = trained
    x, y = mod_task.x_test, mod_task.y_test
    fisher = diagonal_fisher(model, mod_task.x_train, kind="true", exact=True)
    scores = (
        fisher if method == "fisher" else {n: p.detach().abs() for n, p in model.named_parameters()}
    )
    grid = kept_grid(per_decade=3, decades=2)
    curve = pruning_curve(model, method, x, y, loss_fn=F.cross_entropy, fisher=fisher, grid=grid)
    n = sum(p.numel() for p in model.parameters())
    assert curve.n_params == n
    all_scores = torch.cat([s.reshape(-1).double() for s in scores.values()])
    for j, k in enumerate(grid):
        c = curve.cutoff[j]
        # the largest cutoff that keeps at least K parameters: any larger one keeps fewer
        keep = max(1, round(k * n))
        kept = int((all_scores >= c).sum())
        assert kept >= keep > int((all_scores > c).sum())
        assert kept == keep  # no ties among these continuous scores
        assert curve.fraction_pruned[j] == pytest.approx(1 - kept / n)
        loss, acc = masked_loss(
            model,
            lambda name, p, c=c: torch.where(scores[name] >= c, p, torch.zeros_like(p)),
            x,
            y,
        )
        assert curve.loss[j] == pytest.approx(loss, rel=1e-5)
        assert curve.acc[j] == pytest.approx(acc)
    assert curve.loss[0] == pytest.approx(curve.base_loss)  # nothing pruned at k = 1
    assert curve.fraction_pruned[0] == 0.0


def test_lowrank_truncation_matches_numpy_svd(trained):
    mod_task, model = trained
    x, y = mod_task.x_test, mod_task.y_test
    grid = kept_grid(per_decade=2, decades=1)
    curve = pruning_curve(model, "lowrank", x, y, loss_fn=F.cross_entropy, grid=grid)
    mats = {n: p.detach().numpy().astype(np.float64) for n, p in model.named_parameters()}
    n_total = sum(w.size for w in mats.values())
    for j in range(len(grid)):
        c = curve.cutoff[j]
        kept = 0
        truncated = {}
        for name, w in mats.items():
            if w.ndim != 2:
                truncated[name], kept = w, kept + w.size
                continue
            u, s, vh = np.linalg.svd(w, full_matrices=False)
            r = int(np.sum(s >= c * s[0] * (1 - 1e-9)))  # c is one of torch's σ/σ₁
            truncated[name] = (u[:, :r] * s[:r]) @ vh[:r]
            kept += min(r * sum(w.shape), w.size)
        assert curve.fraction_pruned[j] == pytest.approx(1 - kept / n_total)
        assert kept >= round(grid[j] * n_total)  # the cutoff keeps at least the target
        loss, _ = masked_loss(
            model, lambda name, p, t=truncated: torch.tensor(t[name]).float(), x, y
        )
        assert curve.loss[j] == pytest.approx(loss, rel=1e-4)
    assert curve.fraction_pruned[-1] > 0.3


@pytest.mark.parametrize("method", ["fisher", "magnitude"])
def test_compression_factor_is_the_brute_force_tolerance_edge(trained, method):
    mod_task, model = trained
    x, y = mod_task.x_train, mod_task.y_train
    fisher = diagonal_fisher(model, x, kind="true", exact=True)
    scores = (
        fisher if method == "fisher" else {n: p.detach().abs() for n, p in model.named_parameters()}
    )
    flat = torch.cat([s.reshape(-1).double() for s in scores.values()])
    order = torch.sort(flat).values
    n = flat.numel()
    curve = pruning_curve(
        model, method, x, y, loss_fn=F.cross_entropy, fisher=fisher, tol=0.05, refine=40
    )

    def loss_keeping(keep):
        c = float(order[n - keep])
        return masked_loss(
            model,
            lambda name, p: torch.where(scores[name] >= c, p, torch.zeros_like(p)),
            x,
            y,
        )[0]

    base = loss_keeping(n)
    null = math.log(11)  # cross-entropy of zero logits over 11 classes
    assert curve.null_loss == pytest.approx(null)
    assert curve.base_loss == pytest.approx(base)
    limit = base + 0.05 * (null - base)
    kept = curve.kept_at_tolerance
    assert curve.compression_factor == pytest.approx(n / kept)
    assert 1.0 < curve.compression_factor < 1000
    assert loss_keeping(kept) <= limit  # verified within tolerance ...
    assert loss_keeping(kept - 1) > limit  # ... and one parameter fewer is not
    # every grid point before the edge is within tolerance
    within = curve.loss <= limit
    assert within[: np.argmin(within)].all() and not within.all()


def test_compression_factor_ends_and_undefined_cases(trained):
    mod_task, model = trained
    kw = dict(loss_fn=F.cross_entropy)
    # everything within tolerance: the grid's end
    curve = pruning_curve(model, "magnitude", mod_task.x_train, mod_task.y_train, abs_tol=1e9, **kw)
    assert curve.compression_factor == pytest.approx(
        curve.n_params / max(1, round(1e-3 * curve.n_params))
    )
    # on test rows this memorizing model is worse than knowing nothing: no factor
    test = pruning_curve(model, "magnitude", mod_task.x_test, mod_task.y_test, **kw)
    assert test.base_loss > test.null_loss == pytest.approx(math.log(11))
    assert math.isnan(test.compression_factor) and test.kept_at_tolerance == 0
    assert np.isfinite(test.loss).all()  # the curve itself is still recorded


def scaled_logits(model, factor):
    """``model`` with its readout scaled: factor → 0 drives the loss to an all-zero output's."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        out.readout.weight.mul_(factor)
        out.readout.bias.mul_(factor)
    return out


def test_compression_factor_needs_a_gain_over_chance(trained):
    """Near chance (a train loss ≈ ln C) the tolerance band is thinner than the noise of a
    pruned model's loss, and the factor used to jump to the grid's end: it is NaN there."""
    mod_task, model = trained
    x, y = mod_task.x_train, mod_task.y_train
    null = math.log(11)
    kw = dict(loss_fn=F.cross_entropy)
    for factor, defined in ((0.005, False), (1.0, True)):
        near = scaled_logits(model, factor)
        curve = pruning_curve(near, "magnitude", x, y, **kw)
        gain = 1 - curve.base_loss / null
        assert (gain >= 0.05) is defined, gain
        assert math.isnan(curve.compression_factor) is not defined
        # the rule, not the default, decides: no minimum gain gives a factor again
        loose = pruning_curve(near, "magnitude", x, y, min_gain=0.0, **kw)
        assert math.isfinite(loose.compression_factor)
    with pytest.raises(ValueError, match="min_gain"):
        CompressOptions(min_gain=1.0)


def test_compress_near_chance_says_why(trained):
    mod_task, model = trained
    mon = gw.Monitor(scaled_logits(model, 0.005), mod_task, diagnostics=["compress"])
    mon.record(0)
    ds = mon.dataset()
    for name in ("compression_factor", "magnitude_compression_factor"):
        assert np.isnan(float(ds["metrics"].sel(step=0, layer="model", metric=name)))
        assert "near chance" in ds.attrs["nan_reasons"][name]["model"]


def test_a_block_of_zero_scores_is_pruned_from_the_first_grid_point(trained):
    """Dead units: their weights have zero Fisher and zero magnitude. Kept together with their
    ties they were never pruned; ranked, they go first and change nothing."""
    mod_task, model = trained
    dead = copy.deepcopy(model)
    with torch.no_grad():
        width = dead.encoder[0].weight.shape[0]
        gone = torch.arange(width) < int(0.75 * width)  # 12 of 16 hidden units
        dead.encoder[0].weight[gone] = 0.0
        dead.encoder[0].bias[gone] = 0.0
        dead.readout.weight[:, gone] = 0.0
    x, y = mod_task.x_train, mod_task.y_train
    fisher = diagonal_fisher(dead, x, kind="true", exact=True)
    zeros = int(sum((f == 0).sum() for f in fisher.values()))
    n = sum(f.numel() for f in fisher.values())
    assert zeros > 0.5 * n  # more than the first grid step (1 - 10^-1/4 = 44%) can hold
    grid = kept_grid()
    keep = np.maximum(1, np.round(grid * n))
    inside = keep >= n - zeros  # grid points that prune only from the dead block
    for method, kw in (("fisher", {"fisher": fisher}), ("magnitude", {})):
        curve = pruning_curve(dead, method, x, y, loss_fn=F.cross_entropy, **kw)
        np.testing.assert_allclose(curve.fraction_pruned, 1 - keep / n)  # ties broken
        np.testing.assert_allclose(curve.loss[inside], curve.base_loss, atol=1e-6)
        assert curve.compression_factor >= 1 / grid[inside].min()


def test_zero_fisher_ties_are_pruned_smallest_weight_first():
    """Fisher zero on every evaluation row, weights not zero (a unit inactive on these rows):
    the tie is broken by magnitude."""
    from grokwidgets.diagnostics.compress.pruning import make_pruner

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(40, generator=gen, dtype=torch.float64)
    fisher = torch.rand(40, generator=gen, dtype=torch.float64) + 0.1
    fisher[:30] = 0.0  # 30 ties at zero
    pruner = make_pruner("fisher", {"w": w}, ["w"], {"w": fisher})
    for keep in (35, 25, 12):
        pruned, kept = pruner.apply(pruner.cutoff(keep))
        assert kept == keep
        gone = set(torch.nonzero(pruned["w"] == 0).flatten().tolist())
        order = sorted(range(30), key=lambda i: abs(float(w[i])))  # zero-Fisher, small first
        assert gone == set(order[: 40 - keep])


def test_pruning_bad_input(trained):
    mod_task, model = trained
    x, y = mod_task.x_test, mod_task.y_test
    with pytest.raises(ValueError, match="needs the diagonal Fisher"):
        pruning_curve(model, "fisher", x, y, loss_fn=F.cross_entropy)
    with pytest.raises(ValueError, match="method must be one of"):
        pruning_curve(model, "random", x, y, loss_fn=F.cross_entropy)
    with pytest.raises(ValueError, match="strictly descending"):
        pruning_curve(model, "magnitude", x, y, loss_fn=F.cross_entropy, grid=np.array([0.1, 1.0]))
    with pytest.raises(ValueError, match="lacks"):
        pruning_curve(model, "fisher", x, y, loss_fn=F.cross_entropy, fisher={})


# -- the registered diagnostic -------------------------------------------------------------------


def test_compress_through_a_monitor(trained):
    mod_task, model = trained
    mon = gw.Monitor(model, mod_task, diagnostics=["compress"])
    mon.record(0)
    ds = mon.dataset()
    m = ds["metrics"].sel(step=0, layer="model")
    for name in (
        "compression_factor",
        "magnitude_compression_factor",
        "lowrank_compression_factor",
    ):
        assert float(m.sel(metric=name)) >= 1.0
        # on test rows the memorizing model is worse than a zero output: NaN with the reason
        assert np.isnan(float(m.sel(metric=f"test_{name}")))
        assert (
            "no better than an all-zero output" in ds.attrs["nan_reasons"][f"test_{name}"]["model"]
        )
    for var in ("fisher_prune_train_loss", "magnitude_prune_test_acc", "lowrank_prune_fraction"):
        assert ds[var].dims == ("step", "layer", "prune")
        assert ds[var].sizes["prune"] == 13
        assert np.isfinite(ds[var].sel(step=0, layer="model").values).all()
    # the recorded curves are the public function's, on the diagnostic's rows
    opt = CompressOptions()
    rows = {}
    for split, n in (("train", mod_task.n_train), ("test", mod_task.n_test)):
        gen = torch.Generator().manual_seed(opt.seed)
        rows[split] = torch.randperm(n, generator=gen)[: opt.n_eval]
    x_tr, y_tr = mod_task.x_train[rows["train"]], mod_task.y_train[rows["train"]]
    x_te, y_te = mod_task.x_test[rows["test"]], mod_task.y_test[rows["test"]]
    curve = pruning_curve(model, "magnitude", x_tr, y_tr, loss_fn=F.cross_entropy)
    got = ds["magnitude_prune_train_loss"].sel(step=0, layer="model")
    np.testing.assert_allclose(got, curve.loss, rtol=1e-5)
    assert float(m.sel(metric="magnitude_compression_factor")) == pytest.approx(
        curve.compression_factor
    )
    curve = pruning_curve(model, "lowrank", x_te, y_te, loss_fn=F.cross_entropy)
    got = ds["lowrank_prune_test_acc"].sel(step=0, layer="model")
    np.testing.assert_allclose(got, curve.acc)
    # with the exact true Fisher (a registered variant) the Fisher curve is reproduced too
    exact = CompressOptions(fisher=FisherOptions(exact=True))
    compress.register_compress("compress_exact", exact, replace=True)
    mon = gw.Monitor(model, mod_task, diagnostics=["compress_exact"])
    mon.record(0)
    ds = mon.dataset()
    m = ds["metrics"].sel(step=0)
    fisher = diagonal_fisher(model, mod_task.x_train, exact=True)
    curve = pruning_curve(model, "fisher", x_tr, y_tr, loss_fn=F.cross_entropy, fisher=fisher)
    got = ds["fisher_prune_train_loss"].sel(step=0, layer="model")
    np.testing.assert_allclose(got, curve.loss, rtol=1e-5)
    np.testing.assert_allclose(
        ds["fisher_prune_cutoff"].sel(step=0, layer="model"), curve.cutoff, rtol=1e-6
    )
    got = float(m.sel(layer="model", metric="compression_factor"))
    assert got == pytest.approx(curve.compression_factor)
    # the Fisher mean per layer and over the model
    means = m.sel(metric="fisher_diag_mean")
    assert float(means.sel(layer="readout")) == pytest.approx(
        float(torch.cat([fisher["readout.weight"].reshape(-1), fisher["readout.bias"]]).mean())
    )
    total = torch.cat([f.reshape(-1) for f in fisher.values()]).mean()
    assert float(means.sel(layer="model")) == pytest.approx(float(total))
    emp = diagonal_fisher(model, mod_task.x_train, mod_task.y_train, kind="empirical")
    total = torch.cat([f.reshape(-1) for f in emp.values()]).mean()
    got = float(m.sel(layer="model", metric="empirical_fisher_diag_mean"))
    assert got == pytest.approx(float(total), rel=1e-6)
    assert got < float(means.sel(layer="model"))  # a fitted model: its observed labels are likely


def test_compress_on_regression_uses_the_gaussian_fisher_and_explains_accuracy(reg_task):
    model = gw.models.MLP.for_task(reg_task, width=8, depth=1)
    gw.train(reg_task, model, steps=100, lr=1e-2, cadence=10**9, diagnostics=[], progress=False)
    mon = gw.Monitor(model, reg_task, diagnostics=["compress"])
    mon.record(0)
    ds = mon.dataset()
    for split in ("train", "test"):
        assert np.isfinite(ds[f"fisher_prune_{split}_loss"].sel(step=0, layer="model").values).all()
        assert np.isnan(ds[f"fisher_prune_{split}_acc"].sel(step=0, layer="model").values).all()
        assert "regression" in ds.attrs["nan_reasons"][f"fisher_prune_{split}_acc"]["model"]
    # a fitted regression beats the zero output on test rows too: a test factor exists
    m = ds["metrics"].sel(step=0, layer="model")
    assert float(m.sel(metric="test_compression_factor")) >= 1.0
    curve = pruning_curve(model, "magnitude", reg_task.x_test, reg_task.y_test, loss_fn=F.mse_loss)
    assert curve.null_loss == pytest.approx(float(reg_task.y_test.square().mean()))
    # gaussian, exact (one output): the Fisher mean is mean(diag JᵀJ)
    x = reg_task.x_train
    exact = diagonal_fisher(model, x, kind="true", likelihood="gaussian", exact=True)
    total = torch.cat([f.reshape(-1) for f in exact.values()]).mean()
    got = float(ds["metrics"].sel(step=0, layer="model", metric="fisher_diag_mean"))
    assert got == pytest.approx(float(total), rel=1e-5)


def test_compress_non_finite_model_gives_nan_with_reasons(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=8, depth=1, embed_dim=4)
    with torch.no_grad():
        model.readout.weight.fill_(float("inf"))
    mon = gw.Monitor(model, mod_task, diagnostics=["compress"])
    mon.record(0)
    ds = mon.dataset()
    reasons = ds.attrs["nan_reasons"]
    names = ("compression_factor", "lowrank_compression_factor", "fisher_diag_mean")
    for name in (*names, "empirical_fisher_diag_mean"):
        assert math.isnan(float(ds["metrics"].sel(step=0, layer="model", metric=name)))
        assert reasons[name]["model"]
    assert "not finite" in reasons["compression_factor"]["model"]


def test_a_classifier_trained_with_mse_gets_the_gaussian_fisher(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=8, depth=1, embed_dim=4)
    exact = CompressOptions(fisher=FisherOptions(exact=True))
    compress.register_compress("compress_exact", exact, replace=True)
    means = {}
    for loss in ("mse", "cross_entropy"):
        mon = gw.Monitor(model, mod_task, diagnostics=["compress_exact"], loss=loss)
        mon.record(0)
        m = mon.dataset()["metrics"].sel(step=0, layer="model")
        means[loss] = float(m.sel(metric="fisher_diag_mean"))
    for loss, likelihood in (("mse", "gaussian"), ("cross_entropy", "categorical")):
        f = diagonal_fisher(model, mod_task.x_train, likelihood=likelihood, exact=True)
        total = torch.cat([v.reshape(-1) for v in f.values()]).mean()
        assert means[loss] == pytest.approx(float(total), rel=1e-6)
    assert means["mse"] != pytest.approx(means["cross_entropy"], rel=0.1)
