"""Static views of a run: self-contained HTML reports and PNGs from the same Vega-Lite specs."""

from grokwidgets.report.html import render_report, report_specs, write_png, write_report
from grokwidgets.report.specs import accuracy_chart, metric_chart, metric_frame

__all__ = [
    "accuracy_chart",
    "metric_chart",
    "metric_frame",
    "render_report",
    "report_specs",
    "write_png",
    "write_report",
]
