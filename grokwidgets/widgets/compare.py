"""``Compare``: the panels of several runs overlaid, coloured by the sweep dimension."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
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


def _dash_by_detail(spec: Any, order: list[str] | None = None) -> Any:
    """``spec`` with its lines coloured by ``run`` and dashed by ``detail`` (split, layer).

    ``order``: the runs' colour labels in the order of their sweep values (a legend sorted as
    text would put ``weight_decay=10.0`` before ``weight_decay=3.0``).
    """
    if isinstance(spec, list):
        return [_dash_by_detail(v, order) for v in spec]
    if not isinstance(spec, dict):
        return spec
    out = {k: _dash_by_detail(v, order) for k, v in spec.items()}
    enc = out.get("encoding")
    if isinstance(enc, dict) and enc.get("color", {}).get("field") == "series":
        data = out.get("data", {})
        if isinstance(data, dict) and data.get("name") in TIME_SERIES:
            enc["color"] = {**enc["color"], "field": "run"}
            if order:
                enc["color"]["sort"] = list(order)
            enc["detail"] = {"field": "series", "type": "nominal"}
            enc["strokeDash"] = {"field": "detail", "type": "nominal", "title": None}
            tooltip = enc.get("tooltip")
            if isinstance(tooltip, list):
                enc["tooltip"] = [*tooltip, {"field": "detail", "type": "nominal"}]
    return out


def _data_names(spec: Any) -> set[str]:
    """Every named dataset a (sub-)spec reads."""
    if isinstance(spec, list):
        return set().union(*(_data_names(v) for v in spec)) if spec else set()
    if not isinstance(spec, dict):
        return set()
    data = spec.get("data")
    own = {data["name"]} if isinstance(data, dict) and isinstance(data.get("name"), str) else set()
    return own.union(*(_data_names(v) for k, v in spec.items() if k != "data"))


def _time_series_views(spec: Any) -> Any:
    """``spec`` without the concatenated views that draw no time series.

    Compare overlays runs along steps; a view of one record's arrays (the pruning curve at a
    step, an ESD) has nothing to overlay and would stay empty, so it is left out. A spec whose
    every view is such a view is kept as it is.
    """
    if not isinstance(spec, dict):
        return spec
    for key in ("hconcat", "vconcat", "concat"):
        views = spec.get(key)
        if isinstance(views, list):
            kept = [v for v in views if _data_names(v) & TIME_SERIES.keys()]
            if kept and len(kept) < len(views):
                return {**spec, key: [_time_series_views(v) for v in kept]}
    return spec


def _renamed(spec: Any, names: dict[str, str]) -> Any:
    """``spec`` with its named datasets renamed (``{"accuracy": "accuracy · wd=0.1"}``)."""
    if isinstance(spec, list):
        return [_renamed(v, names) for v in spec]
    if not isinstance(spec, dict):
        return spec
    out = {k: _renamed(v, names) for k, v in spec.items()}
    data = out.get("data")
    if isinstance(data, dict) and data.get("name") in names:
        out["data"] = {**data, "name": names[data["name"]]}
    return out


def _value(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


class Compare(PanelWidget):
    """The time-series panels of many runs, coloured by one sweep dim, faceted by another.

    Parameters
    ----------
    source : xarray.Dataset or sequence of path-like / Dataset
        A sweep (:func:`~grokwidgets.open_sweep`: runs combined along dims such as ``seed``,
        ``alpha`` or ``weight_decay``), or the runs themselves (labelled by directory name).
    dim : str, optional
        The sweep dim that colours the lines; found automatically when the sweep has exactly
        one. ``color`` is the same (give one of them).
    color : str, optional
        As ``dim``.
    facet : str, optional
        A second sweep dim: each panel is drawn once per value of it (titled
        ``panel · facet=value``). Points that differ in any other dim (seeds) are separate
        lines of their colour.
    """

    _esm = esm_path("compare.js")

    def __init__(
        self,
        source: xr.Dataset | Sequence[str | os.PathLike[str] | xr.Dataset],
        *,
        dim: str | None = None,
        color: str | None = None,
        facet: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if dim is not None and color is not None and dim != color:
            msg = f"dim and color name the same thing; got dim={dim!r}, color={color!r}."
            raise ValueError(msg)
        runs = self._runs(source, dim or color, facet)
        self.dim = runs[0].dim if runs else (dim or color or "run")
        self.facet = facet
        names: set[str] = set()
        per_name: dict[tuple[Any, str], list[Table]] = {}
        facets: list[Any] = []
        for run in runs:
            if run.facet not in facets:
                facets.append(run.facet)
            names |= {str(m) for m in run.ds["metric"].values}
            for name, table in series_tables(run.ds).items():
                if not len(table["step"]):
                    continue
                # colour: the run's value of the colour dim; dash: what the run's panel drew
                # (train/test, a layer). `series` stays one per line (per point): rows are
                # downsampled and matched per series.
                head = f"{run.dim}={run.value}"
                per_name.setdefault((run.facet, name), []).append(
                    {
                        **table,
                        "series": np.asarray(
                            [f"{run.label} · {s}" for s in table["series"]], object
                        ),
                        "run": np.full(len(table["step"]), head, dtype=object),
                        "detail": table["series"],
                    }
                )
        self._set_panels(names)
        order = list(dict.fromkeys(f"{run.dim}={run.value}" for run in runs))
        specs = [_dash_by_detail(_time_series_views(spec), order) for spec in self._specs]
        if facet is None:
            self._specs = specs
            feed = {name: concat(v) for (_, name), v in per_name.items() if name in TIME_SERIES}
        else:
            faceted, feed = [], {}
            for i, value in enumerate(facets):
                suffix = f" · {facet}={value}"
                # dataset names Vega accepts ("." or "=" in a name break its dataflow)
                rename = {n: f"{n}__facet{i}" for n in TIME_SERIES}
                for spec in specs:
                    one = _renamed(spec, rename)
                    meta = dict(one["usermeta"])
                    meta["title"] = str(meta.get("title", meta["panel"])) + suffix
                    meta["panel"] = str(meta["panel"]) + suffix  # one id per drawn panel
                    one["title"] = meta["title"]  # the static image names its facet too
                    meta["datasets"] = sorted(rename.get(n, n) for n in meta.get("datasets", []))
                    one["usermeta"] = meta
                    faceted.append(one)
                for (f, name), v in per_name.items():
                    if f == value and name in TIME_SERIES:
                        feed[rename[name]] = concat(v)
            self._specs = faceted  # assigned, not appended to: a trait syncs on assignment
        self._feed(feed)
        by = f" by {self.dim}" + (f", faceted by {facet}" if facet else "")
        self.message = f"{len(runs)} runs{by}"

    @dataclass(frozen=True)
    class _Run:
        dim: str
        value: Any
        facet: Any
        label: str
        ds: xr.Dataset

    @classmethod
    def _runs(
        cls,
        source: xr.Dataset | Sequence[str | os.PathLike[str] | xr.Dataset],
        dim: str | None,
        facet: str | None = None,
    ) -> list[Compare._Run]:
        if isinstance(source, xr.Dataset):
            extra = [str(d) for d in source["metrics"].dims if d not in RUN_DIMS]
            if "point" in extra:  # an irregular sweep: its dims are the levels of `point`
                extra = [str(d) for d in source.attrs.get("sweep_dims", [])] or extra
            if dim is None:
                candidates = [d for d in extra if d != facet]
                if len(candidates) != 1:
                    msg = (
                        f"Compare needs the sweep dimension that colours the lines: this "
                        f"Dataset has {extra or 'none'} besides step/layer/metric. Pass "
                        "dim=... (or color=...; facet=... for a second one)."
                    )
                    raise ValueError(msg)
                dim = candidates[0]
            for d in (dim, facet):
                if d is not None and d not in source.coords:
                    msg = f"{d!r} is not a dimension of this Dataset (dims: {list(source.dims)})."
                    raise ValueError(msg)
            stack = [d for d in source["metrics"].dims if d not in RUN_DIMS]
            points = source.stack(_point=stack) if stack else source.expand_dims(_point=[0])
            runs = []
            for i in range(points.sizes["_point"]):
                one = points.isel(_point=i)
                coords = {d: _value(one[d].values) for d in extra if d in one.coords}
                label = ",".join(f"{k}={v}" for k, v in coords.items())
                ds = one.drop_vars(
                    [
                        c
                        for c in one.coords
                        if c not in RUN_DIMS
                        and c not in ("metric_description", "metric_unit", "metric_source")
                    ]
                )
                runs.append(
                    cls._Run(dim, coords.get(dim), coords.get(facet) if facet else None, label, ds)
                )
            return runs
        if facet is not None:
            msg = "facet= needs a sweep Dataset (gw.open_sweep), not a list of runs."
            raise ValueError(msg)
        runs = []
        for i, item in enumerate(source):
            if isinstance(item, xr.Dataset):
                label = Path(str(item.attrs.get("run_dir", f"run{i}"))).name
                runs.append(cls._Run(dim or "run", label, None, label, item))
            else:
                name = Path(item).name
                runs.append(cls._Run(dim or "run", name, None, name, open_run(item)))
        if not runs:
            msg = "Compare needs at least one run."
            raise ValueError(msg)
        return runs
