"""Comparator progress measures against direct computations on small cases."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import entropy as scipy_entropy

import grokwidgets as gw
from grokwidgets.diagnostics.comparative import (
    ComparativeOptions,
    abs_weight_entropy,
    abs_weight_entropy_norm,
    activation_sparsity,
    circuit_complexity,
    register_comparative,
    weight_mask,
)
from grokwidgets.diagnostics.registry import _REGISTRY


def test_activation_sparsity_counts_inactive_entries():
    a = np.array([[0.0, 1.0, -0.5], [0.0, 0.0, 2.0]])
    assert activation_sparsity(a) == 3 / 6
    assert activation_sparsity(a, threshold=0.5) == 4 / 6
    rng = np.random.default_rng(0)
    r = np.maximum(rng.normal(size=(50, 40)), 0)
    assert activation_sparsity(r) == np.mean(r == 0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        activation_sparsity([[np.nan]])
    with pytest.raises(ValueError, match="threshold"):
        activation_sparsity(a, threshold=-1)


def test_abs_weight_entropy_closed_forms():
    w = np.array([[0.5, -0.25], [0.0, 2.0]])
    expected = -(0.5 * math.log(0.5) + 0.25 * math.log(0.25) + 2.0 * math.log(2.0))
    assert abs_weight_entropy(w) == pytest.approx(expected, rel=1e-14)
    # normalized: scipy's entropy of |w| / Σ|w| over ln(n)
    rng = np.random.default_rng(1)
    v = rng.normal(size=(7, 9))
    ref = scipy_entropy(np.abs(v).ravel()) / math.log(v.size)
    assert abs_weight_entropy_norm(v) == pytest.approx(ref, rel=1e-12)
    assert abs_weight_entropy_norm(3.0 * v) == pytest.approx(ref, rel=1e-12)  # scale-free
    assert abs_weight_entropy_norm(np.ones((4, 4))) == pytest.approx(1.0, rel=1e-14)
    assert abs_weight_entropy_norm(np.eye(1, 10)) == 0.0  # all mass on one entry
    assert math.isnan(abs_weight_entropy_norm(np.zeros((3, 3))))


def test_weight_mask_is_deterministic_and_removes_the_share():
    m1 = weight_mask((20, 30), 0.1, "0:layer")
    m2 = weight_mask((20, 30), 0.1, "0:layer")
    m3 = weight_mask((20, 30), 0.1, "0:other")
    assert torch.equal(m1, m2) and not torch.equal(m1, m3)
    assert int((~m1).sum()) == 60


def _kl_reference(model, x, paths, fraction, seed):
    """Brute force: copy the model, zero the masked entries in place, compare softmaxes."""
    masked = copy.deepcopy(model)
    modules = dict(masked.named_modules())
    with torch.no_grad():
        for path in paths:
            w = modules[path].weight
            w.mul_(weight_mask(w.shape, fraction, f"{seed}:{path}"))
        p = F.softmax(model(x).double(), dim=-1)
        q = F.softmax(masked(x).double(), dim=-1)
    return float(torch.sum(p * (p.log() - q.log()), dim=-1).mean())


def test_circuit_complexity_matches_in_place_masking(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=16, depth=2, embed_dim=4, seed=0)
    model.eval()
    x = mod_task.x_train
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for paths in (["encoder.0"], ["readout"], ["embed", "encoder.0", "encoder.2", "readout"]):
        got = circuit_complexity(model, x, paths, fraction=0.2, seed=3)
        assert got == pytest.approx(_kl_reference(model, x, paths, 0.2, 3), rel=1e-9, abs=1e-15)
        assert got > 0
    for k, v in model.state_dict().items():  # the model is left untouched
        assert torch.equal(v, before[k])
    # regression: ½ mean ||f - f_masked||²
    reg = gw.models.MLP(3, 2, width=8, depth=1, seed=0)
    xr_ = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
    masked = copy.deepcopy(reg)
    with torch.no_grad():
        masked.readout.weight.mul_(weight_mask(masked.readout.weight.shape, 0.5, "0:readout"))
        ref = 0.5 * (reg(xr_).double() - masked(xr_).double()).square().sum(-1).mean()
    got = circuit_complexity(reg, xr_, ["readout"], fraction=0.5, kind="regression")
    assert got == pytest.approx(float(ref), rel=1e-9)
    with pytest.raises(ValueError, match="not a module with a weight"):
        circuit_complexity(model, x, ["encoder.1"])
    with pytest.raises(ValueError, match="fraction"):
        circuit_complexity(model, x, ["readout"], fraction=1.0)


def _train_a_little(model, task, steps=20):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(steps):
        loss = F.cross_entropy(model(task.x_train), task.y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_recorded_values_match_direct_computations(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=16, depth=2, embed_dim=4, seed=0)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    # `weights` first: comparative's float64 L2 norms (same names and meaning) are recorded
    mon = gw.Monitor(model, mod_task, diagnostics=["weights", "comparative"], cadence=1)
    _train_a_little(model, mod_task)
    mon.step(0)
    ds = mon.dataset()

    def get(metric, layer):
        return float(ds["metrics"].sel(metric=metric, layer=layer, step=0))

    params = dict(model.named_parameters())
    flat = torch.cat([p.detach().double().reshape(-1) for p in params.values()])
    flat0 = torch.cat([init[n].double().reshape(-1) for n in params])
    assert get("param_l1", "model") == pytest.approx(float(flat.abs().sum()), rel=1e-12)
    assert get("param_norm", "model") == pytest.approx(float(flat.norm()), rel=1e-12)
    assert get("dist_from_init", "model") == pytest.approx(float((flat - flat0).norm()), rel=1e-9)
    a = flat.abs().numpy()
    assert get("abs_weight_entropy", "model") == pytest.approx(
        float(-(a[a > 0] * np.log(a[a > 0])).sum()), rel=1e-10
    )
    for layer in ("embed", "encoder.0", "encoder.2", "readout"):
        w = params[f"{layer}.weight"].detach().double()
        w0 = init[f"{layer}.weight"].double()
        assert get("weight_l1", layer) == pytest.approx(float(w.abs().sum()), rel=1e-12)
        assert get("dist_from_init", layer) == pytest.approx(float((w - w0).norm()), rel=1e-9)
        assert get("abs_weight_entropy_norm", layer) == pytest.approx(
            scipy_entropy(w.abs().numpy().ravel()) / math.log(w.numel()), rel=1e-10
        )
        assert get("weight_norm", layer) == pytest.approx(float(w.norm()), rel=1e-12)
        # the same meaning as the `weights` diagnostic's value (float32 there)
        assert get("rel_change", layer) * float(w0.norm()) == pytest.approx(
            get("dist_from_init", layer), rel=1e-5
        )
    # activations: ReLU zeros of each hidden layer on the fixed train rows (all 60 rows here)
    model.eval()
    with torch.no_grad():
        h0 = model.embed(mod_task.x_train).flatten(1)
        h1 = model.encoder[1](model.encoder[0](h0))
        h2 = model.encoder[3](model.encoder[2](h1))
    assert get("activation_sparsity", "encoder.0") == pytest.approx(
        float((h1 == 0).double().mean())
    )
    assert get("activation_sparsity", "encoder.2") == pytest.approx(
        float((h2 == 0).double().mean())
    )
    assert get("activation_sparsity", "readout") == get("activation_sparsity", "encoder.2")
    pooled = float(((h1 == 0).sum() + (h2 == 0).sum()) / (h1.numel() + h2.numel()))
    assert get("activation_sparsity", "model") == pytest.approx(pooled)
    # circuit complexity on the fixed train rows (RowSubsets order), one layer and all at once
    from grokwidgets.diagnostics._features import RowSubsets

    rows = RowSubsets().rows("train", mod_task.n_train)[:512]
    x = mod_task.x_train[rows]
    for layer, paths in (("encoder.0", ["encoder.0"]), ("model", list(params_layers(model)))):
        assert get("circuit_complexity", layer) == pytest.approx(
            _kl_reference(model, x, paths, 0.1, 0), rel=1e-6
        )


def params_layers(model):
    return [n.rsplit(".", 1)[0] for n, p in model.named_parameters() if p.ndim >= 2]


def test_regression_task_and_options(reg_task):
    name = "comparative_test_opts"
    register_comparative(name, ComparativeOptions(sparsity_threshold=0.05, mask_fraction=0.3))
    try:
        model = gw.models.MLP.for_task(reg_task, width=8, depth=1, activation="tanh", seed=0)
        mon = gw.Monitor(model, reg_task, diagnostics=[name], cadence=1)
        mon.step(0)
        ds = mon.dataset()
        model.eval()
        with torch.no_grad():
            h = torch.tanh(model.encoder[0](reg_task.x_train))
            masked = copy.deepcopy(model)
            masked.readout.weight.mul_(weight_mask(masked.readout.weight.shape, 0.3, "0:readout"))
            diff = model(reg_task.x_train).double() - masked(reg_task.x_train).double()
            ref = 0.5 * diff.square().sum(-1).mean()
        sel = ds["metrics"].sel(step=0)
        assert float(sel.sel(metric="activation_sparsity", layer="encoder.0")) == pytest.approx(
            float((h.abs() <= 0.05).double().mean())
        )
        assert float(sel.sel(metric="circuit_complexity", layer="readout")) == pytest.approx(
            float(ref), rel=1e-6
        )
    finally:
        del _REGISTRY[name]
    with pytest.raises(ValueError, match="mask_fraction"):
        ComparativeOptions(mask_fraction=0.0)
    with pytest.raises(ValueError, match="n_rows"):
        ComparativeOptions(n_rows=0)


def test_needs_a_task():
    model = gw.models.MLP(3, 2, width=4, depth=1)
    mon = gw.Monitor(model, None, diagnostics=["comparative"], cadence=1)
    with pytest.raises(ValueError, match="needs a task"):
        mon.step(0)
