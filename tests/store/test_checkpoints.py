import ast
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from grokwidgets.store.checkpoints import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from grokwidgets.train.optimizers import make_optimizer


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def steps(model, opt, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(16, 4, generator=g)
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_round_trip_continues_identically(tmp_path, name):
    kwargs = {"momentum": 0.9} if name == "sgd" else {}
    a = make_model()
    opt_a = make_optimizer(name, a, lr=1e-2, weight_decay=0.1, **kwargs)
    steps(a, opt_a, 3)
    save_checkpoint(tmp_path, 3, a, opt_a, {"init.w": torch.ones(2)})
    b = make_model(seed=99)
    opt_b = make_optimizer(name, b, lr=1e-2, weight_decay=0.1, **kwargs)
    ck = load_checkpoint(tmp_path / "checkpoints" / "step_00000003.safetensors", b, opt_b)
    assert ck.step == 3
    torch.testing.assert_close(ck.monitor_state["init.w"], torch.ones(2))
    steps(a, opt_a, 4, seed=5)
    steps(b, opt_b, 4, seed=5)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_muon_round_trip(tmp_path):
    from grokwidgets.models import MLP

    a = MLP(in_dim=4, out_dim=3, width=8, depth=2)
    opt_a = make_optimizer("muon", a, lr=1e-2)
    steps(a, opt_a, 2)
    save_checkpoint(tmp_path, 2, a, opt_a)
    b = MLP(in_dim=4, out_dim=3, width=8, depth=2, seed=5)
    opt_b = make_optimizer("muon", b, lr=1e-2)
    load_checkpoint(tmp_path / "checkpoints" / "step_00000002.safetensors", b, opt_b)
    steps(a, opt_a, 3, seed=7)
    steps(b, opt_b, 3, seed=7)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_truncated_checkpoint_names_the_fix(tmp_path):
    model = make_model()
    path = save_checkpoint(tmp_path, 10, model)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, corrupt.*Delete it"):
        load_checkpoint(path, make_model())


def test_pickle_disguised_as_checkpoint_is_refused(tmp_path):
    path = tmp_path / "checkpoints" / "step_00000001.safetensors"
    path.parent.mkdir()
    path.write_bytes(pickle.dumps({"weight": [1, 2, 3]}))
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(path, make_model())


def test_foreign_file_in_checkpoints_folder(tmp_path):
    save_checkpoint(tmp_path, 0, make_model())
    (tmp_path / "checkpoints" / "model.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="model.pt is not a grokwidgets checkpoint"):
        list_checkpoints(tmp_path)


def test_list_ignores_interrupted_writes_and_sorts(tmp_path):
    for s in (100, 3, 20):
        save_checkpoint(tmp_path, s, make_model())
    (tmp_path / "checkpoints" / "step_00000200.safetensors.tmp").write_bytes(b"partial")
    assert list(list_checkpoints(tmp_path)) == [3, 20, 100]


def test_checkpoint_of_wrong_model_is_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path, 0, make_model())
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_checkpoint(path, nn.Linear(2, 2))


def test_package_never_unpickles():
    """No torch.load / pickle.load anywhere in the package."""
    pkg = Path(__file__).resolve().parents[2] / "grokwidgets"
    offenders = []
    for f in pkg.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("load", "loads"):
                if isinstance(node.value, ast.Name) and node.value.id in ("torch", "pickle"):
                    offenders.append(f"{f}:{node.lineno}")
    assert offenders == []


def test_leftovers_of_an_interrupted_write_are_ignored_strays_are_not(tmp_path):
    """safetensors writes ``.tmpXXXXXX`` beside the file then renames it: a SIGKILL inside
    ``save_file`` leaves one (the crash test found it), and resume must not trip on it."""
    model = torch.nn.Linear(2, 2)
    path = save_checkpoint(tmp_path, 4, model)
    (path.parent / ".tmpOW4VzG").write_bytes(b"half a file")
    (path.parent / "step_00000009.safetensors.tmp").write_bytes(b"half a file")
    assert list_checkpoints(tmp_path) == {4: path}
    (path.parent / "notes.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="notes.txt is not a grokwidgets checkpoint"):
        list_checkpoints(tmp_path)
