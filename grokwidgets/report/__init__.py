"""Static views of a run or a sweep: self-contained HTML reports and PNGs (Vega-Lite specs).

A report shows the widgets' panels of the diagnostic families recorded (the specs of
:mod:`grokwidgets.views.panels`, data inlined and downsampled as in the widgets), then
a chart of every other recorded metric.
"""

from grokwidgets.report.html import render_report, report_specs, write_png, write_report
from grokwidgets.report.sweep import render_sweep_report, write_sweep_png, write_sweep_report
from grokwidgets.views.charts import accuracy_chart, metric_chart, metric_frame

__all__ = [
    "accuracy_chart",
    "metric_chart",
    "metric_frame",
    "render_report",
    "render_sweep_report",
    "report_specs",
    "write_png",
    "write_report",
    "write_sweep_png",
    "write_sweep_report",
]
