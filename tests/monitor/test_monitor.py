"""The Monitor around a user's own loop."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import grokwidgets as gw
from grokwidgets.diagnostics import MetricInfo, register
from grokwidgets.diagnostics.registry import _REGISTRY
from grokwidgets.monitor.cadence import Every


def user_loop(model, task, mon, n):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(n):
        loss = F.cross_entropy(model(task.x_train), task.y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.step(step, my_loss=loss.detach())


def test_user_loop_in_memory(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=16, depth=1, embed_dim=4)
    with gw.Monitor(model, mod_task, cadence=Every(5)) as mon:
        user_loop(model, mod_task, mon, 12)
    ds = mon.dataset()
    assert ds["step"].values.tolist() == list(range(12))  # my_loss is logged every step
    test_acc = ds["metrics"].sel(metric="test_acc", layer="model").values
    assert np.isfinite(test_acc[[0, 5, 10]]).all()
    assert np.isnan(np.delete(test_acc, [0, 5, 10])).all()
    assert mon.status == "finished"
    assert ds.attrs["metric_info"]["my_loss"]["source"] == "user"


def test_step_is_cheap_when_nothing_is_due(mod_task):
    calls = []

    @register("count_calls", metrics=[MetricInfo("c", "calls")])
    def count_calls(probe):
        calls.append(probe.step)
        return {"c": len(calls)}

    try:
        model = gw.models.MLP.for_task(mod_task, width=8, depth=1, embed_dim=4)
        mon = gw.Monitor(model, mod_task, diagnostics=["count_calls"])
        for s in range(2000):
            mon.step(s)
        expected = gw.Cadence.default().steps(1999)
        assert calls == expected
        assert mon.step(2001) is None
    finally:
        del _REGISTRY["count_calls"]


def test_per_diagnostic_cadence(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=8, depth=1, embed_dim=4)
    mon = gw.Monitor(model, mod_task, cadence={"loss": 1, "weights": Every(4), "default": 100})
    for s in range(9):
        mon.step(s)
    ds = mon.dataset()
    norms = ds["metrics"].sel(metric="weight_norm", layer="readout").values
    assert np.isfinite(norms[[0, 4, 8]]).all() and np.isnan(norms[[1, 2, 3]]).all()
    assert np.isfinite(ds["metrics"].sel(metric="train_loss", layer="model").values).all()
    with pytest.raises(ValueError, match="not among the diagnostics"):
        gw.Monitor(model, mod_task, cadence={"ntk": 1})


def test_mechanism_families_default_to_their_sparser_grid(mod_task):
    from grokwidgets.diagnostics.registry import MECHANISM_CADENCE
    from grokwidgets.monitor.cadence import cadence_from_json

    model = gw.models.MLP.for_task(mod_task, width=8, depth=1, embed_dim=4)
    names = ["loss", "htsr", "comparative"]
    sparse = cadence_from_json(dict(MECHANISM_CADENCE)).steps(1000)
    dense = gw.Cadence.default().steps(1000)
    assert len(sparse) < len(dense) / 2  # the point: far fewer records of the costly ones
    mon = gw.Monitor(model, mod_task, diagnostics=names)
    assert mon._cadences["loss"].steps(1000) == dense
    assert mon._cadences["htsr"].steps(1000) == sparse
    assert mon._cadences["comparative"].steps(1000) == sparse
    for s in range(30):
        mon.step(s)
    ds = mon.dataset()
    norm = ds["metrics"].sel(metric="log_spectral_norm", layer="readout").values
    assert ds["step"].values[np.isfinite(norm)].tolist() == [s for s in sparse if s < 30]
    loss = ds["metrics"].sel(metric="train_loss", layer="model").values
    assert np.isfinite(loss).all() and len(loss) == 30
    # one cadence for all, or a "default", overrides the families' own
    one = gw.Monitor(model, mod_task, diagnostics=names, cadence=Every(7))
    assert one._cadences["htsr"].steps(30) == [0, 7, 14, 21, 28]
    mixed = gw.Monitor(model, mod_task, diagnostics=names, cadence={"default": 5, "loss": 1})
    assert mixed._cadences["htsr"].steps(12) == [0, 5, 10]
    named = gw.Monitor(model, mod_task, diagnostics=names, cadence={"loss": 2})
    assert named._cadences["htsr"].steps(1000) == sparse


def test_monitor_with_dir_writes_run_and_checkpoints(tmp_path, mod_task):
    model = gw.models.MLP.for_task(mod_task, width=8, depth=1, embed_dim=4)
    with gw.Monitor(model, mod_task, dir=tmp_path / "run", cadence=Every(2)) as mon:
        user_loop(model, mod_task, mon, 8)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "finished"
    assert info["config"]["task"] == mod_task.config
    ds = gw.open_run(tmp_path / "run")
    assert ds.attrs["status"] == "finished"
    assert ds.sizes["step"] == 8
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts[:3] == [
        "step_00000000.safetensors",
        "step_00000001.safetensors",
        "step_00000002.safetensors",
    ]


def test_interrupted_run_is_marked(tmp_path, mod_task):
    model = gw.models.MLP.for_task(mod_task, width=8, depth=1, embed_dim=4)
    with pytest.raises(KeyboardInterrupt), gw.Monitor(model, mod_task, dir=tmp_path) as mon:
        mon.step(0)
        raise KeyboardInterrupt
    assert gw.open_run(tmp_path).attrs["status"] == "interrupted"
    assert gw.open_run(tmp_path).sizes["step"] == 1  # flushed on the way out


def test_listener_sees_each_record(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=8, depth=1, embed_dim=4)
    mon = gw.Monitor(model, mod_task, cadence=Every(3))
    seen = []
    mon.add_listener(lambda rec: seen.append(rec.step))
    for s in range(7):
        mon.step(s)
    assert seen == [0, 3, 6]


def test_bad_scalars(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=8, depth=1, embed_dim=4)
    mon = gw.Monitor(model, mod_task)
    with pytest.raises(ValueError, match="single number"):
        mon.log(0, v=torch.zeros(3))
    with pytest.raises(TypeError, match="needs a number"):
        mon.log(0, v="high")


def test_no_task_needs_no_loss():
    model = torch.nn.Linear(3, 2)
    mon = gw.Monitor(model, None, diagnostics=["weights"], cadence=1)
    mon.step(0)
    assert mon.dataset()["metrics"].sel(metric="param_norm", layer="model").size == 1
    with pytest.raises(ValueError, match="no task"):
        gw.Monitor(model, None, diagnostics=["loss"], cadence=1).step(0)


def _committed(run):
    return gw.open_run(run).sizes["step"]


def test_flush_every_sets_when_records_become_visible(tmp_path, mod_task):
    """Monitor(flush_every=k) commits every k records (a reader sees them), not every 64."""
    model = gw.models.MLP.for_task(mod_task, width=8, depth=1, embed_dim=4)
    run = tmp_path / "run"
    seen = []
    with gw.Monitor(
        model,
        mod_task,
        dir=run,
        cadence=Every(1),
        checkpoint_cadence=False,
        flush_every=3,
        flush_seconds=1e9,
    ) as mon:
        for step in range(7):
            mon.step(step)
            seen.append(_committed(run))
    assert seen == [0, 0, 3, 3, 3, 6, 6]
    assert _committed(run) == 7  # close flushes the rest


def test_flush_seconds_zero_commits_each_record(tmp_path, mod_task):
    model = gw.models.MLP.for_task(mod_task, width=8, depth=1, embed_dim=4)
    run = tmp_path / "run"
    kw = {"cadence": Every(1), "checkpoint_cadence": False, "flush_every": 1000}
    with gw.Monitor(model, mod_task, dir=run, flush_seconds=0, **kw) as mon:
        for step in range(4):
            mon.step(step)
            assert _committed(run) == step + 1
    # and the default buffers: nothing is visible before close
    other = tmp_path / "other"
    with gw.Monitor(model, mod_task, dir=other, flush_seconds=1e9, **kw) as mon:
        for step in range(4):
            mon.step(step)
        assert _committed(other) == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"flush_every": 0}, "flush_every must be an integer >= 1"),
        ({"flush_every": 2.5}, "flush_every must be an integer >= 1"),
        ({"flush_seconds": -1}, "flush_seconds must be a number >= 0"),
    ],
)
def test_bad_flush_settings_are_refused(tmp_path, mod_task, kwargs, match):
    model = gw.models.MLP.for_task(mod_task, width=8, depth=1, embed_dim=4)
    with pytest.raises(ValueError, match=match):
        gw.Monitor(model, mod_task, dir=tmp_path / "run", **kwargs)
