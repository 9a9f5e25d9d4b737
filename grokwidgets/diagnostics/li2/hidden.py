r"""Li₂ quantities of the hidden layer: centred targets, energy, alignment, :math:`G_F` itself.

Notation: :math:`F = \sigma(XW)` the readout's input (``n × K``), :math:`P_1 = I - \mathbf
1\mathbf 1^\top / n` centres over samples, :math:`\tilde F = P_1 F`, :math:`\tilde Y = P_1 Y`
(one-hot targets for classification, the targets themselves for regression), :math:`f_j` the
column of node :math:`j`.

The energy of the independent stage
-----------------------------------
Take the loss :math:`\tfrac12\|\tilde Y - \tilde F V\|_F^2 + \tfrac\eta2\|V\|_F^2` (weight
decay :math:`\eta` on the readout; the centring absorbs biases). At its optimum the readout is
the ridge solution :math:`V^* = (\tilde F^\top \tilde F + \eta I)^{-1} \tilde F^\top \tilde Y`,
and the push-through identity gives the residual
:math:`\tilde Y - \tilde F V^* = \eta(\tilde F \tilde F^\top + \eta I)^{-1}\tilde Y`, so

.. math::

    G_F := -\frac{\partial L}{\partial F} = P_1(\tilde Y - \tilde F V^*) V^{*\top}
        = \eta\,(\tilde F\tilde F^\top + \eta I)^{-1}\,\tilde Y \tilde Y^\top \tilde F\,
          (\tilde F^\top\tilde F + \eta I)^{-1}
        = \eta^{-1}\,\tilde Y \tilde Y^\top \tilde F + O(\eta^{-2}).

To leading order column :math:`j` of :math:`G_F` is :math:`\eta^{-1}\tilde Y\tilde Y^\top
\tilde f_j`: it depends on node :math:`j` alone. The first layer's gradient flow is then, with
:math:`\tilde Y^\top P_1 = \tilde Y^\top`,

.. math::

    \dot w_j = X^\top\big(\sigma'(X w_j) \circ g_j\big)
             = \eta^{-1} X^\top\big(\sigma'(Xw_j) \circ \tilde Y \tilde Y^\top \sigma(X w_j)\big)
             = \eta^{-1}\,\nabla_w E(w_j), \qquad
    E(w) = \tfrac12\,\big\|\tilde Y^\top \sigma(X w)\big\|_2^2,

Tian's energy: every node does gradient ascent on :math:`E` independently, and its local
maxima are the emerging features (Fourier features for group tasks). The tests check this
derivation numerically: at the ridge readout the loss gradient of :math:`w_j` approaches
:math:`\eta^{-1}\nabla E(w_j)` as :math:`\eta` grows. We record the energy of each node of the
readout's input, on the train rows used, *divided by* :math:`n^2`,

.. math:: E_j = \tfrac12\,\big\|\tfrac1n \tilde Y^\top f_j\big\|_2^2
          = \tfrac12 \textstyle\sum_c \widehat{\operatorname{Cov}}(f_j, y_c)^2,

so that it does not grow with the number of rows (a positive constant: same maxima, same
ascent directions). When the features are random and :math:`\tilde F\tilde F^\top \approx
aI + b` the same leading term appears already in stage I: that is how weight decay "leaks"
the labels into :math:`G_F`, and why the distance of :math:`FF^\top` from its best
:math:`aI + b\mathbf 1\mathbf 1^\top` is recorded.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from grokwidgets.diagnostics._features import find_readout
from grokwidgets.diagnostics._shared import eval_mode, sample_matrix
from grokwidgets.tasks.losses import LossFn

__all__ = [
    "Labels",
    "centred_targets",
    "fft_dist",
    "fft_isotropy_distance",
    "ftf_offdiag_ratio",
    "gradient_alignment",
    "hidden_gradient",
    "independent_energy",
    "offdiag",
    "readout_features",
]

ArrayLike = Tensor | np.ndarray


def _matrix(x: ArrayLike, name: str) -> Tensor:
    """A (samples, features) matrix of at least 2 rows."""
    return sample_matrix(x, name, min_rows=2)


def centred_targets(targets: ArrayLike, n_classes: int | None = None) -> Tensor:
    r""":math:`\tilde Y = P_1 Y`: targets centred over samples, float64 ``(n, C)``.

    Class ids (integer 1-D) become one-hot rows over ``n_classes`` classes (default: largest
    id + 1) first; float targets of shape ``(n,)`` or ``(n, C)`` are centred as they are.
    """
    y = torch.as_tensor(targets).detach().cpu()
    if not y.is_floating_point():
        if y.ndim != 1:
            msg = f"Class ids must be 1-D, got shape {tuple(y.shape)}."
            raise ValueError(msg)
        n_classes = int(y.max()) + 1 if n_classes is None else int(n_classes)
        y = F.one_hot(y.long(), n_classes)
    y = y.to(torch.float64)
    if y.ndim == 1:
        y = y.unsqueeze(1)
    return y - y.mean(dim=0)


def independent_energy(features: ArrayLike, y_tilde: ArrayLike) -> Tensor:
    r"""Li₂ energy of each hidden node, per sample.

    .. math:: E_j = \tfrac12\big\|\tfrac1n\tilde Y^\top f_j\big\|_2^2:

    Tian's :math:`E(w_j) = \tfrac12\|\tilde Y^\top \sigma(X w_j)\|^2` divided by :math:`n^2`
    (derivation in the module docstring), for ``features`` :math:`F = \sigma(XW)`
    ``(n, K)`` and centred targets ``y_tilde`` ``(n, C)`` (:func:`centred_targets`).

    Returns
    -------
    Tensor
        ``(K,)`` float64.
    """
    f = _matrix(features, "features")
    yt = _matrix(y_tilde, "y_tilde")
    _same_rows(f, yt)
    n = f.shape[0]
    return 0.5 * (yt.T @ f / n).square().sum(dim=0)


def _same_rows(a: Tensor, b: Tensor) -> None:
    if a.shape[0] != b.shape[0]:
        msg = f"Row counts differ: {a.shape[0]} and {b.shape[0]}; they must be the same samples."
        raise ValueError(msg)


def gradient_alignment(grad: ArrayLike, features: ArrayLike, y_tilde: ArrayLike) -> float:
    r"""Cosine between :math:`G_F` and its independent-stage form.

    .. math:: \frac{\langle G_F,\ \tilde Y\tilde Y^\top\tilde F\rangle_F}
              {\|G_F\|_F\,\|\tilde Y\tilde Y^\top\tilde F\|_F} \in [-1, 1];

    NaN when either side is zero.
    """
    g = _matrix(grad, "grad")
    f = _matrix(features, "features")
    yt = _matrix(y_tilde, "y_tilde")
    _same_rows(g, f)
    _same_rows(f, yt)
    if g.shape != f.shape:
        msg = f"grad {tuple(g.shape)} and features {tuple(f.shape)} must have the same shape."
        raise ValueError(msg)
    return _alignment(g, f - f.mean(dim=0), yt)


def _alignment(g: Tensor, fc: Tensor, yt: Tensor) -> float:
    ind = yt @ (yt.T @ fc)
    den = float(torch.linalg.vector_norm(g) * torch.linalg.vector_norm(ind))
    return float((g * ind).sum()) / den if den > 0 else math.nan


def ftf_offdiag_ratio(features: ArrayLike) -> float:
    r"""Mean :math:`|(\tilde F^\top\tilde F)_{jl}|`, :math:`j \ne l`, over the mean diagonal.

    In [0, 1] (:math:`|C_{jl}| \le (C_{jj} + C_{ll})/2`): 0 when the centred hidden nodes are
    uncorrelated, 1 when all are the same up to sign. NaN with fewer than two nodes or no
    variance.
    """
    f = _matrix(features, "features")
    fc = f - f.mean(dim=0)
    return offdiag(fc.T @ fc)


def offdiag(c: Tensor) -> float:
    """:func:`ftf_offdiag_ratio` of a centred Gram matrix ``c`` (``K × K``)."""
    k = c.shape[0]
    diag = c.diagonal()
    mean_diag = float(diag.mean())
    if k < 2 or not mean_diag > 0:
        return math.nan
    off = (float(c.abs().sum()) - float(diag.abs().sum())) / (k * (k - 1))
    return off / mean_diag


def fft_isotropy_distance(features: ArrayLike) -> float:
    r"""Relative distance of :math:`FF^\top` from its best :math:`aI + b\mathbf 1\mathbf 1^\top`.

    .. math::

        \frac{\|FF^\top - (aI + b\mathbf 1\mathbf 1^\top)\|_F}{\|FF^\top\|_F}, \quad
        a + b = \overline{\operatorname{diag}}, \quad b = \overline{\text{off-diag}},

    the least-squares fit (diagonal and off-diagonal entries are orthogonal in the Frobenius
    inner product, so each is fitted by its mean and the residual is
    :math:`\|K\|^2 - n\bar d^2 - n(n-1)b^2`). Computed from :math:`F^\top F`, in
    :math:`O(nK^2)`. NaN for :math:`F = 0`.
    """
    return fft_dist(_matrix(features, "features"))


def fft_dist(f: Tensor, gram: Tensor | None = None) -> float:
    """:func:`fft_isotropy_distance` of a checked ``f``, from its Gram ``fᵀf`` when given."""
    n = f.shape[0]
    g = f.T @ f if gram is None else gram
    k_sq = float(g.square().sum())  # ||F F^T||_F^2 = ||F^T F||_F^2
    if not k_sq > 0:
        return math.nan
    trace = float(g.diagonal().sum())
    total = float(f.sum(dim=0).square().sum())  # 1^T F F^T 1
    d_mean = trace / n
    b = (total - trace) / (n * (n - 1))
    resid = k_sq - n * d_mean**2 - n * (n - 1) * b**2
    return math.sqrt(max(resid, 0.0) / k_sq)


@contextlib.contextmanager
def _readout_leaf(readout: nn.Module, grad: bool) -> Iterator[list[Tensor]]:
    """Replace the readout's input by a detached leaf (that requires grad when asked)."""
    seen: list[Tensor] = []

    def hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        leaf = args[0].detach().requires_grad_(grad)
        seen.append(leaf)
        return (leaf, *args[1:])

    handle = readout.register_forward_pre_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def hidden_gradient(
    model: nn.Module, x: Tensor, y: Tensor, loss_fn: LossFn
) -> tuple[Tensor, Tensor]:
    r"""The readout's input :math:`F` and the back-propagated gradient :math:`G_F` there.

    .. math:: G_F = -n\,\frac{\partial L}{\partial F},

    the negative gradient of the summed per-sample loss (``loss_fn`` is the mean loss the
    model is trained with), by autograd from the readout onwards (output scale, centring and
    the loss as the model applies them). For :math:`L = \frac1{2n}\|Y - FV\|_F^2` this is
    Tian's :math:`(Y - FV)V^\top`. The model runs in eval mode; parameters are not touched.

    Parameters
    ----------
    model : nn.Module
        A model with an ``nn.Linear`` readout (``readout``, else the last ``nn.Linear``).
    x, y : Tensor
        Inputs and targets (``n`` rows).
    loss_fn : callable
        ``(outputs, targets) -> scalar`` mean loss.

    Returns
    -------
    features, grad : Tensor
        ``(n, K)`` each, in the model's dtype.

    Raises
    ------
    ValueError
        If the readout runs other than once, or its input is not ``(n, K)``.
    """
    _, readout = find_readout(model)
    with eval_mode(model), torch.enable_grad(), _readout_leaf(readout, grad=True) as seen:
        out = model(x)
        f = _single_input(seen, int(x.shape[0]))
        loss = loss_fn(out, y)
        (g,) = torch.autograd.grad(loss, f, allow_unused=True)
    grad = torch.zeros_like(f) if g is None else -float(x.shape[0]) * g
    return f.detach(), grad.detach()


def _single_input(seen: list[Tensor], n: int) -> Tensor:
    if len(seen) != 1:
        msg = f"The readout ran {len(seen)} times in one forward pass (expected once)."
        raise ValueError(msg)
    f = seen[0]
    if f.ndim != 2 or f.shape[0] != n:
        msg = f"The readout's input has shape {tuple(f.shape)}; Li₂ needs (n={n}, hidden)."
        raise ValueError(msg)
    return f


class Labels:
    """Multiply by the centred targets Ỹ without forming them (class ids: O(nK), not O(nCK))."""

    def __init__(self, y: Tensor, n_classes: int | None) -> None:
        self.ids: Tensor | None = None
        if n_classes is not None and not y.is_floating_point() and y.ndim == 1:
            self.ids = y.long()
            self.counts = torch.bincount(self.ids, minlength=n_classes).to(torch.float64)
            self.freq = self.counts / len(y)
            self.n_classes = n_classes
        else:
            self.dense = centred_targets(y)

    def t_matmul(self, a: Tensor) -> Tensor:
        """Ỹᵀ a for ``a`` (n, K)."""
        if self.ids is None:
            return self.dense.T @ a
        sums = torch.zeros(self.n_classes, a.shape[1], dtype=a.dtype)
        return sums.index_add_(0, self.ids, a) - torch.outer(self.freq, a.sum(dim=0))

    def matmul_norm(self, s: Tensor) -> float:
        """‖Ỹ s‖_F without forming Ỹ s: rows of one class are equal, Σ_c n_c ‖s_c − freqᵀs‖²."""
        if self.ids is None:
            return float(torch.linalg.vector_norm(self.dense @ s))
        dev = s - self.freq @ s
        return math.sqrt(float((self.counts @ dev.square()).sum()))


def readout_features(model: nn.Module, x: Tensor) -> Tensor:
    """The readout's input :math:`F` on ``x`` (eval mode, no gradients)."""
    _, readout = find_readout(model)
    with eval_mode(model), torch.no_grad(), _readout_leaf(readout, grad=False) as seen:
        model(x)
        return _single_input(seen, int(x.shape[0]))
