import base64
import time

import numpy as np
import pytest
import traitlets
import xarray as xr

import grokwidgets as gw
from grokwidgets.views.frame import decode_frame
from grokwidgets.widgets import Compare, Explorer, LiveMonitor

from ._runs import dataset, record, write_run


def capture(widget):
    sent = []
    widget.send = lambda content, buffers=None: sent.append(decode_frame(bytes(buffers[0])))
    return sent


def snapshot(widget):
    return decode_frame(bytes(widget._snapshot))[1]


def test_live_monitor_streams_only_new_records(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=16, depth=1)
    mon = gw.Monitor(model, mod_task, cadence=1)
    mon.step(0)
    mon.step(1)
    live = LiveMonitor(mon, min_interval=0.0)
    sent = capture(live)
    assert live.panels == ["loss", "accuracy"]
    assert len(snapshot(live)["loss"][1]["step"]) == 2  # step 1, train and test
    for s in range(2, 6):
        mon.step(s)
    assert [len(f[1]["loss"][1]["step"]) for f in sent] == [2, 2, 2, 2]
    assert [f[1]["loss"][1]["step"][0] for f in sent] == [2, 3, 4, 5]
    live.close()
    mon.step(6)
    assert len(sent) == 4  # detached


def test_live_monitor_batches_records(mod_task):
    model = gw.models.MLP.for_task(mod_task, width=16, depth=1)
    mon = gw.Monitor(model, mod_task, cadence=1)
    live = LiveMonitor(mon, min_interval=60.0)
    assert live.message == "waiting for the first records"
    sent = capture(live)
    live._last_send = time.monotonic()
    for s in range(1, 4):
        mon.step(s)
    assert not sent and not live._snapshot
    live.flush()
    assert len(snapshot(live)["loss"][1]["step"]) == 6
    live.close()


def test_follows_a_run_directory_being_written(tmp_path):
    run = tmp_path / "run"
    live = LiveMonitor(run, poll=0.05)
    assert "waiting for a run" in live.message
    write_run(run, range(0, 10), status="running")
    deadline = time.monotonic() + 10
    while not live._snapshot and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live.panels == ["loss", "accuracy", "spectral"]
    assert len(snapshot(live)["loss"][1]["step"]) == 18
    assert live.status == "running"
    live.close()


def test_run_dir_without_records_waits(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    gw.store.run_dir.write_run_json(run, {"status": "running"})
    live = LiveMonitor(run, poll=10)
    assert live.message == "waiting for the first records" and live.panels == []
    live.close()


def test_bad_source():
    with pytest.raises(TypeError, match="needs a gw.Monitor, a run directory or a run Dataset"):
        LiveMonitor(42)  # type: ignore[arg-type]


def test_explorer_steps_scrub_and_errors(tmp_path):
    run = write_run(tmp_path / "run", range(0, 30))
    ex = Explorer(run)
    sent = capture(ex)
    assert ex.steps == list(range(30)) and ex.step == 29
    ex.step = 5
    (frame,) = sent
    esd = frame[1]["esd"]
    assert esd[0] == "replace" and set(esd[1]["layer"]) == {"encoder.0", "readout"}
    with pytest.raises(
        traitlets.TraitError, match="not a recorded step or checkpoint.*nearest is 29"
    ):
        ex.step = 1000
    assert ex.step == 5


def test_explorer_step_without_spectrum_says_so():
    ds = xr.concat([dataset([0, 1, 2], spectrum=False)], "step")
    ex = Explorer(ds)
    assert ex.panels == ["loss", "accuracy"]
    assert ex.message == "step 2"


def test_explorer_empty_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    gw.store.run_dir.write_run_json(run, {"status": "running"})
    ex = Explorer(run)
    assert ex.message == "this run has no records yet"
    with pytest.raises(ValueError, match="Nothing to draw yet"):
        ex.to_png()


def test_static_forms(tmp_path):
    ex = Explorer(dataset(range(0, 12)))
    png = ex.to_png(tmp_path / "ex.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "ex.png").exists()
    page = ex.to_html()
    assert "cdn" not in page.lower().split("<script>")[0]
    assert "https://cdn" not in page and "vegaEmbed" in page
    data, _ = ex._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    assert base64.b64decode(data["image/png"])[:4] == b"\x89PNG"
    assert "Explorer: panels ['loss', 'accuracy', 'spectral']" in data["text/plain"]


def test_compare_sweep_dimension():
    runs = [dataset(range(0, 8)), dataset(range(0, 8))]
    sweep = xr.concat(runs, dim=xr.DataArray([0.1, 1.0], dims="weight_decay", name="weight_decay"))
    cmp = Compare(sweep)
    tables = snapshot(cmp)
    loss = tables["loss"][1]
    labels = set(zip(loss["run"], loss["detail"], strict=True))
    assert labels == {(f"weight_decay={w}", s) for w in (0.1, 1.0) for s in ("train", "test")}
    # one series per line, so that downsampling and row matching never mix two lines
    assert set(loss["series"]) == {f"{r} · {d}" for r, d in labels}
    assert cmp.dim == "weight_decay"
    # colour by the sweep value, dash by the split: in every line of the panel
    dashed = [
        u["encoding"]
        for u in cmp._specs[0].get("layer", [cmp._specs[0]])
        if u.get("encoding", {}).get("color", {}).get("field") == "run"
    ]
    assert dashed
    assert all(e["strokeDash"]["field"] == "detail" for e in dashed)
    with pytest.raises(ValueError, match="Pass dim"):
        Compare(dataset(range(3)))


def test_accessor():
    ds = dataset(range(0, 6))
    assert isinstance(ds.gw.explore(), Explorer)
    assert isinstance(ds.gw.monitor(), LiveMonitor)
    assert ds.gw.plot("train_loss").to_dict()["mark"]["type"] == "line"
    with pytest.raises(KeyError, match="was not recorded in this run"):
        ds.gw.plot("ntk_alignment")


def test_missing_anywidget_message(monkeypatch):
    import builtins

    import grokwidgets.widgets as widgets

    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "anywidget":
            raise ImportError("no anywidget")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ImportError, match="pip install anywidget ipywidgets"):
        widgets.__getattr__("LiveMonitor")


def test_record_helper_is_deterministic():
    a, b = record(3), record(3)
    np.testing.assert_array_equal(a.arrays["spectrum"]["readout"], b.arrays["spectrum"]["readout"])


def test_compare_colour_by_one_dim_facet_by_another():
    def point(wd, frac, seed):
        ds = dataset(range(0, 8))
        return ds.assign(metrics=ds["metrics"] * (1 + wd + 2 * frac + 4 * seed) / 10)

    sweep = xr.concat(
        [
            xr.concat(
                [
                    xr.concat(
                        [point(w, f, s) for s in (0, 1)], dim=xr.DataArray([0, 1], dims="seed")
                    )
                    for f in (0.3, 0.5)
                ],
                dim=xr.DataArray([0.3, 0.5], dims="train_fraction"),
            )
            for w in (0.1, 1.0)
        ],
        dim=xr.DataArray([0.1, 1.0], dims="weight_decay"),
    )
    with pytest.raises(ValueError, match="Pass dim"):
        Compare(sweep)  # three sweep dims: which one colours?
    cmp = Compare(sweep, color="weight_decay", facet="train_fraction")
    assert cmp.dim == "weight_decay" and cmp.facet == "train_fraction"
    n_panels = len(Compare(sweep.sel(train_fraction=0.3), color="weight_decay").panels)
    assert len(cmp._specs) == 2 * n_panels
    titles = [s["usermeta"]["title"] for s in cmp._specs]
    assert sum(t.endswith("· train_fraction=0.3") for t in titles) == n_panels
    tables = snapshot(cmp)
    for frac in (0.3, 0.5):
        acc = tables[f"accuracy__facet{[0.3, 0.5].index(frac)}"][1]
        # colour: weight decay; one line per point (the seeds apart) and split
        assert set(acc["run"]) == {"weight_decay=0.1", "weight_decay=1.0"}
        assert len(set(acc["series"])) == 2 * 2 * 2
        assert all(f"train_fraction={frac}" in s for s in acc["series"])
        # the values are the point's own
        sel = acc["series"] == f"weight_decay=1.0,train_fraction={frac},seed=1 · test"
        want = sweep["metrics"].sel(
            weight_decay=1.0, train_fraction=frac, seed=1, layer="model", metric="test_acc"
        )
        want = want.sel(step=slice(1, None)).values  # the log-step axis starts at step 1
        np.testing.assert_allclose(acc["value"][sel], want[np.isfinite(want)])
    names = cmp._specs[0]["usermeta"]["datasets"]
    assert "loss__facet0" in names and "loss" not in names
    # each panel names its facet, in the widget and in the static image
    assert cmp._specs[0]["title"] == cmp._specs[0]["usermeta"]["title"]
    assert cmp._specs[0]["title"].endswith("· train_fraction=0.3")
    # colours in the order of the sweep values, not as text ("10.0" after "3.0")
    wide = xr.concat(
        [point(w, 0.3, 0) for w in (0.0, 3.0, 10.0)],
        dim=xr.DataArray([0.0, 3.0, 10.0], dims="weight_decay"),
    )
    units = Compare(wide)._specs[0].get("layer", [])
    sorts = [
        u["encoding"]["color"].get("sort")
        for u in units
        if "encoding" in u and u["encoding"].get("color", {}).get("field") == "run"
    ]
    assert sorts and all(
        o == ["weight_decay=0.0", "weight_decay=3.0", "weight_decay=10.0"] for o in sorts
    )
