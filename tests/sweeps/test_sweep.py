"""``gw.sweep`` on a real dask ``LocalCluster`` (worker processes), and ``gw.open_sweep``.

One cluster of two worker processes serves the module (starting one takes seconds); the
tests that need a cluster of their own (a sweep's default cluster) say so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import grokwidgets as gw
from grokwidgets.store import zarr_store
from grokwidgets.store.run_info import read_run_info
from grokwidgets.sweeps import SweepAlignmentWarning, SweepError
from grokwidgets.sweeps.grid import resolve_key
from grokwidgets.sweeps.runner import CONNECT_TIMEOUT, _connect
from grokwidgets.train.config import config_fields, load_config

#: A grokking preset at smoke size: a point trains in well under a second.
SMALL = {
    "task.p": 11,
    "model.width": 16,
    "model.embed_dim": 8,
    "train.steps": 30,
    "train.diagnostics": ["basic"],
}
GRID = {"weight_decay": [0.1, 1.0], "task.train_fraction": [0.3, 0.5]}


@pytest.fixture(scope="module")
def client():
    """The cluster ``gw.sweep(scheduler=None)`` starts, with two workers."""
    c, close = _connect(None, 2, CONNECT_TIMEOUT)
    yield c
    close()


def test_grid_combines_into_the_individual_runs(client, tmp_path, monkeypatch):
    result = gw.sweep(
        "modular-addition", GRID, seeds=[0, 1], dir=tmp_path, overrides=SMALL, scheduler=client
    )
    assert result.ok and result.counts == {"done": 8}
    names = sorted(p.name for p in result)
    assert "weight_decay=0.1,train_fraction=0.3,seed=0" in names
    reads = []
    real = zarr_store._read_array

    def counted(store, group, name, where):
        reads.append(name)
        return real(store, group, name, where)

    monkeypatch.setattr(zarr_store, "_read_array", counted)
    ds = gw.open_sweep(tmp_path)
    assert reads == ["step"] * 8  # opening reads each run's steps, no metric values
    assert ds["metrics"].dims == (
        "weight_decay",
        "train_fraction",
        "seed",
        "step",
        "layer",
        "metric",
    )
    assert ds["metrics"].chunks is not None  # lazy, dask-backed
    # in this process (a Client would compute on its workers, out of the counter's sight)
    ds["metrics"].sel(weight_decay=0.1, train_fraction=0.3, seed=0).compute(scheduler="sync")
    assert reads.count("metrics") == 1  # computing one point reads that point only
    for point in result:
        run = gw.open_run(point.dir)
        # the point, recorded in its run.json
        info = read_run_info(point.dir)
        assert info.config["sweep"]["point"] == point.coords
        assert info.config["train"]["weight_decay"] == point.coords["weight_decay"]
        assert info.config["task"]["train_fraction"] == point.coords["train_fraction"]
        assert (
            info.seed == point.coords["seed"]
            and info.config["model"]["seed"] == point.coords["seed"]
        )
        sel = ds.sel(point.coords)
        xr.testing.assert_equal(
            sel["metrics"].compute().reset_coords(drop=True), run["metrics"].reset_coords(drop=True)
        )
        assert sel["run_dir"].item() == str(point.dir)
    # seeds differ: init and split follow the seed
    a = ds["metrics"].sel(weight_decay=0.1, train_fraction=0.3, layer="model", metric="train_loss")
    assert not np.allclose(a.sel(seed=0).values, a.sel(seed=1).values)


def test_second_call_skips_completed_points(client, tmp_path):
    kw = {"dir": tmp_path, "overrides": SMALL, "scheduler": client, "progress": False}
    gw.sweep("modular-addition", {"weight_decay": [0.1, 1.0]}, **kw)
    before = {
        p: (tmp_path / p / "run.json").stat().st_mtime_ns for p in os.listdir(tmp_path) if "=" in p
    }
    again = gw.sweep("modular-addition", {"weight_decay": [0.1, 1.0]}, **kw)
    assert again.counts == {"skipped": 2}
    after = {p: (tmp_path / p / "run.json").stat().st_mtime_ns for p in before}
    assert before == after


def test_different_lengths_are_nan_padded_with_a_warning(client, tmp_path):
    gw.sweep(
        "modular-addition",
        {"train.steps": [10, 30]},
        dir=tmp_path,
        overrides={k: v for k, v in SMALL.items() if k != "train.steps"},
        scheduler=client,
        progress=False,
    )
    with pytest.warns(SweepAlignmentWarning, match=r"steps=10") as record:
        ds = gw.open_sweep(tmp_path)
    assert "union" in str(record[0].message)
    loss = ds["metrics"].sel(layer="model", metric="train_loss").compute()
    assert loss.sizes["step"] == 31
    assert np.isnan(loss.sel(steps=10, step=slice(11, None))).all()
    assert np.isfinite(loss.sel(steps=30)).all()
    assert np.isfinite(loss.sel(steps=10, step=slice(0, 10))).all()


def test_irregular_points_stack_on_a_point_dim(client, tmp_path):
    kw = {"dir": tmp_path, "overrides": SMALL, "scheduler": client, "progress": False}
    gw.sweep("modular-addition", {"weight_decay": [0.1], "model.width": [8, 16]}, **kw)
    gw.sweep("modular-addition", {"weight_decay": [1.0], "model.width": [8]}, extend=True, **kw)
    ds = gw.open_sweep(tmp_path)
    assert ds["metrics"].dims[0] == "point" and ds.sizes["point"] == 3
    one = ds.sel(weight_decay=1.0, width=8)["metrics"].compute()
    run = gw.open_run(tmp_path / "weight_decay=1.0,width=8")
    np.testing.assert_array_equal(one.squeeze().values, run["metrics"].values)


def test_open_sweep_of_plain_runs_by_dim(tmp_path, mod_task):
    for wd in (0.0, 0.5):
        model = gw.models.MLP.for_task(mod_task, width=8, depth=1, embed_dim=4)
        gw.train(mod_task, model, 5, weight_decay=wd, dir=tmp_path / f"wd_{wd}", progress=False)
    ds = gw.open_sweep(str(tmp_path / "wd_*"), dim="weight_decay")
    assert list(ds["weight_decay"].values) == [0.0, 0.5]
    with pytest.raises(ValueError, match="dim="):
        gw.open_sweep(str(tmp_path / "wd_*"))


# -- a killed worker, a killed client ---------------------------------------------------------

LONGER = {**SMALL, "train.steps": 400, "train.checkpoint_cadence": 25}


def _kill_a_running_point(client, root: Path, done: threading.Event) -> str:
    """SIGKILL the worker process running a point once it has checkpoints; its name."""
    deadline = time.time() + 60
    while time.time() < deadline and not done.is_set():
        for run in root.glob("*=*"):
            ckpts = list((run / "checkpoints").glob("*.safetensors")) if run.is_dir() else []
            if len(ckpts) >= 3 and read_run_info(run).status == "running":
                processing = client.processing()
                for addr, keys in processing.items():
                    if any(run.name in str(k) for k in keys):
                        pid = client.run(os.getpid, workers=[addr])[addr]
                        os.kill(pid, signal.SIGKILL)
                        return run.name
        time.sleep(0.05)
    raise AssertionError("no point was seen running with checkpoints")


def test_killed_worker_loses_one_point_and_a_second_call_completes_it(client, tmp_path):
    grid = {"weight_decay": [0.1, 1.0, 2.0]}
    kw = {"overrides": LONGER, "scheduler": client, "progress": False}
    out: dict[str, object] = {}
    done = threading.Event()

    def run() -> None:
        out["result"] = gw.sweep("modular-addition", grid, dir=tmp_path / "killed", **kw)
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    killed = _kill_a_running_point(client, tmp_path / "killed", done)
    thread.join(120)
    first = out["result"]
    assert first[killed].status == "lost" and "resume" in first[killed].error
    # a point the scheduler had already handed to the dying worker is lost with it (reported,
    # never silently); every other point finished
    lost = {p.name for p in first if p.status == "lost"}
    assert all(p.status == "done" for p in first if p.name not in lost)
    assert len(lost) < len(first)
    client.wait_for_workers(2, timeout=60)  # the nanny restarted it

    second = gw.sweep("modular-addition", grid, dir=tmp_path / "killed", **kw)
    assert second[killed].status == "done" and second[killed].resumed_from is not None
    assert all(p.status == "done" for p in second if p.name in lost)
    assert all(p.status == "skipped" for p in second if p.name not in lost)

    gw.sweep("modular-addition", grid, dir=tmp_path / "whole", **kw)
    resumed = gw.open_sweep(tmp_path / "killed")["metrics"].compute()
    whole = gw.open_sweep(tmp_path / "whole")["metrics"].compute()
    xr.testing.assert_equal(resumed.drop_vars("run_dir"), whole.drop_vars("run_dir"))


# -- bad input --------------------------------------------------------------------------------


def test_empty_grid_is_refused(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        gw.sweep("modular-addition", {}, dir=tmp_path / "s")
    with pytest.raises(ValueError, match="empty"):
        gw.sweep("modular-addition", {"weight_decay": []}, dir=tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_unknown_key_lists_the_valid_fields(tmp_path):
    with pytest.raises(ValueError, match=r"'wd' is not a field.*train\.weight_decay"):
        gw.sweep("modular-addition", {"wd": [0.1]}, dir=tmp_path / "s")
    with pytest.raises(ValueError, match=r"seeds=\[\.\.\.\]"):
        gw.sweep("modular-addition", {"seed": [0]}, dir=tmp_path / "s")
    fields = config_fields(load_config("modular-addition"))
    del fields["seed"]
    with pytest.raises(
        ValueError, match=r"several config fields \(\['task.seed', 'model.seed'\]\)"
    ):
        resolve_key("seed", fields)
    assert resolve_key("lr", fields) == "train.lr"


def test_wrong_type_is_refused(tmp_path):
    with pytest.raises(ValueError, match="takes a float"):
        gw.sweep("modular-addition", {"train.lr": ["fast"]}, dir=tmp_path / "s")
    with pytest.raises(ValueError, match="takes a int"):
        gw.sweep("modular-addition", {"task.p": [11.5]}, dir=tmp_path / "s")
    with pytest.raises(ValueError, match="seeds"):
        gw.sweep("modular-addition", seeds=[0, "1"], dir=tmp_path / "s")


def test_silent_scheduler_is_a_clear_error_and_starts_nothing(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(SweepError, match=r"No dask scheduler answered.*within 1 s.*Nothing"):
        gw.sweep(
            "modular-addition",
            {"weight_decay": [0.1]},
            dir=tmp_path / "s",
            overrides=SMALL,
            scheduler="tcp://127.0.0.1:1",
            timeout=1,
        )
    assert time.perf_counter() - t0 < 30
    assert not (tmp_path / "s").exists()


def test_dir_of_another_sweep_is_refused(client, tmp_path):
    kw = {"overrides": SMALL, "scheduler": client, "progress": False}
    gw.sweep("modular-addition", {"weight_decay": [0.1]}, dir=tmp_path, **kw)
    before = json.loads((tmp_path / "sweep.json").read_text())
    with pytest.raises(SweepError, match=r"another sweep.*train\.lr"):
        gw.sweep(
            "modular-addition",
            {"weight_decay": [0.1]},
            dir=tmp_path,
            overrides={**SMALL, "train.lr": 1e-2},
            scheduler=client,
        )
    with pytest.raises(SweepError, match="extend=True"):
        gw.sweep("modular-addition", {"weight_decay": [0.1, 1.0]}, dir=tmp_path, **kw)
    assert json.loads((tmp_path / "sweep.json").read_text()) == before
    more = gw.sweep(
        "modular-addition", {"weight_decay": [0.1, 1.0]}, dir=tmp_path, extend=True, **kw
    )
    assert more.counts == {"skipped": 1, "done": 1}
    assert len(json.loads((tmp_path / "sweep.json").read_text())["points"]) == 2


def test_non_sweep_dir_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SweepError, match="not a sweep directory"):
        gw.sweep("modular-addition", {"weight_decay": [0.1]}, dir=tmp_path, overrides=SMALL)
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_failing_point_never_loses_the_others(client, tmp_path):
    result = gw.sweep(
        "modular-addition",
        {"train.lr": [1e-3, 1e9]},  # 1e9: the loss overflows to NaN
        dir=tmp_path,
        overrides=SMALL,
        scheduler=client,
        progress=False,
    )
    bad = result["lr=1000000000.0"]
    assert bad.status == "failed" and "NonFiniteLossError" in bad.error
    assert result["lr=0.001"].status == "done"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SweepAlignmentWarning)
        ds = gw.open_sweep(tmp_path)
    assert list(ds["status"].values) == ["finished", "failed"]


# -- the command line: its own LocalCluster, then the sweep's report ---------------------------


def test_cli_sweep_and_report(tmp_path, capsys):
    from grokwidgets.cli import main

    toml = tmp_path / "sweep.toml"
    toml.write_text(
        'preset = "modular-addition"\n'
        'dir = "unused"\n'
        "seeds = [0, 1]\n"
        "[grid]\n"
        '"train.weight_decay" = [0.1, 1.0]\n'
        "[overrides]\n"
        "task.p = 11\n"  # TOML reads this as a [task] table: flattened to task.p
        '"model.width" = 16\n'
        '"model.embed_dim" = 8\n'
        '"train.steps" = 30\n'
        '"train.diagnostics" = ["basic"]\n'
    )
    out = tmp_path / "out"
    rc = main(["sweep", str(toml), "--dir", str(out), "--workers", "2", "--no-progress"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "4 points (4 done)" in printed
    assert not (tmp_path / "unused").exists()  # --dir wins over the file's dir
    assert read_run_info(out / "weight_decay=1.0,seed=1").config["task"]["p"] == 11
    # again: nothing left to do, no cluster started
    assert main(["sweep", str(toml), "--dir", str(out), "--no-progress"]) == 0
    assert "4 skipped" in capsys.readouterr().out

    assert main(["report", str(out), "--png", str(tmp_path / "sweep.png")]) == 0
    page = (out / "report.html").read_text()
    assert "<h2>phase diagram</h2>" in page and "4 finished" in page
    table = page.split('<table class="points">')[1].split("</table>")[0]
    assert table.count("<tr>") == 1 + 4  # header + one row per point
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    # a bad grid key is a user error (exit 2) naming the valid fields
    toml.write_text('preset = "modular-addition"\n[grid]\nwd = [0.1]\n')
    assert main(["sweep", str(toml), "--dir", str(tmp_path / "bad")]) == 2
    assert "train.weight_decay" in capsys.readouterr().err


KILLED_CLIENT = """
import sys
import grokwidgets as gw

if __name__ == "__main__":
    gw.sweep("modular-addition", {"weight_decay": [0.1, 1.0]}, dir=sys.argv[1], n_workers=2,
             progress=False, overrides=%r)
"""


def test_killed_client_a_second_call_resumes_and_equals_an_uninterrupted_sweep(client, tmp_path):
    import subprocess
    import sys

    script = tmp_path / "client.py"
    script.write_text(KILLED_CLIENT % (LONGER,))
    root = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(script), str(root)])
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # kill the client (its cluster with it) mid-run
            ckpts = list(root.glob("*=*/checkpoints/*.safetensors"))
            if len(ckpts) >= 4:
                break
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    statuses = {p.name: read_run_info(p).status for p in root.glob("*=*")}
    assert "running" in statuses.values()  # interrupted, not finished
    kw = {"overrides": LONGER, "scheduler": client, "progress": False}
    second = gw.sweep("modular-addition", {"weight_decay": [0.1, 1.0]}, dir=root, **kw)
    assert second.ok
    assert any(p.resumed_from is not None for p in second)
    gw.sweep("modular-addition", {"weight_decay": [0.1, 1.0]}, dir=tmp_path / "whole", **kw)
    resumed = gw.open_sweep(root)["metrics"].compute()
    whole = gw.open_sweep(tmp_path / "whole")["metrics"].compute()
    xr.testing.assert_equal(resumed.drop_vars("run_dir"), whole.drop_vars("run_dir"))


def test_workers_start_with_one_thread_and_no_malloc_trim(client):
    # dask's default MALLOC_TRIM_THRESHOLD_=65536 made torch runs 1.6x slower in a worker
    env = client.run(
        lambda: {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")}
    )
    assert all(e == {"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "1"} for e in env.values())


def test_workers_do_not_sample_their_tasks_stacks(client):
    # dask's profiler takes the GIL every 10 ms to walk the running task's stack: a small
    # model's Python-bound training loop ran ~5% slower (bench/RESULTS.md, issue 16). The
    # module's kill test has restarted a worker by now: it must keep the setting too.
    callbacks = client.run(lambda dask_worker: set(dask_worker.periodic_callbacks))
    assert callbacks and not any({"profile", "profile-cycle"} & c for c in callbacks.values())
    ticks = client.run(lambda dask_worker: dask_worker._tick_interval)
    assert all(t >= 1.0 for t in ticks.values())


def test_points_undo_the_malloc_trim_of_workers_they_did_not_start():
    """A user's own workers (their Client, SLURM) keep dask's MALLOC_TRIM_THRESHOLD_; each
    point then resets glibc's thresholds itself (run_point calls steady_malloc)."""
    code = "from grokwidgets.sweeps.runner import steady_malloc; print(steady_malloc())"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    outs = [
        subprocess.run(
            [sys.executable, "-c", code], env=e, capture_output=True, text=True, check=True
        ).stdout.strip()
        for e in (env | {"MALLOC_TRIM_THRESHOLD_": "65536"}, env)
    ]
    assert outs == ["True", "False"]
