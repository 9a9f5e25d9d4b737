"""Monitoring: when to record (cadence), what diagnostics see (probe), and the Monitor."""

from grokwidgets.monitor.cadence import At, Cadence, Every, LogSpaced
from grokwidgets.monitor.monitor import Monitor
from grokwidgets.monitor.probe import Probe

__all__ = ["At", "Cadence", "Every", "LogSpaced", "Monitor", "Probe"]
