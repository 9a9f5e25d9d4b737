"""The linearized model: f0 + J0 (θ − θ0), checked against an explicit Jacobian and, trained by
gradient descent, against kernel regression with the NTK at init (its closed-form limit)."""

import json

import pytest
import torch
from torch.func import functional_call, jacrev
from torch.testing import assert_close

import grokwidgets as gw
from grokwidgets.diagnostics.kernel.stats import kernel_regression
from grokwidgets.models import MLP, Linearized, from_config
from grokwidgets.tasks import from_tensors


def small_mlp(**kw):
    args = {"width": 20, "depth": 1, "activation": "poly:0.5", "bias": False, "init": "normal"}
    return MLP(5, 1, **(args | {"readout": "fixed"} | kw)).double()


def explicit_jacobian(model, params, x):
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)
    return torch.cat([j.reshape(len(x), -1) for j in jac.values()], dim=1)


def test_forward_is_f0_plus_the_jacobian_times_the_step():
    net = small_mlp(centred=False)
    lin = Linearized(net)
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert_close(lin(x), net(x))  # at θ0
    assert [n for n, _ in lin.named_parameters()] == ["theta.encoder__0__weight"]
    step = torch.randn(20, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        lin.theta["encoder__0__weight"].add_(0.3 * step)
    params0 = {n: p.detach() for n, p in net.named_parameters()}
    jac = explicit_jacobian(net, params0, x)
    assert_close(lin(x).ravel(), net(x).ravel() + jac @ (0.3 * step).ravel())
    moved = functional_call(net, {"encoder.0.weight": lin.theta["encoder__0__weight"]}, (x,))
    assert (moved - lin(x)).abs().max() > 1e-3  # the network itself is not linear in θ
    net(x).sum().backward()  # the wrapped copy is not the original: ours is untouched
    assert lin.net.encoder[0].weight.grad is None


def test_gradient_descent_reaches_kernel_regression_with_the_initial_ntk():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 5, generator=g, dtype=torch.float64)
    y = torch.randn(8, 1, generator=g, dtype=torch.float64)
    xt = torch.randn(6, 5, generator=g, dtype=torch.float64)
    net = small_mlp(centred=True, alpha=4.0)
    params0 = {n: p.detach() for n, p in net.named_parameters()}
    j_train = explicit_jacobian(net, params0, x)
    j_test = explicit_jacobian(net, params0, xt)
    # the mean-squared loss's GD matrix is (2/n) K: stable below lr = n / λmax(K)
    lam_max = float(torch.linalg.eigvalsh(j_train @ j_train.T)[-1])
    lin = Linearized(net)
    opt = torch.optim.SGD(lin.parameters(), lr=0.8 * len(x) / lam_max)
    for _ in range(3000):
        opt.zero_grad()
        (lin(x) - y).square().mean().backward()
        opt.step()
    # f0 = 0 (centred): GD from θ0 converges to the minimum-norm interpolant
    expected = kernel_regression(j_train @ j_train.T, j_test @ j_train.T, y)
    assert_close(lin(x), y, atol=1e-6, rtol=0)
    assert_close(lin(xt), expected, atol=1e-5, rtol=1e-5)


def test_config_round_trip_and_training_with_gw_train(tmp_path):
    g = torch.Generator().manual_seed(4)
    task = from_tensors(
        torch.randn(16, 5, generator=g), torch.randn(16, 1, generator=g),
        torch.randn(8, 5, generator=g), torch.randn(8, 1, generator=g), kind="regression",
    )  # fmt: skip
    lin = Linearized.for_task(
        task, model={"class": "MLP", "width": 20, "depth": 1, "centred": True, "seed": 2}
    )
    run = gw.train(task, lin, 20, optimizer="sgd", lr=0.05, dir=tmp_path / "run", progress=False)
    cfg = json.loads((tmp_path / "run" / "run.json").read_text())["config"]["model"]
    rebuilt = from_config(cfg)
    assert isinstance(rebuilt, Linearized)
    rebuilt.load_state_dict(run.model.state_dict())
    assert_close(rebuilt(task.x_test), run.model(task.x_test))
    losses = run.dataset().metrics.sel(metric="train_loss", layer="model").values
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="no parameters"):
        Linearized(torch.nn.ReLU())


def test_alpha_is_the_wrapped_models():
    assert Linearized(small_mlp(alpha=3.0)).alpha == 3.0
    assert getattr(Linearized(torch.nn.Linear(3, 1)), "alpha", None) is None
