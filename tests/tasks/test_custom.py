import numpy as np
import pytest
import torch

from grokwidgets.tasks import from_config, from_tensors


def data(seed=0):
    rng = np.random.default_rng(seed)
    x_tr = rng.normal(size=(20, 3)).astype(np.float32)
    x_te = rng.normal(size=(10, 3)).astype(np.float32)
    y_tr = np.arange(20) % 4
    y_te = np.arange(10) % 3
    return x_tr, y_tr, x_te, y_te


def test_numpy_classification():
    x_tr, y_tr, x_te, y_te = data()
    task = from_tensors(x_tr, y_tr, x_te, y_te)
    assert task.kind == "classification" and task.input_kind == "continuous"
    assert task.n_outputs == 4  # max class 3 (train) + 1
    assert task.y_train.dtype == torch.int64 and task.x_train.dtype == torch.float32
    np.testing.assert_array_equal(task.x_train.numpy(), x_tr)
    np.testing.assert_array_equal(task.y_test.numpy(), y_te)
    assert task.vocab_size is None
    assert task.config == {"family": "from_tensors", "name": "custom"}


def test_n_outputs_inferred_over_both_splits():
    x = np.zeros((4, 2), np.float32)
    task = from_tensors(x, np.array([0, 1, 0, 1]), x, np.array([0, 6, 2, 1]))
    assert task.n_outputs == 7


def test_numpy_arrays_are_copied():
    x_tr, y_tr, x_te, y_te = data()
    task = from_tensors(x_tr, y_tr, x_te, y_te)
    x_tr[0, 0] = 123.0
    y_tr[0] = 3
    assert float(task.x_train[0, 0]) != 123.0
    assert int(task.y_train[0]) == 0


def test_read_only_numpy_arrays_are_accepted():
    x_tr, y_tr, x_te, y_te = data()
    for a in (x_tr, y_tr, x_te, y_te):
        a.flags.writeable = False
    task = from_tensors(x_tr, y_tr, x_te, y_te)
    assert task.n_train == 20


def test_torch_tensors_are_detached():
    x = torch.randn(5, 2, requires_grad=True)
    y = torch.randn(5, requires_grad=True)
    task = from_tensors(x, y, x, y, kind="regression")
    assert not task.x_train.requires_grad and not task.y_train.requires_grad
    assert task.y_train.shape == (5, 1)


def test_integer_inputs_are_tokens():
    x_tr = np.array([[0, 1], [2, 3]], dtype=np.int32)
    x_te = np.array([[4, 9]], dtype=np.int32)
    task = from_tensors(x_tr, np.array([0, 1]), x_te, np.array([1]))
    assert task.input_kind == "tokens"
    assert task.x_train.dtype == torch.int64
    assert task.vocab_size == 10  # max id 9 is in the test split


def test_integer_inputs_as_continuous():
    x = np.array([[0, 255], [128, 3]], dtype=np.uint8)
    task = from_tensors(x, np.array([0, 1]), x, np.array([1, 0]), input_kind="continuous")
    assert task.input_kind == "continuous" and task.x_train.dtype == torch.float32
    assert float(task.x_train[0, 1]) == 255.0
    assert task.vocab_size is None


def test_one_dimensional_x_becomes_one_feature():
    x = np.linspace(-1, 1, 7)
    task = from_tensors(x, np.sin(x), x, np.sin(x), kind="regression")
    assert task.x_train.shape == (7, 1) and task.x_train.dtype == torch.float64
    assert task.y_train.shape == (7, 1)


def test_regression_inference():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 2))
    y2 = rng.normal(size=(6, 3))
    task = from_tensors(x, y2, x, y2, kind="regression")
    assert task.n_outputs == 3 and task.y_train.shape == (6, 3)
    task = from_tensors(x, np.array([1, 2, 3, 4, 5, 6]), x, np.zeros(6, int), kind="regression")
    assert task.y_train.dtype == torch.float32 and task.n_outputs == 1


def test_kind_none_infers_from_target_dtype():
    x = np.zeros((3, 2), np.float32)
    assert from_tensors(x, np.array([0.5, 1, 2]), x, np.zeros(3), kind=None).kind == "regression"
    task = from_tensors(x, np.array([0, 2, 1]), x, np.array([0, 0, 1]), kind=None)
    assert task.kind == "classification" and task.n_outputs == 3


def test_explicit_n_outputs():
    x_tr, y_tr, x_te, y_te = data()
    assert from_tensors(x_tr, y_tr, x_te, y_te, n_outputs=10).n_outputs == 10
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):  # Task's own check
        from_tensors(x_tr, y_tr, x_te, y_te, n_outputs=2)
    with pytest.raises(ValueError, match="n_outputs must be"):
        from_tensors(x_tr, y_tr, x_te, y_te, n_outputs=0)


def test_task_validation_errors_surface():
    x_tr, y_tr, x_te, y_te = data()
    with pytest.raises(ValueError, match="kind='regression'"):
        from_tensors(x_tr, y_tr.astype(np.float32), x_te, y_te)
    with pytest.raises(ValueError, match="must be 2-D"):
        from_tensors(x_tr.reshape(20, 3, 1), y_tr, x_te.reshape(10, 3, 1), y_te)
    with pytest.raises(ValueError, match="must match"):
        from_tensors(x_tr, y_tr[:5], x_te, y_te)
    with pytest.raises(ValueError, match="Token inputs must be int64"):
        from_tensors(x_tr, y_tr, x_te, y_te, input_kind="tokens")
    with pytest.raises(ValueError, match="NaN or infinite"):
        bad = x_tr.copy()
        bad[0, 0] = np.nan
        from_tensors(bad, y_tr, x_te, y_te)
    with pytest.raises(ValueError, match="Task kind must be"):
        from_tensors(x_tr, y_tr, x_te, y_te, kind="ranking")


def test_own_validation_errors():
    x_tr, y_tr, x_te, y_te = data()
    with pytest.raises(ValueError, match="must match"):
        from_tensors(x_tr, y_tr, x_te[:, :2], y_te)
    with pytest.raises(ValueError, match="input_kind"):
        from_tensors(x_tr, y_tr, x_te, y_te, input_kind="image")
    with pytest.raises(ValueError, match="negative"):
        tokens = np.array([[0, -1]])
        from_tensors(tokens, np.array([0]), tokens, np.array([0]))
    with pytest.raises(ValueError, match="numeric"):
        from_tensors(np.array([["a", "b"]]), np.array([0]), x_te, y_te)
    with pytest.raises(ValueError, match="complex"):
        z = np.ones((2, 2), dtype=np.complex64)
        from_tensors(z, np.array([0, 1]), z, np.array([0, 1]))


def test_cannot_be_rebuilt_from_config():
    task = from_tensors(*data(), name="mine")
    assert task.name == "mine" and task.config["name"] == "mine"
    with pytest.raises(ValueError, match="from_tensors cannot be rebuilt"):
        from_config(task.config)


def test_task_validation_catches_inconsistent_data():
    import torch

    from grokwidgets.tasks.base import Task

    x = torch.zeros(4, 2, dtype=torch.int64)
    y = torch.zeros(4, dtype=torch.int64)
    ok = dict(
        name="t",
        kind="classification",
        x_train=x,
        y_train=y,
        x_test=x,
        y_test=y,
        n_outputs=2,
        config={},
        input_kind="tokens",
        vocab_size=3,
    )
    Task(**ok)
    with pytest.raises(ValueError, match="vocab_size"):
        Task(**{**ok, "vocab_size": None})
    with pytest.raises(ValueError, match="token ids outside"):
        Task(**{**ok, "x_test": x + 5})
    with pytest.raises(ValueError, match="feature shape"):
        Task(**{**ok, "x_test": torch.zeros(4, 3, dtype=torch.int64)})
    with pytest.raises(ValueError, match="input_kind"):
        Task(**{**ok, "input_kind": "image"})
    yr = torch.zeros(4, 1)
    reg = dict(
        ok, kind="regression", y_train=yr, y_test=yr.clone().fill_(float("nan")), n_outputs=1
    )
    with pytest.raises(ValueError, match="NaN"):
        Task(**reg)
