"""Li₂: Fourier features against a brute-force DFT and closed forms; the hidden-layer quantities
against direct autograd and brute force on small nets; the energy's derivation; the diagnostic
on the preset MLP, a deeper MLP, the transformer and a resumed run."""

import math

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn

import grokwidgets as gw
from grokwidgets.diagnostics import li2
from grokwidgets.presets import get_preset

# -- Fourier features ----------------------------------------------------------------------------


def brute_force_power(w, p):
    """Power per frequency 0..p//2 by explicit cos/sin sums, ±k pooled, blocks summed."""
    rows = np.asarray(w, dtype=np.float64).reshape(len(w), -1, p)
    a = np.arange(p)
    out = np.zeros((len(w), p // 2 + 1))
    for k in range(p):
        re = (rows * np.cos(2 * np.pi * k * a / p)).sum(axis=2)
        im = (rows * np.sin(2 * np.pi * k * a / p)).sum(axis=2)
        out[:, min(k, p - k)] += (re**2 + im**2).sum(axis=1) / p
    return out


@pytest.mark.parametrize("p, blocks", [(7, 1), (8, 2), (11, 3)])
def test_fourier_power_matches_a_brute_force_dft_and_parseval(p, blocks):
    w = np.random.default_rng(p).normal(size=(5, blocks * p))
    power = li2.fourier_power(w, p).numpy()
    np.testing.assert_allclose(power, brute_force_power(w, p), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(power.sum(axis=1), (w**2).sum(axis=1), rtol=1e-12)


@pytest.mark.parametrize("p", [7, 12, 97])
def test_pure_cosine_has_concentration_one_at_its_frequency(p):
    a = np.arange(p)
    rows, freqs = [], []
    for k in range(1, p // 2 + 1):
        # two operand blocks, different phases and amplitudes, plus a constant offset
        u = 2.0 * np.cos(2 * np.pi * k * a / p + 0.3) + 5.0
        v = 0.5 * np.cos(2 * np.pi * k * a / p - 1.1)
        rows.append(np.concatenate([u, v]))
        freqs.append(k)
    w = np.stack(rows)
    np.testing.assert_allclose(li2.fourier_concentration(w, p).numpy(), 1.0, rtol=0, atol=1e-12)
    assert li2.dominant_frequencies(w, p).tolist() == freqs


def test_two_frequency_mixture_closed_form():
    p, a = 31, np.arange(31)
    w = 3.0 * np.cos(2 * np.pi * 4 * a / p) + 2.0 * np.sin(2 * np.pi * 9 * a / p)
    assert float(li2.fourier_concentration(w, p)[0]) == pytest.approx(9 / 13, rel=1e-12)
    assert int(li2.dominant_frequencies(w, p)[0]) == 4


def test_noise_concentration_is_the_expected_largest_uniform_spacing():
    # White noise, p odd, one block: the m = (p-1)/2 shares are a flat Dirichlet, so each
    # frequency holds 1/m on average and the top one H_m / m (the largest of m spacings).
    p, m = 97, 48
    w = np.random.default_rng(0).normal(size=(4000, p))
    kappa = li2.fourier_concentration(w, p).numpy()
    expected = sum(1 / i for i in range(1, m + 1)) / m
    se = kappa.std() / math.sqrt(len(kappa))
    assert abs(kappa.mean() - expected) < 4 * se
    assert 1 / m < kappa.mean() < 3 * math.log(p) / p  # of order 1/p, far from 1
    shares = li2.fourier_power(w, p).numpy()[:, 1:]
    shares /= shares.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(shares.mean(axis=0), 1 / m, rtol=0.1)


def test_fourier_bad_input_and_constant_rows():
    assert math.isnan(float(li2.fourier_concentration(np.ones((1, 7)), 7)[0]))
    assert int(li2.dominant_frequencies(np.zeros((1, 14)), 7)[0]) == -1
    with pytest.raises(ValueError, match="p=7"):
        li2.fourier_concentration(np.ones((2, 10)), 7)
    with pytest.raises(ValueError, match="p must be an integer >= 2"):
        li2.fourier_concentration(np.ones((2, 10)), 1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        li2.fourier_concentration(np.full((2, 7), np.nan), 7)


# -- the hidden-layer quantities ---------------------------------------------------------------


def half_sse(out, y):
    """Tian's loss per sample: (1/2n) sum_i |y_i - f(x_i)|^2 (one-hot targets)."""
    target = nn.functional.one_hot(y, out.shape[1]).to(out.dtype)
    return 0.5 * (out - target).square().sum() / len(y)


@pytest.fixture
def tiny():
    """A two-layer MLP sigma(XW + b)V + c on continuous inputs, as a Task and a model."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(40, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (40,), generator=gen)
    task = gw.tasks.from_tensors(x[:30], y[:30], x[30:], y[30:], n_outputs=3)
    model = gw.models.MLP(6, 3, width=5, depth=1, activation="tanh", alpha=1.7, seed=3)
    return task, model.double()


def test_hidden_gradient_equals_direct_autograd_and_the_closed_form(tiny):
    task, model = tiny
    x, y = task.x_train, task.y_train
    feats, grad = li2.hidden_gradient(model, x, y, half_sse)
    w1, b1 = model.encoder[0].weight, model.encoder[0].bias
    v, c = model.readout.weight, model.readout.bias
    f = torch.tanh(x @ w1.T + b1).detach().requires_grad_(True)  # the net written out by hand
    out = model.alpha * (f @ v.T + c)
    (g_ref,) = torch.autograd.grad(half_sse(out, y), f)
    torch.testing.assert_close(feats, f.detach(), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(grad, -len(x) * g_ref, rtol=1e-12, atol=1e-13)
    onehot = nn.functional.one_hot(y, 3).double()
    closed = model.alpha * (onehot - out.detach()) @ v.detach()  # Tian: (Y - FV) V^T
    torch.testing.assert_close(grad, closed, rtol=1e-12, atol=1e-13)


def brute_force_stats(f, g, y, n_classes):
    """Every quantity from explicit loops and n x n matrices (numpy)."""
    f, g = np.asarray(f, dtype=np.float64), np.asarray(g, dtype=np.float64)
    n, k = f.shape
    yt = np.eye(n_classes)[np.asarray(y)]
    yt = yt - yt.mean(axis=0)
    fc = f - f.mean(axis=0)
    c = fc.T @ fc
    off = np.mean([abs(c[i, j]) for i in range(k) for j in range(k) if i != j])
    kern = f @ f.T
    basis = np.stack([np.eye(n).ravel(), (np.ones((n, n)) - np.eye(n)).ravel()], axis=1)
    coef, *_ = np.linalg.lstsq(basis, kern.ravel(), rcond=None)
    fit = (basis @ coef).reshape(n, n)
    energy = np.array([0.5 * np.sum((yt.T @ f[:, j]) ** 2) / n**2 for j in range(k)])
    ind = yt @ yt.T @ fc
    return {
        "li2_grad_norm": np.linalg.norm(g) / math.sqrt(n),
        "li2_grad_alignment": np.sum(g * ind) / (np.linalg.norm(g) * np.linalg.norm(ind)),
        "li2_ftf_offdiag": off / np.mean(np.diag(c)),
        "li2_fft_dist": np.linalg.norm(kern - fit) / np.linalg.norm(kern),
        "energy": energy,
    }


def test_plain_functions_match_brute_force(tiny):
    task, model = tiny
    f, g = li2.hidden_gradient(model, task.x_train, task.y_train, half_sse)
    ref = brute_force_stats(f, g, task.y_train, 3)
    yt = li2.centred_targets(task.y_train, 3)
    assert li2.gradient_alignment(g, f, yt) == pytest.approx(ref["li2_grad_alignment"], rel=1e-12)
    assert li2.ftf_offdiag_ratio(f) == pytest.approx(ref["li2_ftf_offdiag"], rel=1e-12)
    assert li2.fft_isotropy_distance(f) == pytest.approx(ref["li2_fft_dist"], rel=1e-9)
    np.testing.assert_allclose(li2.independent_energy(f, yt).numpy(), ref["energy"], rtol=1e-12)
    # known answers: isotropic rows (F F^T = a I + b) sit at distance 0, uncorrelated nodes at 0
    q, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    assert li2.fft_isotropy_distance(q) == pytest.approx(0, abs=1e-7)
    assert li2.fft_isotropy_distance(torch.ones(5, 3)) == pytest.approx(0, abs=1e-7)
    same = torch.randn(20, 1, dtype=torch.float64).repeat(1, 4) * torch.tensor([1, -1, 1, -1])
    assert li2.ftf_offdiag_ratio(same) == pytest.approx(1, rel=1e-12)


def test_the_energy_is_the_independent_stage_dynamics():
    """Module docstring: at the ridge readout, eta * (-dL/dW) -> grad E(W) as eta grows, and
    G_F = eta (F~F~T + eta I)^-1 Y~ Y~T F~ (F~T F~ + eta I)^-1 exactly."""
    gen = torch.Generator().manual_seed(0)
    n, d, k, c = 30, 6, 4, 3
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    yt = li2.centred_targets(torch.randint(0, c, (n,), generator=gen), c)
    w = torch.randn(k, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    p1 = torch.eye(n, dtype=torch.float64) - 1.0 / n

    def energy(wm):
        return 0.5 * (yt.T @ (x @ wm.T).square()).square().sum()  # sigma(z) = z^2, all nodes

    w_e = w.clone().requires_grad_(True)
    (grad_e,) = torch.autograd.grad(energy(w_e), w_e)
    errors = []
    for eta in (1e2, 1e3, 1e4):
        ft = p1 @ (x @ w.T).square()
        v = torch.linalg.solve(ft.T @ ft + eta * torch.eye(k, dtype=torch.float64), ft.T @ yt)
        w_l = w.clone().requires_grad_(True)
        f = (x @ w_l.T).square()
        loss = 0.5 * (yt - p1 @ f @ v).square().sum()
        (grad_l,) = torch.autograd.grad(loss, w_l)
        errors.append(float((-eta * grad_l - grad_e).norm() / grad_e.norm()))
        g_f = p1 @ (yt - ft @ v) @ v.T
        eye_n, eye_k = torch.eye(n, dtype=torch.float64), torch.eye(k, dtype=torch.float64)
        closed = (
            eta
            * torch.linalg.inv(ft @ ft.T + eta * eye_n)
            @ yt
            @ yt.T
            @ ft
            @ torch.linalg.inv(ft.T @ ft + eta * eye_k)
        )
        torch.testing.assert_close(g_f, closed, rtol=1e-8, atol=1e-12)
    assert errors[2] < 1e-2
    assert errors[1] / errors[0] < 0.2 and errors[2] / errors[1] < 0.2  # O(1/eta)


def test_stage_rule_and_labels():
    thr = math.sqrt(0.5)
    assert li2.stage_code(0.9, reached=False) == 1 and li2.stage_code(thr, reached=False) == 1
    assert li2.stage_code(0.7, reached=False) == 0 and li2.stage_code(0.7, reached=True) == 2
    assert li2.stage_code(0.6, reached=False, independent_alignment=0.5) == 1
    assert math.isnan(li2.stage_code(math.nan, reached=True))
    curve = [0.0, 0.3, 0.8, 0.9, math.nan, 0.6, 0.75, -0.2]
    np.testing.assert_array_equal(li2.stage_codes(curve), [0, 0, 1, 1, math.nan, 2, 1, 2])
    np.testing.assert_array_equal(li2.stage_codes([0.1, math.nan, 0.2]), [0, math.nan, 0])
    assert [li2.stage_label(c) for c in (0, 1.0, 2, math.nan)] == [
        "lazy",
        "independent",
        "interactive",
        "undetermined",
    ]
    with pytest.raises(ValueError, match="not a stage code"):
        li2.stage_label(3)
    with pytest.raises(ValueError, match="max_rows"):
        li2.Li2Options(max_rows=1)
    with pytest.raises(ValueError, match="independent_alignment"):
        li2.Li2Options(independent_alignment=2.0)


# -- the registered diagnostic -------------------------------------------------------------------


def metric(ds, name, layer, step=None):
    da = ds["metrics"].sel(metric=name, layer=layer)
    return da.values if step is None else float(da.sel(step=step))


def test_two_layer_net_through_a_monitor_matches_brute_force(tiny):
    task, model = tiny
    mon = gw.Monitor(model, task, diagnostics=["li2"], loss=half_sse)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    w0 = torch.cat([model.encoder[0].weight, model.encoder[0].bias[:, None]], 1).detach().clone()
    for step in range(3):
        mon.record(step, force=True)
        loss = half_sse(model(task.x_train), task.y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    mon.record(3, force=True)
    ds = mon.dataset()
    x, y = task.x_train, task.y_train
    with torch.no_grad():
        f = torch.tanh(model.encoder[0](x))
        out = model(x)
    onehot = nn.functional.one_hot(y, 3).double()
    g = model.alpha * (onehot - out) @ model.readout.weight.detach()
    ref = brute_force_stats(f, g, y, 3)
    for name in ("li2_grad_norm", "li2_grad_alignment", "li2_ftf_offdiag", "li2_fft_dist"):
        assert metric(ds, name, "readout", 3) == pytest.approx(ref[name], rel=1e-9), name
    np.testing.assert_allclose(
        ds["li2_energy"].sel(step=3, layer="readout").values[:5], ref["energy"], rtol=1e-10
    )
    assert metric(ds, "li2_energy_mean", "readout", 3) == pytest.approx(ref["energy"].mean())
    w = torch.cat([model.encoder[0].weight, model.encoder[0].bias[:, None]], 1).detach()
    change = float((w - w0).norm() / w0.norm())
    assert metric(ds, "li2_weight_change", "encoder.0", 3) == pytest.approx(change, rel=1e-10)
    assert metric(ds, "li2_weight_change", "encoder.0", 0) == 0
    # the stage code follows the rule on the recorded alignment curve
    alignments = metric(ds, "li2_grad_alignment", "readout")
    np.testing.assert_array_equal(metric(ds, "li2_stage", "model"), li2.stage_codes(alignments))
    info = ds.attrs["metric_info"]
    for name in ("li2_grad_norm", "li2_stage", "li2_energy_mean", "fourier_concentration_mean"):
        assert info[name]["description"] and info[name]["unit"] and info[name]["source"]
    # continuous inputs: no Fourier features, and the reason says why
    assert np.isnan(metric(ds, "fourier_concentration_mean", "encoder.0")).all()
    assert "token" in ds.attrs["nan_reasons"]["fourier_concentration_mean"]["encoder.0"]


def preset_model():
    cfg = get_preset("modular-addition")
    task_cfg = {k: v for k, v in cfg["task"].items() if k != "family"}
    task = gw.tasks.modular_arithmetic(**task_cfg)
    spec = {k: v for k, v in cfg["model"].items() if k != "class"}
    return task, gw.models.MLP.for_task(task, **spec)


def test_preset_modular_addition_mlp_fourier_and_energy():
    task, model = preset_model()
    p = task.meta["p"]
    mon = gw.Monitor(model, task, diagnostics=["li2"])
    mon.record(0, force=True)
    ds = mon.dataset()
    # Each node's weights on the one-hot tokens, read off the model's own pre-activations:
    # z(a, b) = u(a) + v(b) + bias, so z(a, 0) is u up to a constant (which the DFT's k = 0
    # term takes, and the concentration ignores); likewise z(0, b) for v.
    ids = torch.arange(p)
    zeros = torch.zeros(p, dtype=torch.int64)
    with torch.no_grad():
        z_a = model.encoder[0](model.embed(torch.stack([ids, zeros], 1)).flatten(1))
        z_b = model.encoder[0](model.embed(torch.stack([zeros, ids], 1)).flatten(1))
    w_tok = torch.cat([z_a.T, z_b.T], dim=1)  # (nodes, 2p)
    kappa = li2.fourier_concentration(w_tok, p).numpy()
    freq = li2.dominant_frequencies(w_tok, p).numpy()
    got = ds["fourier_concentration"].sel(step=0, layer="encoder.0").values
    np.testing.assert_allclose(got, kappa, rtol=1e-6)
    np.testing.assert_array_equal(ds["fourier_frequency"].sel(step=0, layer="encoder.0"), freq)
    assert metric(ds, "fourier_concentration_mean", "encoder.0", 0) == pytest.approx(
        kappa.mean(), rel=1e-6
    )
    assert kappa.mean() < 0.2  # random init: no frequency stands out
    with torch.no_grad():
        f = torch.relu(model.encoder[0](model.embed(task.x_train).flatten(1)))
    energy = li2.independent_energy(f, li2.centred_targets(task.y_train, p)).numpy()
    np.testing.assert_allclose(ds["li2_energy"].sel(step=0, layer="readout"), energy, rtol=1e-6)
    # random features at init: G_F is far from the independent form, so the stage is lazy
    assert abs(metric(ds, "li2_grad_alignment", "readout", 0)) < 0.2
    assert metric(ds, "li2_stage", "model", 0) == 0
    assert np.isfinite(metric(ds, "li2_grad_alignment", "readout", 0))


def test_deeper_mlp_gets_readout_quantities_and_reasons_for_the_rest():
    task = gw.tasks.modular_arithmetic(p=13, op="+", train_fraction=0.5, seed=0)
    model = gw.models.MLP.for_task(task, width=16, depth=2, embed_dim=4, seed=0)
    mon = gw.Monitor(model, task, diagnostics=["li2"])
    mon.record(0, force=True)
    ds = mon.dataset()
    with torch.no_grad():
        h1 = torch.relu(model.encoder[0](model.embed(task.x_train).flatten(1)))
        f = torch.relu(model.encoder[2](h1))
    assert metric(ds, "li2_ftf_offdiag", "readout", 0) == pytest.approx(
        li2.ftf_offdiag_ratio(f), rel=1e-6
    )
    for name in ("li2_grad_norm", "li2_grad_alignment", "li2_fft_dist", "li2_energy_mean"):
        assert np.isfinite(metric(ds, name, "readout", 0)), name
    reasons = ds.attrs["nan_reasons"]
    assert np.isnan(metric(ds, "li2_stage", "model", 0))
    assert "more than one hidden layer" in reasons["li2_stage"]["model"]
    assert np.isnan(metric(ds, "li2_weight_change", "encoder.0", 0))
    assert "two-layer" in reasons["li2_weight_change"]["encoder.0"]
    # the first hidden layer still reads the tokens: its Fourier features are defined
    assert np.isfinite(metric(ds, "fourier_concentration_mean", "encoder.0", 0))


def test_transformer_is_nan_with_reasons_never_a_crash():
    task = gw.tasks.modular_arithmetic(p=11, op="+", train_fraction=0.5, seed=0)
    model = gw.models.Transformer.for_task(task, d_model=16, n_heads=2, d_mlp=32, seed=0)
    mon = gw.Monitor(model, task, diagnostics=["li2"])
    mon.record(0, force=True)
    ds = mon.dataset()
    for name in ("li2_grad_norm", "li2_grad_alignment", "li2_ftf_offdiag", "li2_energy_mean"):
        assert np.isfinite(metric(ds, name, "readout", 0)), name
    reasons = ds.attrs["nan_reasons"]
    for name, layer in (
        ("li2_stage", "model"),
        ("li2_weight_change", "readout"),
        ("fourier_concentration_mean", "model"),
    ):
        assert np.isnan(metric(ds, name, layer, 0)), name
        assert reasons[name][layer], name


def test_bad_inputs_give_reasons(reg_task):
    # regression task: dense targets, no Fourier features
    model = gw.models.MLP.for_task(reg_task, width=8, depth=1, seed=0)
    mon = gw.Monitor(model, reg_task, diagnostics=["li2"])
    mon.record(0, force=True)
    ds = mon.dataset()
    x, y = reg_task.x_train, reg_task.y_train
    f, g = li2.hidden_gradient(model, x, y, nn.functional.mse_loss)
    align = li2.gradient_alignment(g, f, li2.centred_targets(y))
    assert metric(ds, "li2_grad_alignment", "readout", 0) == pytest.approx(align, rel=1e-6)
    assert "modular" in ds.attrs["nan_reasons"]["fourier_concentration_mean"]["encoder.0"]
    # multiplication is not diagonalised by the DFT over token ids
    task = gw.tasks.modular_arithmetic(p=7, op="*", train_fraction=0.5, seed=0)
    model = gw.models.MLP.for_task(task, width=8, depth=1, embed_dim=4, seed=0)
    mon = gw.Monitor(model, task, diagnostics=["li2"])
    mon.record(0, force=True)
    reasons = mon.dataset().attrs["nan_reasons"]
    assert "additive" in reasons["fourier_concentration_mean"]["encoder.0"]
    # non-finite activations: NaN with the reason, not an exception
    with torch.no_grad():
        model.encoder[0].weight[0, 0] = math.inf
    mon.record(1, force=True)
    ds = mon.dataset()
    assert np.isnan(metric(ds, "li2_grad_norm", "readout", 1))
    assert "non-finite" in ds.attrs["nan_reasons"]["li2_grad_norm"]["readout"]
    with pytest.raises(ValueError, match="needs a task"):
        gw.Monitor(model, None, diagnostics=["li2"])


def test_repeated_and_resumed_records_are_identical(tmp_path, mod_task):
    kw = dict(
        lr=1e-2,
        batch_size=10,
        progress=False,
        diagnostics=["li2"],
        cadence=2,
        checkpoint_cadence=3,
    )

    def model():
        return gw.models.MLP.for_task(mod_task, width=16, depth=1, embed_dim=4, seed=0)

    full_run = gw.train(mod_task, model(), steps=6, dir=tmp_path / "full", **kw)
    gw.train(mod_task, model(), steps=4, dir=tmp_path / "cut", **kw)
    gw.train(mod_task, model(), steps=6, dir=tmp_path / "cut", resume=True, **kw)
    full, cut = gw.open_run(tmp_path / "full"), gw.open_run(tmp_path / "cut")
    for var in ("metrics", "li2_energy", "fourier_concentration", "fourier_frequency"):
        xr.testing.assert_identical(full[var], cut[var])
    assert np.isfinite(metric(full, "li2_weight_change", "encoder.0")[1:]).all()
    assert metric(full, "li2_weight_change", "encoder.0")[-1] > 0
    # the same state recorded twice gives the same numbers
    mon = gw.Monitor(full_run.model, mod_task, diagnostics=["li2"])
    a, b = mon.record(0, force=True), mon.record(1, force=True)
    assert a is not None and b is not None
    np.testing.assert_equal(a.values, b.values)
    for var, per_layer in a.arrays.items():
        for layer, arr in per_layer.items():
            np.testing.assert_array_equal(arr, b.arrays[var][layer])


def test_one_hot_inputs_give_the_same_net_as_an_identity_embedding():
    """Tian's σ(XW)V on concat(onehot(a), onehot(b)) equals a token MLP whose embedding is I."""
    p = 11
    onehot = gw.tasks.modular_arithmetic(p=p, train_fraction=0.5, encoding="onehot")
    tokens = gw.tasks.modular_arithmetic(p=p, train_fraction=0.5)
    assert onehot.x_train.shape == (len(tokens.x_train), 2 * p)
    a, b = tokens.x_train[:, 0], tokens.x_train[:, 1]
    assert torch.equal(onehot.x_train[torch.arange(len(a)), a], torch.ones(len(a)))
    assert torch.equal(onehot.x_train[torch.arange(len(b)), p + b], torch.ones(len(b)))
    assert torch.equal(onehot.x_train.sum(1), torch.full((len(a),), 2.0))
    assert torch.equal(onehot.y_train, tokens.y_train)
    kw = {"width": 16, "depth": 1, "activation": "square", "bias": False, "seed": 3}
    m1 = gw.models.MLP.for_task(onehot, **kw)
    m2 = gw.models.MLP.for_task(tokens, embed_dim=p, **kw)
    with torch.no_grad():
        m2.embed.weight.copy_(torch.eye(p))
        m2.encoder[0].weight.copy_(m1.encoder[0].weight)
        m2.readout.weight.copy_(m1.readout.weight)
    torch.testing.assert_close(m1(onehot.x_test), m2(tokens.x_test))
    got = {}
    for task, model in ((onehot, m1), (tokens, m2)):
        mon = gw.Monitor(model, task, diagnostics=["li2"])
        mon.record(0, force=True)
        got[task.meta["encoding"]] = mon.dataset()
    share = li2.fourier_concentration(m1.encoder[0].weight.detach().double(), p).numpy()
    for ds in got.values():
        np.testing.assert_allclose(
            ds["fourier_concentration"].sel(step=0, layer="encoder.0"), share
        )
    for name in ("fourier_concentration_mean", "li2_energy_mean", "li2_grad_norm"):
        layer = "encoder.0" if name.startswith("fourier") else "readout"
        assert metric(got["onehot"], name, layer, 0) == pytest.approx(
            metric(got["tokens"], name, layer, 0), rel=1e-6
        )


def test_unknown_encoding_is_refused():
    with pytest.raises(ValueError, match="Valid encodings"):
        gw.tasks.modular_arithmetic(p=5, encoding="binary")


def test_li2_preset_is_tians_net_and_groks_above_the_critical_fraction(tmp_path):
    from grokwidgets.diagnostics.phases import time_to_grok
    from grokwidgets.train.config import run_config

    cfg = get_preset("li2-modular")
    cfg["train"]["steps"] = 1000
    cfg["train"]["diagnostics"] = ["basic"]
    run = run_config(cfg, tmp_path / "run", progress=False)
    model = run.model
    assert [n for n, _ in model.named_parameters()] == ["encoder.0.weight", "readout.weight"]
    assert model.encoder[0].weight.shape == (256, 2 * 23)  # reads concat(onehot(a), onehot(b))
    times = time_to_grok(run.dataset(), test_threshold=0.9)
    assert times.memorized is not None and times.memorized <= 100
    assert times.generalized is not None and times.generalized >= 5 * times.memorized
    assert 2.7482 * math.log(23) / 23 < cfg["task"]["train_fraction"]


def test_weighted_concentration_and_live_share_against_a_hand_count():
    p = 13
    a = np.arange(p)
    # node 0: a pure cosine at frequency 3, large; node 1: frequency 5 plus frequency 2 at
    # half the amplitude, large; node 2: white noise at 1/100 the size (a node weight decay
    # shrank); node 3: constant (no non-constant power at all)
    rng = np.random.default_rng(0)
    rows = [
        np.concatenate([np.cos(2 * np.pi * 3 * a / p), np.cos(2 * np.pi * 3 * a / p + 1)]),
        np.concatenate([np.cos(2 * np.pi * 5 * a / p) + 0.5 * np.sin(2 * np.pi * 2 * a / p)] * 2),
        0.01 * rng.standard_normal(2 * p),
        np.full(2 * p, 0.7),
    ]
    w = np.stack(rows)
    power = li2.fourier_power(w, p).numpy()
    ac = power[:, 1:]
    kappa = ac.max(1) / np.where(ac.sum(1) > 0, ac.sum(1), np.nan)
    np.testing.assert_allclose(kappa[:2], [1.0, 1 / 1.25])
    # weighted: sum of top powers over sum of powers (the constant row adds nothing)
    want = ac.max(1).sum() / ac.sum()
    got = li2.weighted_concentration(torch.as_tensor(power))
    assert got == pytest.approx(want)
    assert got > np.nanmean(kappa)  # the noise node drags the plain mean down, not this
    # live: nodes 0 and 1 (node 2 has 1e-4 of their power, node 3 none); both concentrated
    assert li2.live_concentrated_share(torch.as_tensor(power)) == 1.0
    assert li2.live_concentrated_share(torch.as_tensor(power), threshold=0.9) == 0.5
    assert li2.live_concentrated_share(torch.as_tensor(power), live=1e-6) == pytest.approx(2 / 3)
    assert math.isnan(li2.weighted_concentration(torch.as_tensor(power[3:])))


def test_fourier_metrics_recorded_beside_the_plain_mean():
    task = gw.tasks.modular_arithmetic(p=11, train_fraction=0.5, encoding="onehot")
    model = gw.models.MLP.for_task(task, width=8, depth=1, activation="square", bias=False)
    mon = gw.Monitor(model, task, diagnostics=["li2"])
    mon.record(0, force=True)
    ds = mon.dataset()
    power = li2.fourier_power(model.encoder[0].weight.detach().double(), 11)
    assert metric(ds, "fourier_concentration_weighted", "encoder.0", 0) == pytest.approx(
        li2.weighted_concentration(power)
    )
    assert metric(ds, "fourier_live_share", "encoder.0", 0) == pytest.approx(
        li2.live_concentrated_share(power)
    )


def test_fourier_ipr_against_numpy_and_hand_values():
    p = 13
    a = np.arange(p)
    rng = np.random.default_rng(1)
    rows = np.stack(
        [
            # one frequency (3) in both blocks, any phase: IPR 1
            np.concatenate([np.cos(2 * np.pi * 3 * a / p), np.sin(2 * np.pi * 3 * a / p)]),
            # frequencies 2 and 5 at equal amplitude: IPR 1/2; a constant offset does not count
            np.concatenate([np.cos(2 * np.pi * 2 * a / p) + np.cos(2 * np.pi * 5 * a / p) + 3] * 2),
            rng.standard_normal(2 * p),
            np.full(2 * p, 0.7),
        ]
    )
    got = li2.fourier_ipr(rows, p).numpy()
    np.testing.assert_allclose(got[:2], [1.0, 0.5])
    assert np.isnan(got[3])
    # the noise row against numpy's DFT: k and p - k pooled, blocks summed, k = 0 left out
    spec = np.abs(np.fft.fft(rows[2].reshape(2, p), axis=1)) ** 2
    pooled = np.array([spec[:, k].sum() + spec[:, p - k].sum() for k in range(1, p // 2 + 1)])
    assert got[2] == pytest.approx((pooled**2).sum() / pooled.sum() ** 2)
    assert 1 / (p // 2) < got[2] < 1


def test_fourier_ipr_recorded():
    task = gw.tasks.modular_arithmetic(p=11, train_fraction=0.5, encoding="onehot")
    model = gw.models.MLP.for_task(task, width=8, depth=1)
    mon = gw.Monitor(model, task, diagnostics=["li2"])
    mon.record(0, force=True)
    want = li2.fourier_ipr(model.encoder[0].weight.detach(), 11).mean()
    assert metric(mon.dataset(), "fourier_ipr_mean", "encoder.0", 0) == pytest.approx(float(want))


def test_an_embedding_over_more_tokens_than_the_group_gives_a_reason():
    task = gw.tasks.modular_arithmetic(p=7, train_fraction=0.5)
    model = gw.models.MLP(2, 7, width=8, depth=1, vocab_size=10, embed_dim=4)
    mon = gw.Monitor(model, task, diagnostics=["li2"])
    mon.record(0, force=True)
    ds = mon.dataset()
    for name in ("fourier_concentration_mean", "fourier_concentration_weighted"):
        assert np.isnan(metric(ds, name, "encoder.0", 0))
        assert "not 2 x p = 14" in ds.attrs["nan_reasons"][name]["encoder.0"]
