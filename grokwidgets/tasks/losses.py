"""Losses and accuracy for a task's kind, shared by the training loop and the diagnostics."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from grokwidgets.tasks.base import Task

LossFn = Callable[[Tensor, Tensor], Tensor]
LOSSES = ("auto", "cross_entropy", "mse", "centred_mse")


def make_loss(name: str, task: Task) -> LossFn:
    r"""The loss ``name`` for ``task``, as a function ``(outputs, targets) -> scalar``.

    ``"auto"`` is cross-entropy for classification and MSE for regression. ``"mse"`` on a
    classification task compares outputs with one-hot targets, averaged over samples *and*
    classes (``torch.nn.MSELoss`` default, as in Omnigrok, Liu et al. 2022):

    .. math:: L = \frac{1}{nC}\sum_{i,c} (f_c(x_i) - \mathbb{1}[y_i = c])^2

    ``"centred_mse"`` (classification only) is the loss of Tian's Li₂ code (arXiv:2509.21519,
    ``compute_loss`` with ``loss_type="mse"``): squared error between the outputs with their
    mean over classes removed and the centred one-hot target, *summed* over the C classes and
    averaged over samples,

    .. math::

        L = \frac1n\sum_i \sum_c \Big(f_c(x_i) - \bar f(x_i) - \big(\mathbb{1}[y_i = c]
        - \tfrac1C\big)\Big)^2, \qquad \bar f(x) = \tfrac1C\sum_c f_c(x).

    It is C times ``"mse"`` on centred quantities, so weight decay set for it is not the same
    strength as for ``"mse"``; and it ignores a constant shift of all outputs.
    """
    if name not in LOSSES:
        msg = f"Unknown loss {name!r}. Valid losses: {list(LOSSES)}."
        raise ValueError(msg)
    if name == "auto":
        name = "cross_entropy" if task.kind == "classification" else "mse"
    if name == "centred_mse":
        if task.kind != "classification":
            msg = "centred_mse needs a classification task (a one-hot target); use loss='mse'."
            raise ValueError(msg)
        n_cls = task.n_outputs

        def centred_mse(out: Tensor, y: Tensor) -> Tensor:
            target = F.one_hot(y, n_cls).to(out.dtype) - 1.0 / n_cls
            centred = out - out.mean(dim=1, keepdim=True)
            return (centred - target).square().sum(dim=1).mean()

        return centred_mse
    if name == "cross_entropy":
        if task.kind != "classification":
            msg = "cross_entropy needs a classification task; use loss='mse' for regression."
            raise ValueError(msg)
        return F.cross_entropy
    if task.kind == "classification":
        n_classes = task.n_outputs

        def mse_onehot(out: Tensor, y: Tensor) -> Tensor:
            return F.mse_loss(out, F.one_hot(y, n_classes).to(out.dtype))

        return mse_onehot
    return F.mse_loss


def accuracy(outputs: Tensor, targets: Tensor) -> float:
    """Fraction of samples whose arg-max output is the target class."""
    with torch.no_grad():
        return float((outputs.argmax(dim=-1) == targets).to(torch.float64).mean())
