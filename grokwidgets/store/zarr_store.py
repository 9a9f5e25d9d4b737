"""Append-safe zarr storage for a run's records.

xarray's ``to_zarr(append_dim=...)`` is not atomic: a reader in another process fails on most
opens while a writer appends, and a SIGKILL mid-append can leave a store that will not open
(pydata/xarray#8454, #10766). So this store has one writer (the run directory's
:class:`~grokwidgets.store.lock.WriterLock` keeps it one) which

1. buffers records in memory (``flush_every`` records or ``flush_seconds``),
2. writes them into preallocated arrays that grow geometrically (``region`` writes; zarr 3's
   ``LocalStore`` replaces every chunk and metadata file atomically),
3. and only then publishes the committed row count, with the names along ``layer`` and
   ``metric``, by an atomic ``os.replace`` of ``metrics.zarr/commit.json``.

The invariant readers rely on: **nothing uncommitted is ever visible.** Within an *epoch* the
rows ``[0, n)`` of a commit are never written again: the writer writes only rows ``>= n`` and
then publishes a larger ``n``. A late record for the newest written step (``mon.log(step, ...)``
after a flush at ``step``) is not merged into that row in place but written as a new row with
the merged values; readers keep the last row of each step. Only truncation (``resume`` from a
checkpoint, ``check --repair``) makes rows writable again, and it first publishes a new epoch;
a reader whose read spanned an epoch change reads again. So every value a reader sees was
committed, and a row is never half old, half new.

A restarted writer truncates to the committed count, so a crash loses at most the buffered
records. A damaged file (``commit.json``, zarr metadata, a chunk) is reported as a
:class:`~grokwidgets.store.errors.RunDamagedError` naming it and the remedy.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from grokwidgets.store.errors import RunDamagedError, StoreError, repair_hint
from grokwidgets.store.jsonfile import read_json_object, write_json_atomic
from grokwidgets.store.records import Index, Record, dense_block, to_dataset

__all__ = [
    "COMMIT_FILE",
    "STEP_CHUNK",
    "RunDamagedError",
    "StoreError",
    "ZarrRecordWriter",
    "chunk_file",
    "chunk_region",
    "chunks_under",
    "declared_names",
    "read_commit",
    "read_committed",
    "read_rows",
    "read_store",
]

COMMIT_FILE = "commit.json"
STEP_CHUNK = 256  # rows per chunk: >= 100 steps, so a flush touches one or two chunks
_FORMAT = 1
_READ_TRIES = 20  # reads spanning a truncation are retried this often


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

    Attributes
    ----------
    n : int
        Committed rows (a step written again after a late record has two rows).
    generation : int
        Commits published so far (every commit increments it).
    epoch : int
        Truncations so far; rows below ``n`` are never rewritten within an epoch.
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
            self.n = self.generation = self.epoch = 0
            self._commit(0)
        elif mode == "a":
            commit = read_commit(self.path)
            try:
                self._group = zarr.open_group(str(self.path), mode="r+")
            except Exception as err:  # noqa: BLE001 (damaged metadata; named below)
                raise _damaged(self.path, self.path / "zarr.json", err) from err
            self.index = Index.from_json(commit)
            self.n = int(commit["n"])
            self.generation = int(commit.get("generation", 0))
            self.epoch = int(commit.get("epoch", 0))
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
                # The step's row is committed and stays as it is: the merged values go into a
                # new row, which readers prefer (the last row of a step wins).
                assert self._tail is not None or self.n
                tail = self._tail if self._tail is not None else self._read_row(self.n - 1)
                self._buffer.append(tail.merged(record))
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
        """Write buffered records and publish them atomically.

        On a failure (a full disk, a failed rename) the committed records are untouched, the
        buffer is kept, and :class:`StoreError` names what failed.
        """
        self._last_flush = time.monotonic()
        if not self._buffer:
            self._commit(self.n)
            return
        for rec in self._buffer:
            self.index.add(rec)
        steps, metrics, arrays = dense_block(self._buffer, self.index)
        start, stop = self.n, self.n + len(self._buffer)
        n_layers, n_metrics = len(self.index.layers), len(self.index.metrics)
        try:
            self._ensure_capacity(stop)
            _arr(self._group, "step")[start:stop] = steps
            if n_metrics:
                _arr(self._group, "metrics")[start:stop, :n_layers, :n_metrics] = metrics
            for var, values in arrays.items():
                _arr(self._group, var)[start:stop, :n_layers, : values.shape[2]] = values
        except Exception as err:
            msg = (
                f"Could not write records {start}..{stop - 1} (steps {int(steps[0])}.."
                f"{int(steps[-1])}) to {self.path}: {err}. The {self.n} records committed "
                "before are intact; the run can be resumed from its last checkpoint."
            )
            raise StoreError(msg) from err
        self._commit(stop)
        self.n = stop
        self._tail = self._buffer[-1]
        self._buffer = []

    def truncate(self, max_step: int) -> int:
        """Drop committed records with ``step > max_step`` (to resume); return the count kept.

        Publishes a new epoch first, so no reader mistakes the rows written next for the ones
        it had been shown.
        """
        self.flush()
        kept = 0
        if self.n:
            steps = _read_array(self.path, self._group, "step", (slice(0, self.n),))
            kept = int(np.searchsorted(steps, max_step, side="right"))
        return self.truncate_rows(kept)

    def truncate_rows(self, n: int) -> int:
        """Keep the first ``n`` committed rows (``check --repair``), publishing a new epoch."""
        self.flush()
        if n < self.n:
            self.epoch += 1
            self._commit(n)
            self.n = n
        self._tail = None
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

    def _commit(self, n: int) -> None:
        """Publish ``n`` rows and the index: write ``commit.json`` aside, then rename it."""
        generation = self.generation + 1
        payload = {
            "format": _FORMAT,
            "n": n,
            "generation": generation,
            "epoch": self.epoch,
            **self.index.to_json(),
        }
        target = self.path / COMMIT_FILE
        try:
            write_json_atomic(target, payload)
        except OSError as err:
            msg = (
                f"Could not publish the commit of {self.path} ({err}); {target} still holds "
                f"the previous {self.n} records, intact."
            )
            raise StoreError(msg) from err
        self.generation = generation


def _damaged(store: Path, file: Path, err: BaseException | str) -> RunDamagedError:
    run = store.parent
    msg = f"The run {run} is damaged: {file} cannot be read ({err}). {repair_hint(run)}"
    return RunDamagedError(msg, run, file)


def read_commit(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the commit file of a ``metrics.zarr`` store.

    Raises
    ------
    StoreError
        If ``path`` is not a metrics store (no commit file) or of another format.
    RunDamagedError
        If the commit file is damaged.
    """
    store = Path(path)
    target = store / COMMIT_FILE
    try:
        commit = read_json_object(target)
        if commit.get("format") == _FORMAT:
            Index.from_json(commit)  # the names are there and well formed
            int(commit["n"])
    except FileNotFoundError:
        msg = f"{path} has no {COMMIT_FILE}: it is not a grokwidgets metrics store."
        raise StoreError(msg) from None
    except (ValueError, KeyError, TypeError) as err:
        raise _damaged(store, target, err) from err
    if commit.get("format") != _FORMAT:
        msg = f"{target} has format {commit.get('format')!r}; this grokwidgets reads {_FORMAT}."
        raise StoreError(msg)
    return commit


def read_committed(
    path: str | os.PathLike[str], start: int = 0, attrs: dict[str, Any] | None = None
) -> tuple[xr.Dataset, dict[str, Any]]:
    """The committed records of a ``metrics.zarr`` store from row ``start``, and the commit.

    Reads the commit, then the rows it publishes, then the commit again: if a truncation
    (a new epoch) happened meanwhile, the rows may have been rewritten, so it reads again.
    Rows of the same step (a late record) are reduced to the last one.
    """
    if start < 0:
        msg = f"start must be >= 0, got {start}."
        raise ValueError(msg)
    store = Path(path)
    for _ in range(_READ_TRIES):
        commit = read_commit(store)
        ds = _read_rows(store, commit, start, attrs)
        if int(read_commit(store).get("epoch", 0)) == int(commit.get("epoch", 0)):
            return ds, commit
    msg = f"{store} was truncated {_READ_TRIES} times while being read; try again later."
    raise StoreError(msg)


def _read_rows(
    store: Path, commit: dict[str, Any], start: int, attrs: dict[str, Any] | None
) -> xr.Dataset:
    index = Index.from_json(commit)
    n = int(commit["n"])
    rows = max(n - start, 0)
    n_layers, n_metrics = len(index.layers), len(index.metrics)
    if rows == 0:
        steps = np.zeros(0, np.int64)
        metrics = np.zeros((0, n_layers, n_metrics))
        arrays = {v: np.zeros((0, n_layers, s["size"])) for v, s in index.arrays.items()}
        return to_dataset(steps, metrics, arrays, index, attrs)
    try:
        group = zarr.open_group(str(store), mode="r")
    except Exception as err:  # noqa: BLE001 (a damaged zarr.json; named)
        raise _damaged(store, store / "zarr.json", err) from err
    steps = _read_array(store, group, "step", (slice(start, n),))
    if n_metrics:
        where = (slice(start, n), slice(0, n_layers), slice(0, n_metrics))
        metrics = _read_array(store, group, "metrics", where)
    else:
        metrics = np.zeros((rows, n_layers, 0))
    arrays = {
        var: _read_array(
            store, group, var, (slice(start, n), slice(0, n_layers), slice(0, s["size"]))
        )
        for var, s in index.arrays.items()
    }
    # A late record wrote its step again: keep the last row of each step.
    keep = np.ones(rows, dtype=bool)
    keep[:-1] = steps[1:] != steps[:-1]
    if not keep.all():
        steps, metrics = steps[keep], metrics[keep]
        arrays = {var: values[keep] for var, values in arrays.items()}
    return to_dataset(steps, metrics, arrays, index, attrs)


def _read_array(store: Path, group: zarr.Group, name: str, where: tuple[slice, ...]) -> Any:
    """``group[name][where]`` as numpy; a damaged metadata file or chunk is named."""
    try:
        arr = _arr(group, name)
    except Exception as err:  # noqa: BLE001 (damaged or missing metadata; named)
        raise _damaged(store, store / name / "zarr.json", err) from err
    try:
        return np.asarray(arr[where])
    except Exception as err:  # noqa: BLE001 (a chunk that does not decode; find which)
        bad = next(_bad_chunks(store, arr, name, where), None)
        raise _damaged(store, bad or store / name, err) from err


def chunks_under(arr: Any, where: tuple[slice, ...]) -> list[tuple[int, ...]]:
    """Indices of the chunks of ``arr`` that hold ``arr[where]``, in order."""
    ranges = []
    for dim, sl in enumerate(where):
        lo, hi = sl.start or 0, sl.stop if sl.stop is not None else arr.shape[dim]
        if hi <= lo:
            return []
        ranges.append(range(lo // arr.chunks[dim], (hi - 1) // arr.chunks[dim] + 1))
    return [tuple(int(i) for i in idx) for idx in itertools.product(*ranges)]


def chunk_region(arr: Any, idx: tuple[int, ...]) -> tuple[slice, ...]:
    """The selection of ``arr`` that is its chunk ``idx``."""
    return tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, arr.chunks, strict=True))


def chunk_file(store: Path, name: str, idx: tuple[int, ...]) -> Path:
    """The file of chunk ``idx`` of the array ``name`` (zarr 3's default key encoding)."""
    return store / name / "c" / "/".join(str(i) for i in idx)


def _bad_chunks(store: Path, arr: Any, name: str, where: tuple[slice, ...]) -> Iterator[Path]:
    """The chunk files of ``arr`` under ``where`` that fail to decode, in order."""
    for idx in chunks_under(arr, where):
        try:
            arr[chunk_region(arr, idx)]
        except Exception:  # noqa: BLE001 (this is the search for the failing chunk)
            yield chunk_file(store, name, idx)


def read_rows(
    path: str | os.PathLike[str], start: int = 0, attrs: dict[str, Any] | None = None
) -> tuple[xr.Dataset, int]:
    """Committed records ``start:`` of a ``metrics.zarr`` store, and the committed row count.

    Safe while a writer appends: only committed rows and columns are read, and only the rows
    asked for, so a view following a long run reads what is new, not the history. A late
    record at the newest step is written as a new row (readers keep the last row of a step),
    so a follower reads again from its last row seen, ``start = n_seen - 1``.
    """
    ds, commit = read_committed(path, start, attrs)
    return ds, int(commit["n"])


def read_store(
    path: str | os.PathLike[str], attrs: dict[str, Any] | None = None, *, start: int = 0
) -> xr.Dataset:
    """Read the committed records (from row ``start``) of a ``metrics.zarr`` store.

    Safe while a writer appends: only committed rows and columns are read.
    """
    return read_committed(path, start, attrs)[0]


def declared_names(path: str | os.PathLike[str]) -> set[str]:
    """Metric and array names a ``metrics.zarr`` store has declared or recorded so far."""
    if not (Path(path) / COMMIT_FILE).exists():
        return set()
    commit = read_commit(path)
    return set(commit.get("metric_info", {})) | set(commit["metrics"]) | set(commit["arrays"])


def read_store_lazy(
    path: str | os.PathLike[str], attrs: dict[str, Any] | None = None
) -> xr.Dataset:
    """The committed records of a ``metrics.zarr`` store, as a Dataset backed by dask.

    Reads only the commit and the steps now; each variable is one dask chunk that reads its
    committed rows when computed. If the run was truncated (resumed from an earlier
    checkpoint, repaired) in between, computing raises a :class:`StoreError` instead of
    returning rows that no longer belong together: open it again.
    """
    import dask
    import dask.array as da

    store = Path(path)
    commit = read_commit(store)
    n = int(commit["n"])
    if n == 0:
        return _read_rows(store, commit, 0, attrs)
    index = Index.from_json(commit)
    epoch = int(commit.get("epoch", 0))
    try:
        group = zarr.open_group(str(store), mode="r")
    except Exception as err:  # noqa: BLE001 (a damaged zarr.json; named)
        raise _damaged(store, store / "zarr.json", err) from err
    steps = _read_array(store, group, "step", (slice(0, n),))
    keep = np.ones(n, dtype=bool)
    keep[:-1] = steps[1:] != steps[:-1]  # a late record wrote its step again: the last row wins

    def load(name: str, columns: tuple[int, int]) -> np.ndarray:
        g = zarr.open_group(str(store), mode="r")
        values = _read_array(
            store, g, name, (slice(0, n), slice(0, columns[0]), slice(0, columns[1]))
        )
        if int(read_commit(store).get("epoch", 0)) != epoch:
            msg = f"{store} was truncated since it was opened lazily; open it again."
            raise StoreError(msg)
        return np.asarray(values[keep])

    def lazy(name: str, columns: tuple[int, int]) -> Any:
        dtype = _arr(group, name).dtype
        shape = (int(keep.sum()), *columns)
        return da.from_delayed(dask.delayed(load, pure=True)(name, columns), shape, dtype=dtype)

    n_layers = len(index.layers)
    metrics = (
        lazy("metrics", (n_layers, len(index.metrics)))
        if index.metrics
        else (np.zeros((int(keep.sum()), n_layers, 0)))
    )
    arrays = {var: lazy(var, (n_layers, int(s["size"]))) for var, s in index.arrays.items()}
    return to_dataset(steps[keep], metrics, arrays, index, attrs)
