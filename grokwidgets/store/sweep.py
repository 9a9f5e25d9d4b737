"""A sweep directory on disk: its manifest (``sweep.json``) and its runs as one Dataset.

A sweep directory holds one run directory per grid point, named from the point
(``weight_decay=0.1,seed=0/``), each with the point in its ``run.json`` (``config["sweep"]``),
and ``sweep.json``: the base config, the grid, the seeds and every point. :func:`open_sweep`
combines the runs along the sweep dims, lazily.
"""

from __future__ import annotations

import glob
import itertools
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from grokwidgets.store.jsonfile import read_json_object, write_json_atomic
from grokwidgets.store.run_dir import open_run
from grokwidgets.store.run_info import RUN_JSON, now, read_run_info

__all__ = [
    "SWEEP_FORMAT",
    "SWEEP_JSON",
    "SweepAlignmentWarning",
    "open_sweep",
    "read_sweep_json",
    "write_sweep_json",
]

SWEEP_JSON = "sweep.json"
SWEEP_FORMAT = "grokwidgets-sweep"

#: Dimensions of one run's Dataset; every other dimension of a sweep is a sweep dimension.
RUN_DIMS = ("step", "layer", "metric")
_METRIC_COORDS = ("metric_description", "metric_unit", "metric_source")
_RUN_ATTRS = ("run_dir", "config", "seed", "status", "versions", "created", "nan_reasons")


class SweepAlignmentWarning(UserWarning):
    """The runs of a sweep recorded different steps, layers or metrics (NaN-padded)."""


def read_sweep_json(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of the sweep directory ``path``, or ``None`` if it has none."""
    target = Path(path) / SWEEP_JSON
    if not target.is_file():
        return None
    obj = read_json_object(target)
    if obj.get("format") != SWEEP_FORMAT:
        msg = f"{target} is not a grokwidgets sweep manifest (format {obj.get('format')!r})."
        raise ValueError(msg)
    return obj


def write_sweep_json(path: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    """Write the manifest of the sweep directory ``path`` atomically (stamped ``updated``)."""
    out = {**manifest, "format": SWEEP_FORMAT, "updated": now()}
    out.setdefault("created", out["updated"])
    write_json_atomic(Path(path) / SWEEP_JSON, out)


# -- which runs, at which coordinates ------------------------------------------------------------


def _lookup(config: dict[str, Any], key: str) -> Any:
    """``key`` (``train.lr``, ``seed``, or an unambiguous short name) in a run's config."""
    if key == "seed" or "." not in key:
        if key in config and not isinstance(config[key], dict):
            return config[key]
        owners = [s for s in ("task", "model", "train") if key in (config.get(s) or {})]
        if len(owners) == 1:
            return config[owners[0]][key]
        msg = f"{key!r} is in {'several sections' if owners else 'no section'} of the config."
        raise KeyError(msg)
    section, name = key.split(".", 1)
    return (config.get(section) or {})[name]


def _runs_and_coords(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], dim: str | Sequence[str] | None
) -> tuple[list[Path], list[str], list[dict[str, Any]], Path | None]:
    dims = [dim] if isinstance(dim, str) else list(dim or [])
    root: Path | None = None
    if isinstance(path, (str, os.PathLike)):
        text = os.fspath(path)
        manifest = read_sweep_json(text) if Path(text).is_dir() else None
        if manifest is not None:
            root = Path(text)
            runs = [root / p["name"] for p in manifest["points"]]
            runs = [r for r in runs if (r / RUN_JSON).is_file()]
            if not dims:
                dims = list(manifest["dims"])
        elif any(c in text for c in "*?["):
            runs = sorted(Path(p) for p in glob.glob(text) if (Path(p) / RUN_JSON).is_file())
        elif Path(text).is_dir():
            runs = sorted(p for p in Path(text).iterdir() if (p / RUN_JSON).is_file())
        else:
            msg = f"No sweep at {text}: no such directory, and no run matches it as a pattern."
            raise FileNotFoundError(msg)
    else:
        runs = [Path(p) for p in path]
    if not runs:
        msg = f"No runs found at {path} (a run directory holds {RUN_JSON})."
        raise FileNotFoundError(msg)
    coords = []
    for run in runs:
        cfg = read_run_info(run).config
        point = (cfg.get("sweep") or {}).get("point") or {}
        if not dims:
            dims = list(point)
        values = {}
        for d in dims:
            if d in point:
                values[d] = point[d]
                continue
            try:
                values[d] = _lookup(cfg, d)
            except KeyError as err:
                msg = f"The run {run} has no {d!r} to place it along that dimension ({err})."
                raise ValueError(msg) from None
        coords.append(values)
    if not dims:
        msg = (
            f"The runs at {path} are not points of a gw.sweep and no dim was given: pass "
            "dim= (a config field such as 'weight_decay' or 'model.alpha') to combine them."
        )
        raise ValueError(msg)
    return runs, dims, coords, root


# -- combine -------------------------------------------------------------------------------------


def _label(coords: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in coords.items())


def _warn_misaligned(datasets: list[xr.Dataset], labels: list[str], what: str) -> None:
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, ds in enumerate(datasets):
        groups.setdefault(tuple(ds[what].values.tolist()), []).append(i)
    if len(groups) < 2:
        return
    ordered = sorted(groups.values(), key=len, reverse=True)

    def describe(idx: list[int]) -> str:
        ds = datasets[idx[0]]
        size = ds.sizes[what]
        if what == "step":
            last = int(ds["step"].values[-1]) if size else None
            shape = f"{size} records" + (f" to step {last}" if last is not None else "")
        else:
            shape = f"{size} {what}s"
        names = ", ".join(labels[i] for i in idx[:4]) + (" ..." if len(idx) > 4 else "")
        return f"{shape}: {names}"

    lines = "; ".join(describe(g) for g in ordered)
    msg = (
        f"The runs of this sweep differ in their {what}s ({lines}). They are aligned on the "
        f"union of {what}s, with NaN where a run has no record."
    )
    warnings.warn(msg, SweepAlignmentWarning, stacklevel=3)


def open_sweep(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    dim: str | Sequence[str] | None = None,
) -> xr.Dataset:
    """Every run of a sweep as one ``xarray.Dataset``, sweep dims in front of step × layer × metric.

    Parameters
    ----------
    path : path-like, glob pattern, or sequence of run directories
        A directory written by ``gw.sweep`` (its ``sweep.json`` lists the points), a directory
        of runs, a pattern such as ``"runs/wd_*"``, or the run directories themselves.
    dim : str or sequence of str, optional
        The sweep dimension(s). Default: the sweep's own (its grid keys and ``seed``).
        For runs not made by ``gw.sweep``, a config field of each run's ``run.json``
        (``"weight_decay"``, ``"train.lr"``, ``"seed"``, ``"model.alpha"``).

    Returns
    -------
    xarray.Dataset
        Lazy and dask-backed: only each run's commit and steps are read, a variable's values
        when computed. When the points form a full grid, one dimension per sweep dim (sorted
        values); otherwise (an irregular grid, a sweep still going) a stacked ``point``
        dimension indexed by the sweep dims (``ds.sel(weight_decay=0.1)``). Coordinates
        ``run_dir`` and ``status`` (``finished``, ``running``, ...) give each point's run
        directory and state.

    Warns
    -----
    SweepAlignmentWarning
        When the runs recorded different steps (other cadences, other lengths, a run still
        going), layers or metrics: they are aligned on the union, NaN where a run has no
        record, and the warning names which points differ. Never silently misaligned.
    """
    runs, dims, coords, root = _runs_and_coords(path, dim)
    datasets = [open_run(r, lazy=True) for r in runs]
    labels = [_label(c) for c in coords]
    keys = [tuple(c[d] for d in dims) for c in coords]
    if len(set(keys)) != len(keys):
        seen: dict[tuple[Any, ...], Path] = {}
        for k, r in zip(keys, runs, strict=True):
            if k in seen:
                msg = (
                    f"Two runs sit at the same point {dict(zip(dims, k, strict=True))}: "
                    f"{seen[k]} and {r}. Add the dimension that tells them apart (dim=...)."
                )
                raise ValueError(msg)
            seen[k] = r
    for what in RUN_DIMS:
        _warn_misaligned(datasets, labels, what)
    info: dict[str, dict[str, Any]] = {}
    for ds in datasets:
        for m, v in ds.attrs.get("metric_info", {}).items():
            info.setdefault(m, v)
    stripped = [ds.drop_vars([c for c in _METRIC_COORDS if c in ds.coords]) for ds in datasets]
    aligned = xr.align(*stripped, join="outer")
    combined = xr.concat(
        aligned,
        dim="point",
        data_vars="all",
        coords="minimal",
        compat="override",
        join="outer",
        combine_attrs="drop_conflicts",
    )
    statuses = [str(ds.attrs.get("status", "unknown")) for ds in datasets]
    combined = combined.assign_coords(
        {d: ("point", _coord_values([c[d] for c in coords])) for d in dims}
        | {"run_dir": ("point", np.array([str(r) for r in runs], dtype=object))}
        | {"status": ("point", np.array(statuses, dtype=object))}
    )
    # what differs from run to run is a coordinate (run_dir, status), not an attribute
    for key in _RUN_ATTRS:
        combined.attrs.pop(key, None)
    metrics = [str(m) for m in combined["metric"].values]
    for c, key in zip(_METRIC_COORDS, ("description", "unit", "source"), strict=True):
        values = [info.get(m, {}).get(key, "") for m in metrics]
        combined = combined.assign_coords({c: ("metric", np.array(values, dtype=object))})
    combined.attrs["metric_info"] = {m: info.get(m, {}) for m in metrics}
    combined.attrs["sweep_dims"] = list(dims)
    if root is not None:
        combined.attrs["sweep_dir"] = str(root)
    combined = _to_grid(combined, dims, keys)
    order = [d for d in combined["metrics"].dims if d not in RUN_DIMS]
    return combined.transpose(*order, ...)


def _coord_values(values: list[Any]) -> np.ndarray:
    if all(isinstance(v, bool) for v in values):
        return np.array(values, dtype=bool)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.int64)
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.float64)
    return np.array([v if isinstance(v, str) else repr(v) for v in values], dtype=object)


def _to_grid(ds: xr.Dataset, dims: list[str], keys: list[tuple[Any, ...]]) -> xr.Dataset:
    """One dimension per sweep dim when the points are a full product; else keep ``point``."""
    uniques = [sorted({k[i] for k in keys}, key=_sort_key) for i in range(len(dims))]
    full = len(keys) == int(np.prod([len(u) for u in uniques])) and set(keys) == set(
        itertools.product(*uniques)
    )
    if not full:
        return ds.set_index(point=dims)
    order = [keys.index(k) for k in itertools.product(*uniques)]
    ds = ds.isel(point=order)
    shape = [len(u) for u in uniques]
    out = xr.Dataset(attrs=ds.attrs)
    for name, var in ds.data_vars.items():
        if "point" not in var.dims:
            out[name] = var
            continue
        rest = [d for d in var.dims if d != "point"]
        data = var.transpose("point", *rest).data.reshape(*shape, *[var.sizes[d] for d in rest])
        out[name] = xr.Variable((*dims, *rest), data, attrs=var.attrs)
    for name, coord in ds.coords.items():
        if name in dims:
            continue
        if "point" in coord.dims:
            out.coords[name] = (tuple(dims), np.asarray(coord.values).reshape(shape))
        else:
            out.coords[name] = coord
    for d, u in zip(dims, uniques, strict=True):
        out.coords[d] = _coord_values(list(u))
    return out


def _sort_key(v: Any) -> tuple[int, Any]:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return (0, v)
    return (1, repr(v))
