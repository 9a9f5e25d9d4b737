"""grokwidgets: watch how neural networks generalize.

Record representation, kernel, spectral and other diagnostics of any PyTorch training run
into one labelled ``xarray.Dataset`` (step × layer × metric) stored as zarr, with
safetensors checkpoints beside it.
"""

from grokwidgets import diagnostics, models, notebook, sweeps, tasks, widgets  # noqa: E402
from grokwidgets._version import __version__
from grokwidgets.monitor import Cadence, Monitor  # noqa: E402

# Names users reach through ``gw.diagnostics`` that live above that leaf package (they drive
# the store and training): attached here, at the top, so no layer imports upwards.
from grokwidgets.monitor import watcher as _watcher  # noqa: E402
from grokwidgets.replay import compute_at as _compute_at  # noqa: E402
from grokwidgets.store import check_run, open_run  # noqa: E402
from grokwidgets.sweeps import open_sweep, sweep  # noqa: E402
from grokwidgets.train import Run, train  # noqa: E402

diagnostics.compute_at = _compute_at  # type: ignore[attr-defined]
diagnostics.detector.PhaseWatcher = _watcher.PhaseWatcher  # type: ignore[attr-defined]
diagnostics.detector.PhaseEvent = _watcher.PhaseEvent  # type: ignore[attr-defined]

__all__ = [
    "Cadence",
    "Monitor",
    "Run",
    "__version__",
    "check_run",
    "diagnostics",
    "models",
    "notebook",
    "open_run",
    "open_sweep",
    "sweep",
    "sweeps",
    "tasks",
    "train",
    "widgets",
]
