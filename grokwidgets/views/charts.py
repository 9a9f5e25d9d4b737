"""Vega-Lite charts of recorded metrics (Altair) and the log-step axis every chart shares."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from grokwidgets._names import MODEL_LAYER
from grokwidgets.diagnostics.phases import select_metric
from grokwidgets.views.lazy_altair import alt

#: Metrics plotted on a log y axis (positive and spanning orders of magnitude).
LOG_Y = ("loss", "norm", "grad")


def step_axis() -> alt.X:
    """The log-step x axis of every chart over steps (from step 1: init has no place on it)."""
    # It starts at step 1 so that a series of one step still has an axis of some width (a
    # zero-width log domain breaks Vega's layout of the panel's charts).
    return alt.X("step:Q", scale=alt.Scale(type="log", domainMin=1), title="step (log)")


def metric_frame(ds: xr.Dataset, metric: str) -> pd.DataFrame:
    """Long-form table (step, layer, value) of one metric, without missing values."""
    select_metric(ds, metric, str(ds["layer"].values[0]))  # clear error for an unknown name
    da = ds["metrics"].sel(metric=metric)
    frame = pd.DataFrame(
        {
            "step": np.repeat(da["step"].values, da.sizes["layer"]),
            "layer": np.tile(da["layer"].values.astype(str), da.sizes["step"]),
            "value": da.transpose("step", "layer").values.ravel(),
        }
    )
    return frame[np.isfinite(frame["value"])].reset_index(drop=True)


def metric_chart(
    ds: xr.Dataset,
    metric: str,
    *,
    width: int = 420,
    height: int = 220,
    frame: pd.DataFrame | None = None,
) -> alt.Chart:
    """Line chart of ``metric`` over steps (log step axis), one colour per layer.

    ``frame`` gives the rows to draw (columns step, layer, value), e.g. downsampled; by
    default every row of :func:`metric_frame`. Rows at step 0 have no place on the axis.
    """
    if frame is None:
        frame = metric_frame(ds, metric)
    frame = frame[frame["step"] > 0]
    info = ds.attrs.get("metric_info", {}).get(metric, {})
    subtitle = info.get("description", "")
    if not len(frame):
        reasons = sorted(set(ds.attrs.get("nan_reasons", {}).get(metric, {}).values()))
        subtitle = "no finite values recorded" + (f": {'; '.join(reasons)}" if reasons else "")
    unit = info.get("unit", "")
    positive = bool(len(frame)) and bool((frame["value"] > 0).all())
    log_y = positive and any(key in metric for key in LOG_Y)
    y_title = metric if unit in ("", "1") else f"{metric} ({unit})"
    layers = sorted(frame["layer"].unique()) if len(frame) else [MODEL_LAYER]
    encode: dict[str, object] = {
        "x": step_axis(),
        "y": alt.Y("value:Q", scale=alt.Scale(type="log" if log_y else "linear"), title=y_title),
        "tooltip": ["step:Q", "layer:N", alt.Tooltip("value:Q", format=".4g")],
    }
    if len(layers) > 1:
        encode["color"] = alt.Color("layer:N", sort=layers, title="layer")
    return (
        alt.Chart(frame, title=alt.Title(metric, subtitle=subtitle))
        .mark_line(point=len(frame) < 60)
        .encode(**encode)
        .properties(width=width, height=height)
    )


def accuracy_chart(ds: xr.Dataset, *, width: int = 420, height: int = 220) -> alt.Chart | None:
    """Train and test accuracy together: the grokking picture. ``None`` without accuracy."""
    names = [m for m in ("train_acc", "test_acc") if m in ds["metric"].values]
    if not names:
        return None
    frames = []
    for name in names:
        f = metric_frame(ds, name)
        f = f[f["layer"] == MODEL_LAYER].assign(split=name.split("_")[0])
        frames.append(f)
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[frame["step"] > 0]
    return (
        alt.Chart(frame, title=alt.Title("accuracy", subtitle="train and test"))
        .mark_line()
        .encode(
            x=step_axis(),
            y=alt.Y("value:Q", scale=alt.Scale(domain=[0, 1]), title="accuracy"),
            color=alt.Color("split:N", sort=["train", "test"], title="split"),
            tooltip=["step:Q", "split:N", alt.Tooltip("value:Q", format=".3f")],
        )
        .properties(width=width, height=height)
    )
