import math

import pytest
import torch

from grokwidgets.tasks import polynomial_regression


def beta_from_seed(d: int, seed: int) -> torch.Tensor:
    # The documented sampling order: beta first, float64.
    return torch.randn(d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_shapes_dtypes_and_meta():
    task = polynomial_regression(d=20, n_train=30, n_test=40, epsilon=0.1, seed=2)
    assert task.kind == "regression" and task.input_kind == "continuous"
    assert task.n_outputs == 1
    assert task.x_train.shape == (30, 20) and task.x_test.shape == (40, 20)
    assert task.y_train.shape == (30, 1) and task.y_test.shape == (40, 1)
    for t in (task.x_train, task.y_train, task.x_test, task.y_test):
        assert t.dtype == torch.float32
    assert task.meta["epsilon"] == 0.1
    assert task.config["epsilon"] == 0.1


def test_defaults_are_the_papers_fig1():
    task = polynomial_regression()
    assert (task.input_dim, task.n_train, task.n_test) == (100, 550, 1000)
    assert task.meta["epsilon"] == 0.02


@pytest.mark.parametrize("seed", [0, 7])
def test_targets_are_half_square_of_projection(seed):
    d = 30
    task = polynomial_regression(d=d, n_train=50, n_test=60, seed=seed)
    beta = beta_from_seed(d, seed)
    for x, y in ((task.x_train, task.y_train), (task.x_test, task.y_test)):
        expected = 0.5 * (x.double() @ beta) ** 2
        torch.testing.assert_close(y.squeeze(1).double(), expected, rtol=1e-6, atol=1e-7)


def test_fig3a_targets_and_input_scale():
    d = 25
    task = polynomial_regression(d=d, n_train=40, n_test=4000, variant="fig3a", seed=3)
    beta = beta_from_seed(d, 3)
    for x, y in ((task.x_train, task.y_train), (task.x_test, task.y_test)):
        expected = (x.double() @ beta / math.sqrt(d)) ** 2
        torch.testing.assert_close(y.squeeze(1).double(), expected, rtol=1e-6, atol=1e-7)
    # x ~ N(0, I): per-coordinate variance 1 (4000 * 25 draws: standard error ~0.0045).
    var = float(task.x_test.double().pow(2).mean())
    assert abs(var - 1.0) < 0.03


def test_statistics_fig1():
    d, n = 40, 40_000
    task = polynomial_regression(d=d, n_train=10, n_test=n, seed=11)
    x, y = task.x_test.double(), task.y_test.double().squeeze(1)
    # x ~ N(0, I/D): E[x_i^2] = 1/D, standard error of the mean of n*d squares = sqrt(2/(n d))/D.
    assert abs(float(x.pow(2).mean()) * d - 1.0) < 5 * math.sqrt(2 / (n * d))
    assert abs(float(x.mean())) < 5 / math.sqrt(n * d * d)
    # beta ~ N(0, I) and E[y] = |beta|^2 / (2D); y = s^2/2 chi^2_1 with s^2 = |beta|^2/D,
    # whose standard deviation is s^2 / sqrt(2).
    beta = beta_from_seed(d, 11)
    s2 = float(beta @ beta) / d
    assert abs(float(y.mean()) - s2 / 2) < 5 * s2 / math.sqrt(2) / math.sqrt(n)
    assert abs(float(y.std()) - s2 / math.sqrt(2)) < 0.05 * s2
    assert float(y.min()) >= 0.0


def test_epsilon_does_not_change_the_data():
    a = polynomial_regression(d=10, n_train=20, n_test=20, epsilon=0.02, seed=4)
    b = polynomial_regression(d=10, n_train=20, n_test=20, epsilon=0.5, seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.meta["epsilon"] != b.meta["epsilon"]


def test_deterministic_and_seed_dependent():
    a = polynomial_regression(d=10, n_train=20, n_test=20, seed=4)
    b = polynomial_regression(d=10, n_train=20, n_test=20, seed=4)
    c = polynomial_regression(d=10, n_train=20, n_test=20, seed=5)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.x_train, c.x_train)
    assert not torch.equal(a.y_train, c.y_train)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d": 0}, "d must be"),
        ({"n_train": 0}, "n_train must be"),
        ({"n_test": 1.5}, "n_test must be"),
        ({"epsilon": float("nan")}, "epsilon"),
        ({"epsilon": "0.02"}, "epsilon"),
        ({"variant": "fig2"}, "Valid variants"),
        ({"seed": -3}, "seed"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        polynomial_regression(**kwargs)
