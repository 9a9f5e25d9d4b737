r"""Heavy-tailed self-regularization (HTSR): WeightWatcher's spectral metrics, during training.

Martin & Mahoney (2021, arXiv:1810.01075; 2021, arXiv:2002.06716) read a layer's training
quality off the empirical spectral density (ESD) of its weight matrix; Prakash & Martin
(2025, arXiv:2506.04434, seed 003 of the paper suite) use it to see grokking and the later
anti-grokking collapse, where correlation traps appear and α drops below 2.

Conventions are WeightWatcher 0.7.7's (``WeightWatcher().analyze(randomize=True,
mp_fit=True)``), so the numbers agree with it (tests check α and xmin to 1e-3):

- **Matrices.** Linear and Embedding weights (and any other 2-D ``weight``) are one matrix
  :math:`W` (:math:`N \times M`, :math:`N \ge M`). A Conv2d weight
  (out, in, kh, kw) is ``kh·kw`` matrices ``W[:, :, i, j]``, each multiplied by
  :math:`1/\sqrt 2` (WeightWatcher's ``conv2d_norm``), whose eigenvalues are pooled
  (:math:`M \cdot kh \cdot kw` of them). Conv1d weights are sliced the same way per kernel
  tap, without the factor (WeightWatcher 0.7.7 cannot analyze Conv1d). Biases are ignored.
- **ESD.** The eigenvalues of :math:`X = W^\top W` (the squared singular values of
  :math:`W`). WeightWatcher 0.7.7 does *not* divide by :math:`N` by default (its
  ``normalize=False``); we follow it, so ``xmin`` and norms match. The ESD of
  :math:`W^\top W / N` is ``spectrum / N``; α, KS distance and all ratios do not change.
  They are computed as ``eigvalsh`` of the float64 Gram matrix (the smaller of
  :math:`W^\top W`, :math:`W W^\top`), which equals ``svdvals(W)**2`` to float64
  round-off and is faster than ``svdvals`` itself.
- **Power law.** α by maximum likelihood with xmin at the minimum KS distance (Clauset,
  Shalizi & Newman 2009) over eigenvalues above 1e-5, see
  :func:`~grokwidgets.diagnostics.htsr.fits.fit_power_law`. WeightWatcher switches to a
  different, bias-corrected estimator with a tail-size prior when fewer than 20 eigenvalues
  are non-zero; by design we do not: such layers get NaN with the reason.
  :math:`\hat\alpha = \alpha \log_{10}\lambda_{\max}` (``alpha_weighted``).
- **Norms.** ``log_norm`` :math:`=\log_{10}\sum\lambda = \log_{10}\|W\|_F^2`,
  ``log_spectral_norm`` :math:`=\log_{10}\lambda_{\max}`, ``stable_rank``
  :math:`=\sum\lambda/\lambda_{\max}`, ``log_alpha_norm`` :math:`=\log_{10}\sum\lambda^\alpha`,
  ``matrix_entropy`` :math:`= -\sum p\ln p/\ln r`, :math:`p = \lambda/\sum\lambda`, r the
  numerical rank.
- **Marchenko–Pastur.** σ and the bulk edges λ± fitted to the ESD for :math:`Q = N/M`
  (:func:`~grokwidgets.diagnostics.htsr.fits.mp_fit`); spikes above λ₊ (plus a
  Tracy–Widom margin); MP soft rank :math:`\lambda_+/\lambda_{\max}`.
- **Correlation traps.** Each matrix is shuffled element-wise (5 shuffles pooled when there
  are fewer than 100 eigenvalues), its ESD is fitted by MP, and its eigenvalues beyond that
  MP edge are the traps (``num_traps``): a shuffled matrix keeps its elements, so a few very
  large elements (not correlations) show up as spikes even after shuffling.
  ``rand_distance`` is the Jensen–Shannon distance between the sorted ESD and a shuffled
  ESD. WeightWatcher draws a second shuffle for the distance; we reuse the first (same
  distribution, half the cost), and compute the shuffled ESD in float32 (it only enters
  statistics). Shuffles are seeded, so a run's values are reproducible.
- **Whole model** (layer ``"model"``): the mean over layers of ``log_norm``, α, α̂,
  ``log_alpha_norm``, ``log_spectral_norm``, ``stable_rank`` and ``mp_softrank``, as
  ``WeightWatcher.get_summary()``, except that layers without a fit are left out (it
  averages in its −1 sentinels); and the total number of traps.

Layers with fewer than 8 eigenvalues (WeightWatcher's ``min_evals``) or more than 15000
(``max_evals``) get NaN with the reason, as do all-zero or non-finite weights.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

from grokwidgets._names import MODEL_LAYER
from grokwidgets.diagnostics.htsr.fits import (
    EVALS_THRESH,
    SMALL_N,
    fit_power_law,
    jensen_shannon_distance,
    mp_fit,
)
from grokwidgets.diagnostics.probe import Probe, weight_layers
from grokwidgets.diagnostics.registry import MECHANISM_CADENCE, MetricInfo, register

MIN_EVALS = 8  # WeightWatcher's min_evals: smaller layers are not analyzed
MAX_EVALS = 15000  # WeightWatcher's max_evals
RANDOM_REPLICAS_BELOW = 100  # fewer eigenvalues than this: pool 5 shuffles (as WW)
CONV2D_NORM = 1.0 / math.sqrt(2.0)

_MM = "Martin & Mahoney (2021) JMLR 22(165), arXiv:1810.01075"
_MM_NATCOMM = "Martin, Peng & Mahoney (2021) Nat. Commun. 12, 4122, arXiv:2002.06716"
_CLAUSET = "Clauset, Shalizi & Newman (2009) SIAM Rev. 51(4), arXiv:0706.1062"
_TRAPS = "Prakash & Martin (2025) grokking and collapse via HTSR, arXiv:2506.04434"
_WW = "WeightWatcher 0.7.7 (weightwatcher.ai)"

METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("htsr_alpha", "power-law exponent α of the ESD tail (MLE, KS-optimal xmin)",
               "1", _CLAUSET),
    MetricInfo("htsr_alpha_weighted", "α·log10 λmax (WeightWatcher's alpha_weighted)",
               "1", _MM_NATCOMM),
    MetricInfo("htsr_xmin", "start of the power-law tail (eigenvalue of WᵀW)", "λ", _CLAUSET),
    MetricInfo("htsr_ks", "Kolmogorov–Smirnov distance of the power-law fit", "1", _CLAUSET),
    MetricInfo("htsr_alpha_sigma", "standard error of α, (α−1)/√n_tail", "1", _CLAUSET),
    MetricInfo("htsr_tail_size", "eigenvalues in the power-law tail (≥ xmin)", "count",
               _CLAUSET),
    MetricInfo("htsr_log_alpha_norm", "log10 Σ λ^α (WeightWatcher's log_alpha_norm)", "1",
               _MM_NATCOMM),
    MetricInfo("lambda_max", "largest eigenvalue of WᵀW (squared spectral norm)", "λ", _MM),
    MetricInfo("log_spectral_norm", "log10 λmax", "1", _MM_NATCOMM),
    MetricInfo("log_norm", "log10 Σλ = log10 of the squared Frobenius norm", "1", _MM_NATCOMM),
    MetricInfo("stable_rank", "stable rank Σλ / λmax", "1", _MM),
    MetricInfo("matrix_entropy", "spectral entropy −Σ p ln p / ln rank, p = λ/Σλ", "1", _MM),
    MetricInfo("mp_sigma", "Marchenko–Pastur σ fitted to the bulk (ESD rescaled to mean 1)",
               "1", _MM),
    MetricInfo("mp_bulk_max", "Marchenko–Pastur bulk edge λ+", "λ", _MM),
    MetricInfo("mp_bulk_min", "Marchenko–Pastur bulk edge λ−", "λ", _MM),
    MetricInfo("mp_num_spikes", "eigenvalues above the MP bulk edge (with Tracy–Widom margin)",
               "count", _MM),
    MetricInfo("mp_softrank", "MP soft rank λ+ / λmax", "1", _MM),
    MetricInfo("htsr_num_traps",
               "correlation traps: eigenvalues of the element-wise shuffled W beyond its MP "
               "edge (model: total over layers). Below 100 eigenvalues 5 shuffles are pooled "
               "(as WeightWatcher), so the count is about 5x one shuffle's; below 20 (no α "
               "fit) the MP edge rests on a handful of eigenvalues: a rough sign only",
               "count", _TRAPS),
    MetricInfo("htsr_rand_distance",
               "Jensen–Shannon distance between the ESD and the shuffled W's ESD", "1", _WW),
    MetricInfo("htsr_rand_lambda_max", "largest eigenvalue of the shuffled W's ESD", "λ", _WW),
    MetricInfo("htsr_rand_bulk_max", "MP bulk edge λ+ fitted to the shuffled W's ESD", "λ",
               _WW),
    MetricInfo("htsr_num_evals", "number of eigenvalues in the ESD", "count", _WW),
)  # fmt: skip

SUMMARY = (
    "log_norm",
    "htsr_alpha",
    "htsr_alpha_weighted",
    "htsr_log_alpha_norm",
    "log_spectral_norm",
    "stable_rank",
    "mp_softrank",
)


@dataclass
class LayerESD:
    """One layer's spectral analysis: metric values, the ESDs and reasons for any NaN."""

    values: dict[str, float]
    evals: np.ndarray  # ascending
    rand_evals: np.ndarray | None = None  # ascending, pooled over shuffles
    reasons: dict[str, str] = field(default_factory=dict)


def weight_matrices(weight: Tensor) -> tuple[Tensor, int, int, float]:
    """The matrices WeightWatcher analyzes for a weight tensor, with N, M and a scale.

    Returns
    -------
    slices : Tensor, shape (k, rows, cols), float64
        One slice for a 2-D weight; one per kernel tap for Conv1d (3-D) and Conv2d (4-D).
    n, m : int
        The larger and the smaller dimension of a slice.
    scale : float
        The factor applied to each slice (1, or 1/√2 for Conv2d as WeightWatcher).
    """
    if weight.is_complex() or not weight.is_floating_point():
        msg = f"HTSR needs a real floating-point weight, got dtype {weight.dtype}."
        raise TypeError(msg)
    w = weight.detach().to(torch.float64)
    scale = 1.0
    if w.ndim == 2:
        slices = w[None]
    elif w.ndim == 3:  # Conv1d: (out, in, k)
        slices = w.permute(2, 0, 1)
    elif w.ndim == 4:  # Conv2d: (out, in, kh, kw)
        slices = w.permute(2, 3, 0, 1).reshape(-1, w.shape[0], w.shape[1])
        scale = CONV2D_NORM
    else:
        msg = (
            f"HTSR analyzes 2-D (Linear, Embedding), 3-D (Conv1d) and 4-D (Conv2d) weights; "
            f"got a {w.ndim}-D tensor of shape {tuple(w.shape)}."
        )
        raise ValueError(msg)
    if scale != 1.0:
        slices = slices * scale
    n, m = max(slices.shape[1:]), min(slices.shape[1:])
    return slices, int(n), int(m), scale


def esd(slices: Tensor, dtype: torch.dtype = torch.float64) -> np.ndarray:
    """Pooled eigenvalues of WᵀW over ``slices`` (k, rows, cols), ascending.

    Computed in ``dtype`` (float64 for the layer's own ESD; float32 suffices for the
    shuffled reference, whose eigenvalues only enter statistics) and returned as float64.
    """
    s = slices.to(dtype)
    gram = s.mT @ s if s.shape[1] >= s.shape[2] else s @ s.mT
    evals = torch.linalg.eigvalsh(gram).clamp_min(0.0).reshape(-1)
    return np.sort(evals.numpy().astype(np.float64))


def shuffled(slices: Tensor, generator: torch.Generator) -> Tensor:
    """Each slice with its elements randomly permuted (WeightWatcher's randomization)."""
    k, r, c = slices.shape
    flat = slices.reshape(k, r * c)
    perm = torch.stack([torch.randperm(r * c, generator=generator) for _ in range(k)])
    return torch.gather(flat, 1, perm).reshape(k, r, c)


def analyze_layer(
    weight: Tensor,
    *,
    randomize: bool = True,
    mp: bool = True,
    generator: torch.Generator | None = None,
    min_evals: int = MIN_EVALS,
    max_evals: int = MAX_EVALS,
) -> LayerESD:
    """Every HTSR metric of one weight tensor (see the module docstring for definitions)."""
    slices, n, m, _ = weight_matrices(weight)
    n_evals = m * slices.shape[0]
    values: dict[str, float] = {"htsr_num_evals": float(n_evals)}
    reasons: dict[str, str] = {}
    names = [info.name for info in METRICS]

    def nan_all(reason: str) -> None:
        for name in names:
            if name not in values:
                values[name] = math.nan
                reasons[name] = reason

    if n_evals > max_evals:
        nan_all(f"{n_evals} eigenvalues > max_evals={max_evals} (as WeightWatcher's max_evals)")
        return LayerESD(values, np.full(0, np.nan), None, reasons)
    if not bool(torch.isfinite(slices).all()):
        nan_all("the weight has non-finite entries")
        return LayerESD(values, np.full(n_evals, np.nan), None, reasons)
    evals = esd(slices)
    lam_max = float(evals[-1])
    if lam_max <= EVALS_THRESH:
        nan_all(f"all eigenvalues are ≤ {EVALS_THRESH:g} (a zero or near-zero weight)")
        return LayerESD(values, evals, None, reasons)

    total = float(evals.sum())
    values["lambda_max"] = lam_max
    values["log_spectral_norm"] = math.log10(lam_max)
    values["log_norm"] = math.log10(total)
    values["stable_rank"] = total / lam_max
    values["matrix_entropy"] = _matrix_entropy(evals, n)

    if n_evals < min_evals:
        nan_all(f"{n_evals} eigenvalues < min_evals={min_evals} (as WeightWatcher's min_evals)")
        return LayerESD(values, evals, None, reasons)

    fit = fit_power_law(evals, min_evals=SMALL_N)
    if fit.reason:
        for name in ("htsr_alpha", "htsr_alpha_weighted", "htsr_xmin", "htsr_ks",
                     "htsr_alpha_sigma", "htsr_tail_size", "htsr_log_alpha_norm"):  # fmt: skip
            values[name] = math.nan
            reasons[name] = fit.reason
    else:
        values["htsr_alpha"] = fit.alpha
        values["htsr_alpha_weighted"] = fit.alpha * math.log10(lam_max)
        values["htsr_xmin"] = fit.xmin
        values["htsr_ks"] = fit.ks_distance
        values["htsr_alpha_sigma"] = fit.sigma
        values["htsr_tail_size"] = float(np.sum(evals >= fit.xmin))
        values["htsr_log_alpha_norm"] = math.log10(float(np.sum(evals**fit.alpha)))

    if mp:
        bulk = mp_fit(evals, n, m)
        values["mp_sigma"] = bulk.sigma
        values["mp_bulk_max"] = bulk.bulk_max
        values["mp_bulk_min"] = bulk.bulk_min
        values["mp_num_spikes"] = float(bulk.num_spikes) if not bulk.reason else math.nan
        values["mp_softrank"] = bulk.softrank
        if bulk.reason:
            for name in ("mp_sigma", "mp_bulk_max", "mp_bulk_min", "mp_num_spikes", "mp_softrank"):
                reasons[name] = bulk.reason

    rand_evals: np.ndarray | None = None
    if randomize:
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        replicas = 5 if n_evals < RANDOM_REPLICAS_BELOW else 1
        single = slices.to(torch.float32)
        rand = [esd(shuffled(single, gen), torch.float32) for _ in range(replicas)]
        rand_evals = np.sort(np.concatenate(rand))
        rand_fit = mp_fit(rand_evals, n, m)
        values["htsr_num_traps"] = float(rand_fit.num_spikes) if not rand_fit.reason else math.nan
        values["htsr_rand_bulk_max"] = rand_fit.bulk_max
        values["htsr_rand_lambda_max"] = float(rand_evals[-1])
        values["htsr_rand_distance"] = jensen_shannon_distance(evals, rand[0])
        if rand_fit.reason:
            reasons["htsr_num_traps"] = reasons["htsr_rand_bulk_max"] = rand_fit.reason
    nan_all("not computed (mp=False or randomize=False)")
    return LayerESD(values, evals, rand_evals, reasons)


def _matrix_entropy(evals: np.ndarray, n: int) -> float:
    """WeightWatcher's matrix entropy: −Σ p ln p / ln r with p = λ/Σλ, r the numerical rank."""
    sv = np.sqrt(evals)
    tol = float(sv.max()) * n * np.finfo(np.float64).eps
    rank = int(np.count_nonzero(sv > tol)) + 1e-10
    p = evals / evals.sum() + 1e-10
    return float(-np.sum(p * np.log(p)) / np.log(rank))


def summarize(per_layer: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Whole-model values: WeightWatcher's ``get_summary`` means, and the total trap count."""
    out: dict[str, float] = {}
    for name in SUMMARY:
        vals = [v[name] for v in per_layer.values() if math.isfinite(v.get(name, math.nan))]
        if vals:
            out[name] = float(np.mean(vals))
    traps = [v["htsr_num_traps"] for v in per_layer.values()
             if math.isfinite(v.get("htsr_num_traps", math.nan))]  # fmt: skip
    if traps:
        out["htsr_num_traps"] = float(np.sum(traps))
    return out


def _layer_seed(seed: int, step: int, name: str) -> int:
    return zlib.crc32(f"{seed}:{step}:{name}".encode())


def analyzable_layers(layers: Mapping[str, nn.Module] | nn.Module) -> dict[str, Tensor]:
    """Weights HTSR analyzes, by module path: each weight layer's ``weight`` of 2 to 4 dims.

    ``layers`` is a model or its :func:`~grokwidgets.diagnostics.probe.weight_layers`.
    """
    if isinstance(layers, nn.Module):
        layers = weight_layers(layers)
    weights = {path: cast(Tensor, module.weight) for path, module in layers.items()}
    return {path: w for path, w in weights.items() if w.ndim <= 4}


def analyze(
    model_or_matrix: nn.Module | Tensor | np.ndarray | Mapping[str, Tensor | np.ndarray],
    *,
    randomize: bool = True,
    mp: bool = True,
    seed: int = 0,
    min_evals: int = MIN_EVALS,
    max_evals: int = MAX_EVALS,
) -> xr.Dataset:
    """HTSR analysis of a model or of weight matrices, without a run.

    Parameters
    ----------
    model_or_matrix : nn.Module, tensor, ndarray or mapping name -> tensor
        A model (every Linear, Embedding, Conv1d/2d weight, by module path), one weight
        matrix (layer name ``"W"``), or named matrices.
    randomize : bool
        Compute correlation traps and ``rand_distance`` (WeightWatcher's ``randomize=True``).
    mp : bool
        Fit the Marchenko–Pastur bulk (WeightWatcher's ``mp_fit=True``).
    seed : int
        Seed of the element-wise shuffles.
    min_evals, max_evals : int
        Layers with fewer or more eigenvalues are reported as NaN with the reason.

    Returns
    -------
    xarray.Dataset
        One variable per metric (``htsr_alpha``, ...) over ``layer`` (module paths, then
        ``"model"`` with the whole-model summary); ``spectrum`` (layer × eig) and
        ``rand_spectrum`` (layer × rand_eig), each sorted descending and NaN-padded;
        ``attrs["metric_info"]`` (description, unit, source), ``attrs["nan_reasons"]``
        (``{metric: {layer: reason}}``) and ``attrs["summary"]``.
    """
    weights = _named_weights(model_or_matrix)
    if not weights:
        msg = "No weight with 2 to 4 dimensions to analyze (Linear, Embedding, Conv1d/2d)."
        raise ValueError(msg)
    results: dict[str, LayerESD] = {}
    for name, w in weights.items():
        gen = torch.Generator().manual_seed(_layer_seed(seed, 0, name))
        results[name] = analyze_layer(
            w, randomize=randomize, mp=mp, generator=gen, min_evals=min_evals,
            max_evals=max_evals,
        )  # fmt: skip
    return _to_dataset(results, randomize)


def _named_weights(obj: Any) -> dict[str, Tensor]:
    if isinstance(obj, nn.Module):
        return analyzable_layers(obj)
    if isinstance(obj, Mapping):
        return {str(k): _as_tensor(v) for k, v in obj.items()}
    return {"W": _as_tensor(obj)}


def _as_tensor(value: Any) -> Tensor:
    # dtype and shape are checked by weight_matrices, with the same errors for every source
    return value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))


def _padded(arrays: list[np.ndarray | None]) -> np.ndarray:
    size = max((a.size for a in arrays if a is not None), default=0)
    out = np.full((len(arrays), size), np.nan)
    for i, a in enumerate(arrays):
        if a is not None:
            out[i, : a.size] = a[::-1]
    return out


def _to_dataset(results: dict[str, LayerESD], randomize: bool) -> xr.Dataset:
    names = [info.name for info in METRICS]
    per_layer = {layer: r.values for layer, r in results.items()}
    summary = summarize(per_layer)
    layers = [*results, MODEL_LAYER]
    data: dict[str, Any] = {}
    for name in names:
        col = [results[layer].values.get(name, math.nan) for layer in results]
        col.append(summary.get(name, math.nan))
        data[name] = ("layer", np.asarray(col, dtype=np.float64))
    evals = [r.evals for r in results.values()] + [None]
    data["spectrum"] = (("layer", "eig"), _padded(evals))
    if randomize:
        rand = [r.rand_evals for r in results.values()] + [None]
        data["rand_spectrum"] = (("layer", "rand_eig"), _padded(rand))
    ds = xr.Dataset(data, coords={"layer": np.asarray(layers, dtype=object)})
    reasons: dict[str, dict[str, str]] = {}
    for layer, r in results.items():
        for metric, why in r.reasons.items():
            reasons.setdefault(metric, {})[layer] = why
    ds.attrs["metric_info"] = {m.name: m.to_json() for m in METRICS}
    ds.attrs["nan_reasons"] = reasons
    ds.attrs["summary"] = summary
    ds.attrs["conventions"] = "WeightWatcher 0.7.7 (normalize=False, conv2d_norm, pool)"
    for m in METRICS:
        ds[m.name].attrs.update(m.to_json())
    ds["spectrum"].attrs["description"] = "eigenvalues of WᵀW, descending, NaN-padded"
    return ds


def _record_htsr(probe: Probe) -> dict[str, Any]:
    """The registered diagnostic: every HTSR metric per layer, the summary, the ESDs."""
    per_layer: dict[str, dict[str, float]] = {}
    spectra: dict[str, np.ndarray] = {}
    for path, w in analyzable_layers(probe.layers).items():
        gen = torch.Generator().manual_seed(_layer_seed(0, probe.step, path))
        result = analyze_layer(w, generator=gen)
        per_layer[path] = result.values
        spectra[path] = result.evals[::-1].copy()
        for metric, why in result.reasons.items():
            probe.nan(metric, why, layer=path)
    out: dict[str, Any] = {}
    for info in METRICS:
        col = {layer: v[info.name] for layer, v in per_layer.items() if info.name in v}
        out[info.name] = col
    for name, value in summarize(per_layer).items():
        out[name][MODEL_LAYER] = value
    out["spectrum"] = spectra
    return out


register("htsr", metrics=METRICS, arrays={"spectrum": "eig"}, cadence=MECHANISM_CADENCE)(
    _record_htsr
)
