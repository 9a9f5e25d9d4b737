"""Nothing uncommitted is ever visible: a reader process checks every read against the commit.

The writer (tests/store/_late_writer.py, a real process) logs a digest of exactly what it
committed at every generation; this process reads as fast as it can meanwhile. Every read must
equal, bit for bit, what the writer had committed at the generation the read came from.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grokwidgets.store.errors import StoreError
from grokwidgets.store.zarr_store import read_committed
from tests.store._late_writer import digest

ROOT = Path(__file__).resolve().parents[2]


def _race(tmp_path: Path, *extra: str) -> tuple[list[tuple[int, str]], dict[int, str]]:
    store, log = tmp_path / "metrics.zarr", tmp_path / "log.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.store._late_writer", str(store), str(log), *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    seen: list[tuple[int, str]] = []
    while proc.poll() is None:
        try:
            ds, commit = read_committed(store)
        except StoreError:  # not created yet
            continue
        seen.append((int(commit["generation"]), digest(ds)))
    assert proc.returncode == 0 and "done" in proc.stdout.read()
    committed = {}
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        committed[entry["generation"]] = entry["digest"]
    return seen, committed


def test_every_read_is_a_commit_exactly(tmp_path):
    seen, committed = _race(tmp_path)
    assert len(committed) > 60 and len(seen) > 50
    wrong = [(g, d) for g, d in seen if committed.get(g) != d]
    assert not wrong, f"{len(wrong)} of {len(seen)} reads saw values never committed"
    # the reads saw the run grow, and its truncation, not one state only
    assert len({g for g, _ in seen}) > 10


def test_the_check_catches_a_writer_that_rewrites_a_committed_row(tmp_path):
    """The old writer's bug, emulated: the same check then finds reads of uncommitted values."""
    seen, committed = _race(tmp_path, "unsafe")
    wrong = [(g, d) for g, d in seen if committed.get(g) != d]
    if not wrong:
        pytest.fail("the reader never caught the scribbled row; the invariant test is blind")
