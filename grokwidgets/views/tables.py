"""The rows each panel draws, read off a run Dataset (all steps, or the state at one step)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from grokwidgets._names import MODEL_LAYER
from grokwidgets.diagnostics.htsr import RANDOM_REPLICAS_BELOW
from grokwidgets.diagnostics.htsr.fits import SMALL_N
from grokwidgets.diagnostics.li2.fourier import CONCENTRATED
from grokwidgets.views.frame import Table

#: Bins of the empirical spectral density (log-spaced).
ESD_BINS = 40


@dataclass(frozen=True)
class Series:
    """One line of a time-series table: ``metric`` at ``layer`` (``None``: every layer)."""

    metric: str
    layer: str | None = MODEL_LAYER
    label: str | None = None  # series label; default: the layer
    skip_model: bool = False  # with layer=None, leave out the whole-model value


#: Time-series datasets (columns step, series, value) and the series they hold.
TIME_SERIES: dict[str, tuple[Series, ...]] = {
    "loss": (Series("train_loss", label="train"), Series("test_loss", label="test")),
    "accuracy": (Series("train_acc", label="train"), Series("test_acc", label="test")),
    "probe_acc": (
        Series("probe_test_acc", layer=None, skip_model=True),
        Series("test_acc", label="model (test_acc)"),
    ),
    "misalignment": (Series("readout_misalignment"),),
    "ntk_alignment": (Series("ntk_alignment", layer=None),),
    "ntk_velocity": (Series("ntk_velocity", layer=None),),
    "alpha": (Series("htsr_alpha", layer=None, skip_model=True),),
    "traps": (Series("htsr_num_traps", layer=None, skip_model=True),),
    # feature emergence (Li₂, diagnostics/li2.py)
    "li2_stage": (Series("li2_stage", label="stage"),),
    "li2_structure": (
        Series("li2_grad_alignment", layer="readout", label="G_F alignment"),
        Series("li2_ftf_offdiag", layer="readout", label="F̃ᵀF̃ off-diagonal"),
    ),
    # one layer (the first hidden) records these, so a label per metric is one line each
    "fourier": (
        Series("fourier_concentration_mean", layer=None, skip_model=True, label="mean over nodes"),
        Series(
            "fourier_concentration_weighted", layer=None, skip_model=True, label="power-weighted"
        ),
        Series(
            "fourier_live_share",
            layer=None,
            skip_model=True,
            label=f"live nodes ≥ {CONCENTRATED:g}",
        ),
    ),
    # compressibility and information geometry (diagnostics/compress.py, infogeo.py)
    "compression": (
        Series("test_compression_factor", label="Fisher"),
        Series("test_magnitude_compression_factor", label="magnitude"),
        Series("test_lowrank_compression_factor", label="low rank"),
    ),
    "path_length": (
        Series("fisher_path_length", label="parameters (Fisher)"),
        Series("output_path_length", label="outputs (Fisher–Rao)"),
    ),
    "straightness": (Series("fisher_straightness", label="model"),),
    # comparators (diagnostics/comparative.py)
    "sparsity": (Series("activation_sparsity", layer=None),),
    "weight_entropy": (Series("abs_weight_entropy_norm", layer=None),),
    "circuit": (Series("circuit_complexity", layer=None),),
    # the online phase detector (diagnostics/detector.py)
    "phase": (Series("phase_code", label="phase"),),
    "phase_flags": tuple(
        Series(f"phase_{flag}", label=flag.replace("_", " "))
        for flag in ("train_fit", "frozen", "onset", "alpha_low", "traps", "collapse_warning")
    ),
}

#: Pruning methods of ``compress`` (array ``{method}_prune_{field}``) and their labels.
PRUNE_METHODS = {"fisher": "Fisher", "magnitude": "magnitude", "lowrank": "low rank"}

#: Array variables that show the state at one step: what they are, the datasets they feed.
STEP_STATE: dict[str, tuple[str, tuple[str, ...]]] = {
    "spectrum": ("ESD", ("esd", "esd_fit", "esd_marks")),
    "kernel_spectrum": ("kernel spectrum", ("kernel_spectrum",)),
    "fisher_prune_fraction": ("pruning curves", ("prune_curve",)),
}

#: Datasets that show the state at one step (replaced, never appended).
CURRENT = tuple(name for _, names in STEP_STATE.values() for name in names)


def _empty_series() -> Table:
    return {"step": np.zeros(0), "series": np.zeros(0, dtype=object), "value": np.zeros(0)}


def series_tables(ds: xr.Dataset) -> dict[str, Table]:
    """Every time-series dataset of ``ds`` (rows with finite values at steps > 0)."""
    metrics = [str(m) for m in ds["metric"].values]
    layers = [str(x) for x in ds["layer"].values]
    steps = ds["step"].values.astype(np.float64)
    values = ds["metrics"].transpose("step", "layer", "metric").values
    out: dict[str, Table] = {}
    for name, series in TIME_SERIES.items():
        parts: list[Table] = []
        for s in series:
            if s.metric not in metrics:
                continue
            mi = metrics.index(s.metric)
            wanted = layers if s.layer is None else [s.layer]
            for layer in wanted:
                if layer not in layers or (s.skip_model and layer == MODEL_LAYER):
                    continue
                col = values[:, layers.index(layer), mi]
                ok = np.isfinite(col) & (steps > 0)
                label = s.label if s.label is not None else layer
                if s.metric == "htsr_num_traps":
                    label = _traps_label(ds, layer, label)
                parts.append(
                    {
                        "step": steps[ok],
                        "series": np.full(int(ok.sum()), label, dtype=object),
                        "value": col[ok],
                    }
                )
        out[name] = concat(parts) if parts else _empty_series()
    return out


def _traps_label(ds: xr.Dataset, layer: str, label: str) -> str:
    """A trap series' label, saying when the layer has too few eigenvalues to trust it.

    Below 100 eigenvalues the count is over 5 pooled shuffles (as WeightWatcher), so it is
    about 5× a single shuffle's; below 20 there is no power-law fit either, and the MP edge
    the traps are counted against is fitted to a handful of eigenvalues.
    """
    if "htsr_num_evals" not in ds["metric"].values:
        return label
    col = np.asarray(ds["metrics"].sel(layer=layer, metric="htsr_num_evals").values)
    col = col[np.isfinite(col)]
    if col.size == 0:
        return label
    n = int(col.max())
    if n < SMALL_N:
        return f"{label} (rough: {n} eigenvalues)"
    if n < RANDOM_REPLICAS_BELOW:
        return f"{label} (5 shuffles pooled)"
    return label


def concat(tables: list[Table]) -> Table:
    """Row-wise concatenation of tables with the same columns."""
    if not tables:
        return {}
    return {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}


def _metric_at(ds: xr.Dataset, metric: str, layer: str) -> float:
    if metric not in ds["metric"].values or layer not in ds["layer"].values:
        return float("nan")
    return float(ds["metrics"].sel(metric=metric, layer=layer).values)


def esd_tables(ds: xr.Dataset) -> dict[str, Table]:
    r"""ESD histogram, fitted power law and xmin / MP-edge marks of every layer at one step.

    ``ds`` holds one step (no ``step`` dim). The density is per unit λ on log-spaced bins;
    the power law :math:`p(\lambda) = f\,(\alpha-1)/x_{min}\,(\lambda/x_{min})^{-\alpha}`
    is drawn over the tail, scaled by the tail fraction :math:`f`.
    """
    hist: dict[str, list] = {"layer": [], "lam": [], "density": []}
    fit: dict[str, list] = {"layer": [], "lam": [], "density": []}
    marks: dict[str, list] = {"layer": [], "x": [], "kind": []}
    if "spectrum" in ds:
        for layer in (str(x) for x in ds["layer"].values):
            evals = np.asarray(ds["spectrum"].sel(layer=layer).values, dtype=np.float64)
            evals = evals[np.isfinite(evals) & (evals > 0)]
            if evals.size < 2:
                continue
            lo, hi = float(evals.min()), float(evals.max())
            if hi <= lo:
                hi = lo * 1.001
            edges = np.geomspace(lo, hi, ESD_BINS + 1)
            counts, _ = np.histogram(evals, edges)
            dens = counts / (evals.size * np.diff(edges))
            centers = np.sqrt(edges[:-1] * edges[1:])
            ok = dens > 0
            hist["layer"] += [layer] * int(ok.sum())
            hist["lam"] += centers[ok].tolist()
            hist["density"] += dens[ok].tolist()
            alpha = _metric_at(ds, "htsr_alpha", layer)
            xmin = _metric_at(ds, "htsr_xmin", layer)
            if np.isfinite(alpha) and np.isfinite(xmin) and alpha > 1 and xmin > 0:
                frac = float((evals >= xmin).mean())
                lam = np.geomspace(xmin, max(hi, xmin * 1.001), 8)
                fit["layer"] += [layer] * lam.size
                fit["lam"] += lam.tolist()
                fit["density"] += (frac * (alpha - 1) / xmin * (lam / xmin) ** -alpha).tolist()
                marks["layer"].append(layer)
                marks["x"].append(xmin)
                marks["kind"].append("xmin")
            edge = _metric_at(ds, "mp_bulk_max", layer)
            if np.isfinite(edge) and edge > 0:
                marks["layer"].append(layer)
                marks["x"].append(edge)
                marks["kind"].append("MP edge")
    return {
        "esd": _table(hist, ("layer",)),
        "esd_fit": _table(fit, ("layer",)),
        "esd_marks": _table(marks, ("layer", "kind")),
    }


def kernel_spectrum_table(ds: xr.Dataset) -> Table:
    """Kernel eigenvalues (rank, value) of every layer at one step."""
    out: dict[str, list] = {"layer": [], "rank": [], "value": []}
    if "kernel_spectrum" in ds:
        for layer in (str(x) for x in ds["layer"].values):
            ev = np.asarray(ds["kernel_spectrum"].sel(layer=layer).values, dtype=np.float64)
            ev = ev[np.isfinite(ev) & (ev > 0)]
            ev = np.sort(ev)[::-1]
            out["layer"] += [layer] * ev.size
            out["rank"] += list(range(1, ev.size + 1))
            out["value"] += ev.tolist()
    return _table(out, ("layer",))


def prune_curve_table(ds: xr.Dataset) -> Table:
    """Test loss against the fraction of parameters pruned, per method, at one step."""
    out: dict[str, list] = {"method": [], "fraction": [], "loss": []}
    for method, label in PRUNE_METHODS.items():
        frac_var, loss_var = f"{method}_prune_fraction", f"{method}_prune_test_loss"
        if frac_var not in ds or loss_var not in ds:
            continue
        frac = np.asarray(ds[frac_var].sel(layer=MODEL_LAYER).values, dtype=np.float64)
        loss = np.asarray(ds[loss_var].sel(layer=MODEL_LAYER).values, dtype=np.float64)
        ok = np.isfinite(frac) & np.isfinite(loss) & (loss > 0)
        out["method"] += [label] * int(ok.sum())
        out["fraction"] += frac[ok].tolist()
        out["loss"] += loss[ok].tolist()
    return _table(out, ("method",))


def _table(cols: dict[str, list], text: tuple[str, ...]) -> Table:
    return {k: np.asarray(v, dtype=object if k in text else np.float64) for k, v in cols.items()}


def current_tables(ds: xr.Dataset, step: int | None = None) -> dict[str, Table]:
    """The step-state datasets (:data:`CURRENT`) at ``step``: the last recorded one by default.

    For each family the newest step at or before ``step`` where it was recorded is used.
    """
    out = empty_current()
    if ds.sizes["step"] == 0:
        return out
    for var in STEP_STATE:
        at = last_step_with(ds, var, step)
        if at is None:
            continue
        one = ds.sel(step=at)
        if var == "spectrum":
            out.update(esd_tables(one))
        elif var == "kernel_spectrum":
            out["kernel_spectrum"] = kernel_spectrum_table(one)
        else:
            out["prune_curve"] = prune_curve_table(one)
    return out


def last_step_with(ds: xr.Dataset, var: str, step: int | None = None) -> int | None:
    """Newest step at or before ``step`` where the array ``var`` holds values, or ``None``."""
    if var not in ds or ds.sizes["step"] == 0:
        return None
    arr = ds[var]
    if step is not None:
        arr = arr.sel(step=slice(None, step))
    has = np.isfinite(arr.values).any(axis=tuple(range(1, arr.ndim)))
    if not has.any():
        return None
    return int(arr["step"].values[np.flatnonzero(has)[-1]])


def _empty_kernel() -> Table:
    return _table({"layer": [], "rank": [], "value": []}, ("layer",))


def empty_current() -> dict[str, Table]:
    """Step-state datasets with no rows."""
    return {
        "esd": _table({"layer": [], "lam": [], "density": []}, ("layer",)),
        "esd_fit": _table({"layer": [], "lam": [], "density": []}, ("layer",)),
        "esd_marks": _table({"layer": [], "x": [], "kind": []}, ("layer", "kind")),
        "kernel_spectrum": _empty_kernel(),
        "prune_curve": _table({"method": [], "fraction": [], "loss": []}, ("method",)),
    }
