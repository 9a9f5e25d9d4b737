"""Basic diagnostics against independent computations (numpy / torch.func)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad

import grokwidgets as gw
from grokwidgets.diagnostics.probe import Probe
from grokwidgets.tasks.losses import make_loss


def run_diag(name, model, task, state=None, loss="auto"):
    from grokwidgets.diagnostics.registry import resolve

    (diag,) = resolve([name])
    probe = Probe(model, task, 0, make_loss(loss, task), state if state is not None else {})
    return diag.fn(probe)


def test_loss_and_accuracy_match_numpy(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=16, depth=1, embed_dim=4, seed=1)
    out = run_diag("loss", model, mod_task)
    with torch.no_grad():
        logits = model(mod_task.x_test).double().numpy()
    y = mod_task.y_test.numpy()
    logz = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    ce = float(np.mean(logz - logits[np.arange(len(y)), y]))
    assert out["test_loss"] == pytest.approx(ce, rel=1e-5)
    assert out["test_acc"] == pytest.approx(float(np.mean(logits.argmax(1) == y)), abs=0)


def test_mse_on_classes_uses_one_hot(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=16, depth=1, embed_dim=4, seed=1)
    out = run_diag("loss", model, mod_task, loss="mse")
    with torch.no_grad():
        o = model(mod_task.x_train).double().numpy()
    onehot = np.eye(mod_task.n_outputs)[mod_task.y_train.numpy()]
    assert out["train_loss"] == pytest.approx(float(np.mean((o - onehot) ** 2)), rel=1e-5)


def test_regression_has_no_accuracy(reg_task):
    model = gw.models.MLP.for_task(reg_task, width=8, depth=1)
    out = run_diag("loss", model, reg_task)
    assert set(out) == {"train_loss", "test_loss"}


def test_weight_norms_and_relative_change(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=16, depth=2, embed_dim=4, seed=1)
    init = {k: v.detach().numpy().copy() for k, v in model.named_parameters()}
    state = {}
    from grokwidgets.diagnostics.basic import _remember_init

    _remember_init(Probe(model, mod_task, 0, None, state))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    out = run_diag("weights", model, mod_task, state=state)
    now = {k: v.detach().numpy() for k, v in model.named_parameters()}
    for layer in ("embed", "encoder.0", "encoder.2", "readout"):
        w, w0 = now[f"{layer}.weight"], init[f"{layer}.weight"]
        assert out["weight_norm"][layer] == pytest.approx(np.sqrt((w**2).sum()), rel=1e-5)
        assert out["rel_change"][layer] == pytest.approx(
            np.linalg.norm(w - w0) / np.linalg.norm(w0), rel=1e-4
        )
    flat = np.concatenate([v.ravel() for v in now.values()])
    flat0 = np.concatenate([v.ravel() for v in init.values()])
    assert out["param_norm"] == pytest.approx(np.linalg.norm(flat), rel=1e-5)
    assert out["rel_change"]["model"] == pytest.approx(
        np.linalg.norm(flat - flat0) / np.linalg.norm(flat0), rel=1e-4
    )


def test_grad_norm_matches_torch_func(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=16, depth=1, embed_dim=4, seed=1)
    assert run_diag("grad_norm", model, mod_task) == {}  # no gradients yet: nothing recorded
    F.cross_entropy(model(mod_task.x_train), mod_task.y_train).backward()
    out = run_diag("grad_norm", model, mod_task)["grad_norm"]
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss_of(p):
        return F.cross_entropy(functional_call(model, p, (mod_task.x_train,)), mod_task.y_train)

    g = grad(loss_of)(params)
    total = torch.sqrt(sum(v.square().sum() for v in g.values()))
    assert out["model"] == pytest.approx(float(total), rel=1e-5)
    assert out["readout"] == pytest.approx(float(g["readout.weight"].norm()), rel=1e-5)
