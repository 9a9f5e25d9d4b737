"""Run storage: append-safe zarr records, safetensors checkpoints, run directories."""

from grokwidgets.store.check import CheckReport, check_run
from grokwidgets.store.checkpoints import (
    Checkpoint,
    CheckpointError,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from grokwidgets.store.computed import open_run_with_computed
from grokwidgets.store.errors import RunDamagedError, RunLockedError
from grokwidgets.store.lock import WriterLock
from grokwidgets.store.records import MODEL_LAYER, Record
from grokwidgets.store.run_dir import RunExistsError, open_run, read_run_json
from grokwidgets.store.zarr_store import StoreError, ZarrRecordWriter, read_store

__all__ = [
    "MODEL_LAYER",
    "CheckReport",
    "Checkpoint",
    "CheckpointError",
    "Record",
    "RunDamagedError",
    "RunExistsError",
    "RunLockedError",
    "StoreError",
    "ZarrRecordWriter",
    "WriterLock",
    "check_run",
    "checkpoint_path",
    "list_checkpoints",
    "load_checkpoint",
    "open_run",
    "open_run_with_computed",
    "read_run_json",
    "read_store",
    "save_checkpoint",
]
