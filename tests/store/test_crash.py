"""A randomized crash test: writers SIGKILLed at random moments, inside a flush too.

Each of 20 trials starts a real writer process (forked from a server that has imported
grokwidgets, so a trial costs a fraction of a second), kills it with SIGKILL, and then checks
that the run opens, passes ``check``, and resumes to exactly the records of an uninterrupted
run. Half the trials are killed at a random moment after the first checkpoint (a run killed
before it has none to resume from); the other half inside a flush, between the chunk writes and
the commit that publishes them. The seed of the moments is printed on failure.
"""

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import pytest
import xarray as xr

import grokwidgets as gw
from grokwidgets.store import zarr_store
from grokwidgets.store.checkpoints import list_checkpoints
from tests._loops import train_tiny

STEPS = 60
TRIALS = 20


def _train(run: Path, resume: bool = False) -> None:
    train_tiny(run, STEPS, resume=resume)


def _writer(run: str, pause_in_flush: int) -> None:
    """The child: train; with ``pause_in_flush = k``, stop inside the k-th flush that writes
    rows (the first is the flush before checkpoint 0, so k >= 2 leaves a checkpoint)."""
    import torch

    torch.set_num_threads(1)
    if pause_in_flush:
        real = zarr_store.ZarrRecordWriter._commit
        count = {"n": 0}

        def commit(self, n):
            count["n"] += n > self.n  # a flush that wrote rows and is about to publish them
            if count["n"] == pause_in_flush and n > self.n:
                Path(run, "in-flush").write_text(str(n))
                time.sleep(60)
            return real(self, n)

        zarr_store.ZarrRecordWriter._commit = commit  # type: ignore[method-assign]
    _train(Path(run))


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "whole"
    _train(run)
    return run


def test_sigkill_at_random_moments_then_check_and_resume(tmp_path, whole):
    seed = int(os.environ.get("GW_CRASH_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.store._crash_warmup", "tests.store.test_crash"])
    reference = gw.open_run(whole)["metrics"]
    # how long an uninterrupted child takes (the second: the first also starts the server), to
    # spread the random moments over it
    for attempt in range(2):
        t0 = time.monotonic()
        proc = ctx.Process(target=_writer, args=(str(tmp_path / f"timing{attempt}"), 0))
        proc.start()
        proc.join(120)
        duration = time.monotonic() - t0
    outcomes = []
    for trial in range(TRIALS):
        run = tmp_path / f"trial{trial}"
        in_flush = trial % 2 == 1
        proc = ctx.Process(target=_writer, args=(str(run), rng.randint(2, 9) if in_flush else 0))
        proc.start()
        deadline = time.monotonic() + 60
        if in_flush:
            while not (run / "in-flush").exists() and time.monotonic() < deadline:
                time.sleep(0.005)
            assert (run / "in-flush").exists(), f"trial {trial} never paused in a flush"
        else:
            while time.monotonic() < deadline and not list_checkpoints_safe(run):
                time.sleep(0.005)
            time.sleep(rng.uniform(0, duration))
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # it had finished (a moment after the end of the run)
            pass
        proc.join()
        where = f"trial {trial} ({'in a flush' if in_flush else 'at random'}), seed {seed}"
        assert gw.open_run(run).attrs["status"] in ("running", "finished"), where
        report = gw.check_run(run)
        assert report.ok, f"{where}:\n{report}"
        _train(run, resume=True)
        xr.testing.assert_identical(gw.open_run(run)["metrics"], reference)
        outcomes.append(report.records)
    # the kills landed at different moments, not all at one
    assert len(set(outcomes)) > 5, outcomes


def list_checkpoints_safe(run: Path) -> dict:
    try:
        return list_checkpoints(run)
    except (FileNotFoundError, OSError):
        return {}
