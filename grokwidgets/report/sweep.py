"""``grokwidgets report SWEEP_DIR``: one self-contained HTML file of a sweep.

The page shows each point's status, the phase diagram over the sweep's first two dims (seeds
pooled, :func:`grokwidgets.views.sweep.phase_diagram`), the train and test accuracy curves of
every point coloured by the first dim and faceted by the second, and a table of each point's
time to grok and final accuracies. Like a run's report it inlines the offline Vega bundle:
no network.
"""

from __future__ import annotations

import html
import os
import warnings
from pathlib import Path
from typing import Any

import xarray as xr

from grokwidgets.report.html import html_page
from grokwidgets.store.sweep import SweepAlignmentWarning, open_sweep
from grokwidgets.views.sweep import (
    curves_chart,
    final_metrics,
    phase_diagram,
    sweep_dims,
    time_to_grok,
)

__all__ = [
    "SWEEP_REPORT_NAME",
    "render_sweep_report",
    "sweep_report_specs",
    "write_sweep_png",
    "write_sweep_report",
]

SWEEP_REPORT_NAME = "report.html"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin: 1.5em 0 0.3em; }
.note { color: #666; margin: 0 0 0.6em; }
table.points { border-collapse: collapse; font-variant-numeric: tabular-nums; }
table.points td, table.points th { padding: 0.15em 0.8em; border-bottom: 1px solid #eee; }
.warn { color: #8a5a00; }
.error { color: #b00020; white-space: pre-wrap; }
"""


def _axes(ds: xr.Dataset) -> tuple[str | None, str | None]:
    """The dims to draw: the first two that are not ``seed`` (seed when only one is left)."""
    dims = sweep_dims(ds)
    if "point" in dims:  # an irregular grid: its dims are the levels of `point`
        dims = [str(d) for d in ds.attrs.get("sweep_dims", [])]
    main = [d for d in dims if d != "seed"] or dims
    x = main[0] if main else None
    y = main[1] if len(main) > 1 else ("seed" if "seed" in dims and x != "seed" else None)
    return x, y


def sweep_report_specs(ds: xr.Dataset) -> list[tuple[str, dict[str, Any]]]:
    """The report's charts, titled: the phase diagram and the accuracy curves."""
    x, y = _axes(ds)
    out: list[tuple[str, dict[str, Any]]] = []
    metrics = {str(m) for m in ds["metric"].values}
    grid = "point" not in sweep_dims(ds)
    if x and y and grid and {"train_acc", "test_acc"} <= metrics:
        out.append(("phase diagram", phase_diagram(ds, x, y).to_dict()))
    for metric in ("test_acc", "train_acc", "test_loss", "train_loss"):
        if metric in metrics and grid:
            chart = curves_chart(ds, metric, color=x, facet=y if y != "seed" else None)
            out.append((metric, chart.to_dict()))
    return out


def _points_table(ds: xr.Dataset) -> str:
    dims = [d for d in sweep_dims(ds) if d != "point"] or list(ds.attrs.get("sweep_dims", []))
    metrics = {str(m) for m in ds["metric"].values}
    frame = final_metrics(ds).to_dataframe()
    if {"train_acc", "test_acc"} <= metrics or {"train_loss", "test_loss"} <= metrics:
        ttg = time_to_grok(ds)
        frame = frame.join(
            ttg[["memorized", "generalized"]].to_dataframe()[["memorized", "generalized"]]
        )
    frame = frame.reset_index()
    cols = [
        c
        for c in [*dims, "status", "memorized", "generalized", "train_acc", "test_acc", "last_step"]
        if c in frame
    ]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)

    def cell(v: Any) -> str:
        if isinstance(v, float):
            if v != v:  # NaN
                return "—"
            return f"{v:,.0f}" if v.is_integer() else f"{v:.3g}"  # steps; decays, accuracies
        return html.escape(str(v))

    rows = "".join(
        "<tr>" + "".join(f"<td>{cell(r[c])}</td>" for c in cols) + "</tr>"
        for _, r in frame.iterrows()
    )
    return f'<table class="points"><tr>{head}</tr>{rows}</table>'


def render_sweep_report(ds: xr.Dataset, title: str = "grokwidgets sweep report") -> str:
    """The report of the sweep Dataset ``ds`` as an HTML string."""
    specs = sweep_report_specs(ds)
    statuses: dict[str, int] = {}
    for s in ds["status"].values.ravel().tolist():
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    dims = ds.attrs.get("sweep_dims", sweep_dims(ds))
    divs = "".join(
        f'<h2>{html.escape(t)}</h2><div id="chart{i}" class="chart"></div>'
        for i, (t, _) in enumerate(specs)
    )
    points = f"{len(ds['status'].values.ravel())} points over {', '.join(dims)}: {counts}."
    body = f"""<p class="note">{html.escape(points)}</p>
{divs}
<h2>points</h2>
<p class="note">memorized / generalized: the step train accuracy reached 0.99 / test accuracy
0.95 (loss-based for regression); final values at each run's last record.</p>
{_points_table(ds)}"""
    return html_page(title, _STYLE, body, [s for _, s in specs])


def write_sweep_report(
    sweep_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None
) -> Path:
    """Write the report of the sweep directory (default ``SWEEP_DIR/report.html``)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SweepAlignmentWarning)
        ds = open_sweep(sweep_dir)
    target = Path(out) if out is not None else Path(sweep_dir) / SWEEP_REPORT_NAME
    page = render_sweep_report(ds, title=f"grokwidgets sweep: {Path(sweep_dir).name}")
    notes = "".join(
        f'<p class="warn">{html.escape(str(w.message))}</p>'
        for w in caught
        if issubclass(w.category, SweepAlignmentWarning)
    )
    if notes:
        page = page.replace("<h2>", notes + "<h2>", 1)
    target.write_text(page, encoding="utf-8")
    return target


def write_sweep_png(ds: xr.Dataset, out: str | os.PathLike[str], *, scale: float = 1.0) -> Path:
    """The report's charts (phase diagram, then the curves) as one PNG (vl-convert)."""
    import vl_convert as vlc

    specs = [s for _, s in sweep_report_specs(ds)]
    if not specs:
        msg = "This sweep has nothing to draw (no accuracy or loss recorded, or no records)."
        raise ValueError(msg)
    datasets: dict[str, Any] = {}
    inner = []
    for spec in specs:
        datasets.update(spec.get("datasets", {}))
        inner.append({k: v for k, v in spec.items() if k not in ("$schema", "config", "datasets")})
    combined = {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "datasets": datasets,
        "vconcat": inner,
        "resolve": {"scale": {"color": "independent"}},
    }
    Path(out).write_bytes(bytes(vlc.vegalite_to_png(combined, scale=scale)))
    return Path(out)
