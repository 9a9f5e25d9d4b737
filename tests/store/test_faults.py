"""Faults during a write, injected at each point in turn: committed records stay, resume works.

Nothing fills a real disk: the write of a chunk, the rename that publishes a commit, the write
of a checkpoint and a diagnostic are made to fail at the n-th call, as a full disk or a bug
would make them fail.
"""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

import grokwidgets as gw
from grokwidgets.diagnostics import MetricInfo, register
from grokwidgets.diagnostics.registry import _REGISTRY
from grokwidgets.store import checkpoints as checkpoints_module
from grokwidgets.store.checkpoints import CheckpointError
from grokwidgets.store.errors import StoreError
from tests._loops import train_tiny

STEPS = 150
FULL = OSError(28, "No space left on device")


def _train(run: Path, resume: bool = False, diagnostics=("basic",)) -> None:
    train_tiny(run, STEPS, resume=resume, diagnostics=tuple(diagnostics))


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "whole"
    _train(run)
    return run


def _failing_at(n: int, real, *, when=lambda *a: True, forever: bool = False):
    calls = {"n": 0}

    def fake(*args, **kwargs):
        if when(*args):
            calls["n"] += 1
            if calls["n"] == n or (forever and calls["n"] > n):
                raise FULL
        return real(*args, **kwargs)

    return fake


def _assert_intact_and_resumable(run: Path, whole: Path) -> None:
    got, ref = gw.open_run(run), gw.open_run(whole)
    assert got.attrs["status"] == "failed"
    n = got.sizes["step"]
    assert 0 < n < ref.sizes["step"]
    xr.testing.assert_identical(got["metrics"], ref["metrics"].isel(step=slice(0, n)))
    assert gw.check_run(run).ok
    _train(run, resume=True)
    xr.testing.assert_identical(gw.open_run(run)["metrics"], ref["metrics"])


@pytest.mark.parametrize("forever", [False, True], ids=["once", "disk-stays-full"])
def test_a_failed_commit_rename(tmp_path, whole, monkeypatch, forever):
    def is_commit(src, dst, *rest):
        return Path(dst).name == "commit.json"

    fake = _failing_at(6, os.replace, when=is_commit, forever=forever)
    monkeypatch.setattr(os, "replace", fake)
    with pytest.raises(StoreError, match="Could not publish the commit .* intact"):
        _train(tmp_path / "run")
    monkeypatch.undo()
    assert not list((tmp_path / "run" / "metrics.zarr").glob(".commit.json.*.tmp"))
    _assert_intact_and_resumable(tmp_path / "run", whole)


@pytest.mark.parametrize("forever", [False, True], ids=["once", "disk-stays-full"])
def test_a_failed_chunk_write(tmp_path, whole, monkeypatch, forever):
    fake = _failing_at(12, zarr.Array.__setitem__, forever=forever)
    monkeypatch.setattr(zarr.Array, "__setitem__", fake)
    with pytest.raises(StoreError, match=r"Could not write records .* intact"):
        _train(tmp_path / "run")
    monkeypatch.undo()
    _assert_intact_and_resumable(tmp_path / "run", whole)


def test_a_failed_checkpoint_write(tmp_path, whole, monkeypatch):
    fake = _failing_at(9, checkpoints_module.save_file)
    monkeypatch.setattr(checkpoints_module, "save_file", fake)
    with pytest.raises(CheckpointError, match=r"Could not write the checkpoint .*step_\d+"):
        _train(tmp_path / "run")
    monkeypatch.undo()
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp"))
    _assert_intact_and_resumable(tmp_path / "run", whole)


def test_an_exception_inside_a_diagnostic(tmp_path, monkeypatch):
    def fragile(fail_at):
        def fn(probe):
            if probe.step == fail_at:
                raise RuntimeError("a bug in my diagnostic")
            return {"row_sum": float(sum(p.detach().sum() for p in probe.model.parameters()))}

        register("fragile", metrics=[MetricInfo("row_sum", "sum of parameters")], replace=True)(fn)

    try:
        fragile(None)
        _train(tmp_path / "whole", diagnostics=["basic", "fragile"])
        fragile(97)
        with pytest.raises(RuntimeError, match="a bug in my diagnostic"):
            _train(tmp_path / "run", diagnostics=["basic", "fragile"])
        got = gw.open_run(tmp_path / "run")
        assert got.attrs["status"] == "failed"
        assert int(got["step"].values[-1]) == 96  # records before the failing one, all kept
        fragile(None)  # fixed: the run resumes to what an undisturbed run records
        _train(tmp_path / "run", resume=True, diagnostics=["basic", "fragile"])
        a, b = gw.open_run(tmp_path / "run"), gw.open_run(tmp_path / "whole")
        xr.testing.assert_identical(a["metrics"], b["metrics"])
        assert np.isfinite(a["metrics"].sel(metric="row_sum", layer="model")).all()
    finally:
        _REGISTRY.pop("fragile", None)
        shutil.rmtree(tmp_path / "whole", ignore_errors=True)
