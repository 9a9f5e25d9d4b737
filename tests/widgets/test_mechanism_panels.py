"""The widget panels pick up the mechanism families (Li₂, compress, infogeo) by metric name."""

import numpy as np
import pytest
import torch

import grokwidgets as gw
from grokwidgets.views.panels import panels_for
from grokwidgets.views.tables import (
    PRUNE_METHODS,
    STEP_STATE,
    current_tables,
    prune_curve_table,
    series_tables,
)


@pytest.fixture(scope="module")
def run_ds():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        task = gw.tasks.modular_arithmetic(p=11, op="+", train_fraction=0.6, seed=0)
        model = gw.models.MLP.for_task(task, width=16, depth=1, embed_dim=8, seed=0)
        run = gw.train(
            task,
            model,
            steps=12,
            lr=1e-2,
            weight_decay=1.0,
            diagnostics=["basic", "li2", "compress", "infogeo", "comparative", "phase_detector"],
            cadence=4,
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    return run.dataset()


def test_panels_appear_by_name(run_ds):
    names = {str(m) for m in run_ds["metric"].values} | set(run_ds.data_vars)
    ids = [p.id for p in panels_for(names)]
    assert {"li2", "compress", "infogeo", "comparative", "phases"} <= set(ids)
    assert [p.id for p in panels_for({"li2_stage"})] == ["li2"]
    assert [p.id for p in panels_for({"fisher_straightness"})] == ["infogeo"]
    assert [p.id for p in panels_for({"phase_code"})] == ["phases"]


def test_series_carry_the_recorded_values(run_ds):
    tables = series_tables(run_ds)
    stage = tables["li2_stage"]
    rec = run_ds["metrics"].sel(metric="li2_stage", layer="model").dropna("step")
    rec = rec.sel(step=rec["step"] > 0)
    np.testing.assert_array_equal(stage["step"], rec["step"].values)
    np.testing.assert_array_equal(stage["value"], rec.values)
    path = tables["path_length"]
    fisher = path["value"][path["series"] == "parameters (Fisher)"]
    assert np.all(np.diff(fisher) >= 0)  # a path length never shrinks


def test_phase_and_flags_series(run_ds):
    tables = series_tables(run_ds)
    m = run_ds["metrics"].sel(layer="model")
    code = m.sel(metric="phase_code").dropna("step")
    code = code.sel(step=code["step"] > 0)
    np.testing.assert_array_equal(tables["phase"]["value"], code.values)
    flags = tables["phase_flags"]
    fit = m.sel(metric="phase_train_fit").dropna("step")
    fit = fit.sel(step=fit["step"] > 0)
    np.testing.assert_array_equal(flags["value"][flags["series"] == "train fit"], fit.values)
    assert set(np.unique(flags["value"])) <= {0.0, 1.0}


def test_pruning_curve_is_the_state_at_the_step(run_ds):
    last = int(run_ds["step"].values[-1])
    table = current_tables(run_ds)["prune_curve"]
    assert set(table["method"]) == set(PRUNE_METHODS.values())
    one = run_ds.sel(step=last)
    for method, label in PRUNE_METHODS.items():
        rows = table["method"] == label
        frac = one[f"{method}_prune_fraction"].sel(layer="model").values
        loss = one[f"{method}_prune_test_loss"].sel(layer="model").values
        ok = np.isfinite(frac) & np.isfinite(loss) & (loss > 0)
        np.testing.assert_allclose(table["fraction"][rows], frac[ok])
        np.testing.assert_allclose(table["loss"][rows], loss[ok])
    first = current_tables(run_ds, 4)["prune_curve"]
    assert not np.array_equal(first["loss"], table["loss"])
    assert (
        prune_curve_table(run_ds.sel(step=last).drop_vars("fisher_prune_fraction"))["method"]
        .tolist()
        .count("Fisher")
        == 0
    )
    assert "fisher_prune_fraction" in STEP_STATE


def test_a_panel_with_an_empty_series_still_renders_a_png():
    import vl_convert as vlc

    from grokwidgets.views.panels import PANELS, inline_spec, panel_spec
    from grokwidgets.views.tables import empty_current

    panel = next(p for p in PANELS if p.id == "compress")
    tables = dict(empty_current())
    tables["compression"] = {
        "step": np.zeros(0),
        "series": np.zeros(0, object),
        "value": np.zeros(0),
    }
    tables["prune_curve"] = {
        "method": np.asarray(["Fisher", "Fisher"], dtype=object),
        "fraction": np.asarray([0.0, 0.5]),
        "loss": np.asarray([1.0, 2.0]),
    }
    spec = inline_spec(panel_spec(panel), tables)
    assert spec["hconcat"][0]["encoding"]["color"]["legend"] is None  # the empty chart
    assert "legend" not in spec["hconcat"][1]["encoding"]["color"]
    assert bytes(vlc.vegalite_to_png(spec))[:4] == b"\x89PNG"


def test_detector_events_show_in_a_live_monitor():
    from grokwidgets.monitor.watcher import PhaseWatcher
    from grokwidgets.widgets import LiveMonitor

    task = gw.tasks.modular_arithmetic(p=11, op="+", train_fraction=0.7, seed=0)
    model = gw.models.MLP.for_task(task, width=32, depth=1, embed_dim=8, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    mon = gw.Monitor(model, task, diagnostics=["loss", "phase_detector"], cadence=5)
    live = LiveMonitor(mon, min_interval=0)
    PhaseWatcher(mon, live.notify)
    loss_fn = torch.nn.functional.cross_entropy
    for step in range(200):
        mon.step(step)
        loss = loss_fn(model(task.x_train), task.y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    mon.close()
    live.flush()
    kinds = [e.kind for e in live.events]
    assert "train_fit" in kinds, kinds
    last = live.events[-1]
    assert f"step {last.step}: {last.message}" in live.message
    assert "phases" in live.panels


def test_compare_leaves_out_views_it_cannot_overlay(run_ds):
    """Compare overlays time series; the pruning curve at one step would stay an empty view."""
    from grokwidgets.widgets import Compare

    def names(spec):
        if isinstance(spec, list):
            return set().union(*(names(v) for v in spec)) if spec else set()
        if not isinstance(spec, dict):
            return set()
        own = {spec["data"]["name"]} if isinstance(spec.get("data"), dict) else set()
        return own.union(*(names(v) for k, v in spec.items() if k != "data"))

    cmp = Compare([run_ds, run_ds.copy()])
    compress = next(s for s in cmp._specs if s["usermeta"]["panel"] == "compress")
    assert "compression" in names(compress) and "prune_curve" not in names(compress)
    # the LiveMonitor of one run keeps both views
    live = gw.widgets.LiveMonitor(run_ds)
    compress = next(s for s in live._specs if s["usermeta"]["panel"] == "compress")
    assert {"compression", "prune_curve"} <= names(compress)
