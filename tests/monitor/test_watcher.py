"""The phase watcher: the detector's events acted on in training (call back, checkpoint, stop)."""

import json

import numpy as np
import pytest

import grokwidgets as gw
from grokwidgets.monitor.cadence import Every
from grokwidgets.monitor.watcher import PhaseEvent, PhaseWatcher
from grokwidgets.store import open_run
from tests._loops import sgd_loop


def test_the_watcher_is_reachable_where_users_found_it():
    """``gw.diagnostics.detector.PhaseWatcher`` and ``gw.diagnostics.compute_at`` (a contract)."""
    from grokwidgets.diagnostics import compute_at
    from grokwidgets.diagnostics.detector import PhaseWatcher as FromDetector
    from grokwidgets.replay import compute_at as from_replay

    assert gw.diagnostics.detector.PhaseWatcher is FromDetector is PhaseWatcher
    assert gw.diagnostics.detector.PhaseEvent is PhaseEvent
    assert gw.diagnostics.compute_at is compute_at is from_replay


def test_watcher_stops_checkpoints_and_notifies(tmp_path, mod_task):
    model = gw.models.MLP.for_task(mod_task, width=32, depth=1, embed_dim=8, seed=0)
    mon = gw.Monitor(
        model, mod_task, dir=tmp_path, diagnostics=["loss", "phase_detector"], cadence=Every(5),
        checkpoint_cadence=False,
    )  # fmt: skip
    seen = []
    watch = PhaseWatcher(mon, seen.append, checkpoint_on=["train_fit"], stop_on=["train_fit"])
    stopped_at = sgd_loop(model, mod_task, mon, 500)
    mon.close()
    ds = open_run(tmp_path)
    fit = ds["metrics"].sel(metric="phase_train_fit", layer="model").values
    first_fit = int(ds["step"].values[np.flatnonzero(fit == 1.0)[0]])
    assert stopped_at == first_fit
    assert [(e.step, e.kind) for e in seen] == [(first_fit, "train_fit")]
    assert watch.events == seen and "train split is fit" in mon.stop_reason
    assert (tmp_path / "checkpoints" / f"step_{first_fit:08d}.safetensors").exists()
    assert watch.phase in ("undetermined", "memorization")


def test_watcher_without_the_diagnostic_runs_its_own_detector(mod_task):
    def events(diags):
        model = gw.models.MLP.for_task(mod_task, width=32, depth=1, embed_dim=8, seed=0)
        mon = gw.Monitor(model, mod_task, diagnostics=diags, cadence=Every(5))
        watch = PhaseWatcher(mon)
        sgd_loop(model, mod_task, mon, 80)
        watch.detach()
        return [(e.step, e.kind) for e in watch.events], watch.phase

    own = events(["loss", "weights"])
    recorded = events(["loss", "weights", "phase_detector"])
    assert own == recorded
    assert ("train_fit" in [k for _, k in own[0]]) and own[1] == "memorization"


def test_watcher_bad_arguments(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=8, depth=1, embed_dim=4)
    mon = gw.Monitor(model, mod_task)
    with pytest.raises(ValueError, match="Unknown event kinds"):
        PhaseWatcher(mon, stop_on=["grokked"])
    with pytest.raises(ValueError, match="run directory"):
        PhaseWatcher(mon, checkpoint_on=["train_fit"])


def test_train_stop_on_ends_the_run_resumably(tmp_path):
    """gw.train(stop_on=...) stops at the event, checkpoints there and says so in run.json."""
    task = gw.tasks.modular_arithmetic(p=13, op="+", train_fraction=0.7, seed=0)
    kw = dict(
        steps=400,
        lr=1e-2,
        weight_decay=0.1,
        diagnostics=["loss", "phase_detector"],
        cadence=5,
        dir=tmp_path / "run",
        progress=False,
    )

    def model(seed):
        return gw.models.MLP.for_task(task, width=32, depth=1, embed_dim=8, seed=seed)

    events = []
    run = gw.train(task, model(0), on_event=events.append, stop_on=["train_fit"], **kw)
    fits = [e for e in events if e.kind == "train_fit"]
    assert fits, [e.kind for e in events]
    stop = fits[0].step
    assert run.steps == stop < 400
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["stopped_at"] == stop and info["status"] == "finished"
    assert "train_fit" in info["stop_reason"] or "fit" in info["stop_reason"]
    ds = gw.open_run(tmp_path / "run")
    assert int(ds["step"].values[-1]) == stop
    assert stop in gw.store.list_checkpoints(tmp_path / "run")
    # and the stopped run resumes from there to the end
    more = gw.train(task, model(3), resume=True, **kw)
    assert more.steps == 400
    assert int(gw.open_run(tmp_path / "run")["step"].values[-1]) == 400
