"""grokwidgets: watch how neural networks generalize.

Record representation, kernel, spectral and other diagnostics of any PyTorch training run
into one labelled ``xarray.Dataset`` (step × layer × metric) stored as zarr, with
safetensors checkpoints beside it.
"""

__version__ = "0.1.0"

from grokwidgets import diagnostics, models, tasks, widgets  # noqa: E402
from grokwidgets.monitor import Cadence, Monitor  # noqa: E402
from grokwidgets.store import open_run  # noqa: E402
from grokwidgets.train import Run, train  # noqa: E402

__all__ = [
    "Cadence",
    "Monitor",
    "Run",
    "__version__",
    "diagnostics",
    "models",
    "open_run",
    "tasks",
    "train",
    "widgets",
]
