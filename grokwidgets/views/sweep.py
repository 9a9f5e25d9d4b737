r"""A sweep's summaries and charts: time to grok, final metrics, phases, the phase diagram.

Each function takes the Dataset of :func:`~grokwidgets.open_sweep` (sweep dims in front of
step × layer × metric, or a stacked ``point`` dim) and returns one value per point, with the
sweep dims as its dims. Only the curves they need are computed.

**Time to grok** is :func:`grokwidgets.diagnostics.phases.time_to_grok`'s definition, from the
accuracy curves when the runs recorded them (train accuracy ≥ 0.99, test accuracy ≥ 0.95),
else :func:`~grokwidgets.diagnostics.phases.loss_time_to_grok`'s, from the loss curves
normalized by their first value (train and test loss ≤ 0.1 × their first value; regression).
``attrs["method"]`` says which.

**Phases** (:func:`phases`) follow the four of Liu et al. (2022) [1]_, who draw phase diagrams
of modular addition over weight decay and learning rate: with :math:`t_\text{train}` and
:math:`t_\text{test}` the first steps where train and test accuracy reach ``threshold``
(0.9 there and by default),

- ``confusion``: train accuracy never reaches the threshold;
- ``memorization``: train does, test never does (within the run);
- ``grokking``: both do, test much later:
  :math:`t_\text{test} \ge r\,\max(t_\text{train}, 1)`;
- ``comprehension``: both do, test soon after train:
  :math:`t_\text{test} < r\,\max(t_\text{train}, 1)`.

Liu et al. separate grokking from comprehension by an absolute delay (10³ steps at their
10⁴–10⁵-step scale); we use a ratio :math:`r` (``delay_ratio``, default 10), which does not
depend on the run's length, the same ratio as the notebooks' "10× later" claims.

References
----------
.. [1] Liu, Kitouni, Nolte, Michaud, Tegmark & Williams (2022), "Towards understanding
   grokking: an effective theory of representation learning", NeurIPS 2022,
   arXiv:2205.10343.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from grokwidgets._names import MODEL_LAYER
from grokwidgets.diagnostics.phases import grok_times, loss_grok_times
from grokwidgets.views.lazy_altair import alt

__all__ = [
    "PHASE_COLORS",
    "PHASE_LABELS",
    "curves_chart",
    "final_metrics",
    "phase_diagram",
    "phase_table",
    "phases",
    "sweep_dims",
    "time_to_grok",
]

#: Liu et al.'s four phases, in the order a phase diagram's legend lists them.
PHASE_LABELS: tuple[str, ...] = ("comprehension", "grokking", "memorization", "confusion")
#: Their colours in every phase diagram (the same phase, the same colour, in every sweep).
PHASE_COLORS: tuple[str, ...] = ("#4c78a8", "#54a24b", "#f58518", "#bab0ac")

_RUN_DIMS = {"step", "layer", "metric"}


def sweep_dims(ds: xr.Dataset) -> list[str]:
    """The sweep dims of a sweep Dataset (every dim of ``metrics`` but step × layer × metric)."""
    return [str(d) for d in ds["metrics"].dims if d not in _RUN_DIMS]


def _curves(ds: xr.Dataset, metrics: Sequence[str], layer: str = MODEL_LAYER) -> xr.DataArray:
    names = {str(m) for m in ds["metric"].values}
    missing = [m for m in metrics if m not in names]
    if missing:
        msg = f"The sweep's runs did not record {missing}. Recorded metrics: {sorted(names)}."
        raise KeyError(msg)
    return ds["metrics"].sel(layer=layer, metric=list(metrics)).drop_vars("layer").compute()


def _per_point(curves: xr.DataArray, fn: Any, names: Sequence[str]) -> xr.Dataset:
    """Apply ``fn(steps, *metric_curves) -> tuple`` to every point; one variable per name."""
    dims = [d for d in curves.dims if d not in ("step", "metric")]
    stacked = curves.stack(_p=dims) if dims else curves.expand_dims(_p=[0])
    steps = stacked["step"].values
    out = np.full((len(names), stacked.sizes["_p"]), np.nan)
    for i in range(stacked.sizes["_p"]):
        c = stacked.isel(_p=i).transpose("metric", "step").values
        ok = ~np.all(np.isnan(c), axis=0)  # steps this point recorded (NaN-padded union)
        values = fn(steps[ok], *c[:, ok])
        out[:, i] = [np.nan if v is None else v for v in values]
    coords = {k: v for k, v in stacked.coords.items() if "_p" in v.dims and k != "_p"}
    result = xr.Dataset(
        {n: (("_p",), out[j]) for j, n in enumerate(names)},
        coords={k: ("_p", v.values) for k, v in coords.items() if k not in dims},
    )
    if dims:
        result = result.assign_coords(_p=stacked["_p"]).unstack("_p")
        return result.transpose(*dims)
    return result.isel(_p=0, drop=True)


def time_to_grok(
    ds: xr.Dataset, train_threshold: float = 0.99, test_threshold: float = 0.95
) -> xr.Dataset:
    """Steps to memorize and to generalize, and the delay between them, for every point.

    Returns
    -------
    xarray.Dataset
        ``memorized``, ``generalized``, ``delay`` (steps; NaN where never reached) over the
        sweep dims; ``attrs["method"]`` is ``"accuracy"`` or ``"loss"`` (see the module).
    """
    names = {str(m) for m in ds["metric"].values}
    if {"train_acc", "test_acc"} <= names:
        curves = _curves(ds, ["train_acc", "test_acc"])

        def fn(steps: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple[Any, ...]:
            t = grok_times(
                train, test, steps, train_threshold=train_threshold, test_threshold=test_threshold
            )
            return t.memorized, t.generalized, t.delay

        method = "accuracy"
    else:
        curves = _curves(ds, ["train_loss", "test_loss"])

        def fn(steps: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple[Any, ...]:
            t = loss_grok_times(train, test, steps)
            return t.memorized, t.generalized, t.delay

        method = "loss"
    out = _per_point(curves, fn, ["memorized", "generalized", "delay"])
    out.attrs["method"] = method
    return out


def final_metrics(
    ds: xr.Dataset,
    metrics: Sequence[str] = ("train_acc", "test_acc", "train_loss", "test_loss"),
    layer: str = MODEL_LAYER,
) -> xr.Dataset:
    """Each metric's last recorded value at every point (``last_step``: where it was)."""
    names = {str(m) for m in ds["metric"].values}
    wanted = [m for m in metrics if m in names]
    if not wanted:
        msg = f"None of {list(metrics)} was recorded. Recorded metrics: {sorted(names)}."
        raise KeyError(msg)
    curves = _curves(ds, wanted, layer)

    def fn(steps: np.ndarray, *values: np.ndarray) -> tuple[Any, ...]:
        last = [v[~np.isnan(v)][-1] if np.any(~np.isnan(v)) else None for v in values]
        return (*last, steps[-1] if len(steps) else None)

    return _per_point(curves, fn, [*wanted, "last_step"])


def phases(ds: xr.Dataset, threshold: float = 0.9, delay_ratio: float = 10.0) -> xr.DataArray:
    """Liu et al.'s phase of every point: comprehension, grokking, memorization or confusion.

    See the module for the definitions; ``threshold`` applies to train and test accuracy.
    """
    curves = _curves(ds, ["train_acc", "test_acc"])

    def fn(steps: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple[Any, ...]:
        t = grok_times(train, test, steps, train_threshold=threshold, test_threshold=threshold)
        t_train, t_test = t.memorized, t.generalized
        if t_train is None:
            code = 3
        elif t_test is None:
            code = 2
        elif t_test >= delay_ratio * max(t_train, 1):
            code = 1
        else:
            code = 0
        return (code,)

    codes = _per_point(curves, fn, ["code"])["code"]
    labels = np.array(PHASE_LABELS, dtype=object)[codes.values.astype(int)]
    out = codes.copy(data=labels)
    out.name = "phase"
    out.attrs = {"threshold": threshold, "delay_ratio": delay_ratio, "labels": PHASE_LABELS}
    return out


def phase_table(
    ds: xr.Dataset,
    x: str,
    y: str,
    *,
    threshold: float = 0.9,
    delay_ratio: float = 10.0,
) -> pd.DataFrame:
    """One row per (x, y) cell: its phase, time to grok and final test accuracy.

    Other sweep dims (seeds) are pooled: the cell's phase is the most common label among
    them (``agree``: how many of the ``n`` share it), times and accuracies their median.
    """
    dims = sweep_dims(ds)
    for d in (x, y):
        if d not in dims and d not in ds.coords:
            msg = f"{d!r} is not a sweep dim of this Dataset; its sweep dims: {dims}."
            raise ValueError(msg)
    frame = pd.DataFrame(
        {
            "phase": phases(ds, threshold, delay_ratio).to_series(),
        }
    )
    ttg = time_to_grok(ds)
    frame["generalized"] = ttg["generalized"].to_series()
    frame["memorized"] = ttg["memorized"].to_series()
    fin = final_metrics(ds, ["train_acc", "test_acc"])
    frame["final_test_acc"] = fin["test_acc"].to_series()
    frame["final_train_acc"] = fin["train_acc"].to_series()
    frame = frame.reset_index()
    rows = []
    for (xv, yv), group in frame.groupby([x, y], sort=True):
        counts = group["phase"].value_counts()
        top = max(PHASE_LABELS, key=lambda p: (counts.get(p, 0), -PHASE_LABELS.index(p)))
        rows.append(
            {
                x: xv,
                y: yv,
                "phase": top,
                "agree": int(counts.get(top, 0)),
                "n": len(group),
                "memorized": float(group["memorized"].median()),
                "generalized": float(group["generalized"].median()),
                "final_test_acc": float(group["final_test_acc"].median()),
                "final_train_acc": float(group["final_train_acc"].median()),
            }
        )
    out = pd.DataFrame(rows)
    out.attrs["method"] = ttg.attrs["method"]  # how time to grok was read (accuracy or loss)
    return out


def _axis_values(values: pd.Series) -> list[Any]:
    return sorted(values.unique().tolist(), key=lambda v: (isinstance(v, str), v))


def phase_diagram(
    ds: xr.Dataset,
    x: str,
    y: str,
    *,
    threshold: float = 0.9,
    delay_ratio: float = 10.0,
    width: int = 320,
    height: int = 240,
) -> alt.TopLevelMixin:
    """The phase diagram over sweep dims ``x`` × ``y``: a cell per point, coloured by phase.

    Each cell is coloured by its phase (:func:`phases`; seeds pooled by :func:`phase_table`)
    and labelled with the median step test accuracy reached 0.95 (``—`` if never) and, where
    several seeds share the cell, how many agree with its phase. Axes are ordinal, in value
    order, so a log-spaced grid (weight decay 1e-3 … 1) is drawn evenly.
    """
    table = phase_table(ds, x, y, threshold=threshold, delay_ratio=delay_ratio)
    table["label"] = [
        ("—" if not np.isfinite(g) else f"{int(g):,}") + (f" ({a}/{n})" if n > 1 else "")
        for g, a, n in zip(table["generalized"], table["agree"], table["n"], strict=True)
    ]
    table[x] = table[x].astype(str) if table[x].dtype == object else table[x]
    base = alt.Chart(table).encode(
        x=alt.X(f"{x}:O", sort=_axis_values(table[x]), title=x, axis=alt.Axis(labelAngle=0)),
        y=alt.Y(f"{y}:O", sort=list(reversed(_axis_values(table[y]))), title=y),
    )
    cells = base.mark_rect(stroke="white").encode(
        color=alt.Color(
            "phase:N",
            scale=alt.Scale(domain=list(PHASE_LABELS), range=list(PHASE_COLORS)),
            title="phase",
        ),
        tooltip=[
            alt.Tooltip(f"{x}:O"),
            alt.Tooltip(f"{y}:O"),
            alt.Tooltip("phase:N"),
            alt.Tooltip("agree:Q", title="seeds agreeing"),
            alt.Tooltip("n:Q", title="seeds"),
            alt.Tooltip("memorized:Q", title="train acc ≥ 0.99 at", format=",.0f"),
            alt.Tooltip("generalized:Q", title="test acc ≥ 0.95 at", format=",.0f"),
            alt.Tooltip("final_test_acc:Q", title="final test acc", format=".3f"),
        ],
    )
    text = base.mark_text(fontSize=11, color="white").encode(text="label:N")
    method = table.attrs["method"]
    title = alt.TitleParams(
        f"phases over {x} × {y}",
        subtitle=[
            f"phase: train/test accuracy ≥ {threshold:g}; grokking when test takes ≥ "
            f"{delay_ratio:g}× the train step (Liu et al. 2022)",
            f"label: median step test accuracy ≥ 0.95 ({method}); (k/n): seeds agreeing",
        ],
        anchor="start",
    )
    return alt.layer(cells, text).properties(width=width, height=height, title=title)


def curves_chart(
    ds: xr.Dataset,
    metric: str = "test_acc",
    *,
    color: str | None = None,
    facet: str | None = None,
    layer: str = MODEL_LAYER,
    width: int = 260,
    height: int = 180,
) -> alt.TopLevelMixin:
    """One line per point of ``metric`` over steps (log), by ``color`` and ``facet`` dims.

    Lines are coloured by the sweep dim ``color`` (default: the first) and faceted by
    ``facet``; points that differ in another dim (seeds) are lines of the same colour.
    """
    dims = sweep_dims(ds)
    color = color or (dims[0] if dims else None)
    for d in (color, facet):
        if d is not None and d not in ds.coords:
            msg = f"{d!r} is not a sweep dim of this Dataset; its sweep dims: {dims}."
            raise ValueError(msg)
    da = _curves(ds, [metric], layer).sel(metric=metric, drop=True)
    frame = da.to_dataframe(name="value").reset_index()
    frame = frame[np.isfinite(frame["value"]) & (frame["step"] > 0)]
    keep = [c for c in frame.columns if c in dims or c in ("step", "value", *dims)]
    frame = frame[[c for c in keep if c not in ("run_dir", "status")]]
    frame["point"] = frame[dims].astype(str).agg(",".join, axis=1) if dims else "run"
    chart = (
        alt.Chart(frame)
        .mark_line(strokeWidth=1.3)
        .encode(
            x=alt.X("step:Q", scale=alt.Scale(type="log", domainMin=1), title="step (log)"),
            y=alt.Y("value:Q", title=metric),
            color=alt.Color(f"{color}:O", scale=alt.Scale(scheme="viridis"))
            if color
            else alt.value("#4c78a8"),
            detail="point:N",
            tooltip=[*(alt.Tooltip(f"{d}:O") for d in dims), "step:Q", "value:Q"],
        )
        .properties(width=width, height=height)
    )
    if facet is not None:
        return chart.facet(column=alt.Column(f"{facet}:O", title=facet))
    return chart
