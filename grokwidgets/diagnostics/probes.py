r"""Linear probes per layer, readout misalignment and readout train bias (paper 1).

A *linear probe* is a fresh linear map fitted on a frozen layer's representation of the train
split and evaluated on the test split [1]_ [2]_. The diagnostic ``probes`` fits one per layer
(layers as in :mod:`grokwidgets.diagnostics._features`: ``embed``, ``encoder.0``, …, and
``readout`` = the readout's input) on the fixed row subsets (up to 2,048 train and 2,048 test
rows, :class:`~grokwidgets.diagnostics._features.RowSubsets`) at every record.

The probe
---------
Features are standardized with the train rows' mean and (population) standard deviation,
:math:`z = (h - \mu) / s` (a constant feature keeps :math:`s = 1`), in float64. Classification:
multinomial logistic regression with a small L2 penalty on the weights (not the bias),

.. math::

    \min_{W, b}\; \frac{1}{n}\sum_{i=1}^{n} -\log \operatorname{softmax}(W^\top z_i + b)_{y_i}
    + \frac{\lambda}{2}\|W\|_F^2, \qquad \lambda = 10^{-3},

solved with L-BFGS (compact form, Armijo steps) to a gradient max-norm below 3·10⁻⁵ (10⁻⁶ for
:func:`linear_probe` called directly), warm-started from the previous record's solution (kept
in ``probe.state``), iterating in the features' precision (float32 for a float32 model; the
standardization and the scores stay in float64). It is strictly convex, so the result does
not depend on the start. This is scikit-learn's ``LogisticRegression(C=1 / (λ n))``
on the same standardized features. An embedding layer's features repeat its table's rows, so
its probe is solved on those ``V`` rows (``linear_probe(embedding=...)``): the same sums in
another order, several times cheaper. Regression: ridge regression, in closed form,

.. math::

    \min_{W, b}\; \frac{1}{2n}\sum_{i} \|y_i - W^\top z_i - b\|^2 + \frac{\lambda}{2}\|W\|_F^2
    \;\Rightarrow\; W = (Z^\top Z + n\lambda I)^{-1} Z^\top (Y - \bar Y),\; b = \bar Y,

(scikit-learn's ``Ridge(alpha=n λ)``); its loss is reported as the MSE averaged over samples
and outputs, like the training loss.

Readout misalignment and train bias
-----------------------------------
Paper 1 [1]_ names both but its definitions were not found (PAPERS.md); the ones used here:
with :math:`a^{\text{model}}_s` the model's accuracy and :math:`a^{\text{probe}}_s` the probe's
accuracy on the readout's input, both on the fixed rows of split :math:`s`,

.. math::

    \text{readout\_misalignment} = a^{\text{probe}}_{\text{test}} - a^{\text{model}}_{\text{test}},

    \text{readout\_train\_bias}
    = (a^{\text{model}}_{\text{train}} - a^{\text{model}}_{\text{test}})
    - (a^{\text{probe}}_{\text{train}} - a^{\text{probe}}_{\text{test}}),

the model readout's generalization gap in excess of a fresh, regularized readout's on the same
features: positive when the trained readout favours the train split more than the
representation requires. Equivalently, train bias = misalignment + (model − probe accuracy on
train). For regression both use the MSE instead, signed so that positive still means "the
model's readout is worse on test / more train-biased than the probe":
:math:`\text{MSE}^{\text{model}}_{\text{test}} - \text{MSE}^{\text{probe}}_{\text{test}}` and
:math:`(\text{MSE}^{\text{model}}_{\text{test}} - \text{MSE}^{\text{model}}_{\text{train}})
- (\text{MSE}^{\text{probe}}_{\text{test}} - \text{MSE}^{\text{probe}}_{\text{train}})`.
Both are whole-model values (layer ``"model"``). The model's accuracy here is on the fixed
rows, so with more than 2,048 test rows it differs slightly from ``test_acc``.

Variants with other row subsets or penalty: :func:`register_probes`.

References
----------
.. [1] Chou, Uzdelewicz, Chiu, Yang & Chung (2026), "Two speeds of learning: a
   representation–readout decomposition of grokking and double descent", arXiv:2605.27078.
.. [2] Alain & Bengio (2016), "Understanding intermediate layers using linear classifier
   probes", arXiv:1610.01644.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from grokwidgets._names import MODEL_LAYER
from grokwidgets.diagnostics._features import (
    Capture,
    RowSubsets,
    capture,
    fill_aliases,
    representation_points,
)
from grokwidgets.diagnostics._shared import sample_matrix
from grokwidgets.diagnostics.probe import Probe
from grokwidgets.diagnostics.registry import MECHANISM_CADENCE, DiagnosticFn, MetricInfo, register
from grokwidgets.tasks.losses import accuracy

__all__ = [
    "DEFAULT_L2",
    "DEFAULT_TOL",
    "RECORD_TOL",
    "LinearProbeResult",
    "linear_probe",
    "register_probes",
]

#: L2 penalty λ of the probes (per sample: the loss is a mean).
DEFAULT_L2 = 1e-3
#: L-BFGS stops when the gradient's largest entry falls below this (:func:`linear_probe`).
DEFAULT_TOL = 1e-6
#: The registered ``probes`` diagnostic's tolerance: about a third of the iterations of
#: :data:`DEFAULT_TOL`; along the demo run its accuracies stay within a few of 2,048 rows of
#: it and of scikit-learn's (``bench/probe_solver.py``), well inside the accuracies' own
#: sampling error.
RECORD_TOL = 3e-5

_CHOU = "Chou et al. (2026) Two speeds of learning, arXiv:2605.27078"
_ALAIN = "Alain & Bengio (2016) linear classifier probes, arXiv:1610.01644"
_BOTH = f"{_ALAIN}; {_CHOU}"
ArrayLike = Tensor | np.ndarray


@dataclass(frozen=True)
class LinearProbeResult:
    r"""A fitted linear probe and its scores.

    Attributes
    ----------
    kind : {"classification", "regression"}
    train_acc, test_acc : float
        Accuracy on the train / test features (NaN for regression).
    train_loss, test_loss : float
        Mean cross-entropy in nats (classification) or MSE over samples and outputs
        (regression); the penalty is not included.
    coef : Tensor
        ``(d + 1, k)`` float64: weights on the standardized features, the bias as last row.
    mean, scale : Tensor
        ``(d,)`` float64 standardization, :math:`z = (h - \text{mean}) / \text{scale}`.
    n_iter : int
        L-BFGS iterations (0 for the closed-form ridge).
    converged : bool
        Whether the gradient max-norm fell below the tolerance.
    """

    kind: Literal["classification", "regression"]
    train_acc: float
    test_acc: float
    train_loss: float
    test_loss: float
    coef: Tensor
    mean: Tensor
    scale: Tensor
    n_iter: int
    converged: bool

    def predict(self, features: ArrayLike) -> Tensor:
        """Logits (classification) or predictions (regression) for ``(n, d)`` features."""
        z = (_as_float64(features, "features") - self.mean) / self.scale
        return z @ self.coef[:-1] + self.coef[-1]


def _as_float64(x: ArrayLike, name: str) -> Tensor:
    return sample_matrix(x, name, why_finite="; a probe needs finite features")


def _standardize(x: Tensor) -> tuple[Tensor, Tensor]:
    mean = x.mean(dim=0)
    # Two-pass population std, written out: torch's std() is ~6x slower on (2048, 256).
    scale = (x - mean).square_().mean(dim=0).sqrt_()
    # A (numerically) constant feature carries nothing: keep it centred, unscaled.
    tiny = scale <= 1e-12 * max(1.0, float(scale.max()) if scale.numel() else 1.0)
    return mean, torch.where(tiny, torch.ones_like(scale), scale)


class _Design:
    """The solver's view of ``[z, 1]``: logits ``θᵀ[z, 1]`` and the gradient's data term.

    The solver works with the transposed coefficients ``(k, d + 1)`` and logits ``(k, n)``.
    """

    def logits(self, theta_t: Tensor) -> Tensor:
        raise NotImplementedError

    def grad(self, penalty: Tensor, resid: Tensor, l2: float, n: int) -> Tensor:
        """``l2 · penalty + resid @ [z, 1] / n``."""
        raise NotImplementedError


class _DenseDesign(_Design):
    """``[z, 1]`` as a matrix.

    In the transposed layout its two products per evaluation are ~1.8x faster (MKL, skinny k).
    """

    def __init__(self, z: Tensor, dtype: torch.dtype) -> None:
        n, d = z.shape
        self.za = torch.empty(n, d + 1, dtype=dtype)  # [z, 1], written once in ``dtype``
        self.za[:, :d] = z
        self.za[:, d] = 1.0
        self.za_t = self.za.T.contiguous()

    def logits(self, theta_t: Tensor) -> Tensor:
        return theta_t @ self.za_t

    def grad(self, penalty: Tensor, resid: Tensor, l2: float, n: int) -> Tensor:
        return torch.addmm(penalty, resid, self.za, beta=l2, alpha=1.0 / n)


class _EmbeddingDesign(_Design):
    r"""``[z, 1]`` when ``z`` is an embedding's output: row ``i`` is ``[Ẽ_1[v_{i1}], …, 1]``.

    With :math:`\tilde E_t` the standardized table of position ``t`` (``V × e``) and
    :math:`v_{it}` the token of row ``i`` there, the logits are
    :math:`\sum_t (\theta_t \tilde E_t^\top)_{:, v_{it}} + b` and the gradient's data term is
    :math:`\frac1n (R\,\mathrm{onehot}(v_t)) \tilde E_t` per position: ``k × V`` products
    and gathers instead of ``k × n`` ones. The same sums, in another order.
    """

    def __init__(self, ids: Tensor, tables: Tensor, dtype: torch.dtype) -> None:
        self.ids = ids  # (T, n) int64
        self.tables = tables.to(dtype)  # (T, V, e)
        self.e = int(tables.shape[2])

    def logits(self, theta_t: Tensor) -> Tensor:
        e = self.e
        out = theta_t[:, -1:].expand(-1, self.ids.shape[1]).clone()
        for t, (ids, table) in enumerate(zip(self.ids, self.tables, strict=True)):
            out += (theta_t[:, t * e : (t + 1) * e] @ table.T).index_select(1, ids)
        return out

    def grad(self, penalty: Tensor, resid: Tensor, l2: float, n: int) -> Tensor:
        e, k = self.e, resid.shape[0]
        g = penalty.mul(l2)
        for t, (ids, table) in enumerate(zip(self.ids, self.tables, strict=True)):
            per_token = resid.new_zeros((k, table.shape[0])).index_add_(1, ids, resid)
            g[:, t * e : (t + 1) * e].addmm_(per_token, table, alpha=1.0 / n)
        g[:, -1] += resid.sum(dim=1) / n
        return g


def _fit_logistic(
    design: _Design,
    y: Tensor,
    k: int,
    l2: float,
    init: Tensor | None,
    max_iter: int,
    tol: float,
    d1: int,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, int, bool]:
    """Multinomial logistic regression by L-BFGS on ``design`` = [z, 1]; returns (coef, iters, ok).

    ``dtype`` is the arithmetic of the iterations (float32 halves their cost); the
    coefficients come back in float64, ``(d1, k)``.
    """
    n = int(y.shape[0])
    start = init if init is not None and init.shape == (d1, k) else None
    theta0 = (
        start.detach().to(dtype).T.contiguous()
        if start is not None
        else torch.zeros(k, d1, dtype=dtype)
    )
    penal = torch.ones(1, d1, dtype=dtype)
    penal[0, -1] = 0.0  # no penalty on the bias
    label_row = y.reshape(1, n)
    rows = torch.arange(n)

    def objective(flat: Tensor) -> tuple[float, Tensor]:
        # The gradient is written by hand: cheaper than autograd and exactly the formula.
        # Loss per row: log Σ_c exp(l_c) - l_y = top + log Σ_c exp(l_c - top) - l_y; the
        # residual softmax - onehot is built in place in the logits' buffer (a fresh tensor),
        # in five passes over the (k, n) logits instead of nine.
        theta_t = flat.view(k, d1)
        logits = design.logits(theta_t)
        picked = logits.gather(0, label_row)
        top = logits.amax(dim=0, keepdim=True)
        resid = logits.sub_(top).exp_()
        total = resid.sum(dim=0, keepdim=True)
        data = (top + total.log() - picked).sum() / n
        loss = data + 0.5 * l2 * (penal * theta_t.square()).sum()
        resid.div_(total)
        resid[y, rows] -= 1.0
        return float(loss), design.grad(penal * theta_t, resid, l2, n).reshape(-1)

    # Below float32's resolution a "change" is rounding: stop there rather than spin.
    change = 1e-15 if dtype == torch.float64 else 1e-9
    flat, n_iter, grad = _lbfgs(objective, theta0.reshape(-1), tol, max_iter, change)
    converged = float(grad.abs().max()) <= 10 * tol
    return flat.view(k, d1).T.to(torch.float64).contiguous(), n_iter, converged


#: L-BFGS memory (curvature pairs kept).
_HISTORY = 20


def _lbfgs(
    objective: Callable[[Tensor], tuple[float, Tensor]],
    x: Tensor,
    tol: float,
    max_iter: int,
    tol_change: float,
) -> tuple[Tensor, int, Tensor]:
    r"""Minimize a smooth, strictly convex ``objective`` (value, gradient) by L-BFGS.

    The inverse-Hessian product uses the compact form of Byrd, Nocedal & Schnabel (1994),
    :math:`H g = \gamma g + [S\;\gamma Y]\,M\,[S g;\,\gamma Y g]`, a handful of matrix
    products instead of the two-loop recursion's 4·m vector operations (which dominate at
    these sizes); see :class:`_CurvaturePairs`. Steps: Armijo backtracking from 1 (from
    ``1/‖g‖₁`` at the first iteration, as ``torch.optim.LBFGS``); strict convexity keeps
    every curvature pair positive, so no Wolfe curvature test is needed. Stops when the
    gradient's largest entry is at most ``tol``, after ``max_iter`` iterations, or when the
    objective changes by less than ``tol_change``. Returns ``(x, iterations, gradient)``.
    """
    f, g = objective(x)
    pairs = _CurvaturePairs(_HISTORY, x.numel(), x.dtype)
    n_iter = 0
    while n_iter < max_iter and float(g.abs().max()) > tol:
        n_iter += 1
        if not pairs.count:
            d, t = -g, min(1.0, 1.0 / float(g.abs().sum()))
        else:
            d, t = -pairs.inverse_hessian_times(g), 1.0
        slope = float(g @ d)
        if not slope < 0:
            break
        while True:
            x_new = x + t * d
            f_new, g_new = objective(x_new)
            if f_new <= f + 1e-4 * t * slope or t < 1e-10:
                break
            t *= 0.5
        s, yv = x_new - x, g_new - g
        if float(s @ yv) > 1e-10 * float(yv @ yv):
            pairs.add(s, yv)
        stalled = abs(f_new - f) < tol_change
        x, f, g = x_new, f_new, g_new
        if stalled:
            break
    return x, n_iter, g


class _CurvaturePairs:
    r"""The last ``m`` L-BFGS pairs :math:`(s_i, y_i)` and their products :math:`H g`.

    The pairs sit in ring buffers (no re-stacking per iteration) with the small Grams
    :math:`s_i \cdot y_j` and :math:`y_i \cdot y_j` updated by one row and column per new
    pair, so a product :math:`H g` reads the big buffers four times
    (:math:`Sg, Yg, S^\top q, Y^\top p`) instead of recomputing :math:`S Y^\top`.
    """

    def __init__(self, m: int, dim: int, dtype: torch.dtype) -> None:
        self.m = m
        self.s = torch.empty(m, dim, dtype=dtype)
        self.y = torch.empty(m, dim, dtype=dtype)
        self.sy = torch.zeros(m, m, dtype=dtype)  # sy[i, j] = s_i · y_j, by slot
        self.yy = torch.zeros(m, m, dtype=dtype)  # yy[i, j] = y_i · y_j, by slot
        self.count = 0
        self.next = 0  # the slot the next pair goes to (the oldest once full)

    def add(self, s: Tensor, y: Tensor) -> None:
        """Keep ``(s, y)``, dropping the oldest pair when ``m`` are kept."""
        r = self.next
        self.s[r] = s
        self.y[r] = y
        used = min(self.count + 1, self.m)  # slots 0..used-1 hold pairs
        self.sy[r, :used] = self.y[:used] @ s
        self.sy[:used, r] = self.s[:used] @ y
        self.yy[r, :used] = self.y[:used] @ y
        self.yy[:used, r] = self.yy[r, :used].clone()
        self.count = used
        self.next = (r + 1) % self.m

    def inverse_hessian_times(self, g: Tensor) -> Tensor:
        """The compact L-BFGS product ``H g`` (Byrd, Nocedal & Schnabel 1994, eq. 2.6)."""
        used = self.count
        s, y = self.s[:used], self.y[:used]
        # Slots in chronological order (the compact form's triangular R needs it).
        order = (torch.arange(used) + (self.next if used == self.m else 0)) % used
        sy = self.sy[:used, :used][order][:, order]
        yy = self.yy[:used, :used][order][:, order]
        sg, yg = (s @ g)[order], (y @ g)[order]
        gamma = float(sy[-1, -1]) / float(yy[-1, -1])
        r = torch.triu(sy)
        p = torch.linalg.solve_triangular(r, sg.unsqueeze(1), upper=True).squeeze(1)
        w = torch.diagonal(sy) * p + gamma * (yy @ p) - gamma * yg
        q = torch.linalg.solve_triangular(r.T, w.unsqueeze(1), upper=False).squeeze(1)
        # Back to slot order for the products with the buffers.
        p_slot, q_slot = torch.empty_like(p), torch.empty_like(q)
        p_slot[order], q_slot[order] = p, q
        return gamma * g + s.T @ q_slot - gamma * (y.T @ p_slot)


def _embedding_design(
    embedding: tuple[Tensor, Tensor], x_tr: Tensor, mean: Tensor, scale: Tensor, dtype: torch.dtype
) -> _EmbeddingDesign:
    """The factored design of train features that are ``table[ids]`` flattened, checked."""
    ids, table = embedding
    ids = torch.as_tensor(ids).detach().cpu().long()
    table = torch.as_tensor(table).detach().cpu()
    n, d = x_tr.shape
    if ids.ndim == 1:
        ids = ids.unsqueeze(1)  # one position
    if table.ndim != 2 or ids.ndim != 2 or ids.shape[0] != n or ids.shape[1] * table.shape[1] != d:
        msg = (
            f"embedding must be (ids of shape (n_train, T), table of shape (V, e)) with "
            f"T·e = {d} features for {n} rows; got ids {tuple(ids.shape)}, table "
            f"{tuple(table.shape)}."
        )
        raise ValueError(msg)
    if int(ids.min()) < 0 or int(ids.max()) >= table.shape[0]:
        lo, hi = int(ids.min()), int(ids.max())
        msg = f"embedding ids must lie in [0, {table.shape[0]}); got ids from {lo} to {hi}."
        raise ValueError(msg)
    table64 = table.to(torch.float64)
    if not torch.equal(table64[ids].reshape(n, d), x_tr):
        msg = "features_train are not table[ids] flattened: the embedding does not describe them."
        raise ValueError(msg)
    t, e = ids.shape[1], table.shape[1]
    tables = (table64.unsqueeze(0) - mean.reshape(t, 1, e)) / scale.reshape(t, 1, e)
    return _EmbeddingDesign(ids.T.contiguous(), tables, dtype)


def linear_probe(
    features_train: ArrayLike,
    y_train: ArrayLike,
    features_test: ArrayLike,
    y_test: ArrayLike,
    *,
    n_classes: int | None = None,
    l2: float = DEFAULT_L2,
    init: Tensor | None = None,
    max_iter: int = 1000,
    tol: float = DEFAULT_TOL,
    solver_dtype: torch.dtype = torch.float64,
    embedding: tuple[Tensor, Tensor] | None = None,
) -> LinearProbeResult:
    r"""Fit a linear probe on train features and score it on train and test.

    Integer targets of shape ``(n,)`` give multinomial logistic regression, floating targets
    (``(n,)`` or ``(n, k)``) ridge regression; both on features standardized with the train
    mean and standard deviation, in float64, with the objectives in the module docstring:

    .. math::

        \frac{1}{n}\sum_i \ell(W^\top z_i + b, y_i) + \frac{\lambda}{2}\|W\|_F^2 .

    Parameters
    ----------
    features_train, features_test : Tensor or ndarray
        ``(n_train, d)`` and ``(n_test, d)`` finite features.
    y_train, y_test : Tensor or ndarray
        Class ids (int) or regression targets (float).
    n_classes : int, optional
        Number of classes; default ``max(y) + 1`` over both splits.
    l2 : float
        The penalty λ (``C = 1 / (λ n_train)`` in scikit-learn's terms).
    init : Tensor, optional
        ``(d + 1, k)`` start for L-BFGS (a previous result's ``coef``); ignored when its
        shape does not fit.
    max_iter : int
        L-BFGS iteration limit.
    tol : float
        Stop when the gradient's largest entry is below this.
    solver_dtype : torch.dtype
        Arithmetic of the L-BFGS iterations (logistic regression only): ``torch.float32``
        halves their cost; standardization, scores and the returned coefficients stay in
        float64. On the modular-addition and MNIST features it moves accuracies by at most a
        row (``bench/probe_solver.py``).
    embedding : (Tensor, Tensor), optional
        ``(ids, table)`` when ``features_train`` are an embedding's output, row ``i`` being
        ``table[ids[i]]`` flattened (``ids`` of shape ``(n_train, T)``, ``table`` ``(V, e)``;
        checked, a mismatch is a ``ValueError``). The logistic fit then works on the ``V``
        table rows instead of the ``n_train`` feature rows: the same objective and the same
        sums in another order, several times cheaper when ``V ≪ n_train`` (classification
        only; ridge ignores it).

    Returns
    -------
    LinearProbeResult

    Raises
    ------
    ValueError
        On mismatched shapes, non-finite features, a train set with fewer than two classes
        or two rows, or class ids outside ``[0, n_classes)``.

    References
    ----------
    .. [1] Alain & Bengio (2016), arXiv:1610.01644.
    """
    x_tr = _as_float64(features_train, "features_train")
    x_te = _as_float64(features_test, "features_test")
    y_tr = torch.as_tensor(y_train).detach().cpu()
    y_te = torch.as_tensor(y_test).detach().cpu()
    if x_tr.shape[1] != x_te.shape[1]:
        msg = (
            f"features_train has {x_tr.shape[1]} features but features_test has "
            f"{x_te.shape[1]}; they must come from the same layer."
        )
        raise ValueError(msg)
    for name, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        if y.shape[0] != x.shape[0]:
            msg = f"features_{name} has {x.shape[0]} rows but y_{name} has {y.shape[0]}."
            raise ValueError(msg)
    if x_tr.shape[0] < 2:
        msg = f"A probe needs at least 2 train rows, got {x_tr.shape[0]}."
        raise ValueError(msg)
    if not l2 > 0:
        msg = f"l2 must be positive (the probe's objective is then strictly convex), got {l2}."
        raise ValueError(msg)
    if solver_dtype not in (torch.float32, torch.float64):
        msg = f"solver_dtype must be torch.float32 or torch.float64, got {solver_dtype}."
        raise ValueError(msg)
    mean, scale = _standardize(x_tr)
    z_tr = (x_tr - mean) / scale
    z_te = (x_te - mean) / scale
    if y_tr.is_floating_point():
        return _ridge(z_tr, y_tr, z_te, y_te, mean, scale, l2)
    y_tr, y_te = y_tr.long().reshape(-1), y_te.long().reshape(-1)
    y_all = torch.cat([y_tr, y_te])
    k = int(n_classes) if n_classes is not None else int(y_all.max()) + 1
    if int(y_all.min()) < 0 or int(y_all.max()) >= k:
        lo, hi = int(y_all.min()), int(y_all.max())
        msg = f"Class ids must lie in [0, n_classes={k}); got ids from {lo} to {hi}."
        raise ValueError(msg)
    if int(torch.unique(y_tr).numel()) < 2:
        msg = (
            f"The probe's train rows hold a single class ({int(y_tr[0])}): a classifier "
            "cannot be fitted. Use a larger or stratified row subset."
        )
        raise ValueError(msg)
    design = (
        _embedding_design(embedding, x_tr, mean, scale, solver_dtype)
        if embedding is not None
        else _DenseDesign(z_tr, solver_dtype)
    )
    coef, n_iter, converged = _fit_logistic(
        design, y_tr, k, float(l2), init, max_iter, tol, z_tr.shape[1] + 1, solver_dtype
    )
    logits_tr = z_tr @ coef[:-1] + coef[-1]
    logits_te = z_te @ coef[:-1] + coef[-1]
    return LinearProbeResult(
        kind="classification",
        train_acc=_acc(logits_tr, y_tr),
        test_acc=_acc(logits_te, y_te),
        train_loss=float(F.cross_entropy(logits_tr, y_tr)),
        test_loss=float(F.cross_entropy(logits_te, y_te)) if len(y_te) else math.nan,
        coef=coef,
        mean=mean,
        scale=scale,
        n_iter=n_iter,
        converged=converged,
    )


def _acc(logits: Tensor, y: Tensor) -> float:
    return accuracy(logits, y) if len(y) else math.nan


def _ridge(
    z_tr: Tensor,
    y_tr: Tensor,
    z_te: Tensor,
    y_te: Tensor,
    mean: Tensor,
    scale: Tensor,
    l2: float,
) -> LinearProbeResult:
    y_tr = y_tr.to(torch.float64).reshape(len(y_tr), -1)
    y_te = y_te.to(torch.float64).reshape(len(y_te), -1)
    if y_tr.shape[1] != y_te.shape[1]:
        msg = f"y_train has {y_tr.shape[1]} outputs but y_test has {y_te.shape[1]}."
        raise ValueError(msg)
    if not (bool(torch.isfinite(y_tr).all()) and bool(torch.isfinite(y_te).all())):
        msg = "Regression targets hold NaN or infinite values."
        raise ValueError(msg)
    n, d = z_tr.shape
    y_mean = y_tr.mean(dim=0)
    gram = z_tr.T @ z_tr
    gram.diagonal().add_(n * l2)
    w = torch.linalg.solve(gram, z_tr.T @ (y_tr - y_mean))
    coef = torch.cat([w, y_mean.unsqueeze(0)], dim=0)
    pred_tr = z_tr @ w + y_mean
    pred_te = z_te @ w + y_mean
    return LinearProbeResult(
        kind="regression",
        train_acc=math.nan,
        test_acc=math.nan,
        train_loss=float(F.mse_loss(pred_tr, y_tr)),
        test_loss=float(F.mse_loss(pred_te, y_te)) if len(y_te) else math.nan,
        coef=coef,
        mean=mean,
        scale=scale,
        n_iter=0,
        converged=True,
    )


# -- the registered diagnostic -------------------------------------------------------------


_LAYER_METRICS = ("probe_train_acc", "probe_test_acc", "probe_train_loss", "probe_test_loss")
_MODEL_METRICS = ("readout_misalignment", "readout_train_bias")


def _metric_infos() -> list[MetricInfo]:
    return [
        MetricInfo(
            "probe_train_acc",
            "accuracy of a linear probe (L2 logistic regression on standardized features) "
            "fitted on the layer's representation of the fixed train rows, on those rows",
            "1",
            _BOTH,
        ),
        MetricInfo(
            "probe_test_acc",
            "test accuracy of a linear probe fitted on the layer's representation of the fixed "
            "train rows ('readout' = the readout's input)",
            "1",
            _BOTH,
        ),
        MetricInfo(
            "probe_train_loss",
            "the probe's loss on the fixed train rows (cross-entropy; ridge: MSE)",
            "nats (classification) / MSE (regression)",
            _BOTH,
        ),
        MetricInfo(
            "probe_test_loss",
            "the probe's loss on the fixed test rows (cross-entropy; ridge: MSE)",
            "nats (classification) / MSE (regression)",
            _BOTH,
        ),
        MetricInfo(
            "readout_misalignment",
            "probe test accuracy on the readout's input minus the model's test accuracy "
            "(same rows; regression: model minus probe test MSE); > 0: a fresh linear readout "
            "generalizes better than the trained one",
            "1",
            f"{_CHOU} (definition ours: not found in the paper)",
        ),
        MetricInfo(
            "readout_train_bias",
            "the model's train-test accuracy gap minus the probe's on the readout's input "
            "(regression: test-train MSE gaps); > 0: the readout favours the train split more "
            "than the representation requires",
            "1",
            f"{_CHOU} (definition ours: not found in the paper)",
        ),
    ]


def _check_model(probe: Probe) -> None:
    representation_points(probe.model)  # raises a clear error without an nn.Linear readout


def _model_scores(cap: Capture, kind: str) -> tuple[float, float]:
    """The model's (accuracy, MSE) on a capture's rows (accuracy NaN for regression)."""
    out = cap.outputs.detach().to(torch.float64)
    if kind == "classification":
        return _acc(out, cap.targets), math.nan
    return math.nan, float(F.mse_loss(out, cap.targets.to(torch.float64).reshape(out.shape)))


def _probes_fn(name: str, sets: RowSubsets, l2: float, tol: float, precision: str) -> DiagnosticFn:
    def probes(probe: Probe) -> dict[str, float | dict[str, float]]:
        task = probe.task
        if task is None:
            msg = f"The {name!r} diagnostic needs a task: pass one to Monitor(model, task)."
            raise ValueError(msg)
        train = capture(probe, "train", sets)
        test = capture(probe, "test", sets)
        classification = task.kind == "classification"
        out: dict[str, dict[str, float]] = {m: {} for m in _LAYER_METRICS}
        results: dict[str, LinearProbeResult] = {}
        n_train_classes = int(torch.unique(train.targets).numel()) if classification else 0
        for layer in train.layers:
            if layer in train.aliases:
                continue  # filled from the layer it is an alias of, below
            reason = train.skipped.get(layer) or test.skipped.get(layer)
            if reason is None and layer not in test.features:
                reason = "no representation on the fixed test rows"
            if reason is None and classification and n_train_classes < 2:
                reason = "the fixed train rows hold a single class: no classifier to fit"
            if reason is not None:
                for metric in _LAYER_METRICS:
                    out[metric][layer] = probe.nan(metric, reason, layer=layer)
                continue
            key = f"{name}.coef.{layer}"
            feats = train.features[layer]
            wide = precision == "float64" or (precision == "auto" and feats.dtype == torch.float64)
            res = linear_probe(
                train.features[layer],
                train.targets,
                test.features[layer],
                test.targets,
                n_classes=task.n_outputs if classification else None,
                l2=l2,
                init=probe.state.get(key),
                tol=tol,
                solver_dtype=torch.float64 if wide else torch.float32,
                embedding=train.embeddings.get(layer) if classification else None,
            )
            probe.state[key] = res.coef
            results[layer] = res
            out["probe_train_loss"][layer] = res.train_loss
            out["probe_test_loss"][layer] = res.test_loss
            if classification:
                out["probe_train_acc"][layer] = res.train_acc
                out["probe_test_acc"][layer] = res.test_acc
            else:
                why = "regression task: the ridge probe has a loss, not an accuracy"
                out["probe_train_acc"][layer] = probe.nan("probe_train_acc", why, layer=layer)
                out["probe_test_acc"][layer] = probe.nan("probe_test_acc", why, layer=layer)
        fill_aliases(probe, train, out)
        readout = representation_points(probe.model)[-1].name
        values: dict[str, float | dict[str, float]] = dict(out)
        values.update(_readout_values(probe, results.get(readout), train, test, task.kind))
        return values

    probes.__doc__ = f"Linear probes per layer and readout misalignment ({name!r})."
    return probes


def _readout_values(
    probe: Probe,
    res: LinearProbeResult | None,
    train: Capture,
    test: Capture,
    kind: str,
) -> dict[str, float]:
    if res is None:
        reason = "no probe on the readout's input (see the probe metrics' reason at its layer)"
        return {m: probe.nan(m, reason, layer=MODEL_LAYER) for m in _MODEL_METRICS}
    acc_tr, mse_tr = _model_scores(train, kind)
    acc_te, mse_te = _model_scores(test, kind)
    if len(test.targets) == 0:
        reason = "the test split is empty"
        return {m: probe.nan(m, reason, layer=MODEL_LAYER) for m in _MODEL_METRICS}
    if kind == "classification":
        misalignment = res.test_acc - acc_te
        bias = (acc_tr - acc_te) - (res.train_acc - res.test_acc)
    else:
        misalignment = mse_te - res.test_loss
        bias = (mse_te - mse_tr) - (res.test_loss - res.train_loss)
    return {"readout_misalignment": misalignment, "readout_train_bias": bias}


def register_probes(
    name: str = "probes",
    *,
    sets: RowSubsets | None = None,
    l2: float = DEFAULT_L2,
    tol: float = RECORD_TOL,
    precision: Literal["auto", "float32", "float64"] = "auto",
    replace: bool = False,
) -> None:
    """Register the probe family under ``name`` with its own row subsets and penalty.

    ``"probes"`` is registered with the defaults; a variant is for other sizes, e.g.
    ``register_probes("probes_all", sets=RowSubsets(n_train=10**9, n_test=10**9))`` probes on
    every row. Warm-start state is kept under ``"{name}.coef.{layer}"`` in ``probe.state``.

    Parameters
    ----------
    name : str
        The diagnostic's name in ``Monitor(diagnostics=[...])``.
    sets : RowSubsets, optional
        The fixed rows; default ``RowSubsets()`` (2,048 train and 2,048 test, seed 0).
    l2 : float
        The probes' L2 penalty λ.
    tol : float
        L-BFGS stops when the gradient's largest entry is below this; the default
        :data:`RECORD_TOL` takes about a third of the iterations of ``1e-6`` and moves
        accuracies by a few rows at most (``bench/probe_solver.py``).
    precision : {"auto", "float32", "float64"}
        Arithmetic of the L-BFGS iterations; ``"auto"`` uses the features' dtype (a float32
        model's probes iterate in float32, twice as fast). Scores are computed in float64.
    replace : bool
        Replace an existing registration of ``name``.
    """
    if not l2 > 0 or not tol > 0:
        msg = f"l2 and tol must be positive, got l2={l2}, tol={tol}."
        raise ValueError(msg)
    if precision not in ("auto", "float32", "float64"):
        msg = f"precision must be 'auto', 'float32' or 'float64', got {precision!r}."
        raise ValueError(msg)
    register(
        name,
        metrics=_metric_infos(),
        setup=_check_model,
        cadence=MECHANISM_CADENCE,
        replace=replace,
    )(_probes_fn(name, sets or RowSubsets(), float(l2), float(tol), precision))


register_probes("probes")
