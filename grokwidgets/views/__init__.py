"""Dataset -> tables -> Vega-Lite specs, shared by widgets and report.

Pure code (numpy, xarray, Altair, vl-convert; no anywidget): :mod:`~grokwidgets.views.tables`
reads a run Dataset into tables, :mod:`~grokwidgets.views.panels` and
:mod:`~grokwidgets.views.charts` draw them as Vega-Lite specs, :mod:`~grokwidgets.views.story`
tells the story of a run (phase bands, time to grok, a timeline of events in words),
:mod:`~grokwidgets.views.downsample` and :mod:`~grokwidgets.views.stream` bound the rows sent,
:mod:`~grokwidgets.views.frame` encodes them for the front end and
:mod:`~grokwidgets.views.vega` gives the offline Vega script. Import from the modules.
"""
