"""A run directory: ``run.json``, ``metrics.zarr`` and ``checkpoints/``."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from typing import Any

import xarray as xr

from grokwidgets.store.checkpoints import CHECKPOINT_DIR
from grokwidgets.store.errors import RunDamagedError, StoreError
from grokwidgets.store.records import Index, to_dataset
from grokwidgets.store.run_info import (
    RUN_JSON,
    RunInfo,
    read_run_info,
    update_run_info,
    write_run_info,
)
from grokwidgets.store.zarr_store import COMMIT_FILE, read_store, read_store_lazy

METRICS = "metrics.zarr"
COMPUTED_DIR = "computed"  # diagnostics computed later from checkpoints (store/computed.py)


class RunExistsError(FileExistsError):
    """The run directory already holds a run and neither resuming nor overwriting was asked."""


def versions() -> dict[str, str]:
    """Versions of the software that produced a run."""
    import numpy
    import torch
    import zarr

    from grokwidgets._version import __version__

    return {
        "grokwidgets": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "xarray": xr.__version__,
        "zarr": zarr.__version__,
    }


def holds_run(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` already holds (part of) a run."""
    p = Path(path)
    return any((p / name).exists() for name in (RUN_JSON, METRICS, CHECKPOINT_DIR))


def prepare(path: str | os.PathLike[str], *, resume: bool, overwrite: bool) -> Path:
    """Check that ``path`` can take a new run (or be resumed) and create it.

    Overwriting deletes only what a run writes (``run.json``, ``metrics.zarr``,
    ``checkpoints/``, ``computed/``), never other files in the folder.
    """
    p = Path(path)
    if resume and overwrite:
        msg = "Pass resume=True or overwrite=True, not both."
        raise ValueError(msg)
    if resume:
        if not (p / RUN_JSON).is_file():
            msg = (
                f"Cannot resume: {p} holds no run ({RUN_JSON} is missing). Start it without resume."
            )
            raise FileNotFoundError(msg)
        return p
    if holds_run(p):
        if not overwrite:
            msg = (
                f"{p} already holds a run. Pass resume=True (CLI: grokwidgets resume {p}) to "
                "continue it, overwrite=True (CLI: --overwrite) to replace it, or choose another "
                "directory."
            )
            raise RunExistsError(msg)
        (p / RUN_JSON).unlink(missing_ok=True)
        for name in (METRICS, CHECKPOINT_DIR, COMPUTED_DIR):
            if (p / name).exists():
                shutil.rmtree(p / name)
    p.mkdir(parents=True, exist_ok=True)
    return p


def write_run_json(path: str | os.PathLike[str], info: RunInfo | dict[str, Any]) -> None:
    """Write ``run.json`` atomically (a :class:`RunInfo`, or its JSON object)."""
    write_run_info(path, info if isinstance(info, RunInfo) else RunInfo.from_json(info))


def read_run_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``run.json`` of a run directory as a dict (:func:`read_run_info` gives the type)."""
    return read_run_info(path).to_json()


def update_run_json(path: str | os.PathLike[str], **fields: Any) -> None:
    """Set fields of ``run.json`` (e.g. ``status``)."""
    update_run_info(path, **fields)


def open_run(path: str | os.PathLike[str], *, lazy: bool = False) -> xr.Dataset:
    """Open a run directory as an ``xarray.Dataset`` (step × layer × metric).

    Safe while another process is still writing the run: the Dataset holds the records
    committed at the moment of the call. A run that has no records yet gives an empty Dataset
    (``step`` of length 0), so a view can wait on it.

    Parameters
    ----------
    path : path-like
        The run directory (the one holding ``run.json``).
    lazy : bool
        Back the variables with dask (one chunk each) and read their rows only when
        computed; only the commit and the steps are read now (what ``open_sweep`` does for
        each run of a sweep).

    Returns
    -------
    xarray.Dataset
        ``metrics`` (step × layer × metric), any array variables such as ``spectrum``, metric
        descriptions/units/sources as coordinates on ``metric`` and in ``attrs["metric_info"]``,
        and the run's config, seed, versions and status in ``attrs``.
    """
    p = Path(path)
    if not p.exists():
        msg = f"No run at {p}: the directory does not exist."
        raise FileNotFoundError(msg)
    info = read_run_info(p)
    attrs = {
        "run_dir": str(p),
        "config": info.config,
        "seed": info.seed,
        "status": info.status,
        "versions": info.versions,
        "created": info.created,
    }
    if not (p / METRICS / COMMIT_FILE).exists():
        import numpy as np

        empty = np.zeros((0, 1, 0))
        return to_dataset(np.zeros(0, np.int64), empty, {}, Index(), attrs)
    try:
        if lazy:
            return read_store_lazy(p / METRICS, attrs)
        return read_store(p / METRICS, attrs)
    except RunDamagedError:
        raise  # it names the run, the file and the remedy
    except StoreError as err:
        msg = f"Cannot read the records of {p}: {err}"
        raise StoreError(msg) from err
