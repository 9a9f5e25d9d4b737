r"""Compressibility: Fisher, magnitude and low-rank pruning curves and the compression factor.

Registered as ``compress``. Manning-Coe et al. [1]_ measure how compressible a network is by
*Fisher pruning*: compute the diagonal Fisher information :math:`F_{ii}` at the parameters,
zero every parameter with :math:`F_{ii} < c` for cutoffs :math:`c` on a log grid, and record the
loss and accuracy against the fraction of parameters pruned; the *compression factor* is the
number of parameters over the number kept at a fixed loss tolerance. They find a "compressive
regime" in steady training, and the peak compressibility of a grokking run right after its
plateau. This module computes that curve at every record, and two baselines on the same axis:
*magnitude pruning* (zero every parameter with :math:`|\theta_i| < c`, Han et al. [2]_) and
*low-rank truncation* (keep the singular values :math:`\sigma_k \ge c\,\sigma_1` of each weight
matrix).

The Fisher
----------
:func:`~grokwidgets.diagnostics._fisher.diagonal_fisher` (empirical or true, categorical or
Gaussian likelihood, exact or Monte Carlo; see its module). Default: the true Fisher of the
task's predictive distribution, one label drawn from the model per row, on up to 2,048 train
rows. Manning-Coe et al. used NNGeometry's ``FIM(variant="regression")`` — the Gaussian Fisher
:math:`J^\top J` of the logits — on test inputs: ``FisherOptions(likelihood="gaussian",
exact=True, split="test")`` reproduces it (at C backward passes per row).

Pruning, the grid of kept fractions and the compression factor at a loss tolerance:
:mod:`.pruning`.

Evaluation rows: pruned models are evaluated with the run's training loss on up to 512 rows of
each split (seeded permutations; one forward pass for both), giving ``compression_factor``
etc. on train rows — how much of the learned function, memorized or not, survives pruning —
and ``test_compression_factor`` etc. on test rows, where Manning-Coe et al. evaluate. Accuracy
for classification (regression: NaN with the reason).

Records (layer ``"model"`` unless stated): ``fisher_diag_mean`` and
``empirical_fisher_diag_mean`` (per layer and model: the mean diagonal of the pruning Fisher
and of the empirical Fisher on the same rows); ``compression_factor`` (Fisher),
``magnitude_compression_factor``, ``lowrank_compression_factor`` and their ``test_``
versions; array variables along dim ``prune`` (index :math:`j` of :math:`k_j`):
``{fisher,magnitude,lowrank}_prune_{fraction,cutoff}`` and
``{fisher,magnitude,lowrank}_prune_{train,test}_{loss,acc}``.


References
----------
.. [1] Manning-Coe, Gliozzi, Stapleton, Hirst, De Tomasi, Bradlyn & Berman (2025), "Grokking
   vs. learning: same features, different encodings", arXiv:2502.01739.
.. [2] Han, Pool, Tran & Dally (2015), "Learning both weights and connections for efficient
   neural networks", NeurIPS 2015, arXiv:1506.02626.
.. [3] Denton, Zaremba, Bruna, LeCun & Fergus (2014), "Exploiting linear structure within
   convolutional networks for efficient evaluation", NeurIPS 2014, arXiv:1404.0736 (low rank).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from torch import Tensor

from grokwidgets._names import MODEL_LAYER
from grokwidgets.diagnostics._fisher import (
    FisherOptions,
    diagonal_fisher,
    flat,
    param_names,
    probe_fisher,
    subset_rows,
)
from grokwidgets.diagnostics.compress.pruning import (
    METHODS,
    Evaluator,
    PruningCurve,
    check_tolerance,
    kept_grid,
    make_pruner,
    prune_curves,
    pruning_curve,
)
from grokwidgets.diagnostics.probe import Probe
from grokwidgets.diagnostics.registry import MECHANISM_CADENCE, MetricInfo, register

__all__ = [
    "METHODS",
    "CompressOptions",
    "FisherOptions",
    "PruningCurve",
    "diagonal_fisher",
    "kept_grid",
    "pruning_curve",
    "register_compress",
]

PRUNE_DIM = "prune"

_MANNING = "Manning-Coe et al. (2025) Grokking vs. learning, arXiv:2502.01739"
_HAN = "Han et al. (2015), arXiv:1506.02626; baseline of Manning-Coe et al. (2025)"
_KUNSTNER = "Kunstner, Balles & Hennig (2019), arXiv:1905.12558"
_DENTON = "Denton et al. (2014), arXiv:1404.0736; baseline of Manning-Coe et al. (2025)"


# -- the registered diagnostic -----------------------------------------------------------------


@dataclass(frozen=True)
class CompressOptions:
    """Options of the ``compress`` diagnostic (see :func:`register_compress`).

    Parameters
    ----------
    fisher : FisherOptions
        Which Fisher ranks the parameters, on which rows (default: true Fisher, one sampled
        label per row, up to 2,048 train rows).
    n_eval : int
        Pruned models are evaluated on at most this many rows of each split (a seeded
        permutation's first).
    seed : int
        Seed of the evaluation rows.
    per_decade, decades : int
        The grid of kept fractions (:func:`kept_grid`).
    tol, abs_tol : float
        Loss tolerance of the compression factors (module docstring).
    refine : int
        Bisection steps refining each compression factor.
    min_gain : float
        Compression factors are NaN unless the unpruned loss is at most ``1 - min_gain`` times
        an all-zero output's (:mod:`.pruning`): a model at chance has nothing to compress.
    """

    fisher: FisherOptions = field(default_factory=FisherOptions)
    n_eval: int = 512
    seed: int = 0
    per_decade: int = 4
    decades: int = 3
    tol: float = 0.1
    abs_tol: float = 0.0
    refine: int = 4
    min_gain: float = 0.05

    def __post_init__(self) -> None:
        if self.n_eval < 1:
            msg = f"n_eval must be >= 1, got {self.n_eval}."
            raise ValueError(msg)
        kept_grid(self.per_decade, self.decades)  # validates
        check_tolerance(self.tol, self.abs_tol, self.refine, self.min_gain)


_FACTOR = {
    "fisher": "compression_factor",
    "magnitude": "magnitude_compression_factor",
    "lowrank": "lowrank_compression_factor",
}
_SPLITS: tuple[Literal["train", "test"], ...] = ("train", "test")


def _factor_name(method: str, split: str) -> str:
    return _FACTOR[method] if split == "train" else f"test_{_FACTOR[method]}"


def compress_metrics() -> list[MetricInfo]:
    """The metrics the ``compress`` diagnostic declares."""
    tolerance = (
        "with the loss on the {split} rows within tolerance (at most 10% of the way from the "
        "unpruned loss to an all-zero output's; NaN unless the unpruned loss is at least 5% "
        "below that output's)"
    )
    what = {
        "fisher": ("Fisher pruning (zero F_ii < c)", _MANNING),
        "magnitude": ("magnitude pruning (zero |θ_i| < c)", _HAN),
        "lowrank": ("truncating each weight matrix's SVD at σ_k < c σ_1, rank r counting "
                    "min(r(m+n), mn) parameters", _DENTON),
    }  # fmt: skip
    factors = [
        MetricInfo(
            _factor_name(method, split),
            f"parameters / parameters kept by {label}, {tolerance.format(split=split)}",
            "1",
            source,
        )
        for split in _SPLITS
        for method, (label, source) in what.items()
    ]
    return [
        MetricInfo(
            "fisher_diag_mean",
            "mean diagonal Fisher over the layer's parameters (model: all), tr F / P, of the "
            "Fisher that ranks parameters for pruning (default: true Fisher, train rows)",
            "nat / param²",
            _MANNING,
        ),
        MetricInfo(
            "empirical_fisher_diag_mean",
            "as fisher_diag_mean for the empirical Fisher (observed labels, same rows); "
            "vanishes where the train loss is fit",
            "nat / param²",
            _KUNSTNER,
        ),
        *factors,
    ]


def compress_arrays() -> dict[str, str]:
    """The array variables of ``compress`` and their dimension."""
    fields = ("fraction", "cutoff", *(f"{s}_{f}" for s in _SPLITS for f in ("loss", "acc")))
    return {f"{m}_prune_{f}": PRUNE_DIM for m in METHODS for f in fields}


def _layer_means(probe: Probe, fisher: dict[str, Tensor], names: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for path, module in probe.layers.items():
        keys = [f"{path}.{n}" for n, p in module.named_parameters(recurse=False)]
        keys = [k for k in keys if k in fisher]
        if keys:
            out[path] = float(flat(fisher, keys).mean())
    out[MODEL_LAYER] = float(flat(fisher, names).mean()) if names else math.nan
    return out


def _fisher_means(
    probe: Probe, opt: CompressOptions, names: list[str], out: dict[str, Any]
) -> tuple[dict[str, Tensor] | None, str]:
    """Record the two Fisher means; return the pruning Fisher (or why there is none)."""
    fisher: dict[str, Tensor] | None = None
    why = ""
    empirical = dataclasses.replace(opt.fisher, kind="empirical")
    for metric, fopt in (
        ("fisher_diag_mean", opt.fisher),
        ("empirical_fisher_diag_mean", empirical),
    ):
        try:
            fd = probe_fisher(probe, fopt)
        except FloatingPointError as err:
            out[metric] = probe.nan(metric, str(err))
            if fopt is opt.fisher:
                why = str(err)
            continue
        out[metric] = _layer_means(probe, fd, names)
        if fopt is opt.fisher:
            fisher = fd
    return fisher, why


def _why_no_factor(curve: PruningCurve, split: str, min_gain: float) -> str:
    base, null = curve.base_loss, curve.null_loss
    if base >= null:
        return (
            f"the unpruned model is no better than an all-zero output on the {split} rows "
            f"(loss {base:.4g} >= {null:.4g})"
        )
    return (
        f"the unpruned model is within {min_gain:.0%} of an all-zero output's loss on the "
        f"{split} rows ({base:.4g} against {null:.4g}, near chance): nothing learned to compress"
    )


def _nan_method(probe: Probe, out: dict[str, Any], method: str, splits: tuple[str, ...],
                size: int, reason: str) -> None:  # fmt: skip
    fields = [f"{s}_{f}" for s in splits for f in ("loss", "acc")]
    if len(splits) == len(_SPLITS):
        fields += ["fraction", "cutoff"]
    for f in fields:
        out[f"{method}_prune_{f}"] = {MODEL_LAYER: np.full(size, np.nan)}
        probe.nan(f"{method}_prune_{f}", reason)
    for split in splits:
        name = _factor_name(method, split)
        out[name] = probe.nan(name, reason)


def _record(probe: Probe, opt: CompressOptions) -> dict[str, Any]:
    task = probe.task
    if task is None:
        msg = "The compress diagnostic needs a task: pass one to Monitor(model, task)."
        raise ValueError(msg)
    if probe.loss_fn is None:
        msg = "The compress diagnostic needs the loss: pass loss=... to Monitor(...)."
        raise ValueError(msg)
    model = probe.model
    names = param_names(model)
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    out: dict[str, Any] = {}
    grid = kept_grid(opt.per_decade, opt.decades)
    fisher, why_fisher = _fisher_means(probe, opt, names, out)

    rows = {s: subset_rows(probe, s, opt.n_eval, opt.seed) for s in _SPLITS}
    splits = tuple(s for s in _SPLITS if len(rows[s][0]))
    reasons: dict[str, str] = {}
    if not splits:
        reasons = dict.fromkeys(METHODS, "both splits are empty")
    else:
        evaluate = Evaluator(model, [rows[s] for s in splits], probe.loss_fn)
        base = evaluate(params)[0]
        null = evaluate.null_losses(params)
        if not np.isfinite(base).all():
            reasons = dict.fromkeys(METHODS, "the unpruned model's loss is not finite")
        if why_fisher:
            reasons.setdefault("fisher", why_fisher)
        if not any(p.ndim == 2 for p in params.values()):
            reasons.setdefault("lowrank", "the model has no 2-D (matrix) parameter to truncate")
    for method in METHODS:
        if method in reasons:
            _nan_method(probe, out, method, _SPLITS, grid.size, reasons[method])
            continue
        pruner = make_pruner(method, params, names, fisher)
        curves = prune_curves(method, pruner, evaluate, base, null, grid, opt.tol, opt.abs_tol,
                              opt.refine, opt.min_gain)  # fmt: skip
        out[f"{method}_prune_fraction"] = {MODEL_LAYER: curves[0].fraction_pruned}
        out[f"{method}_prune_cutoff"] = {MODEL_LAYER: curves[0].cutoff}
        for split, curve in zip(splits, curves, strict=True):
            out[f"{method}_prune_{split}_loss"] = {MODEL_LAYER: curve.loss}
            out[f"{method}_prune_{split}_acc"] = {MODEL_LAYER: curve.acc}
            if task.kind != "classification":
                probe.nan(f"{method}_prune_{split}_acc", "regression task: no accuracy")
            name = _factor_name(method, split)
            out[name] = (
                curve.compression_factor
                if math.isfinite(curve.compression_factor)
                else probe.nan(name, _why_no_factor(curve, split, opt.min_gain))
            )
        missing = tuple(s for s in _SPLITS if s not in splits)
        if missing:
            _nan_method(probe, out, method, missing, grid.size, "the split is empty")
    return out


def register_compress(
    name: str = "compress",
    options: CompressOptions | None = None,
    *,
    replace: bool = False,
    prefix: str = "",
) -> None:
    """Register the compressibility diagnostic under ``name`` with ``options``.

    The built-in ``compress`` uses the default :class:`CompressOptions`; a variant, e.g. the
    paper's Gaussian Fisher on test rows::

        register_compress("compress_paper", CompressOptions(
            fisher=FisherOptions(likelihood="gaussian", exact=True, split="test", n_rows=256)),
            prefix="paper_")

    Parameters
    ----------
    name : str
        Diagnostic name for ``Monitor(diagnostics=[...])``.
    options : CompressOptions, optional
    replace : bool
        Replace an existing registration of ``name``.
    prefix : str
        Prepended to the metric and array names, so the variant records beside ``compress``.
    """
    opt = options or CompressOptions()

    def compress(probe: Probe) -> dict[str, Any]:
        """Fisher, magnitude and low-rank pruning curves and compression factors."""
        return _record(probe, opt)

    register(
        name,
        metrics=compress_metrics(),
        arrays=compress_arrays(),
        cadence=MECHANISM_CADENCE,
        replace=replace,
        prefix=prefix,
    )(compress)


register_compress("compress")
