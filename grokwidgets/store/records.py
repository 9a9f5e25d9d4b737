"""In-memory records and their conversion to the run's ``xarray.Dataset``.

A *record* is everything measured at one step: scalar values keyed by ``(layer, metric)`` and,
optionally, 1-D arrays per layer for array variables such as ``spectrum`` (step × layer × eig).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from grokwidgets._names import MODEL_LAYER

__all__ = [
    "MODEL_LAYER",
    "Index",
    "Record",
    "dense_block",
    "dumps",
    "json_default",
    "records_dataset",
    "to_dataset",
]


@dataclass
class Record:
    """Values measured at one step."""

    step: int
    values: dict[tuple[str, str], float] = field(default_factory=dict)
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def merged(self, other: Record) -> Record:
        """A new record: this one's values with ``other``'s added (neither is changed)."""
        out = Record(step=self.step, values=dict(self.values))
        out.arrays = {var: dict(per_layer) for var, per_layer in self.arrays.items()}
        out.merge(other)
        return out

    def merge(self, other: Record) -> None:
        """Add ``other``'s values (same step) into this record; ``other`` wins on conflicts."""
        self.values.update(other.values)
        for var, per_layer in other.arrays.items():
            self.arrays.setdefault(var, {}).update(per_layer)


@dataclass
class Index:
    """Ordered names along the ``layer`` and ``metric`` dims and each array's extra dim size.

    The order is the order of first appearance, so existing columns never move as new
    names arrive; that is what lets the store append in place.
    """

    layers: list[str] = field(default_factory=lambda: [MODEL_LAYER])
    metrics: list[str] = field(default_factory=list)
    arrays: dict[str, dict[str, Any]] = field(default_factory=dict)  # var -> {"dim", "size"}
    metric_info: dict[str, dict[str, str]] = field(default_factory=dict)
    # metric -> layer -> why that value is NaN (the latest reason given)
    nan_reasons: dict[str, dict[str, str]] = field(default_factory=dict)

    def add_nan_reasons(self, reasons: dict[str, dict[str, str]]) -> None:
        """Merge reasons diagnostics gave for NaN values."""
        for metric, per_layer in reasons.items():
            self.nan_reasons.setdefault(metric, {}).update(per_layer)

    def add(self, record: Record) -> None:
        """Extend the index with the names ``record`` introduces."""
        layer_pos = set(self.layers)
        metric_pos = set(self.metrics)
        for layer, metric in record.values:
            if layer not in layer_pos:
                self.layers.append(layer)
                layer_pos.add(layer)
            if metric not in metric_pos:
                self.metrics.append(metric)
                metric_pos.add(metric)
        for var, per_layer in record.arrays.items():
            spec = self.arrays.setdefault(var, {"dim": _default_dim(var), "size": 0})
            for layer, arr in per_layer.items():
                if layer not in layer_pos:
                    self.layers.append(layer)
                    layer_pos.add(layer)
                spec["size"] = max(spec["size"], int(np.asarray(arr).size))

    def to_json(self) -> dict[str, Any]:
        """JSON-able form, stored in the commit file."""
        return {
            "layers": self.layers,
            "metrics": self.metrics,
            "arrays": self.arrays,
            "metric_info": self.metric_info,
            "nan_reasons": self.nan_reasons,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Index:
        """Inverse of :meth:`to_json`."""
        return cls(
            layers=list(obj["layers"]),
            metrics=list(obj["metrics"]),
            arrays={k: dict(v) for k, v in obj.get("arrays", {}).items()},
            metric_info=dict(obj.get("metric_info", {})),
            nan_reasons={k: dict(v) for k, v in obj.get("nan_reasons", {}).items()},
        )


def _default_dim(var: str) -> str:
    return {"spectrum": "eig"}.get(var, f"{var}_dim")


def dense_block(
    records: list[Record], index: Index
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Lay ``records`` out as dense, NaN-filled arrays in ``index`` order.

    Returns
    -------
    steps : ndarray, shape (n,)
    metrics : ndarray, shape (n, n_layers, n_metrics)
    arrays : dict of ndarray, each of shape (n, n_layers, size)
    """
    n = len(records)
    layer_pos = {name: i for i, name in enumerate(index.layers)}
    metric_pos = {name: i for i, name in enumerate(index.metrics)}
    steps = np.fromiter((r.step for r in records), dtype=np.int64, count=n)
    metrics = np.full((n, len(index.layers), len(index.metrics)), np.nan)
    arrays = {
        var: np.full((n, len(index.layers), spec["size"]), np.nan)
        for var, spec in index.arrays.items()
    }
    for i, rec in enumerate(records):
        for (layer, metric), value in rec.values.items():
            metrics[i, layer_pos[layer], metric_pos[metric]] = value
        for var, per_layer in rec.arrays.items():
            for layer, arr in per_layer.items():
                flat = np.asarray(arr, dtype=np.float64).ravel()
                arrays[var][i, layer_pos[layer], : flat.size] = flat
    return steps, metrics, arrays


def to_dataset(
    steps: np.ndarray,
    metrics: np.ndarray,
    arrays: dict[str, np.ndarray],
    index: Index,
    attrs: dict[str, Any] | None = None,
) -> xr.Dataset:
    """Build the run Dataset (``metrics``: step × layer × metric, plus array variables).

    Each metric's description, unit and source become coordinates along ``metric``
    (``metric_description``, ``metric_unit``, ``metric_source``) and the dict
    ``attrs["metric_info"]``, so a plot can label itself.
    """
    info = index.metric_info

    def col(key: str) -> list[str]:
        return [info.get(m, {}).get(key, "") for m in index.metrics]

    coords: dict[str, Any] = {
        "step": ("step", steps.astype(np.int64)),
        "layer": ("layer", np.array(index.layers, dtype=object)),
        "metric": ("metric", np.array(index.metrics, dtype=object)),
        "metric_description": ("metric", np.array(col("description"), dtype=object)),
        "metric_unit": ("metric", np.array(col("unit"), dtype=object)),
        "metric_source": ("metric", np.array(col("source"), dtype=object)),
    }
    data_vars: dict[str, Any] = {"metrics": (("step", "layer", "metric"), metrics)}
    for var, values in arrays.items():
        dim = index.arrays[var]["dim"]
        data_vars[var] = (("step", "layer", dim), values)
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs.update(attrs or {})
    ds.attrs["metric_info"] = {m: dict(info.get(m, {})) for m in index.metrics}
    if index.nan_reasons:
        ds.attrs["nan_reasons"] = {m: dict(v) for m, v in index.nan_reasons.items()}
    ds["metrics"].attrs["long_name"] = "scalar diagnostics"
    return ds


def json_default(obj: Any) -> Any:
    """``json.dumps`` fallback for numpy scalars and paths."""
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def dumps(obj: Any) -> str:
    """Stable JSON for the files a run writes."""
    return json.dumps(obj, indent=1, sort_keys=True, default=json_default)


def records_dataset(records: Sequence[Record]) -> xr.Dataset:
    """A run Dataset of a few in-memory records (what a Monitor listener received).

    Records at the same step (a monitor may record a step in parts) become one row, the
    later values winning, as the store's writer merges them; the records are not changed.
    """
    rows: list[Record] = []
    for rec in records:
        if rows and rows[-1].step == rec.step:
            rows[-1] = rows[-1].merged(rec)
        else:
            rows.append(rec)
    index = Index()
    for rec in rows:
        index.add(rec)
    steps, metrics, arrays = dense_block(rows, index)
    return to_dataset(steps, metrics, arrays, index)
