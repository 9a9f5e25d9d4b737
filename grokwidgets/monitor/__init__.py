"""Monitoring: when to record (cadence), what diagnostics see (probe), and the Monitor."""

from grokwidgets.diagnostics.probe import Probe
from grokwidgets.monitor.cadence import At, Cadence, Every, LogSpaced
from grokwidgets.monitor.monitor import Monitor

__all__ = ["At", "Cadence", "Every", "LogSpaced", "Monitor", "Probe"]
