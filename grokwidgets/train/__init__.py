"""Training: the deterministic loop, optimizers (incl. Muon), checkpoint/resume."""

from grokwidgets.train.loop import BatchSchedule, NonFiniteLossError, Run, train
from grokwidgets.train.optimizers import OPTIMIZERS, Muon, make_optimizer

__all__ = [
    "OPTIMIZERS",
    "BatchSchedule",
    "Muon",
    "NonFiniteLossError",
    "Run",
    "make_optimizer",
    "train",
]
