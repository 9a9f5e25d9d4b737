"""Replay: rebuild a run from its directory, recompute diagnostics at its checkpoints.

Above training and the monitor (it drives both), below the widgets (the Explorer's backend).
"""

from grokwidgets.replay.compute import computable_at, compute_at, recorded_at
from grokwidgets.replay.restore import RestoredRun, restore_run, resume_run

__all__ = ["RestoredRun", "computable_at", "compute_at", "recorded_at", "restore_run", "resume_run"]
