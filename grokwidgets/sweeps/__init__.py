"""Sweeps: grids of runs on dask.distributed, combined into one Dataset, with phase diagrams.

``gw.sweep(preset, grid={...}, seeds=[...], dir=...)`` runs one point per task on a dask
cluster (:mod:`.runner`), from a plan checked before anything runs (:mod:`.grid`);
``gw.open_sweep(dir)`` combines the runs (:mod:`grokwidgets.store.sweep`); the summaries and
charts of :mod:`grokwidgets.views.sweep` give each point's time to grok, final metrics and
phase, the phase diagram over two sweep dims and the curves of every point.
"""

from grokwidgets.store.sweep import SweepAlignmentWarning, open_sweep
from grokwidgets.sweeps.grid import Point, SweepPlan, plan_sweep
from grokwidgets.sweeps.runner import PointStatus, SweepError, SweepResult, sweep
from grokwidgets.views.sweep import (
    PHASE_LABELS,
    curves_chart,
    final_metrics,
    phase_diagram,
    phase_table,
    phases,
    sweep_dims,
    time_to_grok,
)

__all__ = [
    "PHASE_LABELS",
    "Point",
    "PointStatus",
    "SweepAlignmentWarning",
    "SweepError",
    "SweepPlan",
    "SweepResult",
    "final_metrics",
    "open_sweep",
    "curves_chart",
    "phase_diagram",
    "phase_table",
    "phases",
    "plan_sweep",
    "sweep",
    "sweep_dims",
    "time_to_grok",
]
