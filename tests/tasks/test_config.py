import inspect
import json
from pathlib import Path

import pytest
import torch

from grokwidgets.tasks import (
    families,
    from_config,
    mnist,
    modular_arithmetic,
    polynomial_regression,
    teacher_student,
)

SHARED_MNIST = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist.npz"
).resolve()

CASES = {
    "modular_arithmetic": lambda: modular_arithmetic(
        p=13, op="x2+xy+y2", train_fraction=0.4, seed=3
    ),
    "polynomial_regression": lambda: polynomial_regression(
        d=12, n_train=30, n_test=40, epsilon=0.1, variant="fig3a", seed=2
    ),
    "teacher_student": lambda: teacher_student(
        d=6, n_train=20, n_test=25, hidden=4, n_outputs=2, activation="relu", noise=0.1, seed=5
    ),
    "mnist": lambda: mnist(n_train=50, n_test=30, seed=4, path=str(SHARED_MNIST), download=False),
}


def build(family):
    if family == "mnist" and not SHARED_MNIST.is_file():
        pytest.skip(f"needs the shared MNIST file at {SHARED_MNIST} (../shared is absent)")
    return CASES[family]()


def assert_same_task(a, b):
    assert a.name == b.name and a.kind == b.kind and a.n_outputs == b.n_outputs
    assert a.input_kind == b.input_kind and a.vocab_size == b.vocab_size
    assert a.config == b.config and a.meta == b.meta
    for name in ("x_train", "y_train", "x_test", "y_test"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and torch.equal(x, y), name


def test_every_family_has_a_case():
    assert set(CASES) == set(families())
    assert "from_tensors" not in families()


@pytest.mark.parametrize("family", sorted(CASES))
def test_round_trip_through_json(family):
    task = build(family)
    config = json.loads(json.dumps(task.config))  # JSON-serialisable, and survives the trip
    assert config == task.config
    assert_same_task(task, from_config(config))


@pytest.mark.parametrize("family", sorted(CASES))
def test_config_holds_exactly_the_keyword_arguments(family):
    task = build(family)
    assert task.config["family"] == family
    params = set(inspect.signature(families()[family]).parameters)
    assert set(task.config) - {"family"} == params


@pytest.mark.parametrize(
    "family", ["modular_arithmetic", "polynomial_regression", "teacher_student"]
)
def test_defaults_round_trip(family):
    task = families()[family]()
    assert_same_task(task, from_config(task.config))


def test_round_trip_differs_when_a_parameter_changes():
    task = modular_arithmetic(p=11, seed=0)
    other = from_config({**task.config, "seed": 1})
    assert not torch.equal(task.x_train, other.x_train)


def test_unknown_family():
    with pytest.raises(ValueError, match="Unknown task family 'cifar'") as info:
        from_config({"family": "cifar"})
    for name in families():
        assert name in str(info.value)
    with pytest.raises(ValueError, match="Unknown task family None"):
        from_config({"p": 7})


def test_unknown_parameter_lists_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown parameter\(s\) \['modulus'\]") as info:
        from_config({"family": "modular_arithmetic", "modulus": 7})
    for name in ("p", "op", "train_fraction", "seed"):
        assert repr(name) in str(info.value)
