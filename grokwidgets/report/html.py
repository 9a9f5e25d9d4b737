"""``grokwidgets report``: one self-contained HTML file with a chart of every recorded metric.

The Vega, Vega-Lite and vega-embed scripts come from vl-convert's offline bundle and are
inlined, so the file opens with no network (no CDN).
"""

from __future__ import annotations

import functools
import html
import json
import os
from pathlib import Path
from typing import Any

import altair as alt
import xarray as xr

from grokwidgets.diagnostics.phases import time_to_grok
from grokwidgets.report.specs import accuracy_chart, metric_chart
from grokwidgets.store.run_dir import open_run

REPORT_NAME = "report.html"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
table.summary td { padding: 0.15em 1em 0.15em 0; vertical-align: top; }
.grid { display: flex; flex-wrap: wrap; gap: 1.5em; margin-top: 1.5em; }
.error { color: #b00020; white-space: pre-wrap; }
details pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
"""


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """Vega + vega-lite + vega-embed as one script (from vl-convert, no network)."""
    import vl_convert as vlc

    return str(vlc.javascript_bundle())  # type: ignore[call-arg]


def _script_json(obj: Any) -> str:
    # "</" would end the <script> element early.
    return json.dumps(obj).replace("</", "<\\/")


def report_charts(ds: xr.Dataset) -> list[alt.Chart]:
    """The report's charts: accuracy first, then every metric in recorded order."""
    charts: list[alt.Chart] = []
    acc = accuracy_chart(ds)
    if acc is not None:
        charts.append(acc)
    charts.extend(metric_chart(ds, str(m)) for m in ds["metric"].values)
    return charts


def report_specs(ds: xr.Dataset) -> list[dict[str, Any]]:
    """Vega-Lite specs of :func:`report_charts`."""
    return [c.to_dict() for c in report_charts(ds)]


def _summary_rows(ds: xr.Dataset) -> list[tuple[str, str]]:
    rows = [
        ("run", str(ds.attrs.get("run_dir", ""))),
        ("status", str(ds.attrs.get("status", ""))),
        (
            "records",
            f"{ds.sizes['step']} (last step {int(ds['step'].values[-1])})"
            if ds.sizes["step"]
            else "0",
        ),
    ]
    metrics = set(str(m) for m in ds["metric"].values)
    if {"train_acc", "test_acc"} <= metrics:
        times = time_to_grok(ds)
        rows.append(("train acc ≥ 99% at step", str(times.memorized)))
        rows.append(("test acc ≥ 95% at step (time to grok)", str(times.generalized)))
    for name in ("train_loss", "test_loss", "train_acc", "test_acc"):
        if name in metrics:
            last = ds["metrics"].sel(metric=name, layer="model").dropna("step")
            if last.sizes["step"]:
                rows.append((f"final {name}", f"{float(last.values[-1]):.4g}"))
    return rows


def render_report(ds: xr.Dataset, title: str = "grokwidgets report") -> str:
    """The report of ``ds`` as an HTML string."""
    specs = report_specs(ds) if ds.sizes["step"] else []
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in _summary_rows(ds)
    )
    config = json.dumps(
        {"config": ds.attrs.get("config", {}), "versions": ds.attrs.get("versions", {})},
        indent=1,
        default=str,
    )
    divs = "".join(f'<div id="chart{i}" class="chart"></div>' for i in range(len(specs)))
    empty = "" if specs else "<p>No records yet.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style>
<script>{vega_bundle()}</script>
</head><body>
<h1>{html.escape(title)}</h1>
<table class="summary">{rows}</table>
<details><summary>config and versions</summary><pre>{html.escape(config)}</pre></details>
{empty}<div class="grid">{divs}</div>
<script>
const specs = {_script_json(specs)};
specs.forEach((spec, i) => {{
  const el = document.getElementById("chart" + i);
  vegaEmbed(el, spec, {{actions: false, renderer: "svg"}}).catch((err) => {{
    el.className = "error"; el.textContent = "This chart failed to render: " + err;
  }});
}});
</script>
</body></html>
"""


def write_report(run: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write the report of the run directory ``run`` (default ``RUN/report.html``)."""
    ds = open_run(run)
    target = Path(out) if out is not None else Path(run) / REPORT_NAME
    target.write_text(
        render_report(ds, title=f"grokwidgets report: {Path(run).name}"), encoding="utf-8"
    )
    return target


def write_png(ds: xr.Dataset, out: str | os.PathLike[str], columns: int = 2) -> Path:
    """A PNG of the report's charts (vl-convert), e.g. for a README."""
    charts = report_charts(ds)
    rows = [alt.hconcat(*charts[i : i + columns]) for i in range(0, len(charts), columns)]
    alt.vconcat(*rows).resolve_scale(color="independent").save(
        str(out), format="png", scale_factor=1.0
    )
    return Path(out)
