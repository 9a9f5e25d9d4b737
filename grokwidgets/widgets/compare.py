"""``Compare``: the panels of several runs overlaid, coloured by the sweep dimension."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from grokwidgets.store.run_dir import open_run
from grokwidgets.views.frame import Table
from grokwidgets.views.tables import TIME_SERIES, concat, series_tables
from grokwidgets.widgets._base import PanelWidget
from grokwidgets.widgets._esm import esm_path

#: Dimensions of a run Dataset; any other dimension is a sweep dimension.
RUN_DIMS = {"step", "layer", "metric", "eig", "kernel_eig", "rand_eig"}


def _dash_by_detail(spec: Any) -> Any:
    """``spec`` with its lines coloured by ``run`` and dashed by ``detail`` (split, layer)."""
    if isinstance(spec, list):
        return [_dash_by_detail(v) for v in spec]
    if not isinstance(spec, dict):
        return spec
    out = {k: _dash_by_detail(v) for k, v in spec.items()}
    enc = out.get("encoding")
    if isinstance(enc, dict) and enc.get("color", {}).get("field") == "series":
        data = out.get("data", {})
        if isinstance(data, dict) and data.get("name") in TIME_SERIES:
            enc["color"] = {**enc["color"], "field": "run"}
            enc["detail"] = {"field": "series", "type": "nominal"}
            enc["strokeDash"] = {"field": "detail", "type": "nominal", "title": None}
            tooltip = enc.get("tooltip")
            if isinstance(tooltip, list):
                enc["tooltip"] = [*tooltip, {"field": "detail", "type": "nominal"}]
    return out


class Compare(PanelWidget):
    """The time-series panels of many runs, one colour per value of the sweep dimension.

    Parameters
    ----------
    source : xarray.Dataset or sequence of path-like / Dataset
        A sweep (runs combined along a dimension such as ``seed``, ``alpha`` or
        ``weight_decay``), or the runs themselves (labelled by directory name).
    dim : str, optional
        The sweep dimension; found automatically when the sweep has exactly one.
    """

    _esm = esm_path("compare.js")

    def __init__(
        self,
        source: xr.Dataset | Sequence[str | os.PathLike[str] | xr.Dataset],
        *,
        dim: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        runs = self._runs(source, dim)
        self.dim = runs[0][0] if runs else (dim or "run")
        names: set[str] = set()
        per_name: dict[str, list[Table]] = {}
        for d, value, ds in runs:
            names |= {str(m) for m in ds["metric"].values}
            for name, table in series_tables(ds).items():
                if not len(table["step"]):
                    continue
                # colour: the run (its sweep value); dash: what the run's panel drew
                # (train/test, a layer). `series` stays one per line: rows are downsampled
                # and matched per series.
                head = f"{d}={value}"
                per_name.setdefault(name, []).append(
                    {
                        **table,
                        "series": np.asarray([f"{head} · {s}" for s in table["series"]], object),
                        "run": np.full(len(table["step"]), head, dtype=object),
                        "detail": table["series"],
                    }
                )
        self._set_panels(names)
        self._specs = [_dash_by_detail(spec) for spec in self._specs]
        self._feed({k: concat(v) for k, v in per_name.items() if k in TIME_SERIES})
        self.message = f"{len(runs)} runs by {self.dim}"

    @staticmethod
    def _runs(
        source: xr.Dataset | Sequence[str | os.PathLike[str] | xr.Dataset], dim: str | None
    ) -> list[tuple[str, Any, xr.Dataset]]:
        if isinstance(source, xr.Dataset):
            extra = [str(d) for d in source["metrics"].dims if d not in RUN_DIMS]
            if dim is None:
                if len(extra) != 1:
                    msg = (
                        f"Compare needs the sweep dimension: this Dataset has {extra or 'none'} "
                        "besides step/layer/metric. Pass dim=..."
                    )
                    raise ValueError(msg)
                dim = extra[0]
            if dim not in source.dims:
                msg = f"{dim!r} is not a dimension of this Dataset (dims: {list(source.dims)})."
                raise ValueError(msg)
            return [
                (dim, v.item() if hasattr(v, "item") else v, source.sel({dim: v}))
                for v in source[dim].values
            ]
        runs = []
        for i, item in enumerate(source):
            if isinstance(item, xr.Dataset):
                label = Path(str(item.attrs.get("run_dir", f"run{i}"))).name
                runs.append((dim or "run", label, item))
            else:
                runs.append((dim or "run", Path(item).name, open_run(item)))
        if not runs:
            msg = "Compare needs at least one run."
            raise ValueError(msg)
        return runs
