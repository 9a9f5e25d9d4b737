r"""Pruning curves: loss and accuracy of a model pruned along a grid of kept fractions.

Three ways to prune (:data:`METHODS`): zero every parameter whose diagonal Fisher
:math:`F_{ii}` is below a cutoff (Manning-Coe et al. [1]_), whose magnitude
:math:`|\theta_i|` is (Han et al. [2]_), or truncate each weight matrix's SVD (Denton et al.
[3]_). :func:`pruning_curve` evaluates one of them; the ``compress`` diagnostic
(:mod:`grokwidgets.diagnostics.compress`) records all three at every record.

The grid
--------
The cutoffs are placed where they keep log-spaced fractions of the parameters,
:math:`k_j = 10^{-j/4}`, :math:`j = 0, \dots, 12` (:func:`kept_grid`: 1 down to 10⁻³, four per
decade): :math:`c_j` is the largest cutoff that keeps at least :math:`K_j = \max(1,
\operatorname{round}(k_j P))` of the :math:`P` parameters (the :math:`(P - K_j + 1)`-th smallest
score), and every parameter with score :math:`< c_j` is zeroed — the paper's rule. Ties are
broken, so that exactly :math:`P - K_j` parameters are zeroed: Fisher ties by magnitude
(:math:`|\theta_i|`, smaller first), other ties by position. They matter at zero: a diagonal
Fisher estimated on a subset of rows is exactly 0 for every weight of a ReLU unit that is
inactive on all the rows holding its input (common in a sparse network), although the unit
fires on other rows; kept together, such a block larger than :math:`1 - k_j` would stay
unpruned at every grid point it covers, pruned together (the paper's positive cutoffs) it
would go at once, however much its weights matter; ranked by magnitude it goes from the
smallest weights up. A log grid of cutoffs in Fisher units would need its range set by hand (the
Fisher's scale changes by orders of magnitude over training); placing the cutoffs by quantile
keeps one grid, with a fixed meaning (compression :math:`1/k_j`), for every record and model,
and matches the paper's own x axis (percent of parameters pruned).

Low rank: each 2-D parameter :math:`W` (:math:`m \times n`: Linear and Embedding weights) is
replaced by its truncated SVD keeping :math:`\sigma_k \ge c\,\sigma_1(W)` (one relative cutoff
for all matrices), and counts :math:`\min(r(m + n), mn)` parameters at rank :math:`r`;
other parameters (biases) are kept. Cutoffs on the same :math:`k_j` grid of kept parameters.

Compression factor
------------------
With :math:`L_0` the loss of the unpruned model on the evaluation rows and
:math:`L_\varnothing` the loss of an all-zero output there (what pruning everything, biases
included, leaves: :math:`\ln C` for cross-entropy), a pruned model is *within tolerance* when

.. math:: L \le L_0 + \text{abs\_tol} + \text{tol}\,(L_\varnothing - L_0) \qquad
   (\text{defaults: tol} = 0.1,\ \text{abs\_tol} = 0),

i.e. it gives up at most 10% of what the model gains over knowing nothing. (A tolerance
relative to :math:`L_0` alone fails both ways: at a fitted train loss of 10⁻³ nothing can be
pruned, and on test rows a memorizing model's loss is *above* :math:`L_\varnothing`, so
pruning everything "improves" it.) Walking the grid from :math:`k = 1` down, the last point
before the first one beyond tolerance is refined by ``refine`` bisection steps in
:math:`\log k` towards that first failing point, and

.. math:: \text{compression\_factor} = P / P_{\text{kept}}

at the smallest verified :math:`P_{\text{kept}}`. When every grid point is within tolerance the
value is the grid's end (a lower bound, about 1000). The factor is NaN unless the model has
learned something on those rows,

.. math:: L_0 \le (1 - \text{min\_gain})\, L_\varnothing \qquad (\text{default min\_gain} = 0.05),

i.e. it closes at least 5% of the way from knowing nothing to a zero loss. Below that (at
init, and while a cross-entropy train loss sits near chance, :math:`\ln C`; on test rows
before generalization, where :math:`L_0 \ge L_\varnothing`) the band
:math:`\text{tol}\,(L_\varnothing - L_0)` is thinner than the noise of a pruned model's
loss, and "within tolerance" would be decided by that noise: a model at chance pruned to the
grid's end scores about 1000.

References
----------
.. [1] Manning-Coe et al. (2025), arXiv:2502.01739.
.. [2] Han, Pool, Tran & Dally (2015), arXiv:1506.02626.
.. [3] Denton, Zaremba, Bruna, LeCun & Fergus (2014), arXiv:1404.0736.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from grokwidgets.diagnostics._fisher import flat, param_names
from grokwidgets.diagnostics._shared import eval_mode
from grokwidgets.tasks.losses import LossFn, accuracy

__all__ = [
    "METHODS",
    "Evaluator",
    "Method",
    "PruningCurve",
    "check_tolerance",
    "prune_curves",
    "kept_grid",
    "learned",
    "make_pruner",
    "pruning_curve",
]

Method = Literal["fisher", "magnitude", "lowrank"]
METHODS: tuple[Method, ...] = ("fisher", "magnitude", "lowrank")


def kept_grid(per_decade: int = 4, decades: int = 3) -> np.ndarray:
    r"""Kept fractions :math:`10^{-j/d}`, :math:`j = 0, \dots, dD` (d per decade, D decades)."""
    if per_decade < 1 or decades < 1:
        msg = f"per_decade and decades must be >= 1, got {per_decade} and {decades}."
        raise ValueError(msg)
    return 10.0 ** (-np.arange(per_decade * decades + 1) / per_decade)


@dataclass(frozen=True)
class PruningCurve:
    r"""Loss and accuracy of a pruned model along a grid of kept fractions.

    Attributes
    ----------
    method : {"fisher", "magnitude", "lowrank"}
    kept_target : ndarray
        The grid :math:`k_j` of target kept fractions.
    cutoff : ndarray
        The cutoff at each grid point (Fisher units, |θ| or σ/σ₁); ``inf`` prunes everything.
    fraction_pruned : ndarray
        :math:`1 - P_{\text{kept}} / P` actually reached at each cutoff.
    loss, acc : ndarray
        Loss and accuracy of the pruned model (``acc`` NaN without class labels).
    n_params : int
        :math:`P`, the trainable parameters.
    base_loss : float
        :math:`L_0`, the loss of the unpruned model.
    null_loss : float
        :math:`L_\varnothing`, the loss of an all-zero output.
    compression_factor : float
        :math:`P / P_{\text{kept}}` at the loss tolerance (module docstring).
    kept_at_tolerance : int
        That :math:`P_{\text{kept}}`.
    """

    method: Method
    kept_target: np.ndarray
    cutoff: np.ndarray
    fraction_pruned: np.ndarray
    loss: np.ndarray
    acc: np.ndarray
    n_params: int
    base_loss: float
    null_loss: float
    compression_factor: float
    kept_at_tolerance: int


# -- pruners: from a cutoff to pruned parameters ---------------------------------------------


class _Pruner:
    """Maps a number of parameters to keep to a cutoff, and a cutoff to pruned parameters."""

    n_params: int

    def cutoff(self, keep: int) -> float:
        """The largest cutoff that keeps at least ``keep`` parameters."""
        raise NotImplementedError

    def apply(self, cutoff: float) -> tuple[dict[str, Tensor], int]:
        """The pruned parameters and how many are kept."""
        raise NotImplementedError

    def score_at(self, cutoff: float) -> float:
        """The cutoff as a curve reports it (score units)."""
        return cutoff


@dataclass
class _ScorePruner(_Pruner):
    """Zero the parameters of lowest score (Fisher or magnitude), ties broken by ``tiebreak``.

    Its cutoffs are ranks: ``apply(c)`` zeroes the parameters ranked below ``c`` in the order
    (score, tiebreak, position); :meth:`score_at` gives the score there, which is what a
    curve reports.
    """

    params: dict[str, Tensor]
    scores: Tensor  # flat float64, in params order
    tiebreak: Tensor | None = None
    _rank: Tensor = field(init=False)
    _sorted: Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.n_params = int(self.scores.numel())
        order = torch.arange(self.n_params)
        if self.tiebreak is not None:
            order = torch.argsort(self.tiebreak, stable=True)
        order = order[torch.argsort(self.scores[order], stable=True)]
        self._rank = torch.empty(self.n_params, dtype=torch.int64)
        self._rank[order] = torch.arange(self.n_params)
        self._sorted = self.scores[order]

    def cutoff(self, keep: int) -> float:
        return float(self.n_params - min(max(keep, 0), self.n_params))

    def score_at(self, cutoff: float) -> float:
        """The score of the lowest-ranked parameter kept at ``cutoff`` (inf: none kept)."""
        i = int(cutoff)
        return float(self._sorted[i]) if i < self.n_params else math.inf

    def apply(self, cutoff: float) -> tuple[dict[str, Tensor], int]:
        keep = self._rank >= int(cutoff)
        out: dict[str, Tensor] = {}
        offset = 0
        for name, p in self.params.items():
            mask = keep[offset : offset + p.numel()].reshape(p.shape)
            out[name] = torch.where(mask, p, torch.zeros((), dtype=p.dtype))
            offset += p.numel()
        return out, self.n_params - int(cutoff)


@dataclass
class _Matrix:
    u: Tensor
    s: Tensor
    vh: Tensor
    rel: np.ndarray  # σ_k / σ_1, descending
    cost_full: int
    cost_per_rank: int


class _LowRankPruner(_Pruner):
    """Truncate every 2-D parameter's SVD at a relative singular-value cutoff."""

    def __init__(self, params: dict[str, Tensor]) -> None:
        self.params = params
        self.n_params = sum(p.numel() for p in params.values())
        self.mats: dict[str, _Matrix] = {}
        for name, p in params.items():
            if p.ndim != 2:
                continue
            u, s, vh = torch.linalg.svd(p.to(torch.float64), full_matrices=False)
            top = float(s[0]) if s.numel() else 0.0
            rel = (s / top).numpy() if top > 0 else np.zeros(s.numel())
            m, n = p.shape
            self.mats[name] = _Matrix(u, s, vh, rel, m * n, m + n)
        self.others = self.n_params - sum(mat.cost_full for mat in self.mats.values())
        every = np.concatenate([mat.rel for mat in self.mats.values()] or [np.zeros(0)])
        # candidate cutoffs, descending from inf (rank 0 everywhere); kept grows as they fall
        self._candidates = np.concatenate([[np.inf], np.unique(every)[::-1]])
        self._kept_at = np.full(self._candidates.size, self.others, dtype=np.int64)
        for mat in self.mats.values():
            ranks = mat.rel.size - np.searchsorted(mat.rel[::-1], self._candidates, side="left")
            self._kept_at += np.minimum(ranks * mat.cost_per_rank, mat.cost_full)

    def _rank(self, mat: _Matrix, cutoff: float) -> int:
        return int(np.sum(mat.rel >= cutoff))

    def cutoff(self, keep: int) -> float:
        enough = self._kept_at >= keep
        return float(self._candidates[int(np.argmax(enough))] if enough.any() else 0.0)

    def apply(self, cutoff: float) -> tuple[dict[str, Tensor], int]:
        out = dict(self.params)
        for name, mat in self.mats.items():
            r = self._rank(mat, cutoff)
            w = (mat.u[:, :r] * mat.s[:r]) @ mat.vh[:r]
            out[name] = w.to(self.params[name].dtype)
        # the smallest candidate >= cutoff has the same ranks as the cutoff
        at = int(np.searchsorted(-self._candidates, -cutoff, side="right")) - 1
        return out, int(self._kept_at[at])


# -- curves ------------------------------------------------------------------------------------


class Evaluator:
    """Loss and accuracy of the model with given parameters on one or more row sets.

    All sets go through one forward pass (the rows concatenated); ``only`` evaluates one set.
    """

    def __init__(self, model: nn.Module, sets: list[tuple[Tensor, Tensor]], loss_fn: LossFn):
        self.model = model
        self.sets = sets
        self.loss_fn = loss_fn
        self.x = torch.cat([x for x, _ in sets]) if len(sets) > 1 else sets[0][0]
        self.bounds = np.cumsum([0, *[len(x) for x, _ in sets]])

    def outputs(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """The model's outputs on ``x`` with ``params`` (eval mode, no gradients)."""
        with eval_mode(self.model), torch.no_grad():
            return functional_call(self.model, params, (x,))

    def _score(self, out: Tensor, y: Tensor) -> tuple[float, float]:
        classify = not y.is_floating_point() and y.ndim == 1
        return float(self.loss_fn(out, y)), accuracy(out, y) if classify else math.nan

    def __call__(
        self, params: dict[str, Tensor], only: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Loss and accuracy with ``params`` on every set (or on set ``only``)."""
        if only is not None:
            x, y = self.sets[only]
            loss, acc = self._score(self.outputs(params, x), y)
            return np.array([loss]), np.array([acc])
        out = self.outputs(params, self.x)
        scores = [
            self._score(out[a:b], y)
            for (a, b), (_, y) in zip(pairwise(self.bounds), self.sets, strict=True)
        ]
        return np.array([v[0] for v in scores]), np.array([v[1] for v in scores])

    def null_losses(self, params: dict[str, Tensor]) -> np.ndarray:
        """The loss of an all-zero output on each set (every parameter pruned, no bias)."""
        x0 = self.sets[0][0][:1]
        shape = self.outputs(params, x0).shape[1:]
        return np.array([float(self.loss_fn(torch.zeros(len(y), *shape), y)) for _, y in self.sets])


def prune_curves(
    method: Method,
    pruner: _Pruner,
    evaluate: Evaluator,
    base: np.ndarray,
    null: np.ndarray,
    grid: np.ndarray,
    tol: float,
    abs_tol: float,
    refine: int,
    min_gain: float = 0.05,
) -> list[PruningCurve]:
    """One :class:`PruningCurve` per evaluation set of ``evaluate``, from one walk of the grid."""
    n = pruner.n_params

    def target(k: float) -> int:
        return max(1, round(k * n))

    cutoffs, kept, losses, accs = [], [], [], []
    for k in grid:
        c = pruner.cutoff(target(k))
        params, n_kept = pruner.apply(c)
        loss, acc = evaluate(params)
        cutoffs.append(pruner.score_at(c))
        kept.append(n_kept)
        losses.append(loss)
        accs.append(acc)
    loss_grid, acc_grid = np.array(losses), np.array(accs)  # (grid, sets)
    curves = []
    for i in range(len(evaluate.sets)):
        limit = base[i] + abs_tol + tol * (null[i] - base[i])

        def within(value: float, limit: float = limit) -> bool:
            return math.isfinite(value) and value <= limit

        factor, best = math.nan, 0
        if learned(float(base[i]), float(null[i]), min_gain):
            best, last = n, -1  # nothing pruned is within tolerance
            for j in range(len(grid)):
                if not within(loss_grid[j, i]):
                    break
                last, best = j, min(best, kept[j])
            if 0 <= last < len(grid) - 1:
                lo, hi = float(grid[last]), float(grid[last + 1])
                for _ in range(refine):
                    mid = math.sqrt(lo * hi)
                    if target(mid) in (target(lo), target(hi)):
                        break
                    params, n_kept = pruner.apply(pruner.cutoff(target(mid)))
                    if within(float(evaluate(params, only=i)[0][0])):
                        lo, best = mid, min(best, n_kept)
                    else:
                        hi = mid
            factor = n / best
        curves.append(
            PruningCurve(
                method=method,
                kept_target=np.asarray(grid, dtype=np.float64),
                cutoff=np.asarray(cutoffs, dtype=np.float64),
                fraction_pruned=1.0 - np.asarray(kept, dtype=np.float64) / n,
                loss=loss_grid[:, i].copy(),
                acc=acc_grid[:, i].copy(),
                n_params=n,
                base_loss=float(base[i]),
                null_loss=float(null[i]),
                compression_factor=factor,
                kept_at_tolerance=best,
            )
        )
    return curves


def learned(base: float, null: float, min_gain: float) -> bool:
    """Whether the unpruned loss closes ``min_gain`` of the way from the null loss to 0."""
    return math.isfinite(base) and base < null and base <= (1.0 - min_gain) * null


def check_tolerance(tol: float, abs_tol: float, refine: int, min_gain: float = 0.05) -> None:
    """Raise ValueError unless 0 <= tol <= 1, abs_tol >= 0, refine >= 0, 0 <= min_gain < 1."""
    if not (0 <= tol <= 1) or abs_tol < 0 or refine < 0 or not (0 <= min_gain < 1):
        msg = (
            f"tol must lie in [0, 1], min_gain in [0, 1) and abs_tol, refine be >= 0; got "
            f"tol={tol}, min_gain={min_gain}, abs_tol={abs_tol}, refine={refine}."
        )
        raise ValueError(msg)


def pruning_curve(
    model: nn.Module,
    method: Method,
    x: Tensor,
    y: Tensor,
    *,
    loss_fn: LossFn,
    fisher: dict[str, Tensor] | None = None,
    grid: np.ndarray | None = None,
    tol: float = 0.1,
    abs_tol: float = 0.0,
    refine: int = 4,
    min_gain: float = 0.05,
) -> PruningCurve:
    r"""Prune ``model`` along a grid of kept fractions and evaluate each pruned model.

    Scores: ``"fisher"`` the diagonal Fisher ``fisher`` (from :func:`diagonal_fisher`),
    ``"magnitude"`` :math:`|\theta_i|`, ``"lowrank"`` the relative singular values of each 2-D
    parameter; cutoffs, tolerance and compression factor as in the module docstring. The model
    itself is not changed (pruned parameters go through ``torch.func.functional_call``).

    Parameters
    ----------
    model : nn.Module
    method : {"fisher", "magnitude", "lowrank"}
    x, y : Tensor
        Evaluation rows and their targets (class ids give an accuracy too).
    loss_fn : callable
        ``(outputs, targets) -> scalar`` (the training loss).
    fisher : dict of str to Tensor, optional
        Diagonal Fisher per trainable parameter (``method="fisher"`` only).
    grid : ndarray, optional
        Target kept fractions, descending in (0, 1]; default :func:`kept_grid`.
    tol, abs_tol : float
        Loss tolerance :math:`L \le L_0 + \text{abs\_tol} + \text{tol}\,(L_\varnothing - L_0)`.
    refine : int
        Bisection steps refining the compression factor between grid points.
    min_gain : float
        The factor is defined only when :math:`L_0 \le (1 - \text{min\_gain}) L_\varnothing`.

    Returns
    -------
    PruningCurve
        ``compression_factor`` is NaN (``kept_at_tolerance`` 0) when the unpruned model is
        not ``min_gain`` better than an all-zero output on these rows.

    Raises
    ------
    ValueError
        On an unknown method, a missing or mismatched Fisher, a bad grid or tolerance, no rows,
        or a non-finite unpruned loss.
    """
    if method not in METHODS:
        msg = f"method must be one of {list(METHODS)}, got {method!r}."
        raise ValueError(msg)
    g = kept_grid() if grid is None else np.asarray(grid, dtype=np.float64)
    if g.ndim != 1 or g.size == 0 or np.any(g <= 0) or np.any(g > 1) or np.any(np.diff(g) >= 0):
        msg = f"grid must be kept fractions in (0, 1], strictly descending; got {g!r}."
        raise ValueError(msg)
    check_tolerance(tol, abs_tol, refine, min_gain)
    if len(x) == 0:
        msg = "No evaluation rows: x is empty."
        raise ValueError(msg)
    names = param_names(model)
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    evaluate = Evaluator(model, [(x, y)], loss_fn)
    base = evaluate(params)[0]
    if not np.isfinite(base).all():
        msg = "The unpruned model's loss is not finite: nothing to compare pruned models with."
        raise ValueError(msg)
    pruner = make_pruner(method, params, names, fisher)
    null = evaluate.null_losses(params)
    return prune_curves(method, pruner, evaluate, base, null, g, tol, abs_tol, refine, min_gain)[0]


def make_pruner(
    method: Method,
    params: dict[str, Tensor],
    names: list[str],
    fisher: dict[str, Tensor] | None,
) -> _Pruner:
    """The pruner of ``method``: the Fisher (checked against ``params``), |θ| or low rank."""
    if method == "lowrank":
        return _LowRankPruner(params)
    if method == "magnitude":
        return _ScorePruner(params, flat(params, names).abs())
    if fisher is None:
        msg = "method='fisher' needs the diagonal Fisher: pass fisher=diagonal_fisher(model, x)."
        raise ValueError(msg)
    missing = [n for n in names if n not in fisher or fisher[n].shape != params[n].shape]
    if missing:
        msg = f"The Fisher lacks (or has the wrong shape for) parameters {missing[:5]}."
        raise ValueError(msg)
    scores = flat(fisher, names)
    if not bool(torch.isfinite(scores).all()):
        msg = "The Fisher has non-finite entries."
        raise ValueError(msg)
    return _ScorePruner(params, scores, tiebreak=flat(params, names).abs())
