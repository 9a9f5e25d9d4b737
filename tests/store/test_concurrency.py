"""A reader in one process while a real writer process appends, and after it is SIGKILLed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import grokwidgets as gw
from tests.store._writer import LAYERS

ROOT = Path(__file__).resolve().parents[2]


def _start_writer(run_dir: Path, mode: str, n: int, pause: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store._writer", str(run_dir), mode, str(n), str(pause)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def check_consistent(ds) -> int:
    """Every committed record is complete and exactly as written; returns the count."""
    steps = ds["step"].values
    n = steps.size
    np.testing.assert_array_equal(steps, np.arange(n))
    if n == 0:
        return 0
    metrics = [str(m) for m in ds["metric"].values]
    assert metrics[:3] == ["a", "b", "c"]
    assert [str(x) for x in ds["layer"].values] == LAYERS
    for j, metric in enumerate(metrics):
        vals = ds["metrics"].sel(metric=metric).values  # step x layer
        expected = steps[:, None] * 1000.0 + 10 * np.arange(len(LAYERS))[None, :] + j
        if metric == "late":
            assert np.isnan(vals[steps < 50]).all()
            np.testing.assert_array_equal(vals[steps >= 50], expected[steps >= 50])
        else:
            np.testing.assert_array_equal(vals, expected)
    spec = ds["spectrum"].values  # step x layer x eig
    for s in range(n):
        length = 1 + s % 7
        np.testing.assert_array_equal(spec[s, 0, :length], s + np.arange(length))
        assert np.isnan(spec[s, :, length:]).all()
    return n


def test_reader_never_fails_while_writer_appends(tmp_path):
    proc = _start_writer(tmp_path, "w", n=400, pause=0.004)
    try:
        while not (tmp_path / "run.json").exists():
            time.sleep(0.01)
        counts = []
        for _ in range(100):
            counts.append(check_consistent(gw.open_run(tmp_path)))
            time.sleep(0.01)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert counts == sorted(counts), "a later open saw fewer records"
    assert counts[-1] > counts[0], "the reads did not overlap the appends"
    assert len(set(counts)) > 5
    assert check_consistent(gw.open_run(tmp_path)) == 400


def test_sigkill_loses_at_most_the_buffer_and_writer_restarts(tmp_path):
    proc = _start_writer(tmp_path, "w", n=100_000, pause=0.001)
    committed = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        committed = int(line.split()[1])
        if committed >= 150:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    n = check_consistent(gw.open_run(tmp_path))
    assert n >= committed  # nothing committed is lost
    # A restarted writer truncates to the committed records and continues consistently.
    proc2 = _start_writer(tmp_path, "a", n=30, pause=0.0)
    out, _ = proc2.communicate(timeout=60)
    assert proc2.returncode == 0, out
    assert check_consistent(gw.open_run(tmp_path)) == n + 30


@pytest.mark.parametrize("n", [0, 1])
def test_open_run_with_few_records(tmp_path, n):
    proc = _start_writer(tmp_path, "w", n=n, pause=0.0)
    proc.communicate(timeout=60)
    assert check_consistent(gw.open_run(tmp_path)) == n
