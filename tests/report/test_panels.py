"""The report shows the widgets' panels, then every metric they do not draw, downsampled."""

import numpy as np
import pytest

from grokwidgets.report import render_report, report_specs
from grokwidgets.report.panels import drawn_metrics, recorded_names, report_panels
from grokwidgets.store.records import Index, to_dataset
from grokwidgets.views.vega import vega_bundle
from tests.widgets._runs import dataset


def run(steps, columns, arrays=None, nan_reasons=None):
    """A run Dataset of ``columns``: (layer, metric) -> values over ``steps``."""
    index = Index()
    for layer, metric in columns:
        if layer not in index.layers:
            index.layers.append(layer)
        if metric not in index.metrics:
            index.metrics.append(metric)
    index.nan_reasons = nan_reasons or {}
    values = np.full((len(steps), len(index.layers), len(index.metrics)), np.nan)
    for (layer, metric), col in columns.items():
        values[:, index.layers.index(layer), index.metrics.index(metric)] = col
    return to_dataset(np.asarray(steps), values, arrays or {}, index)


def panel_ids(specs):
    return [s["usermeta"]["panel"] for s in specs if "panel" in s.get("usermeta", {})]


def titles(specs):
    return [s["title"]["text"] for s in specs if "panel" not in s.get("usermeta", {})]


def test_spectral_family_gets_its_panel_and_esd_at_the_last_step():
    ds = dataset(range(0, 30))
    specs = report_specs(ds)
    assert panel_ids(specs) == ["loss", "accuracy", "spectral"]
    # htsr_xmin and mp_bulk_max are drawn only as marks at one step: they get their charts.
    assert titles(specs) == ["htsr_xmin", "mp_bulk_max"]
    spectral = specs[2]
    assert spectral["usermeta"]["note"] == "ESD at step 29, the last recorded"
    alpha = spectral["datasets"]["alpha"]
    for layer in ("encoder.0", "readout"):
        want = ds["metrics"].sel(metric="htsr_alpha", layer=layer).values[1:]
        np.testing.assert_allclose([r["value"] for r in alpha if r["series"] == layer], want)
    marks = spectral["datasets"]["esd_marks"]
    for layer in ("encoder.0", "readout"):
        xmin = float(ds["metrics"].sel(metric="htsr_xmin", layer=layer, step=29))
        assert [m["x"] for m in marks if m["layer"] == layer and m["kind"] == "xmin"] == [xmin]
    # the ESD drawn is the step-29 spectrum's density: over its 40 log-spaced bins
    # (centre c, width c (√r − 1/√r), r = (max/min)^(1/40)) it integrates to 1
    for layer in ("encoder.0", "readout"):
        rows = [r for r in spectral["datasets"]["esd"] if r["layer"] == layer]
        lam, dens = (np.array([r[k] for r in rows]) for k in ("lam", "density"))
        evals = ds["spectrum"].sel(layer=layer, step=29).values
        r = (evals.max() / evals.min()) ** (1 / 40)
        np.testing.assert_allclose(np.sum(dens * lam * (r**0.5 - r**-0.5)), 1.0, rtol=1e-9)


def test_every_recorded_metric_is_somewhere():
    """A metric drawn by a panel only in part (here htsr_alpha of the whole model) keeps its
    own chart; a metric only a panel draws does not."""
    steps = np.arange(0, 6)
    cols = {
        ("model", "train_loss"): 1.0 / (1 + steps),
        ("model", "test_loss"): 2.0 / (1 + steps),
        ("readout", "htsr_alpha"): 3.0 + steps,
        ("model", "htsr_alpha"): 4.0 + steps,
        ("readout", "ntk_alignment"): 0.1 * steps,
        ("model", "custom"): steps**2.0,
    }
    ds = run(steps, cols)
    specs = report_specs(ds)
    assert panel_ids(specs) == ["loss", "kernel", "spectral"]
    assert titles(specs) == ["htsr_alpha", "custom"]
    assert drawn_metrics(ds, report_panels(ds)) == {"train_loss", "test_loss", "ntk_alignment"}
    # every recorded value (at steps > 0) is drawn somewhere in the report
    drawn = {
        (r["step"], r["value"])
        for spec in specs
        for rows in spec["datasets"].values()
        for r in rows
        if "step" in r
    }
    for col in cols.values():
        assert {(float(s), float(v)) for s, v in zip(steps[1:], col[1:], strict=True)} <= drawn


def test_all_nan_metric_has_a_chart_saying_why():
    steps = np.arange(0, 4)
    cols = {("model", "train_loss"): 1.0 / (1 + steps), ("readout", "probe_test_acc"): np.nan}
    reasons = {"probe_test_acc": {"readout": "the probe needs more test samples"}}
    ds = run(steps, cols, nan_reasons=reasons)
    assert recorded_names(ds) == {"train_loss"}
    specs = report_specs(ds)
    assert panel_ids(specs) == ["loss"]  # no empty representation panel
    (chart,) = [s for s in specs if "panel" not in s.get("usermeta", {})]
    assert chart["title"]["text"] == "probe_test_acc"
    assert chart["title"]["subtitle"] == (
        "no finite values recorded: the probe needs more test samples"
    )


def _long_run(n: int):
    rng = np.random.default_rng(0)
    steps = np.arange(0, n)
    walk = np.cumsum(rng.normal(size=(5, n)), axis=1)
    cols = {
        ("model", "train_loss"): np.exp(walk[0] / 50) / (1 + steps),
        ("model", "test_loss"): np.exp(walk[1] / 50) / (1 + steps) ** 0.5,
        ("model", "weight_norm"): 10 + walk[2],
        ("encoder.0", "weight_norm"): 10 + walk[3],
        ("readout", "weight_norm"): 10 + walk[4],
    }
    return run(steps, cols), cols


def test_long_run_is_downsampled_like_the_widgets():
    n, budget = 100_000, 4000
    ds, cols = _long_run(n)
    specs = report_specs(ds, budget=budget)
    assert panel_ids(specs) == ["loss"] and titles(specs) == ["weight_norm"]
    loss = specs[0]["datasets"]["loss"]
    norms = next(iter(specs[1]["datasets"].values()))
    assert len(loss) <= budget // 2 and len(norms) <= budget // 2
    per_series = {}
    for r in loss:
        per_series.setdefault(("model", f"{r['series']}_loss"), []).append(r)
    for r in norms:
        per_series.setdefault((r["layer"], "weight_norm"), []).append(r)
    assert set(per_series) == set(cols)
    for key, rows in per_series.items():
        full = cols[key][1:]  # step 0 is not on the log axis
        step = np.array([r["step"] for r in rows], dtype=int)
        value = np.array([r["value"] for r in rows])
        np.testing.assert_array_equal(value, full[step - 1])  # real points, in step order
        assert np.all(np.diff(step) > 0)
        # min/max per bucket keeps the extremes and both ends of every line
        assert value.min() == full.min() and value.max() == full.max()
        assert step[0] == 1 and step[-1] == n - 1
    page = render_report(ds, budget=budget)
    data = len(page) - len(vega_bundle())
    assert data < 1_000_000  # the rows in full would take ~25 MB
    with pytest.raises(ValueError, match="budget must be >= 2"):
        report_specs(ds, budget=1)


def test_budget_changes_only_long_series():
    ds, _ = _long_run(1000)
    full = report_specs(ds, budget=10_000)
    small = report_specs(ds, budget=400)
    assert len(full[0]["datasets"]["loss"]) == 2 * 999
    assert len(small[0]["datasets"]["loss"]) <= 200


def test_a_large_budget_is_honoured():
    ds, _ = _long_run(3000)  # weight_norm: 3 layers x 2999 steps, over Altair's 5000-row guard
    specs = report_specs(ds, budget=100_000)
    rows = next(iter(specs[-1]["datasets"].values()))
    assert len(rows) == 3 * 2999
