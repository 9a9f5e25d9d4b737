"""Append-safe zarr storage for a run's records.

xarray's ``to_zarr(append_dim=...)`` is not atomic: a reader in another process fails on most
opens while a writer appends, and a SIGKILL mid-append can leave a store that will not open
(pydata/xarray#8454, #10766). So this store has one writer which

1. buffers records in memory (``flush_every`` records or ``flush_seconds``),
2. writes them into preallocated arrays that grow geometrically (``region`` writes; zarr 3's
   ``LocalStore`` replaces every chunk and metadata file atomically),
3. and only then publishes the committed record count, with the names along ``layer`` and
   ``metric``, by an atomic ``os.replace`` of ``metrics.zarr/commit.json``.

Readers slice every array to the committed count, so they see a consistent prefix and never a
half-written record. A restarted writer truncates to the committed count, so a crash loses at
most the buffered records.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from grokwidgets.store.records import Index, Record, dense_block, dumps, to_dataset

COMMIT_FILE = "commit.json"
STEP_CHUNK = 256  # rows per chunk: >= 100 steps, so a flush touches one or two chunks
_FORMAT = 1


class StoreError(RuntimeError):
    """A run store that cannot be read or written as asked."""


def _arr(group: zarr.Group, name: str) -> Any:
    """An array of the group (zarr types it as array-or-group)."""
    return group[name]


def _capacity(needed: int, current: int, minimum: int) -> int:
    cap = max(current, minimum)
    while cap < needed:
        cap *= 2
    return cap


class ZarrRecordWriter:
    """The single writer of a run's ``metrics.zarr``.

    Parameters
    ----------
    path : path-like
        The ``metrics.zarr`` directory.
    mode : {"w", "a"}
        ``"w"`` creates a new store (the directory must not exist); ``"a"`` reopens an existing
        one and truncates it to its committed records.
    flush_every : int
        Records buffered before they are written.
    flush_seconds : float
        A buffered record is written at the next append after this many seconds.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        mode: str = "w",
        *,
        flush_every: int = 64,
        flush_seconds: float = 5.0,
    ) -> None:
        if isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every < 1:
            msg = f"flush_every must be an integer >= 1 (records), got {flush_every!r}."
            raise ValueError(msg)
        if not isinstance(flush_seconds, int | float) or not flush_seconds >= 0:
            msg = f"flush_seconds must be a number >= 0 (seconds), got {flush_seconds!r}."
            raise ValueError(msg)
        self.path = Path(path)
        self.flush_every = flush_every
        self.flush_seconds = float(flush_seconds)
        self._buffer: list[Record] = []
        self._tail: Record | None = None  # last written record, kept to merge late values
        self._last_flush = time.monotonic()
        if mode == "w":
            if self.path.exists():
                msg = f"{self.path} already exists; refusing to overwrite recorded data."
                raise StoreError(msg)
            self._group = zarr.open_group(str(self.path), mode="w")
            self.index = Index()
            self.n = 0
            self._commit()
        elif mode == "a":
            commit = read_commit(self.path)
            self._group = zarr.open_group(str(self.path), mode="r+")
            self.index = Index.from_json(commit)
            self.n = int(commit["n"])
        else:
            msg = f"mode must be 'w' or 'a', got {mode!r}."
            raise ValueError(msg)

    # -- writing ---------------------------------------------------------------------------
    @property
    def last_step(self) -> int | None:
        """Step of the newest record, buffered or written."""
        if self._buffer:
            return self._buffer[-1].step
        if self._tail is not None:
            return self._tail.step
        if self.n:
            return int(_arr(self._group, "step")[self.n - 1])
        return None

    def append(self, record: Record) -> None:
        """Buffer ``record``; a record at the newest step is merged into it."""
        last = self.last_step
        if last is not None and record.step < last:
            msg = (
                f"Record for step {record.step} comes after step {last}; steps must not "
                "decrease within a run. Start a new run directory for a new run."
            )
            raise ValueError(msg)
        if last == record.step:
            if self._buffer:
                self._buffer[-1].merge(record)
            else:
                assert self._tail is not None or self.n
                tail = self._tail or self._read_row(self.n - 1)
                tail.merge(record)
                self.n -= 1  # rewrite that row at the next flush
                self._buffer.append(tail)
                self._tail = None
        else:
            self._buffer.append(record)
        if (
            len(self._buffer) >= self.flush_every
            or time.monotonic() - self._last_flush >= self.flush_seconds
        ):
            self.flush()

    def set_metric_info(self, info: dict[str, dict[str, str]]) -> None:
        """Record description/unit/source of metrics (published at the next flush)."""
        self.index.metric_info.update(info)

    def flush(self) -> None:
        """Write buffered records and publish them atomically."""
        self._last_flush = time.monotonic()
        if not self._buffer:
            self._commit()
            return
        for rec in self._buffer:
            self.index.add(rec)
        steps, metrics, arrays = dense_block(self._buffer, self.index)
        start, stop = self.n, self.n + len(self._buffer)
        self._ensure_capacity(stop)
        n_layers, n_metrics = len(self.index.layers), len(self.index.metrics)
        _arr(self._group, "step")[start:stop] = steps
        if n_metrics:
            _arr(self._group, "metrics")[start:stop, :n_layers, :n_metrics] = metrics
        for var, values in arrays.items():
            _arr(self._group, var)[start:stop, :n_layers, : values.shape[2]] = values
        self.n = stop
        self._tail = self._buffer[-1]
        self._buffer = []
        self._commit()

    def truncate(self, max_step: int) -> int:
        """Drop committed records with ``step > max_step`` (to resume); return the count kept."""
        self.flush()
        if self.n:
            steps = _arr(self._group, "step")[: self.n]
            self.n = int(np.searchsorted(steps, max_step, side="right"))
        self._tail = None
        self._commit()
        return self.n

    def close(self) -> None:
        """Flush what is buffered."""
        self.flush()

    # -- internals -------------------------------------------------------------------------
    def _read_row(self, i: int) -> Record:
        index = self.index
        row = _arr(self._group, "metrics")[i, : len(index.layers), : len(index.metrics)]
        rec = Record(step=int(_arr(self._group, "step")[i]))
        for li, layer in enumerate(index.layers):
            for mi, metric in enumerate(index.metrics):
                if not np.isnan(row[li, mi]):
                    rec.values[(layer, metric)] = float(row[li, mi])
        for var, spec in index.arrays.items():
            vals = _arr(self._group, var)[i, : len(index.layers), : spec["size"]]
            for li, layer in enumerate(index.layers):
                if not np.all(np.isnan(vals[li])):
                    rec.arrays.setdefault(var, {})[layer] = vals[li]
        return rec

    def _ensure_capacity(self, rows: int) -> None:
        n_layers, n_metrics = len(self.index.layers), len(self.index.metrics)
        self._grow("step", (rows,), (STEP_CHUNK,), np.int64, ("step",), fill=0)
        if n_metrics:
            self._grow(
                "metrics",
                (rows, n_layers, n_metrics),
                (STEP_CHUNK, 16, 64),
                np.float64,
                ("step", "layer", "metric"),
            )
        for var, spec in self.index.arrays.items():
            self._grow(
                var,
                (rows, n_layers, max(spec["size"], 1)),
                (STEP_CHUNK, 1, 1024),
                np.float64,
                ("step", "layer", spec["dim"]),
            )

    def _grow(
        self,
        name: str,
        needed: tuple[int, ...],
        chunks: tuple[int, ...],
        dtype: Any,
        dims: tuple[str, ...],
        fill: float = np.nan,
    ) -> None:
        if name not in self._group:
            shape = tuple(_capacity(n, 0, c) for n, c in zip(needed, chunks, strict=True))
            self._group.create_array(
                name,
                shape=shape,
                chunks=chunks,
                dtype=dtype,
                fill_value=fill,
                dimension_names=dims,
            )
            return
        arr = _arr(self._group, name)
        if all(n <= s for n, s in zip(needed, arr.shape, strict=True)):
            return
        shape = tuple(_capacity(n, s, 1) for n, s in zip(needed, arr.shape, strict=True))
        arr.resize(shape)  # metadata-only: existing chunks keep their place

    def _commit(self) -> None:
        payload = {"format": _FORMAT, "n": self.n, **self.index.to_json()}
        target = self.path / COMMIT_FILE
        tmp = target.with_name(f".{COMMIT_FILE}.{os.getpid()}.tmp")
        tmp.write_text(dumps(payload))
        os.replace(tmp, target)


def read_commit(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the commit file of a ``metrics.zarr`` store."""
    target = Path(path) / COMMIT_FILE
    try:
        commit: dict[str, Any] = json.loads(target.read_text())
    except FileNotFoundError:
        msg = f"{path} has no {COMMIT_FILE}: it is not a grokwidgets metrics store."
        raise StoreError(msg) from None
    if commit.get("format") != _FORMAT:
        msg = f"{target} has format {commit.get('format')!r}; this grokwidgets reads {_FORMAT}."
        raise StoreError(msg)
    return commit


def read_rows(
    path: str | os.PathLike[str], start: int = 0, attrs: dict[str, Any] | None = None
) -> tuple[xr.Dataset, int]:
    """Committed records ``start:`` of a ``metrics.zarr`` store, and the committed count.

    Safe while a writer appends: only committed rows and columns are read, and only the rows
    asked for, so a view following a long run reads what is new, not the history. The writer
    may rewrite its newest committed row (a late record at that step is merged into it), so a
    follower reads again from its last row seen, ``start = n_seen - 1``.
    """
    if start < 0:
        msg = f"start must be >= 0, got {start}."
        raise ValueError(msg)
    commit = read_commit(path)
    index = Index.from_json(commit)
    n = int(commit["n"])
    rows = max(n - start, 0)
    n_layers, n_metrics = len(index.layers), len(index.metrics)
    if rows == 0:
        steps = np.zeros(0, np.int64)
        metrics = np.zeros((0, n_layers, n_metrics))
        arrays = {v: np.zeros((0, n_layers, s["size"])) for v, s in index.arrays.items()}
    else:
        g = zarr.open_group(str(path), mode="r")
        steps = np.asarray(_arr(g, "step")[start:n])
        if n_metrics:
            metrics = np.asarray(_arr(g, "metrics")[start:n, :n_layers, :n_metrics])
        else:
            metrics = np.zeros((rows, n_layers, 0))
        arrays = {
            var: np.asarray(_arr(g, var)[start:n, :n_layers, : spec["size"]])
            for var, spec in index.arrays.items()
        }
    return to_dataset(steps, metrics, arrays, index, attrs), n


def read_store(
    path: str | os.PathLike[str], attrs: dict[str, Any] | None = None, *, start: int = 0
) -> xr.Dataset:
    """Read the committed records (from row ``start``) of a ``metrics.zarr`` store.

    Safe while a writer appends: only committed rows and columns are read.
    """
    return read_rows(path, start, attrs)[0]


def declared_names(path: str | os.PathLike[str]) -> set[str]:
    """Metric and array names a ``metrics.zarr`` store has declared or recorded so far."""
    if not (Path(path) / COMMIT_FILE).exists():
        return set()
    commit = read_commit(path)
    return set(commit.get("metric_info", {})) | set(commit["metrics"]) | set(commit["arrays"])
