"""The registered ``ntk`` diagnostic and its kernel statistics, against brute-force formulas."""

import math

import numpy as np
import pytest
import torch
import xarray as xr
from torch import nn
from torch.func import functional_call, jacrev

import grokwidgets as gw
import grokwidgets.diagnostics.kernel as kmod
from grokwidgets.diagnostics.kernel import (
    NTKOptions,
    empirical_ntk,
    kernel_alignment,
    kernel_cka,
    kernel_regression,
    kernel_velocity,
    label_power_topk,
    linearized_outputs,
    register_ntk,
)
from grokwidgets.diagnostics.probe import Probe
from grokwidgets.diagnostics.registry import resolve
from tests._resume import crash_and_resume

RNG = np.random.default_rng(0)


def random_psd(n, rank=None):
    a = RNG.standard_normal((n, rank or n))
    return a @ a.T


def centring(n):
    return np.eye(n) - np.ones((n, n)) / n


# -- the statistics, against numpy -----------------------------------------------------------


def test_alignment_of_the_label_kernel_is_one():
    y = np.eye(4)[RNG.integers(0, 4, size=20)]
    k = torch.tensor(y @ y.T)
    assert kernel_alignment(k, torch.tensor(y)) == pytest.approx(1.0, abs=1e-12)
    assert kernel_alignment(k, torch.tensor(y), centred=True) == pytest.approx(1.0, abs=1e-12)
    yv = RNG.standard_normal(15)
    assert kernel_alignment(torch.tensor(np.outer(yv, yv)), torch.tensor(yv)) == pytest.approx(1.0)


def test_alignment_cka_velocity_label_power_brute_force():
    n = 12
    k1, k2 = random_psd(n), random_psd(n, rank=4)
    y = np.eye(3)[RNG.integers(0, 3, size=n)]
    h = centring(n)

    def cos(a, b):
        return np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b))

    t1, t2, ty = torch.tensor(k1), torch.tensor(k2), torch.tensor(y)
    assert kernel_alignment(t1, ty) == pytest.approx(cos(k1, y @ y.T), rel=1e-12)
    assert kernel_alignment(t1, ty, centred=True) == pytest.approx(
        cos(h @ k1 @ h, h @ y @ y.T @ h), rel=1e-12
    )
    assert kernel_cka(t1, t2) == pytest.approx(cos(h @ k1 @ h, h @ k2 @ h), rel=1e-12)
    assert kernel_velocity(t1, t2) == pytest.approx(1 - cos(k1, k2), rel=1e-10)
    assert kernel_velocity(t1, 3.0 * t1) == pytest.approx(0.0, abs=1e-14)
    evals, vecs = np.linalg.eigh(h @ k1 @ h)
    top = vecs[:, np.argsort(evals)[::-1][:3]]
    yc = h @ y
    want = np.sum((top.T @ yc) ** 2) / np.sum(yc**2)
    assert label_power_topk(t1, ty, 3) == pytest.approx(want, rel=1e-10)
    assert label_power_topk(t1, ty, n) == pytest.approx(1.0, rel=1e-12)


def test_full_block_statistics_use_vec_y():
    n, o = 5, 3
    a = RNG.standard_normal((n * o, n * o))
    kmat = a @ a.T
    k4 = torch.tensor(kmat.reshape(n, o, n, o).transpose(0, 2, 1, 3).copy())
    y = np.eye(o)[RNG.integers(0, o, size=n)]
    v = y.reshape(-1)
    want = v @ kmat @ v / (np.linalg.norm(kmat) * (v @ v))
    assert kernel_alignment(k4, torch.tensor(y)) == pytest.approx(want, rel=1e-12)
    hf = np.kron(centring(n), np.eye(o))  # centring over samples only
    vc = hf @ v
    kc = hf @ kmat @ hf
    want_c = vc @ kc @ vc / (np.linalg.norm(kc) * (vc @ vc))
    assert kernel_alignment(k4, torch.tensor(y), centred=True) == pytest.approx(want_c, rel=1e-10)


def test_kernel_regression_matches_numpy():
    k = random_psd(10) + np.eye(10)
    kx = RNG.standard_normal((4, 10))
    y = RNG.standard_normal((10, 2))
    lam = 1e-3 * np.trace(k) / 10
    want = kx @ np.linalg.solve(k + lam * np.eye(10), y)
    got = kernel_regression(torch.tensor(k), torch.tensor(kx), torch.tensor(y), ridge=1e-3)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9)
    with pytest.raises(ValueError, match="singular"):
        kernel_regression(torch.zeros(3, 3), torch.zeros(1, 3), torch.ones(3), ridge=0.0)


def test_zero_kernels_give_nan():
    assert math.isnan(kernel_alignment(torch.zeros(4, 4), torch.ones(4)))
    assert math.isnan(kernel_velocity(torch.zeros(4, 4), torch.eye(4)))
    assert math.isnan(label_power_topk(torch.eye(4), torch.ones(4), 2))  # centred labels 0


def test_linearization(mod_task):
    torch.manual_seed(0)
    model = gw.models.MLP(4, 3, width=6, depth=1, activation="tanh").double()
    x = torch.randn(7, 4, dtype=torch.float64)
    params0 = {k: v.detach().clone() for k, v in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    f, f0, f_lin = linearized_outputs(model, params0, x)
    # independent: explicit Jacobian at theta0 times the displacement

    def out(p):
        return functional_call(model, p, (x,))

    jac = jacrev(out)(params0)
    delta = sum(
        (jac[k].reshape(7, 3, -1) @ (dict(model.named_parameters())[k] - v).reshape(-1)).detach()
        for k, v in params0.items()
    )
    torch.testing.assert_close(f0, out(params0).detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(f_lin, f0 + delta, rtol=0, atol=1e-12)
    torch.testing.assert_close(f, model(x).detach(), rtol=0, atol=1e-12)
    assert torch.linalg.vector_norm(f - f_lin) > 1e-6  # tanh: not linear
    # a model linear in its parameters equals its linearization
    lin = gw.models.MLP(4, 3, depth=0).double()
    p0 = {k: v.detach().clone() for k, v in lin.named_parameters()}
    with torch.no_grad():
        lin.readout.weight.mul_(2.0)
    f, _, f_lin = linearized_outputs(lin, p0, x)
    torch.testing.assert_close(f, f_lin, rtol=0, atol=1e-12)


# -- the registered diagnostic ---------------------------------------------------------------


def small_model(task, seed=0):
    return gw.models.MLP.for_task(task, width=16, depth=1, embed_dim=8, seed=seed)


def probe_batch(task, n=256, seed=0):
    idx = torch.randperm(task.n_train, generator=torch.Generator().manual_seed(seed))[:n]
    return task.x_train[idx], task.y_train[idx]


def test_monitor_records_every_metric_and_the_spectrum(mod_task):
    run = gw.train(
        mod_task,
        small_model(mod_task),
        steps=6,
        lr=1e-2,
        cadence=2,
        progress=False,
        diagnostics=["ntk"],
    )
    ds = run.dataset()
    declared = {m.name for m in resolve(["ntk"])[0].metrics}
    assert declared <= set(ds["metric"].values.tolist())
    assert ds["kernel_spectrum"].dims == ("step", "layer", "kernel_eig")
    assert set(ds["layer"].values) == {"model", "embed", "encoder.0", "readout"}
    m = ds["metrics"]
    at0 = m.sel(step=0, layer="model")
    assert float(at0.sel(metric="ntk_cka_init")) == pytest.approx(1.0, abs=1e-12)
    assert float(at0.sel(metric="ntk_rel_change")) == 0.0
    assert np.isnan(float(at0.sel(metric="ntk_velocity")))
    assert np.isnan(float(at0.sel(metric="lin_gap")))
    reasons = ds.attrs["nan_reasons"]
    assert "previous kernel" in reasons["ntk_velocity"]["model"]
    assert "not moved" in reasons["lin_gap"]["model"]
    last = m.sel(step=6)
    shares = last.sel(metric="ntk_trace_share").drop_sel(layer="model")
    assert float(shares.sum()) == pytest.approx(1.0, rel=1e-9)
    # recompute at the final parameters, independently of the diagnostic's own code path
    x, y = probe_batch(mod_task)
    k = empirical_ntk(run.model, x).double()
    onehot = torch.nn.functional.one_hot(y, mod_task.n_outputs).double()
    kn, yn = k.numpy(), onehot.numpy()
    align = np.sum(kn * (yn @ yn.T)) / (np.linalg.norm(kn) * np.linalg.norm(yn @ yn.T))
    assert float(last.sel(layer="model", metric="ntk_alignment")) == pytest.approx(align, rel=1e-5)
    assert float(last.sel(layer="model", metric="ntk_trace")) == pytest.approx(
        np.trace(kn) / len(kn), rel=1e-5
    )
    evals = np.sort(np.linalg.eigvalsh(kn))[::-1][:64]
    spec = ds["kernel_spectrum"].sel(step=6, layer="model").values
    np.testing.assert_allclose(spec[: len(evals)], evals, rtol=1e-4, atol=1e-6 * evals[0])
    for name in ("ntk_velocity", "ntk_rel_change", "lin_gap", "param_rel_change"):
        value = float(last.sel(layer="model", metric=name))
        assert value > 0 and math.isfinite(value), name
    baseline = m.sel(layer="model", metric="ntk_init_kernel_test_loss").values
    assert np.all(baseline == baseline[0])  # a horizontal line


def test_init_kernel_baseline_matches_brute_force(reg_task):
    model = gw.models.MLP.for_task(reg_task, width=8, depth=1, seed=0).double()
    task = reg_task.to(torch.float64)
    probe = Probe(model, task, 0, None, {})
    (diag,) = resolve(["ntk"])
    diag.setup(probe)
    out = diag.fn(probe)
    # every train (40) and test (30) point is used: fewer than the defaults
    perm_tr = torch.randperm(task.n_train, generator=torch.Generator().manual_seed(0))
    perm_te = torch.randperm(task.n_test, generator=torch.Generator().manual_seed(0))
    xtr, ytr = task.x_train[perm_tr], task.y_train[perm_tr]
    xte, yte = task.x_test[perm_te], task.y_test[perm_te]
    ktr = kmod.empirical_ntk(model, xtr).numpy()
    kte = kmod.empirical_ntk(model, xte, x2=xtr).numpy()
    lam = 1e-6 * np.trace(ktr) / len(ktr)
    pred = kte @ np.linalg.solve(ktr + lam * np.eye(len(ktr)), ytr.numpy())
    want = np.mean((pred - yte.numpy()) ** 2)
    assert out["ntk_init_kernel_test_loss"] == pytest.approx(want, rel=1e-6)
    assert "ntk_init_kernel_test_acc" not in out  # regression: no accuracy


def test_full_blocks_variant(mod_task):
    register_ntk(
        "ntk_full_for_test", NTKOptions(blocks="full", n_probe=12, n_eig=500), replace=True
    )
    model = small_model(mod_task)
    state = {}
    (diag,) = resolve(["ntk_full_for_test"])
    diag.setup(Probe(model, mod_task, 0, None, state))
    assert "ntk_full_for_test.init_kernel" in state and "ntk.init_kernel" not in state
    out = diag.fn(Probe(model, mod_task, 0, None, state))
    x, y = probe_batch(mod_task, n=12)
    k = empirical_ntk(model, x, "full").double()
    n, o = 12, mod_task.n_outputs
    kmat = k.permute(0, 2, 1, 3).reshape(n * o, n * o).numpy()
    v = torch.nn.functional.one_hot(y, o).double().reshape(-1).numpy()
    want = v @ kmat @ v / (np.linalg.norm(kmat) * (v @ v))
    assert out["ntk_alignment"]["model"] == pytest.approx(want, rel=1e-5)
    spec = out["kernel_spectrum"]["model"]
    assert spec.shape == (n * o,)
    np.testing.assert_allclose(spec, np.linalg.eigvalsh(kmat)[::-1], atol=1e-4 * spec[0])
    # the trace over samples and outputs equals the trace NTK's
    assert out["ntk_trace"]["model"] == pytest.approx(np.trace(kmat) / n, rel=1e-6)


def test_options_are_validated():
    with pytest.raises(ValueError, match="blocks"):
        NTKOptions(blocks="diag")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_probe"):
        NTKOptions(n_probe=0)
    with pytest.raises(ValueError, match="ridge"):
        NTKOptions(ridge=-1.0)


def test_non_finite_model_gives_nan_with_reasons(mod_task):
    model = small_model(mod_task)
    state = {}
    (diag,) = resolve(["ntk"])
    diag.setup(Probe(model, mod_task, 0, None, state))
    with torch.no_grad():
        model.encoder[0].weight.fill_(float("inf"))
    probe = Probe(model, mod_task, 3, None, state)
    out = diag.fn(probe)
    for name in ("ntk_trace", "ntk_alignment", "ntk_velocity", "lin_gap"):
        assert math.isnan(out[name]), name
        assert (
            "not finite" in probe.nan_reasons[name]["model"]
            or "non-finite" in (probe.nan_reasons[name]["model"])
        )
    assert "kernel_spectrum" not in out


def test_needs_a_task(mod_task):
    with pytest.raises(ValueError, match="needs a task"):
        gw.Monitor(small_model(mod_task), None, diagnostics=["ntk"])


def test_resume_reproduces_uninterrupted_records(tmp_path, mod_task):
    kw = dict(
        batch_size=10,
        lr=1e-2,
        weight_decay=0.1,
        checkpoint_cadence=8,
        cadence=3,
        diagnostics=["ntk"],
    )
    full, cut = crash_and_resume(
        mod_task,
        lambda seed: small_model(mod_task, seed=seed),
        tmp_path,
        steps=20,
        crash_at=13,
        **kw,
    )
    xr.testing.assert_identical(full["metrics"], cut["metrics"])
    xr.testing.assert_identical(full["kernel_spectrum"], cut["kernel_spectrum"])
    # the first record after the checkpoint at 8 has a velocity (from the saved kernel)
    assert np.isfinite(float(cut["metrics"].sel(step=9, layer="model", metric="ntk_velocity")))


def test_custom_module_warns_through_the_diagnostic(mod_task):
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.g = nn.Parameter(torch.ones(3))

        def forward(self, h):
            return h * self.g

    task = gw.tasks.teacher_student(d=4, n_train=20, n_test=10, n_outputs=3, seed=0)
    model = nn.Sequential(nn.Linear(4, 3), Gate())
    with pytest.warns(kmod.NTKFallbackWarning):
        run = gw.train(task, model, steps=2, cadence=1, progress=False, diagnostics=["ntk"])
    assert np.isfinite(run.dataset()["metrics"].sel(layer="1", metric="ntk_trace").values).all()
