"""Wrap the user's own arrays or tensors as a :class:`Task`."""

from __future__ import annotations

import operator
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from .base import Task

__all__ = ["from_tensors"]

ArrayLike = Tensor | np.ndarray


def _as_tensor(name: str, value: Any) -> Tensor:
    if isinstance(value, Tensor):
        t = value.detach()
    else:
        arr = np.asarray(value)
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            msg = f"{name} must be a numeric tensor or array, got dtype {arr.dtype}."
            raise ValueError(msg)
        # A private, writable copy: the task must not change when the caller's array does.
        t = torch.from_numpy(np.array(arr, copy=True))
    if t.is_complex():
        msg = f"{name} is complex ({t.dtype}); tasks take real numbers only."
        raise ValueError(msg)
    return t


def _is_integer(t: Tensor) -> bool:
    return not t.is_floating_point() and t.dtype != torch.bool


def from_tensors(
    x_train: ArrayLike,
    y_train: ArrayLike,
    x_test: ArrayLike,
    y_test: ArrayLike,
    kind: Literal["classification", "regression"] | None = "classification",
    n_outputs: int | None = None,
    name: str = "custom",
    input_kind: Literal["continuous", "tokens"] | None = None,
) -> Task:
    """Make a :class:`Task` from the user's own data (torch tensors or numpy arrays).

    Conversions and inferences:

    - ``x`` of one dimension becomes a single feature, shape ``(n, 1)``.
    - ``input_kind=None`` infers ``"tokens"`` from integer ``x`` (``vocab_size`` = largest id
      + 1 over both splits) and ``"continuous"`` otherwise. Token ids become ``int64``; integer or
      boolean ``x`` given as ``"continuous"`` becomes ``float32``; floating ``x`` keeps its dtype.
    - ``kind=None`` infers ``"classification"`` from integer or boolean ``y`` and
      ``"regression"`` from floating ``y``.
    - Classification: ``y`` becomes ``int64``; ``n_outputs=None`` infers the largest class id + 1
      over both splits.
    - Regression: ``y`` of one dimension becomes ``(n, 1)``; integer ``y`` becomes ``float32``;
      ``n_outputs=None`` infers ``y_train.shape[1]``.

    Everything else is checked by :class:`Task` (e.g. floating ``y`` for classification raises
    with the fix). Tensors are not copied (only detached); numpy arrays are.

    Parameters
    ----------
    x_train, y_train, x_test, y_test : Tensor or numpy.ndarray
        The data.
    kind : {"classification", "regression"} or None
        The loss kind; None infers it from the dtype of ``y``.
    n_outputs : int or None
        Number of classes or output dimension; None infers it.
    name : str
        Name of the task.
    input_kind : {"continuous", "tokens"} or None
        Whether ``x`` holds real features or token ids; None infers it from the dtype of ``x``.

    Returns
    -------
    Task
        With ``config = {"family": "from_tensors", "name": name}``. Such a task cannot be rebuilt
        with :func:`~grokwidgets.tasks.from_config` (the data are not in the config).

    Raises
    ------
    ValueError
        If the data are not numeric, the splits have different feature shapes, token ids are
        negative, ``input_kind`` or ``n_outputs`` is invalid, or :class:`Task` rejects the result.
    """
    xtr, ytr = _as_tensor("x_train", x_train), _as_tensor("y_train", y_train)
    xte, yte = _as_tensor("x_test", x_test), _as_tensor("y_test", y_test)

    if input_kind not in (None, "continuous", "tokens"):
        msg = f"input_kind must be 'continuous', 'tokens' or None (infer), got {input_kind!r}."
        raise ValueError(msg)
    xtr, xte = (x.unsqueeze(1) if x.ndim == 1 else x for x in (xtr, xte))
    if xtr.shape[1:] != xte.shape[1:]:
        msg = (
            f"x_train has samples of shape {tuple(xtr.shape[1:])} but x_test of shape "
            f"{tuple(xte.shape[1:])}; they must match."
        )
        raise ValueError(msg)
    if input_kind is None:
        input_kind = "tokens" if _is_integer(xtr) and _is_integer(xte) else "continuous"
    vocab_size = None
    if input_kind == "tokens":
        if _is_integer(xtr) and _is_integer(xte):
            xtr, xte = xtr.long(), xte.long()
            ids = torch.cat([xtr.flatten(), xte.flatten()])
            if ids.numel() and int(ids.min()) < 0:
                msg = "Token ids must be >= 0; x holds negative values."
                raise ValueError(msg)
            vocab_size = int(ids.max()) + 1 if ids.numel() else 0
    else:
        xtr, xte = (x if x.is_floating_point() else x.float() for x in (xtr, xte))

    if kind is None:
        floating = ytr.is_floating_point() or yte.is_floating_point()
        kind = "regression" if floating else "classification"
    if kind == "classification":
        ytr, yte = (y.long() if not y.is_floating_point() else y for y in (ytr, yte))
    elif kind == "regression":
        ytr, yte = (y if y.is_floating_point() else y.float() for y in (ytr, yte))
        ytr, yte = (y.unsqueeze(1) if y.ndim == 1 else y for y in (ytr, yte))

    if n_outputs is None:
        n_outputs = _infer_n_outputs(kind, ytr, yte)
    else:
        try:
            number = operator.index(n_outputs)
        except TypeError:
            number = 0
        if isinstance(n_outputs, bool) or number < 1:
            msg = f"n_outputs must be a positive integer or None (infer), got {n_outputs!r}."
            raise ValueError(msg)
        n_outputs = number

    return Task(
        name=name,
        kind=kind,
        x_train=xtr,
        y_train=ytr,
        x_test=xte,
        y_test=yte,
        n_outputs=n_outputs,
        config={"family": "from_tensors", "name": name},
        input_kind=input_kind,
        vocab_size=vocab_size,
    )


def _infer_n_outputs(kind: str, ytr: Tensor, yte: Tensor) -> int:
    if kind == "classification":
        labels = torch.cat([ytr.flatten(), yte.flatten()])
        if labels.numel() == 0 or labels.is_floating_point():
            # Task's own check gives the better message for floating labels; 1 lets it run.
            return 1
        return int(labels.max()) + 1
    if ytr.ndim == 2:
        return int(ytr.shape[1])
    return 1
