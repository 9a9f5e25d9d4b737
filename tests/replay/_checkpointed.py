"""Two small gw.train runs with checkpoints, for computing diagnostics at a checkpoint.

The reference for every computed value is a second run, identical but for the diagnostics
it records: a Monitor that did record them at that step. The conftests of tests/replay and
tests/widgets import the fixtures; test modules import the helpers.
"""

import shutil

import pytest
import torch

import grokwidgets as gw

STEPS = 20
CHEAP = ["loss", "weights", "grad_norm", "geometry", "htsr", "ntk"]  # probes: seconds each


def task():
    return gw.tasks.modular_arithmetic(p=11, op="+", train_fraction=0.5, seed=0)


def train(path, diagnostics, cadence, **kw):
    gw.train(
        task(),
        gw.models.MLP.for_task(task(), width=32, depth=1, seed=0),
        steps=STEPS,
        lr=1e-2,
        dir=path,
        progress=False,
        diagnostics=diagnostics,
        cadence=cadence,
        checkpoint_cadence=10,
        **kw,
    )
    return path


@pytest.fixture(scope="module")
def one_thread():
    # Tiny matrices: one thread is ~10x faster than two contending ones on a busy machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("runs")
    # The reference records everything at steps 0, 10, 20; the sparse run records basic and
    # ntk at 0 and 20 only, with checkpoints at 0, 10, 20 in both.
    ref = train(root / "ref", ["basic", "htsr", "ntk", "geometry"], 10)
    sparse = train(root / "sparse", ["basic", "ntk"], {"default": 20})
    return {"ref": gw.open_run(ref), "sparse": sparse}


@pytest.fixture
def sparse(runs, tmp_path):
    """A fresh copy of the sparse run (computations write into it)."""
    return shutil.copytree(runs["sparse"], tmp_path / "sparse")
