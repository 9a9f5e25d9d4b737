"""One writer per run: a second writer is refused at once, named; SIGKILL frees the lock."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr

import grokwidgets as gw
from grokwidgets.store.lock import (
    LOCK_FILE,
    NetworkFilesystemWarning,
    RunLockedError,
    WriterLock,
    filesystem_type,
)
from grokwidgets.train.config import apply_overrides, load_config, run_config

ROOT = Path(__file__).resolve().parents[2]
SETS = {
    "task.p": "13",
    "model.width": "16",
    "model.embed_dim": "8",
    "train.batch_size": "16",
    # The lock is the point here, not the preset's mechanism suite (basic keeps it quick).
    "train.diagnostics": '["basic"]',
}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "grokwidgets.cli", *args]


def _sets(steps: int) -> list[str]:
    out = []
    for key, value in {**SETS, "train.steps": str(steps)}.items():
        out += ["--set", f"{key}={value}"]
    return out


def _start(run: Path, steps: int) -> subprocess.Popen[bytes]:
    cmd = _cli("run", "modular-addition", "--dir", str(run), "--no-report", "--no-progress")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([*cmd, *_sets(steps)], cwd=ROOT, env=env)


def _wait_for_lock(run: Path, pid: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            holder = json.loads((run / LOCK_FILE).read_text() or "{}")
        except (FileNotFoundError, ValueError):
            holder = {}
        if holder.get("pid") == pid and (run / "metrics.zarr" / "commit.json").exists():
            return holder
        time.sleep(0.02)
    raise AssertionError(f"{run} was not locked by {pid} within {timeout} s")


def _model(task, seed=0):
    return gw.models.MLP.for_task(task, width=8, depth=1, embed_dim=4, seed=seed)


def test_a_second_writer_in_this_process_is_refused_until_the_first_lets_go(tmp_path):
    first = WriterLock(tmp_path).acquire()
    with pytest.raises(RunLockedError, match=r"being written by this process .*mon\.close\(\)"):
        WriterLock(tmp_path).acquire()
    first.release()
    with WriterLock(tmp_path) as again:
        assert again.held
        holder = json.loads((tmp_path / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid()
    assert not again.held
    assert (tmp_path / LOCK_FILE).read_text() == ""  # the details go with the lock


def test_monitor_holds_the_directory_for_its_life(tmp_path, mod_task):
    run = tmp_path / "run"
    with gw.Monitor(_model(mod_task), mod_task, dir=run) as mon:
        mon.step(0)
        with pytest.raises(RunLockedError, match="One run directory has one writer"):
            gw.Monitor(_model(mod_task), mod_task, dir=run, overwrite=True)
        with pytest.raises(RunLockedError):
            gw.Monitor(_model(mod_task), mod_task, dir=run, resume=True)
        assert gw.open_run(run).attrs["status"] == "running"  # readers never take the lock
    # closed: the next writer gets in, and a failed start lets go too
    with pytest.raises(gw.store.RunExistsError):
        gw.Monitor(_model(mod_task), mod_task, dir=run)
    gw.Monitor(_model(mod_task), mod_task, dir=run, resume=True).close()
    gw.Monitor(_model(mod_task), mod_task, dir=run, overwrite=True).close()


def test_other_processes_are_refused_and_the_first_run_is_undisturbed(tmp_path):
    """`run --overwrite`, `resume` and a Monitor on a run another process writes fail fast."""
    run, steps = tmp_path / "run", 12000
    proc = _start(run, steps)
    try:
        holder = _wait_for_lock(run, proc.pid)
        assert "modular-addition" in holder["command"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        task = gw.tasks.modular_arithmetic(p=13, op="+", train_fraction=0.3, seed=0)
        t0 = time.monotonic()
        with pytest.raises(RunLockedError, match=rf"pid {proc.pid} on .* running `.*cli\.py run"):
            gw.Monitor(_model(task), task, dir=run, overwrite=True)
        assert time.monotonic() - t0 < 1.0
        second = [
            subprocess.Popen(
                _cli(*args, "--no-report"),
                cwd=ROOT,
                env=env,
                stderr=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                text=True,
            )
            for args in (
                ["run", "modular-addition", "--dir", str(run), "--overwrite", *_sets(steps)],
                ["resume", str(run)],
            )
        ]
        for other in second:
            _, err = other.communicate(timeout=120)
            assert other.returncode == 2, err
            assert f"is being written by pid {proc.pid}" in err
        assert proc.poll() is None, "the first run must still be running for this test to mean"
    finally:
        assert proc.wait(timeout=300) == 0
    reference = tmp_path / "reference"
    cfg = apply_overrides(
        load_config("modular-addition"),
        [f"{k}={v}" for k, v in {**SETS, "train.steps": str(steps)}.items()],
    )
    run_config(cfg, reference, progress=False)
    xr.testing.assert_identical(gw.open_run(run)["metrics"], gw.open_run(reference)["metrics"])


def test_a_sigkilled_writer_leaves_no_stale_lock(tmp_path, mod_task):
    run = tmp_path / "run"
    proc = _start(run, 10**6)
    try:
        _wait_for_lock(run, proc.pid)
        with pytest.raises(RunLockedError):
            WriterLock(run).acquire()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with gw.Monitor(_model(mod_task), mod_task, dir=run, overwrite=True) as mon:
        mon.step(0)
    assert gw.open_run(run).sizes["step"] == 1


def test_a_network_file_system_is_named_in_a_warning(tmp_path, monkeypatch):
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw 0 0\n"
        f"server:/export {tmp_path / 'nfs'} nfs4 rw 0 0\n"
        f"server:/other {tmp_path / 'nfs-not'} nfs4 rw 0 0\n"
    )
    assert filesystem_type(tmp_path / "nfs" / "run", mounts=str(mounts)) == "nfs4"
    assert filesystem_type(tmp_path / "nfs", mounts=str(mounts)) == "nfs4"
    assert filesystem_type(tmp_path / "nfsx", mounts=str(mounts)) == "ext4"
    assert filesystem_type(tmp_path, mounts=str(tmp_path / "missing")) is None
    monkeypatch.setattr("grokwidgets.store.lock.filesystem_type", lambda path: "nfs4")
    with (
        pytest.warns(NetworkFilesystemWarning, match="nfs4 file system.*only one machine"),
        WriterLock(tmp_path / "run"),
    ):
        pass
