import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from grokwidgets.tasks import teacher_student
from grokwidgets.tasks.teacher import ACTIVATIONS


def reference_targets(d, n_train, n_test, hidden, n_outputs, act, noise, seed):
    """The documented recipe, written out independently of the module."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(hidden, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    w2 = torch.randn(n_outputs, hidden, generator=g, dtype=torch.float64) / math.sqrt(hidden)
    x_tr = torch.randn(n_train, d, generator=g, dtype=torch.float64).float()
    x_te = torch.randn(n_test, d, generator=g, dtype=torch.float64).float()
    xi_tr = torch.randn(n_train, n_outputs, generator=g, dtype=torch.float64)
    xi_te = torch.randn(n_test, n_outputs, generator=g, dtype=torch.float64)

    def f(x):
        return act(x.double() @ w1.T) @ w2.T

    return x_tr, f(x_tr) + noise * xi_tr, x_te, f(x_te) + noise * xi_te


@pytest.mark.parametrize(("name", "act"), [("tanh", torch.tanh), ("relu", F.relu)])
def test_targets_match_documented_teacher(name, act):
    task = teacher_student(
        d=7, n_train=20, n_test=30, hidden=5, n_outputs=2, activation=name, noise=0.3, seed=9
    )
    x_tr, y_tr, x_te, y_te = reference_targets(7, 20, 30, 5, 2, act, 0.3, 9)
    assert torch.equal(task.x_train, x_tr) and torch.equal(task.x_test, x_te)
    torch.testing.assert_close(task.y_train.double(), y_tr, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(task.y_test.double(), y_te, rtol=1e-6, atol=1e-6)


def test_shapes_and_dtypes():
    task = teacher_student(d=12, n_train=15, n_test=25, n_outputs=3)
    assert task.kind == "regression" and task.input_kind == "continuous"
    assert task.x_train.shape == (15, 12) and task.x_test.shape == (25, 12)
    assert task.y_train.shape == (15, 3) and task.y_test.shape == (25, 3)
    assert task.n_outputs == 3
    assert all(t.dtype == torch.float32 for t in (task.x_train, task.y_train, task.y_test))


def test_linear_teacher_is_recovered_by_least_squares():
    # Independent of the sampling order: a linear teacher is an exact linear map.
    task = teacher_student(d=10, n_train=200, n_test=50, n_outputs=2, activation="linear")
    x, y = task.x_train.double(), task.y_train.double()
    w = torch.linalg.lstsq(x, y).solution
    torch.testing.assert_close(task.x_test.double() @ w, task.y_test.double(), rtol=0, atol=1e-5)


def test_nonlinear_teacher_is_not_linear():
    task = teacher_student(d=10, n_train=2000, n_test=500, hidden=16, activation="relu")
    x, y = task.x_train.double(), task.y_train.double()
    x1 = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    resid = y - x1 @ torch.linalg.lstsq(x1, y).solution
    assert float(resid.var() / y.var()) > 0.05


def test_input_statistics():
    task = teacher_student(d=20, n_train=5000, n_test=10)
    x = task.x_train.double()
    # x ~ N(0, I): 1e5 draws, standard errors 0.0032 (mean) and 0.0045 (variance).
    assert abs(float(x.mean())) < 0.02
    assert abs(float(x.var()) - 1.0) < 0.03


def test_noise_is_added_last_with_the_given_std():
    clean = teacher_student(d=5, n_train=8000, n_test=8000, noise=0.0, seed=1)
    noisy = teacher_student(d=5, n_train=8000, n_test=8000, noise=0.5, seed=1)
    assert torch.equal(clean.x_train, noisy.x_train) and torch.equal(clean.x_test, noisy.x_test)
    for a, b in ((clean.y_train, noisy.y_train), (clean.y_test, noisy.y_test)):
        eps = (b - a).double()
        # std estimate standard error 0.5 / sqrt(2 * 8000) = 0.004
        assert abs(float(eps.std()) - 0.5) < 0.02
        assert abs(float(eps.mean())) < 0.03


def test_all_activations_build():
    outs = {
        name: teacher_student(d=4, n_train=5, n_test=5, activation=name).y_train
        for name in ACTIVATIONS
    }
    assert len({tuple(v.flatten().tolist()) for v in outs.values()}) == len(ACTIVATIONS)


def test_deterministic_and_seed_dependent():
    a = teacher_student(d=6, n_train=10, n_test=10, seed=2)
    b = teacher_student(d=6, n_train=10, n_test=10, seed=2)
    c = teacher_student(d=6, n_train=10, n_test=10, seed=3)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.y_train, c.y_train)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"activation": "softsign"}, "Valid activations"),
        ({"noise": -0.1}, "noise"),
        ({"noise": float("inf")}, "noise"),
        ({"hidden": 0}, "hidden must be"),
        ({"n_outputs": 0}, "n_outputs must be"),
        ({"d": 2.5}, "d must be"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        teacher_student(**kwargs)
