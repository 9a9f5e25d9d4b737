"""Diagnostics computed later from a checkpoint, cached beside the run: ``computed/``.

A run's ``metrics.zarr`` has one writer that appends in step order, possibly in another
process that is still running, so values computed afterwards from a checkpoint (the
Explorer's "compute here", :func:`grokwidgets.replay.compute.compute_at`) never go
there. Each computation (one diagnostic at one step) is one small zarr group,
``<run>/computed/step_XXXXXXXX-<diagnostic>.zarr``, written under a temporary name and moved
into place with ``os.replace``: a reader sees a whole entry or none, and ``metrics.zarr`` is
never touched.

An entry records where it came from: the checkpoint file (its size and modification time)
and the run's ``created`` time from ``run.json``. An entry whose checkpoint has changed since
(the run was overwritten, or resumed from an earlier step so that the checkpoint was written
again) or that belongs to another run is stale: it is ignored, and replaced by the next
computation. :func:`merge_computed` adds the fresh entries to a run Dataset; recorded values
always win over computed ones.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from grokwidgets.store.checkpoints import checkpoint_path
from grokwidgets.store.records import MODEL_LAYER, Index, Record, dense_block, to_dataset
from grokwidgets.store.run_dir import COMPUTED_DIR, open_run
from grokwidgets.store.run_info import RUN_JSON, read_run_info

_FORMAT = 1
_ENTRY = re.compile(r"^step_(\d{8,})-([A-Za-z0-9_.\-]+)\.zarr$")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass
class ComputedEntry:
    """One cached computation: the values of one diagnostic at one step.

    Attributes
    ----------
    step : int
        The checkpoint's step.
    diagnostic : str
        The registered diagnostic's name.
    record : Record
        Its values (``(layer, metric) -> float``) and arrays (``var -> {layer: 1-D}``).
    dims : dict
        Each array variable's extra dimension (``{"spectrum": "eig"}``).
    metric_info : dict
        Description, unit and source of each metric.
    nan_reasons : dict
        ``{metric: {layer: reason}}`` for the NaN values.
    source : dict
        The checkpoint (file name, size, mtime) and run (``created``) it was computed from.
    notes : str
        How state the diagnostic keeps between records was set up (see ``compute_at``).
    path : Path
        The entry's directory.
    """

    step: int
    diagnostic: str
    record: Record
    dims: dict[str, str] = field(default_factory=dict)
    metric_info: dict[str, dict[str, str]] = field(default_factory=dict)
    nan_reasons: dict[str, dict[str, str]] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    path: Path = Path()


def computed_dir(run_dir: str | os.PathLike[str]) -> Path:
    """The folder of a run's computed entries."""
    return Path(run_dir) / COMPUTED_DIR


def entry_path(run_dir: str | os.PathLike[str], step: int, diagnostic: str) -> Path:
    """Path of the entry of ``diagnostic`` at ``step``."""
    if not _NAME.match(diagnostic):
        msg = (
            f"Diagnostic name {diagnostic!r} cannot name a cache entry; use letters, digits, "
            "'_', '.' and '-' only."
        )
        raise ValueError(msg)
    return computed_dir(run_dir) / f"step_{int(step):08d}-{diagnostic}.zarr"


def source_of(run_dir: str | os.PathLike[str], step: int) -> dict[str, Any]:
    """What an entry computed from the checkpoint of ``step`` must match to stay fresh."""
    path = checkpoint_path(run_dir, step)
    stat = path.stat()
    return {
        "checkpoint": path.name,
        "size": int(stat.st_size),
        "mtime_ns": int(stat.st_mtime_ns),
        "run_created": _created(run_dir),
    }


def _created(run_dir: str | os.PathLike[str]) -> str:
    if not (Path(run_dir) / RUN_JSON).is_file():
        return ""
    return read_run_info(run_dir).created


def write_computed(
    run_dir: str | os.PathLike[str],
    diagnostic: str,
    record: Record,
    *,
    dims: dict[str, str] | None = None,
    metric_info: dict[str, dict[str, str]] | None = None,
    nan_reasons: dict[str, dict[str, str]] | None = None,
    notes: str = "",
) -> Path:
    """Cache ``record`` (one diagnostic at one checkpoint step) atomically; return its path.

    The checkpoint of ``record.step`` must exist: the entry remembers it (size, mtime) so a
    later rewrite of that checkpoint makes the entry stale. An earlier entry of the same
    diagnostic and step is replaced.
    """
    target = entry_path(run_dir, record.step, diagnostic)
    source = source_of(run_dir, record.step)
    index = Index()
    index.add(record)
    for var, dim in (dims or {}).items():
        if var in index.arrays:
            index.arrays[var]["dim"] = dim
    _, metrics, arrays = dense_block([record], index)
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{uuid.uuid4().hex}"
    try:
        group = zarr.open_group(str(tmp), mode="w")
        _array(group, "metrics", metrics[0])
        for var, values in arrays.items():
            _array(group, var, values[0])
        group.attrs.update(
            {
                "format": _FORMAT,
                "step": int(record.step),
                "diagnostic": diagnostic,
                "layers": index.layers,
                "metrics": index.metrics,
                "arrays": index.arrays,
                "metric_info": metric_info or {},
                "nan_reasons": nan_reasons or {},
                "source": source,
                "notes": notes,
                "computed": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "entry_id": uuid.uuid4().hex,  # lets a reader see a replacement mid-read
            }
        )
        _publish(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _array(group: zarr.Group, name: str, values: np.ndarray) -> None:
    arr = group.create_array(
        name,
        shape=values.shape,
        chunks=tuple(max(1, n) for n in values.shape),
        dtype=np.float64,
        fill_value=np.nan,
    )
    if values.size:
        arr[...] = values


def _publish(tmp: Path, target: Path) -> None:
    """Move the finished entry ``tmp`` to ``target`` (a directory rename is atomic)."""
    old = None
    if target.exists():
        old = target.with_name(f".old-{uuid.uuid4().hex}")
        try:
            os.replace(target, old)
        except FileNotFoundError:  # another writer replaced it meanwhile
            old = None
    try:
        os.replace(tmp, target)
    except OSError:
        # Another writer published the same entry between our two renames: keep theirs.
        if not target.exists():
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _read_entry(path: Path, tries: int = 20) -> ComputedEntry:
    """Read the entry at ``path``; again when a writer replaced it while it was being read.

    A replacement renames directories, so a read that started on the old entry could take
    chunks of the new one, or miss chunks (zarr would fill NaN): the entry's id is checked
    before and after.
    """
    for _ in range(tries - 1):
        try:
            entry, before = _read_entry_once(path)
            after = zarr.open_group(str(path), mode="r").attrs.get("entry_id")
        except (FileNotFoundError, KeyError):
            time.sleep(0.01)
            continue
        if after == before:
            return entry
    return _read_entry_once(path)[0]


def _read_entry_once(path: Path) -> tuple[ComputedEntry, Any]:
    """The entry at ``path`` and the id it had when reading began."""
    group = zarr.open_group(str(path), mode="r")
    attrs: dict[str, Any] = dict(group.attrs)
    if attrs.get("format") != _FORMAT:
        msg = f"format {attrs.get('format')!r}, this grokwidgets reads {_FORMAT}"
        raise ValueError(msg)
    layers = [str(x) for x in attrs["layers"]]
    metrics = [str(x) for x in attrs["metrics"]]
    record = Record(step=int(attrs["step"]))
    values = np.asarray(group["metrics"][...])  # type: ignore[index]
    for li, layer in enumerate(layers):
        for mi, metric in enumerate(metrics):
            record.values[(layer, metric)] = float(values[li, mi])
    dims: dict[str, str] = {}
    for var, spec in dict(attrs.get("arrays", {})).items():
        dims[str(var)] = str(spec["dim"])
        data = np.asarray(group[var][...])  # type: ignore[index]
        for li, layer in enumerate(layers):
            row = data[li]
            if np.isfinite(row).any():
                record.arrays.setdefault(str(var), {})[layer] = row
    entry = ComputedEntry(
        step=record.step,
        diagnostic=str(attrs["diagnostic"]),
        record=record,
        dims=dims,
        metric_info={k: dict(v) for k, v in dict(attrs.get("metric_info", {})).items()},
        nan_reasons={k: dict(v) for k, v in dict(attrs.get("nan_reasons", {})).items()},
        source=dict(attrs.get("source", {})),
        notes=str(attrs.get("notes", "")),
        path=path,
    )
    return entry, attrs.get("entry_id")


def _read_or_warn(path: Path) -> ComputedEntry | None:
    """An entry, or ``None`` when it vanished or cannot be read (then with a warning).

    :func:`_read_entry` itself reads again when a writer replaced the entry meanwhile.
    """
    try:
        return _read_entry(path)
    except Exception as err:  # noqa: BLE001 (a broken cache entry must not hide the run)
        if path.exists():
            warnings.warn(
                f"Ignoring the cached entry {path}, which cannot be read ({err}); "
                "delete it (it is computed again on demand).",
                stacklevel=3,
            )
        return None


def _fresh(run_dir: Path, entry: ComputedEntry, created: str) -> bool:
    src = entry.source
    if src.get("run_created", "") != created:
        return False
    ckpt = checkpoint_path(run_dir, entry.step)
    if not ckpt.is_file():
        return True  # the checkpoint was pruned; the values still describe this run
    stat = ckpt.stat()
    return bool(src.get("size") == stat.st_size and src.get("mtime_ns") == stat.st_mtime_ns)


def read_computed(run_dir: str | os.PathLike[str]) -> list[ComputedEntry]:
    """The fresh cached entries of a run, by step then diagnostic.

    Stale entries (their checkpoint or run has changed) are left out; an entry that cannot
    be read is left out with a warning naming it (delete it; it is recomputed on demand).
    """
    root = Path(run_dir)
    folder = computed_dir(root)
    if not folder.is_dir():
        return []
    created = _created(root)
    out: list[ComputedEntry] = []
    for path in sorted(folder.iterdir()):
        if not _ENTRY.match(path.name):
            continue  # temporary or replaced entries of a writer
        entry = _read_or_warn(path)
        if entry is not None and _fresh(root, entry, created):
            out.append(entry)
    out.sort(key=lambda e: (e.step, e.diagnostic))
    return out


def computed_names(entries: list[ComputedEntry]) -> dict[int, set[str]]:
    """The diagnostics cached at each step."""
    out: dict[int, set[str]] = {}
    for e in entries:
        out.setdefault(e.step, set()).add(e.diagnostic)
    return out


def merge_computed(ds: xr.Dataset, entries: list[ComputedEntry]) -> xr.Dataset:
    """``ds`` with the cached entries' values added where it has none (recorded values win).

    Steps, layers, metrics and array variables that only the entries have are added (steps in
    order). ``attrs["computed"]`` lists what was merged: ``{diagnostic: [steps]}``.

    Parameters
    ----------
    ds : xarray.Dataset
        A run Dataset (``metrics``: step × layer × metric, arrays step × layer × dim).
    entries : list of ComputedEntry
        From :func:`read_computed`.
    """
    if not entries:
        return ds
    old_steps = [int(s) for s in ds["step"].values]
    steps = sorted(set(old_steps) | {e.step for e in entries})
    layers = [str(x) for x in ds["layer"].values]
    metrics = [str(x) for x in ds["metric"].values]
    arrays: dict[str, dict[str, Any]] = {}
    for var in ds.data_vars:
        if var == "metrics":
            continue
        da = ds[var]
        if da.dims[:2] != ("step", "layer") or da.ndim != 3:
            msg = (
                f"Cannot merge computed values into this Dataset: variable {var!r} has dims "
                f"{da.dims}, not (step, layer, <dim>)."
            )
            raise ValueError(msg)
        arrays[str(var)] = {"dim": str(da.dims[2]), "size": int(da.shape[2])}
    for e in entries:
        for layer, metric in e.record.values:
            if layer not in layers:
                layers.append(layer)
            if metric not in metrics:
                metrics.append(metric)
        for var, per_layer in e.record.arrays.items():
            spec = arrays.setdefault(var, {"dim": e.dims.get(var, f"{var}_dim"), "size": 0})
            for layer, row in per_layer.items():
                if layer not in layers:
                    layers.append(layer)
                spec["size"] = max(spec["size"], int(np.asarray(row).size))
    s_pos = {s: i for i, s in enumerate(steps)}
    l_pos = {x: i for i, x in enumerate(layers)}
    m_pos = {x: i for i, x in enumerate(metrics)}
    rows = [s_pos[s] for s in old_steps]
    n_old_l, n_old_m = ds.sizes["layer"], ds.sizes["metric"]
    values = np.full((len(steps), len(layers), len(metrics)), np.nan)
    values[rows, :n_old_l, :n_old_m] = ds["metrics"].transpose("step", "layer", "metric").values
    data: dict[str, np.ndarray] = {}
    for var, spec in arrays.items():
        data[var] = np.full((len(steps), len(layers), spec["size"]), np.nan)
        if var in ds:
            old = ds[var].values
            data[var][rows, :n_old_l, : old.shape[2]] = old
    merged: dict[str, list[int]] = {}
    for e in entries:
        i = s_pos[e.step]
        for (layer, metric), v in e.record.values.items():
            cell = (i, l_pos[layer], m_pos[metric])
            if np.isnan(values[cell]):
                values[cell] = v
        for var, per_layer in e.record.arrays.items():
            for layer, row in per_layer.items():
                flat = np.asarray(row, dtype=np.float64).ravel()
                target = data[var][i, l_pos[layer]]
                if not np.isfinite(target).any():
                    target[: flat.size] = flat
        merged.setdefault(e.diagnostic, []).append(e.step)
    info = {str(k): dict(v) for k, v in dict(ds.attrs.get("metric_info", {})).items()}
    reasons = {str(k): dict(v) for k, v in dict(ds.attrs.get("nan_reasons", {})).items()}
    for e in entries:
        for metric, mi in e.metric_info.items():
            info.setdefault(metric, mi)
        for metric, whys in e.nan_reasons.items():
            for layer, why in whys.items():
                reasons.setdefault(metric, {}).setdefault(layer, f"step {e.step}: {why}")
    index = Index(
        layers=layers if layers else [MODEL_LAYER],
        metrics=metrics,
        arrays=arrays,
        metric_info=info,
        nan_reasons=reasons,
    )
    attrs = {k: v for k, v in ds.attrs.items() if k not in ("metric_info", "nan_reasons")}
    out = to_dataset(np.asarray(steps, np.int64), values, data, index, attrs)
    done = {k: sorted(set(v)) for k, v in dict(ds.attrs.get("computed", {})).items()}
    for name, at in merged.items():
        done[name] = sorted(set(done.get(name, [])) | set(at))
    out.attrs["computed"] = done
    return out


def open_run_with_computed(path: str | os.PathLike[str]) -> xr.Dataset:
    """:func:`~grokwidgets.store.open_run` with the run's fresh computed entries merged in."""
    return merge_computed(open_run(path), read_computed(path))
