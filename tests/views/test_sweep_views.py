"""A sweep's summaries: per-point time to grok against the single-run definition, the four
phases on curves built to be each one, the phase table's pooling, and the charts' specs."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from grokwidgets.diagnostics.phases import loss_time_to_grok
from grokwidgets.diagnostics.phases import time_to_grok as run_time_to_grok
from grokwidgets.views.sweep import (
    PHASE_LABELS,
    curves_chart,
    final_metrics,
    phase_diagram,
    phase_table,
    phases,
    time_to_grok,
)

STEPS = np.array([0, 10, 20, 50, 100, 200, 500, 1000, 2000])


def _run(train: list[float], test: list[float]) -> xr.Dataset:
    metrics = np.full((len(STEPS), 1, 4), np.nan)
    metrics[:, 0, 0] = train
    metrics[:, 0, 1] = test
    metrics[:, 0, 2] = 1.0 - np.asarray(train) + 1e-3  # losses that fall as accuracy rises
    metrics[:, 0, 3] = 1.0 - np.asarray(test) + 1e-3
    return xr.Dataset(
        {"metrics": (("step", "layer", "metric"), metrics)},
        coords={
            "step": STEPS,
            "layer": ["model"],
            "metric": ["train_acc", "test_acc", "train_loss", "test_loss"],
        },
    )


#: Curves built to be each phase (threshold 0.9, ratio 10): train reaches 0.9 at step 20.
FIT = [0.0, 0.5, 0.95, 1, 1, 1, 1, 1, 1]
CURVES = {
    "comprehension": (FIT, [0.0, 0.3, 0.5, 0.92, 1, 1, 1, 1, 1]),  # test at 50 < 10 x 20
    "grokking": (FIT, [0.0, 0.1, 0.1, 0.1, 0.2, 0.5, 0.96, 1, 1]),  # test at 500 >= 200
    "memorization": (FIT, [0.0, 0.1, 0.1, 0.1, 0.1, 0.2, 0.3, 0.3, 0.3]),
    "confusion": ([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], [0.0] * 9),
}


def _sweep() -> xr.Dataset:
    """weight_decay × seed: wd 0.1 memorizes, 1 groks (seed 1 comprehends), 3 is confused."""
    kinds = {
        (0.1, 0): "memorization",
        (0.1, 1): "memorization",
        (1.0, 0): "grokking",
        (1.0, 1): "comprehension",
        (3.0, 0): "confusion",
        (3.0, 1): "confusion",
    }
    rows = []
    for wd in (0.1, 1.0, 3.0):
        per_seed = [_run(*CURVES[kinds[(wd, s)]]) for s in (0, 1)]
        rows.append(xr.concat(per_seed, dim=xr.DataArray([0, 1], dims="seed")))
    ds = xr.concat(rows, dim=xr.DataArray([0.1, 1.0, 3.0], dims="weight_decay"))
    return ds.transpose("weight_decay", "seed", ...)


def test_time_to_grok_per_point_equals_the_run_definition():
    ds = _sweep()
    out = time_to_grok(ds)
    assert out.attrs["method"] == "accuracy"
    assert out["generalized"].dims == ("weight_decay", "seed")
    for wd in ds["weight_decay"].values:
        for seed in ds["seed"].values:
            want = run_time_to_grok(ds.sel(weight_decay=wd, seed=seed))
            got = out.sel(weight_decay=wd, seed=seed)
            for name in ("memorized", "generalized"):
                w = getattr(want, name)
                g = float(got[name])
                assert (np.isnan(g) and w is None) or g == w


def test_time_to_grok_falls_back_to_losses():
    ds = _sweep().sel(metric=["train_loss", "test_loss"])
    out = time_to_grok(ds)
    assert out.attrs["method"] == "loss"
    want = loss_time_to_grok(ds.sel(weight_decay=1.0, seed=0))
    assert float(out["generalized"].sel(weight_decay=1.0, seed=0)) == want.generalized


def test_phases_of_curves_built_to_be_each_phase():
    labels = phases(_sweep())
    assert labels.sel(weight_decay=0.1).values.tolist() == ["memorization"] * 2
    assert labels.sel(weight_decay=1.0).values.tolist() == ["grokking", "comprehension"]
    assert labels.sel(weight_decay=3.0).values.tolist() == ["confusion"] * 2
    # the ratio decides grokking vs comprehension: test at 500, train at 20
    assert phases(_sweep(), delay_ratio=30.0).sel(weight_decay=1.0, seed=0) == "comprehension"


def test_nan_padding_is_not_a_record():
    ds = _sweep()
    short = ds.copy(deep=True)
    short["metrics"][0, 0, -3:] = np.nan  # wd 0.1, seed 0 stopped at step 200
    fin = final_metrics(short)
    assert fin["last_step"].sel(weight_decay=0.1, seed=0) == 200
    assert fin["last_step"].sel(weight_decay=0.1, seed=1) == 2000
    assert fin["test_acc"].sel(weight_decay=0.1, seed=0) == pytest.approx(0.2)


def test_phase_table_pools_seeds_and_the_diagram_draws_it():
    table = phase_table(_sweep(), "weight_decay", "seed")
    assert len(table) == 6 and set(table["n"]) == {1}
    pooled = phase_table(_sweep().expand_dims(lr=[1e-3]), "weight_decay", "lr")
    cell = pooled.set_index("weight_decay").loc[1.0]
    # a tie (grokking 1, comprehension 1) goes to the phase listed first
    assert cell["phase"] == "comprehension" and cell["agree"] == 1 and cell["n"] == 2
    assert pooled.set_index("weight_decay").loc[0.1, "agree"] == 2
    spec = phase_diagram(_sweep().expand_dims(lr=[1e-3]), "weight_decay", "lr").to_dict()
    values = next(iter(spec["datasets"].values()))
    assert {v["phase"] for v in values} == {"memorization", "comprehension", "confusion"}
    color = spec["layer"][0]["encoding"]["color"]
    assert color["scale"]["domain"] == list(PHASE_LABELS)
    with pytest.raises(ValueError, match="not a sweep dim"):
        phase_table(_sweep(), "alpha", "seed")


def test_curves_chart_colours_and_facets():
    spec = curves_chart(_sweep(), color="seed", facet="weight_decay").to_dict()
    assert spec["facet"]["column"]["field"] == "weight_decay"
    assert spec["spec"]["encoding"]["color"]["field"] == "seed"
    values = next(iter(spec["datasets"].values()))
    assert len({v["point"] for v in values}) == 6
    assert all(v["step"] > 0 for v in values)  # the log axis has no step 0
