"""``grokwidgets report``: one self-contained HTML file of a run's panels and metrics.

The report opens on the story of the run (:mod:`grokwidgets.views.story`): a timeline of its
events in words, then the loss and accuracy panels with the phases shaded and the time to
grok marked. Then it shows the widgets' panels (the same Vega-Lite specs as the live monitor,
:mod:`grokwidgets.views.panels`, data inlined and downsampled alike) for the
diagnostic families recorded, then a chart of every recorded metric no panel draws, so
nothing recorded is missing. The Vega, Vega-Lite and vega-embed scripts come from
vl-convert's offline bundle and are inlined, so the file opens with no network (no CDN).
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

import xarray as xr

from grokwidgets.diagnostics.phases import time_to_grok
from grokwidgets.report.panels import metric_specs, panel_specs
from grokwidgets.store.run_dir import open_run
from grokwidgets.views.panels import PHASE_COLORS
from grokwidgets.views.story import TimelineEvent, format_step, phase_spans, timeline
from grokwidgets.views.stream import DEFAULT_BUDGET
from grokwidgets.views.vega import vega_bundle

REPORT_NAME = "report.html"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin: 1.5em 0 0.3em; }
h3 { font-size: 1em; margin: 1em 0 0.2em; }
.note { color: #666; font-style: italic; margin: 0 0 0.4em; }
table.summary td { padding: 0.15em 1em 0.15em 0; vertical-align: top; }
.grid { display: flex; flex-wrap: wrap; gap: 1.5em; margin-top: 1em; }
.error { color: #b00020; white-space: pre-wrap; }
details pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
.top { display: flex; flex-wrap: wrap; gap: 0 3em; align-items: flex-start; }
#story { flex: 1 1 40em; max-width: 60em; }
#run h2, #story h2 { margin-top: 0.8em; }
ol.timeline { margin: 0.3em 0 0.6em; padding-left: 1.4em; }
ol.timeline li { margin: 0.1em 0; }
ol.timeline .step { font-variant-numeric: tabular-nums; font-weight: 600; }
.phases { margin: 0.2em 0 0.6em; color: #444; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; margin: 0 0.3em -0.1em 0.8em;
  opacity: 0.45; border: 1px solid #999; }
"""


def _script_json(obj: Any) -> str:
    # "</" would end the <script> element early.
    return json.dumps(obj).replace("</", "<\\/")


def html_page(title: str, style: str, body: str, specs: list[dict[str, Any]]) -> str:
    """A self-contained page: ``style``, the offline Vega bundle, ``title`` and ``body``.

    Its script draws ``specs`` into the page's elements ``chart0``, ``chart1``, ...
    """
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{style}</style>
<script>{vega_bundle()}</script>
</head><body>
<h1>{html.escape(title)}</h1>
{body}
{embed_script(specs)}
</body></html>
"""


def embed_script(specs: list[dict[str, Any]]) -> str:
    """The ``<script>`` that draws ``specs`` into the elements ``chart0``, ``chart1``, ..."""
    return f"""<script>
const specs = {_script_json(specs)};
specs.forEach((spec, i) => {{
  const el = document.getElementById("chart" + i);
  vegaEmbed(el, spec, {{actions: false, renderer: "svg"}}).catch((err) => {{
    el.className = "error"; el.textContent = "This chart failed to render: " + err;
  }});
}});
</script>"""


def report_specs(ds: xr.Dataset, *, budget: int | None = None) -> list[dict[str, Any]]:
    """Vega-Lite specs of the report, data inlined: the panels, then the other metrics.

    The panels (``usermeta["panel"]`` set) are the widgets' panels of the families
    recorded; then one chart per recorded metric no panel draws over steps, in recorded
    order. Time series above ``budget // 2`` rows (default: the widgets' budget) are min/max
    downsampled per log-step bucket, as in the widgets.
    """
    if not ds.sizes["step"]:
        return []
    budget = DEFAULT_BUDGET if budget is None else budget
    return panel_specs(ds, budget) + metric_specs(ds, budget)


def _is_panel(spec: dict[str, Any]) -> bool:
    return "panel" in spec.get("usermeta", {})


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


def _timeline_html(events: list[TimelineEvent]) -> str:
    if not events:
        return (
            '<p class="note">No events in the recorded data yet (no train fit, no time to '
            "grok, no detector flag).</p>"
        )
    items = "".join(
        f'<li data-step="{e.step}" data-kind="{html.escape(e.kind)}">'
        f'<span class="step">step {format_step(e.step)}</span>: {html.escape(e.text)}</li>'
        for e in events
    )
    return f'<ol class="timeline">{items}</ol>'


def _phases_html(ds: xr.Dataset) -> str:
    """A key to the phase bands drawn: each phase the run went through, where it starts."""
    spans = phase_spans(ds)
    if not len(spans["phase"]):
        return ""
    first: dict[str, float] = {}
    for phase, start in zip(spans["phase"], spans["start"], strict=True):
        first.setdefault(str(phase), float(start))
    keys = "".join(
        f'<span class="swatch" style="background:{PHASE_COLORS[p]}"></span>'
        f"{html.escape(p)} (from step {format_step(int(at))})"
        for p, at in first.items()
    )
    return f'<p class="phases">shaded phases (offline labels):{keys}</p>'


def render_report(
    ds: xr.Dataset, title: str = "grokwidgets report", *, budget: int | None = None
) -> str:
    """The report of ``ds`` as an HTML string (see :func:`report_specs`).

    It opens on the story of the run: the timeline of
    :func:`grokwidgets.views.story.timeline` (each event at its step) and a key to the phase
    bands of the loss and accuracy panels, which come first.
    """
    specs = report_specs(ds, budget=budget)
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in _summary_rows(ds)
    )
    config = json.dumps(
        {"config": ds.attrs.get("config", {}), "versions": ds.attrs.get("versions", {})},
        indent=1,
        default=str,
    )
    panels, charts = [], []
    for i, spec in enumerate(specs):
        if _is_panel(spec):
            meta = spec["usermeta"]
            head = f"<h3>{html.escape(meta['title'])}</h3>"
            if meta.get("note"):
                head += f'<p class="note">{html.escape(meta["note"])}</p>'
            panels.append(f'{head}<div id="chart{i}" class="chart"></div>')
        else:
            charts.append(f'<div id="chart{i}" class="chart"></div>')
    body = "<p>No records yet.</p>" if not specs else ""
    story = ""
    if specs:
        story = _timeline_html(timeline(ds)) + _phases_html(ds)
        story = f'<section id="story"><h2>story of the run</h2>{story}</section>'
    if panels:
        body += "<h2>panels</h2>" + "".join(panels)
    if charts:
        body += "<h2>metrics</h2>" if panels else ""
        body += f'<div class="grid">{"".join(charts)}</div>'
    top = f"""<div class="top">{story}<section id="run"><table class="summary">{rows}</table>
<details><summary>config and versions</summary><pre>{html.escape(config)}</pre></details>
</section></div>"""
    return html_page(title, _STYLE, f"{top}\n{body}", specs)


def write_report(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    budget: int | None = None,
) -> Path:
    """Write the report of the run directory ``run`` (default ``RUN/report.html``)."""
    ds = open_run(run)
    target = Path(out) if out is not None else Path(run) / REPORT_NAME
    page = render_report(ds, title=f"grokwidgets report: {Path(run).name}", budget=budget)
    target.write_text(page, encoding="utf-8")
    return target


def png_spec(specs: list[dict[str, Any]], columns: int = 2) -> dict[str, Any]:
    """One Vega-Lite spec of ``specs``: a row per panel, then the charts ``columns`` a row."""
    if columns < 1:
        msg = f"columns must be >= 1, got {columns}."
        raise ValueError(msg)
    datasets: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    charts: list[dict[str, Any]] = []
    for spec in specs:
        inner = {
            k: v for k, v in spec.items() if k not in ("$schema", "config", "datasets", "usermeta")
        }
        datasets.update(spec.get("datasets", {}))
        (rows if _is_panel(spec) else charts).append(inner)
    for i in range(0, len(charts), columns):
        rows.append({"hconcat": charts[i : i + columns]})
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "datasets": datasets,
        "vconcat": rows,
        "resolve": {"scale": {"color": "independent", "strokeDash": "independent"}},
    }


def write_png(
    ds: xr.Dataset,
    out: str | os.PathLike[str],
    columns: int = 2,
    *,
    budget: int | None = None,
    scale: float = 1.0,
) -> Path:
    """A PNG of the report's panels and charts (vl-convert), e.g. for a README."""
    import vl_convert as vlc

    specs = report_specs(ds, budget=budget)
    if not specs:
        msg = "This run has no records yet: nothing to draw."
        raise ValueError(msg)
    Path(out).write_bytes(bytes(vlc.vegalite_to_png(png_spec(specs, columns), scale=scale)))
    return Path(out)
