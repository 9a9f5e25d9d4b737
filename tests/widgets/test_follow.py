"""Following a run directory while a real writer (another thread or process) writes it.

A late record at the writer's newest step is written as a new row with the merged values (a
committed row is never rewritten); the view must show the new values once, never a second
point. What the browser holds is rebuilt
from the frames sent, as static/_core.js applies them, and compared with the store.

Run as a script (``python -m tests.widgets.test_follow DIR N``), this module is the writer
process: each step is recorded in two parts, the second arriving after the first was
committed.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import grokwidgets as gw
from grokwidgets.store import run_dir
from grokwidgets.store.records import Record, records_dataset
from grokwidgets.store.zarr_store import ZarrRecordWriter
from grokwidgets.views.frame import decode_frame
from grokwidgets.widgets import LiveMonitor

from ._runs import records

ROOT = Path(__file__).resolve().parents[2]


class FrontEnd:
    """The rows a browser view holds: snapshots (the ``_snapshot`` trait) replace every
    dataset, delta messages insert or replace datasets, in the order they were sent."""

    def __init__(self, widget):
        self.data = {}
        self.replaced = {}  # dataset -> deltas that replaced it (rows rewritten)
        widget.send = lambda content, buffers=None: self.apply(bytes(buffers[0]), False)
        widget.observe(lambda ch: self.apply(bytes(ch["new"]), True), "_snapshot")
        if widget._snapshot:
            self.apply(bytes(widget._snapshot), True)

    def apply(self, frame, snapshot):
        _, tables = decode_frame(frame)
        if snapshot:
            self.data = {}
        for name, (mode, t) in tables.items():
            if mode == "replace" and not snapshot:
                self.replaced[name] = self.replaced.get(name, 0) + 1
            if mode == "replace" or name not in self.data:
                self.data[name] = t
            else:
                self.data[name] = {k: np.concatenate([self.data[name][k], t[k]]) for k in t}

    def points(self, name):
        """(step, series) -> value; fails on a point held twice."""
        t = self.data.get(name, {"step": [], "series": [], "value": []})
        steps, series = np.asarray(t["step"]).tolist(), np.asarray(t["series"]).tolist()
        keys = list(zip(steps, series, strict=True))
        assert len(keys) == len(set(keys)), f"{name}: a point is held twice"
        return dict(zip(keys, np.asarray(t["value"]).tolist(), strict=True))


def expected(ds, metric, layer="model"):
    """(step, label) -> value of ``metric`` read straight from the store's Dataset."""
    da = ds["metrics"].sel(metric=metric, layer=layer)
    label = metric.split("_")[0] if layer == "model" else layer
    return {
        (float(s), label): float(v)
        for s, v in zip(da["step"].values, da.values, strict=True)
        if s > 0 and np.isfinite(v)
    }


def wait_for(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def start_run(path):
    path.mkdir()
    run_dir.write_run_json(path, {"status": "running", "config": {}, "seed": 0})
    return ZarrRecordWriter(path / run_dir.METRICS, "w", flush_every=10**9)


def test_a_late_record_at_the_last_step_reaches_the_view_once(tmp_path):
    run = tmp_path / "run"
    writer = start_run(run)
    for rec in records(range(0, 10), spectrum=False):
        writer.append(rec)
    writer.flush()
    live = LiveMonitor(run, poll=0.01)  # polls on its own thread
    fe = FrontEnd(live)
    wait_for(lambda: live._n == 10)
    assert fe.points("accuracy")[(9.0, "test")] == 9 / 200
    # a late record at step 9: test_acc corrected, a probe per layer added
    late = Record(step=9)
    late.values[("model", "test_acc")] = 0.5
    late.values[("readout", "probe_test_acc")] = 0.75
    writer.append(late)
    writer.flush()  # step 9 again, in a new row; readers keep the last row of a step
    assert writer.n == 11
    assert gw.open_run(run).sizes["step"] == 10
    wait_for(lambda: fe.points("accuracy").get((9.0, "test")) == 0.5)
    wait_for(lambda: (9.0, "readout") in fe.points("probe_acc"))
    assert live.panels == ["loss", "accuracy", "representation"]
    for rec in records(range(10, 13), spectrum=False):
        writer.append(rec)
    writer.close()
    run_dir.update_run_json(run, status="finished")
    wait_for(lambda: not live._poller.running)
    ds = gw.open_run(run)
    assert float(ds["metrics"].sel(metric="test_acc", layer="model", step=9)) == 0.5
    for name, metrics in (
        ("loss", ("train_loss", "test_loss")),
        ("accuracy", ("train_acc", "test_acc")),
    ):
        want = {k: v for m in metrics for k, v in expected(ds, m).items()}
        assert fe.points(name) == want
    assert fe.points("probe_acc")[(9.0, "readout")] == 0.75
    live.close()


def test_truncated_run_starts_over(tmp_path):
    run = tmp_path / "run"
    writer = start_run(run)
    for rec in records(range(0, 10), spectrum=False):
        writer.append(rec)
    writer.close()
    live = LiveMonitor(run, poll=3600)  # ticks by hand: each read is one _tick()
    fe = FrontEnd(live)
    assert live._n == 10
    # resumed from the checkpoint at step 4: the rows after it are dropped, then rewritten
    resumed = ZarrRecordWriter(run / run_dir.METRICS, "a", flush_every=10**9)
    resumed.truncate(4)
    assert live._tick()
    assert live._n == 5
    assert sorted({s for s, _ in fe.points("loss")}) == [1.0, 2.0, 3.0, 4.0]
    for rec in records(range(5, 7), spectrum=False):
        resumed.append(rec)
    resumed.close()
    run_dir.update_run_json(run, status="finished")
    assert not live._tick()  # finished: polling would stop
    ds = gw.open_run(run)
    assert fe.points("loss") == {**expected(ds, "train_loss"), **expected(ds, "test_loss")}
    live.close()


def test_batch_without_spectrum_keeps_the_esd():
    live = LiveMonitor(records_dataset(records(range(0, 5))), min_interval=0)
    esd = live.tables()["esd"]
    assert len(esd["lam"]) > 0
    live.push(records_dataset(records(range(5, 8), spectrum=False)))
    np.testing.assert_array_equal(live.tables()["esd"]["lam"], esd["lam"])
    live.close()


def test_records_of_one_step_become_one_row():
    a, b = Record(step=3), Record(step=3)
    a.values[("model", "train_loss")] = 1.0
    a.values[("model", "test_loss")] = 2.0
    b.values[("model", "test_loss")] = 5.0
    b.values[("readout", "htsr_alpha")] = 3.0
    ds = records_dataset([Record(step=2, values={("model", "train_loss"): 4.0}), a, b])
    assert ds["step"].values.tolist() == [2, 3]
    at3 = ds["metrics"].sel(step=3)
    assert float(at3.sel(layer="model", metric="test_loss")) == 5.0  # the later one wins
    assert float(at3.sel(layer="model", metric="train_loss")) == 1.0
    assert float(at3.sel(layer="readout", metric="htsr_alpha")) == 3.0
    assert a.values[("model", "test_loss")] == 2.0  # the records are left as they were


# -- the writer process -----------------------------------------------------------------------
def part_one(step: int) -> Record:
    rec = Record(step=step)
    rec.values[("model", "train_loss")] = 1.0 / (1 + step)
    rec.values[("model", "test_loss")] = 2.0 / (1 + step)
    rec.values[("model", "test_acc")] = -1.0  # provisional, corrected by part two
    return rec


def part_two(step: int) -> Record:
    rec = Record(step=step)
    rec.values[("model", "test_acc")] = step / 1000
    rec.values[("model", "train_acc")] = step / 500
    return rec


def write(path: str, n: int) -> None:
    """Record steps 0..n-1, each in two parts; every part is committed on its own."""
    Path(path).mkdir(parents=True)
    run_dir.write_run_json(path, {"status": "running", "config": {}, "seed": 0})
    writer = ZarrRecordWriter(Path(path) / run_dir.METRICS, "w", flush_every=1)
    for step in range(n):
        writer.append(part_one(step))
        time.sleep(0.03)  # long enough for the follower to see the provisional row
        writer.append(part_two(step))  # the step again, merged, in a new row
    writer.close()
    run_dir.update_run_json(path, status="finished")


def test_follows_a_writer_process_that_records_steps_in_parts(tmp_path):
    run = tmp_path / "run"
    n = 30
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.widgets.test_follow", str(run), str(n)], cwd=ROOT, env=env
    )
    try:
        wait_for(lambda: (run / run_dir.RUN_JSON).exists() or proc.poll() is not None, 60)
        assert proc.poll() in (None, 0)
        live = LiveMonitor(run, poll=0.005)
        fe = FrontEnd(live)
        wait_for(lambda: not live._poller.running, timeout=60)
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    assert live.status == "finished"
    steps = np.arange(1, n, dtype=float)
    want = {**{(s, "test"): s / 1000 for s in steps}, **{(s, "train"): s / 500 for s in steps}}
    assert fe.points("accuracy") == want  # the provisional -1 is gone, nothing twice
    assert fe.replaced.get("accuracy", 0) >= 1  # the view did see provisional rows
    assert len(fe.points("loss")) == 2 * (n - 1)
    live.close()


if __name__ == "__main__":
    write(sys.argv[1], int(sys.argv[2]))
