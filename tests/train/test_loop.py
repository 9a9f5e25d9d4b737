"""gw.train: determinism, exact resume, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import grokwidgets as gw
from grokwidgets.store import CheckpointError, RunExistsError
from grokwidgets.train import BatchSchedule, NonFiniteLossError, make_optimizer

ROOT = Path(__file__).resolve().parents[2]


def small_run(task, steps=40, **kw):
    model = gw.models.MLP.for_task(task, width=16, depth=1, embed_dim=8, seed=0)
    kw.setdefault("lr", 1e-2)
    kw.setdefault("progress", False)
    return gw.train(task, model, steps=steps, **kw)


def test_same_seed_same_records_different_seed_differs(mod_task):
    a = small_run(mod_task, batch_size=8, seed=1).dataset()
    b = small_run(mod_task, batch_size=8, seed=1).dataset()
    c = small_run(mod_task, batch_size=8, seed=2).dataset()
    xr.testing.assert_identical(a["metrics"], b["metrics"])
    assert not np.array_equal(a["metrics"].values, c["metrics"].values, equal_nan=True)


def test_full_batch_records_match_a_fresh_evaluation(mod_task):
    """The train outputs the loop reuses equal an independent forward pass."""
    run = small_run(mod_task, steps=5, cadence=1)
    ds = run.dataset()
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(run.model(mod_task.x_train), mod_task.y_train)
    assert ds["metrics"].sel(metric="train_loss", layer="model").values[-1] == pytest.approx(
        float(loss), rel=1e-6
    )
    assert ds["step"].values.tolist() == [0, 1, 2, 3, 4, 5]


def test_last_step_is_always_recorded_and_checkpointed(tmp_path, mod_task):
    small_run(mod_task, steps=123, dir=tmp_path, optimizer="sgd")
    ds = gw.open_run(tmp_path)
    assert int(ds["step"].values[-1]) == 123
    assert (tmp_path / "checkpoints" / "step_00000123.safetensors").exists()


class Crash(Exception):
    pass


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_reproduces_uninterrupted_records(tmp_path, mod_task, optimizer):
    kw = dict(
        optimizer=optimizer, batch_size=10, weight_decay=0.1, checkpoint_cadence=15, cadence=1
    )
    full = small_run(mod_task, steps=50, dir=tmp_path / "full", **kw)
    # An identical run that crashes inside step 38's update (after the checkpoint at 30).
    model = gw.models.MLP.for_task(mod_task, width=16, depth=1, embed_dim=8, seed=0)
    calls = {"n": 0}
    opt_cls = type(make_optimizer(optimizer, model, lr=1e-2))
    orig = opt_cls.step

    def crashing_step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 38:
            raise Crash
        return orig(self, *a, **k)

    opt_cls.step = crashing_step
    try:
        with pytest.raises(Crash):
            gw.train(mod_task, model, steps=50, dir=tmp_path / "cut", lr=1e-2, progress=False, **kw)
    finally:
        opt_cls.step = orig
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["status"] == "failed"
    model2 = gw.models.MLP.for_task(mod_task, width=16, depth=1, embed_dim=8, seed=123)
    resumed = gw.train(
        mod_task, model2, steps=50, dir=tmp_path / "cut", lr=1e-2, progress=False, resume=True, **kw
    )
    xr.testing.assert_identical(
        gw.open_run(tmp_path / "full")["metrics"], gw.open_run(tmp_path / "cut")["metrics"]
    )
    for pa, pb in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_resume_after_sigkill_via_cli(tmp_path):
    """A real process killed with SIGKILL mid-run; `grokwidgets resume` finishes it exactly."""
    sets = [
        "--set",
        "task.p=13",
        "--set",
        "train.steps=3000",
        "--set",
        "model.width=16",
        "--set",
        "model.embed_dim=8",
        "--set",
        "train.batch_size=16",
    ]
    cmd = [
        sys.executable,
        "-m",
        "grokwidgets.cli",
        "run",
        "modular-addition",
        "--no-report",
        "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [*cmd, "--dir", str(tmp_path / "full"), *sets],
        check=True,
        env=env,
        cwd=ROOT,
        capture_output=True,
    )
    proc = subprocess.Popen([*cmd, "--dir", str(tmp_path / "cut"), *sets], env=env, cwd=ROOT)
    ckpts = tmp_path / "cut" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(ckpts.glob("*.safetensors"))) < 14:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert gw.open_run(tmp_path / "cut").attrs["status"] == "running"  # killed, never closed
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "grokwidgets.cli",
            "resume",
            str(tmp_path / "cut"),
            "--no-report",
            "--no-progress",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    xr.testing.assert_identical(
        gw.open_run(tmp_path / "full")["metrics"], gw.open_run(tmp_path / "cut")["metrics"]
    )


def test_non_finite_loss_keeps_records(tmp_path, reg_task):
    model = gw.models.MLP.for_task(reg_task, width=16, depth=2, init_scale=30.0)
    with pytest.raises(NonFiniteLossError, match=r"Lower the learning rate"):
        gw.train(
            reg_task,
            model,
            steps=200,
            lr=1e6,
            optimizer="sgd",
            dir=tmp_path,
            progress=False,
            cadence=1,
        )
    ds = gw.open_run(tmp_path)
    assert ds.attrs["status"] == "failed"
    assert ds.sizes["step"] >= 1


def test_existing_run_is_refused_then_overwritten(tmp_path, mod_task):
    small_run(mod_task, steps=3, dir=tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunExistsError, match="resume=True .* overwrite=True"):
        small_run(mod_task, steps=3, dir=tmp_path)
    assert gw.open_run(tmp_path).sizes["step"] == 4  # nothing lost
    small_run(mod_task, steps=2, dir=tmp_path, overwrite=True)
    assert gw.open_run(tmp_path).sizes["step"] == 3
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_resume_with_a_corrupt_latest_checkpoint(tmp_path, mod_task):
    small_run(mod_task, steps=5, dir=tmp_path)
    last = sorted((tmp_path / "checkpoints").iterdir())[-1]
    last.write_bytes(last.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="Delete it"):
        small_run(mod_task, steps=5, dir=tmp_path, resume=True)
    assert gw.open_run(tmp_path).sizes["step"] == 6


def test_bad_arguments(mod_task):
    with pytest.raises(ValueError, match="Unknown optimizer"):
        small_run(mod_task, optimizer="adagrad")
    with pytest.raises(ValueError, match="Valid losses"):
        small_run(mod_task, loss="hinge")
    with pytest.raises(ValueError, match="batch_size must be in"):
        BatchSchedule(10, 0, seed=0)


def test_batch_schedule_is_stateless_and_covers_each_epoch():
    a = BatchSchedule(20, 5, seed=3)
    b = BatchSchedule(20, 5, seed=3)
    epoch = torch.cat([a.indices(s) for s in range(4)])
    assert sorted(epoch.tolist()) == list(range(20))
    torch.testing.assert_close(b.indices(9), a.indices(9))  # random access equals sequential
    once = BatchSchedule(20, 5, seed=3, shuffle="once")
    torch.testing.assert_close(once.indices(1), once.indices(5))


def test_once_shuffle_cycles_the_remainder_in():
    # 500 samples in batches of 200: cutting one permutation into 2 batches would never train
    # on 100 of them; the cycled schedule uses every sample equally often.
    once = BatchSchedule(500, 200, seed=1, shuffle="once")
    seen = torch.cat([once.indices(s) for s in range(5)])  # 1000 draws: two full passes
    assert seen.numel() == 1000
    assert torch.bincount(seen, minlength=500).tolist() == [2] * 500
    assert once.indices(2).numel() == 200  # the batch that wraps around is full
    again = BatchSchedule(500, 200, seed=1, shuffle="once")
    torch.testing.assert_close(again.indices(7), once.indices(7))  # stateless
    torch.testing.assert_close(once.indices(0), once.indices(5))  # period n / gcd(n, B)
    # when the batch divides n, the schedule is the one permutation cut into n // B batches
    even = BatchSchedule(20, 5, seed=3, shuffle="once")
    perm = torch.cat([even.indices(s) for s in range(4)])
    assert sorted(perm.tolist()) == list(range(20))
    torch.testing.assert_close(even.indices(4), even.indices(0))


def test_epoch_shuffle_leaves_out_a_different_remainder_each_epoch():
    sched = BatchSchedule(23, 5, seed=0)
    left_out = [
        set(range(23)) - set(torch.cat([sched.indices(e * 4 + i) for i in range(4)]).tolist())
        for e in range(6)
    ]
    assert all(len(x) == 3 for x in left_out)
    assert len({frozenset(x) for x in left_out}) > 1
    assert set.intersection(*left_out) == set()  # no sample is left out of every epoch


def test_a_config_gives_cadences_in_their_json_form(tmp_path):
    from grokwidgets.train.config import run_config

    config = {
        "seed": 0,
        "task": {"family": "modular_arithmetic", "p": 7},
        "model": {"class": "MLP", "width": 8, "embed_dim": 4},
        "train": {
            "steps": 20,
            "diagnostics": ["basic"],
            "cadence": {"default": {"every": 5}},
            "checkpoint_cadence": {"at": [0, 10]},
        },
    }
    run = run_config(config, tmp_path / "run", progress=False)
    assert run.dataset().step.values.tolist() == [0, 5, 10, 15, 20]
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["config"]["cadence"]["loss"] == {"every": 5, "start": 0}
    assert info["config"]["checkpoint_cadence"] == {"at": [0, 10]}


def test_lr_per_alpha2_divides_the_step_by_alpha_squared(tmp_path):
    from grokwidgets.models import MLP
    from grokwidgets.tasks import polynomial_regression

    task = polynomial_regression(d=8, n_train=16, n_test=8)

    def run(alpha, lr, flag):
        model = MLP.for_task(task, width=16, depth=1, alpha=alpha, centred=True, seed=0)
        return gw.train(task, model, 5, optimizer="sgd", lr=lr, lr_per_alpha2=flag,
                        dir=tmp_path / str(flag), progress=False)  # fmt: skip

    scaled, plain = run(4.0, 0.16, True), run(4.0, 0.01, False)
    assert scaled.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    for a, b in zip(scaled.model.parameters(), plain.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    recipe = json.loads((tmp_path / "True" / "run.json").read_text())["config"]["train"]
    assert recipe["lr"] == 0.16 and recipe["lr_per_alpha2"] is True
    with pytest.raises(ValueError, match="model.alpha"):
        gw.train(task, torch.nn.Linear(8, 1), 1, lr=0.1, lr_per_alpha2=True, progress=False)
