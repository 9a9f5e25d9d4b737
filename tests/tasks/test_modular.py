import pytest
import torch

from grokwidgets.tasks import modular_arithmetic
from grokwidgets.tasks.modular import OPS


def brute(op: str, a: int, b: int, p: int) -> int:
    if op == "+":
        return (a + b) % p
    if op == "-":
        return (a - b) % p
    if op == "*":
        return (a * b) % p
    if op == "/":
        return (a * pow(b, p - 2, p)) % p
    if op == "x2+xy+y2":
        return (a * a + a * b + b * b) % p
    raise AssertionError(op)


def all_rows(task):
    x = torch.cat([task.x_train, task.x_test])
    y = torch.cat([task.y_train, task.y_test])
    return x.tolist(), y.tolist()


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("p", [2, 5, 7, 11])
def test_labels_match_brute_force(op, p):
    task = modular_arithmetic(p=p, op=op, train_fraction=0.5, seed=1)
    x, y = all_rows(task)
    for (a, b), c in zip(x, y, strict=True):
        assert c == brute(op, a, b, p), (a, op, b, p)


@pytest.mark.parametrize("op", ["+", "-", "*", "x2+xy+y2"])
def test_composite_modulus_allowed_except_division(op):
    task = modular_arithmetic(p=6, op=op, train_fraction=0.5)
    x, y = all_rows(task)
    assert len(x) == 36
    assert all(c == brute(op, a, b, 6) for (a, b), c in zip(x, y, strict=True))


def test_division_is_inverse_of_multiplication():
    p = 13
    task = modular_arithmetic(p=p, op="/", train_fraction=0.5)
    x, y = all_rows(task)
    # Independent of Fermat: c = a / b means c * b = a (mod p).
    assert all((c * b) % p == a for (a, b), c in zip(x, y, strict=True))
    assert all(b != 0 for _, b in x)


@pytest.mark.parametrize(("op", "n"), [("+", 121), ("/", 110)])
@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.9])
def test_split_sizes_disjoint_and_complete(op, n, fraction):
    p = 11
    task = modular_arithmetic(p=p, op=op, train_fraction=fraction, seed=3)
    assert task.n_train == round(fraction * n)
    assert task.n_train + task.n_test == n
    train = {tuple(r) for r in task.x_train.tolist()}
    test = {tuple(r) for r in task.x_test.tolist()}
    assert len(train) == task.n_train and len(test) == task.n_test  # no duplicates
    assert not train & test
    expected = {(a, b) for a in range(p) for b in range(p) if op != "/" or b != 0}
    assert train | test == expected


def test_task_fields():
    task = modular_arithmetic(p=7, op="*", train_fraction=0.4)
    assert task.kind == "classification"
    assert task.input_kind == "tokens"
    assert task.vocab_size == 7 and task.n_outputs == 7
    assert task.x_train.dtype == torch.int64 and task.y_train.dtype == torch.int64
    assert task.x_train.shape == (round(0.4 * 49), 2)
    assert task.y_test.shape == (task.n_test,)
    assert int(task.x_train.min()) >= 0 and int(task.x_train.max()) < 7
    assert task.config == {
        "family": "modular_arithmetic",
        "p": 7,
        "op": "*",
        "train_fraction": 0.4,
        "seed": 0,
        "encoding": "tokens",
    }


def test_default_matches_power_et_al():
    task = modular_arithmetic()
    assert task.n_train == round(0.3 * 97 * 97) == 2823
    assert task.n_train + task.n_test == 97 * 97


def test_deterministic_for_a_seed():
    a = modular_arithmetic(p=11, seed=5)
    b = modular_arithmetic(p=11, seed=5)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def test_seeds_give_different_splits():
    a = modular_arithmetic(p=11, seed=0)
    b = modular_arithmetic(p=11, seed=1)
    assert a.n_train == b.n_train
    assert {tuple(r) for r in a.x_train.tolist()} != {tuple(r) for r in b.x_train.tolist()}


def test_unknown_op_lists_valid_ops():
    with pytest.raises(ValueError, match="Unknown op") as info:
        modular_arithmetic(op="^")
    for op in OPS:
        assert repr(op) in str(info.value)


def test_division_needs_prime():
    with pytest.raises(ValueError, match="prime"):
        modular_arithmetic(p=9, op="/")
    with pytest.raises(ValueError, match="prime"):
        modular_arithmetic(p=1_000_000, op="/")
    modular_arithmetic(p=97, op="/")  # a prime is fine


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan"), "0.3", True])
def test_bad_fraction(fraction):
    with pytest.raises(ValueError, match="train_fraction"):
        modular_arithmetic(p=5, train_fraction=fraction)


def test_fraction_leaving_a_split_empty():
    with pytest.raises(ValueError, match="non-empty"):
        modular_arithmetic(p=3, train_fraction=0.01)  # round(0.09) == 0
    with pytest.raises(ValueError, match="non-empty"):
        modular_arithmetic(p=3, train_fraction=0.99)  # round(8.91) == 9 == n


@pytest.mark.parametrize("p", [1, 0, -5, 2.0, True, "7"])
def test_bad_modulus(p):
    with pytest.raises(ValueError, match="p must be"):
        modular_arithmetic(p=p)


def test_bad_seed():
    with pytest.raises(ValueError, match="seed"):
        modular_arithmetic(p=5, seed=-1)
