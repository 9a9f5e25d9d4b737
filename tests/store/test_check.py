"""Damaged runs are named with the remedy; `grokwidgets check` finds and `--repair` mends."""

import shutil
from pathlib import Path

import pytest
import xarray as xr

import grokwidgets as gw
from grokwidgets.cli import main
from grokwidgets.store.checkpoints import checkpoint_path, list_checkpoints
from grokwidgets.store.errors import RunDamagedError
from tests._loops import train_tiny

STEPS = 300  # > 256 rows: two chunks along step


def _train(run: Path, steps: int = STEPS, resume: bool = False) -> None:
    train_tiny(run, steps, resume=resume)


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "whole"
    _train(run)
    return run


@pytest.fixture
def run(whole, tmp_path) -> Path:
    return Path(shutil.copytree(whole, tmp_path / "run"))


def _scribble(file: Path) -> None:
    file.write_bytes(b"\x28\xb5\x2f\xfd garbage, not zstd" + file.read_bytes()[40:])


def test_an_intact_run_checks_clean(run, capsys):
    report = gw.check_run(run)
    assert report.ok, str(report)
    assert report.records == report.intact_records == STEPS + 1
    assert all(report.checkpoints.values()) and len(report.checkpoints) > 10
    assert main(["check", str(run)]) == 0
    assert "intact" in capsys.readouterr().out


def test_a_damaged_chunk_is_named_then_repaired_so_that_resume_works(run, whole, capsys):
    chunk = run / "metrics.zarr" / "metrics" / "c" / "1" / "0" / "0"  # rows 256..511
    _scribble(chunk)
    with pytest.raises(RunDamagedError, match=r"metrics/c/1/0/0 cannot be read") as err:
        gw.open_run(run)
    assert err.value.file == chunk and "check" in str(err.value) and "--repair" in str(err.value)
    with pytest.raises(RunDamagedError, match="metrics/c/1/0/0"):
        _train(run, resume=True)  # resume names it too, and changes nothing
    assert main(["check", str(run)]) == 1
    out = capsys.readouterr().out
    assert "BAD metrics.zarr/metrics/c/1/0/0" in out and "256 of 301" in out
    assert main(["check", str(run), "--repair"]) == 0
    out = capsys.readouterr().out
    assert "moved metrics.zarr/metrics/c/1/0/0 to damaged/metrics.zarr/metrics/c/1/0/0" in out
    assert (run / "damaged" / "metrics.zarr" / "metrics" / "c" / "1" / "0" / "0").exists()
    assert (run / "damaged" / "repair.json").exists()
    assert gw.open_run(run).sizes["step"] == 256
    # checkpoints after the last intact record (step 255) are set aside, not deleted
    assert max(list_checkpoints(run)) <= 255
    assert (run / "damaged" / "checkpoints" / checkpoint_path(run, STEPS).name).exists()
    _train(run, resume=True)
    xr.testing.assert_identical(gw.open_run(run)["metrics"], gw.open_run(whole)["metrics"])


def test_a_damaged_checkpoint_is_set_aside_and_resume_uses_the_one_before(run, whole):
    last = max(list_checkpoints(run))
    path = checkpoint_path(run, last)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    report = gw.check_run(run)
    assert not report.ok and report.checkpoints[last] is False
    assert [f.file for f in report.damaged] == [path]
    assert gw.check_run(run, repair=True).ok
    assert last not in list_checkpoints(run)
    _train(run, resume=True)
    xr.testing.assert_identical(gw.open_run(run)["metrics"], gw.open_run(whole)["metrics"])


@pytest.mark.parametrize(
    ("relative", "damage"),
    [
        ("metrics.zarr/commit.json", b'{"format": 1, "n": 3'),
        ("metrics.zarr/commit.json", b'{"format": 1}'),
        ("metrics.zarr/metrics/zarr.json", b"{not json"),
        ("metrics.zarr/zarr.json", b"\x00\x01"),
        ("run.json", b"[]"),
    ],
)
def test_damaged_metadata_is_named_and_not_repaired_by_guessing(run, capsys, relative, damage):
    file = run / relative
    file.write_bytes(damage)
    with pytest.raises(RunDamagedError) as err:
        gw.open_run(run)
    assert err.value.file == file, str(err.value)
    assert str(file) in str(err.value)
    assert main(["check", str(run), "--repair"]) == 1
    out = capsys.readouterr().out
    assert f"BAD {relative}" in out and "cannot repair" in out
    assert file.read_bytes() == damage  # left for the user to restore


def test_check_of_what_is_not_a_run_exits_2(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nothing")]) == 2
    assert "not a grokwidgets run" in capsys.readouterr().err
