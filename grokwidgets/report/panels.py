"""The report's figures: the widgets' panels of a run, then a chart of each metric they omit.

The panels are the widgets' own Vega-Lite specs (:mod:`grokwidgets.views.panels`, the
tables of :mod:`grokwidgets.views.tables`) with their data inlined, as a widget's static
form inlines it; time series are min/max downsampled as the widgets downsample them, so the
report of a 10⁵-step run stays small. Only :mod:`grokwidgets.views` is used: no widget
instance and no anywidget.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from grokwidgets._names import MODEL_LAYER
from grokwidgets.views.charts import metric_chart, metric_frame
from grokwidgets.views.frame import Table
from grokwidgets.views.lazy_altair import alt
from grokwidgets.views.panels import Panel, inline_spec, panel_spec, panels_for
from grokwidgets.views.story import story
from grokwidgets.views.stream import DEFAULT_BUDGET, downsample_table
from grokwidgets.views.tables import (
    STEP_STATE,
    TIME_SERIES,
    current_tables,
    last_step_with,
    series_tables,
)

#: Width of a per-metric chart (pixels; also its number of downsampling buckets).
METRIC_WIDTH = 420


def _finite_after_init(da: xr.DataArray) -> np.ndarray:
    """Whether each entry along ``step`` holds a finite value at a step > 0."""
    values = np.isfinite(da.values)
    axes = tuple(range(1, values.ndim))
    return (values.any(axis=axes) if axes else values) & (da["step"].values > 0)


def recorded_layers(ds: xr.Dataset, metric: str) -> set[str]:
    """Layers at which ``metric`` holds a finite value at some step > 0."""
    da = ds["metrics"].sel(metric=metric).transpose("layer", "step")
    ok = np.isfinite(da.values) & (da["step"].values > 0)[None, :]
    return {str(x) for x, row in zip(da["layer"].values, ok, strict=True) if row.any()}


def recorded_names(ds: xr.Dataset) -> set[str]:
    """Metrics and array variables of ``ds`` holding a finite value at some step > 0."""
    names = {str(m) for m in ds["metric"].values if recorded_layers(ds, str(m))}
    for var in ds.data_vars:
        if var != "metrics" and "step" in ds[var].dims and _finite_after_init(ds[var]).any():
            names.add(str(var))
    return names


def report_panels(ds: xr.Dataset) -> list[Panel]:
    """The widget panels that show something recorded in ``ds``, in the widgets' order."""
    return panels_for(recorded_names(ds)) if ds.sizes["step"] else []


def drawn_metrics(ds: xr.Dataset, panels: list[Panel]) -> set[str]:
    """Metrics whose every recorded layer one of ``panels`` draws over steps.

    A panel draws the series of its time-series datasets (:data:`TIME_SERIES`); a metric
    shown only at one step (e.g. ``htsr_xmin`` as a mark on the current ESD) is not drawn.
    """
    layers = {str(x) for x in ds["layer"].values}
    drawn: dict[str, set[str]] = {}
    for panel in panels:
        for name in panel.datasets:
            for s in TIME_SERIES.get(name, ()):
                if s.layer is not None:
                    at = {s.layer}
                elif s.skip_model:
                    at = layers - {MODEL_LAYER}
                else:
                    at = set(layers)
                drawn.setdefault(s.metric, set()).update(at)
    metrics = {str(m) for m in ds["metric"].values}
    return {
        m
        for m, at in drawn.items()
        if m in metrics and (got := recorded_layers(ds, m)) and got <= at
    }


def panel_tables(ds: xr.Dataset, budget: int = DEFAULT_BUDGET) -> dict[str, Table]:
    """The panels' datasets: downsampled time series, the state at the last step, the story.

    The story (:func:`grokwidgets.views.story.story`: the phase bands ``phase_spans`` and the
    time-to-grok mark ``grok_marks``) is read off every record, never the downsampled rows.
    """
    tables = {name: downsample_table(t, budget) for name, t in series_tables(ds).items()}
    tables.update(current_tables(ds))
    tables.update(story(ds).tables())
    return tables


def panel_specs(ds: xr.Dataset, budget: int = DEFAULT_BUDGET) -> list[dict[str, Any]]:
    """Vega-Lite specs of :func:`report_panels`, data inlined.

    ``usermeta`` holds the panel id, its title and a note saying at which step the
    step-state charts (ESD, kernel spectrum) are drawn.
    """
    panels = report_panels(ds)
    if not panels:
        return []
    tables = panel_tables(ds, budget)
    out = []
    for panel in panels:
        spec = inline_spec(panel_spec(panel), tables)
        note = ""
        for var, (what, names) in STEP_STATE.items():  # the panel's step-state charts
            at = last_step_with(ds, var) if set(names) & set(panel.datasets) else None
            if at is not None:
                note = f"{what} at step {at}, the last recorded"
        spec["usermeta"]["note"] = note
        out.append(spec)
    return out


def metric_specs(ds: xr.Dataset, budget: int = DEFAULT_BUDGET) -> list[dict[str, Any]]:
    """Vega-Lite specs of one chart per recorded metric the panels do not draw.

    In recorded order; each layer's line is min/max downsampled like a panel's series.
    """
    skip = drawn_metrics(ds, report_panels(ds))
    specs = []
    for metric in (str(m) for m in ds["metric"].values):
        if metric in skip:
            continue
        frame = metric_frame(ds, metric)
        frame = frame[frame["step"] > 0]
        rows = {
            "step": frame["step"].to_numpy(np.float64),
            "series": frame["layer"].to_numpy(object),
            "value": frame["value"].to_numpy(np.float64),
        }
        kept = downsample_table(rows, budget, METRIC_WIDTH)
        frame = pd.DataFrame(
            {"step": kept["step"], "layer": kept["series"].astype(str), "value": kept["value"]}
        )
        chart = metric_chart(ds, metric, width=METRIC_WIDTH, frame=frame)
        # The rows are already bounded by ``budget``: Altair's own 5000-row guard would
        # refuse a larger budget the user asked for.
        with alt.data_transformers.disable_max_rows():
            specs.append(chart.to_dict())
    return specs
