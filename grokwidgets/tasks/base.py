"""The :class:`Task` container and the registry that rebuilds a task from its config."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

TaskKind = Literal["classification", "regression"]
InputKind = Literal["continuous", "tokens"]

_FAMILIES: dict[str, Callable[..., Task]] = {}


@dataclass(frozen=True, eq=False)
class Task:
    """A supervised dataset with everything a model and a loop need to know about it.

    Parameters
    ----------
    name : str
        Short human-readable name, e.g. ``"modular_arithmetic(p=97, op='+')"``.
    kind : {"classification", "regression"}
        Classification targets are ``int64`` class indices of shape ``(n,)``; regression
        targets are floating point of shape ``(n, n_outputs)``.
    x_train, y_train, x_test, y_test : Tensor
        The data. Token inputs are ``int64`` of shape ``(n, n_tokens)``; continuous inputs are
        floating point of shape ``(n, d)``.
    n_outputs : int
        Number of classes (classification) or output dimension (regression).
    config : dict
        JSON-serialisable recipe; ``from_config(task.config)`` rebuilds the same task. Holds the
        key ``"family"`` (a registered task family) and that family's keyword arguments.
    input_kind : {"continuous", "tokens"}
        Whether inputs are real vectors or token ids.
    vocab_size : int or None
        Number of distinct token ids (token inputs only).
    meta : dict
        Extra JSON-able facts a model may use (e.g. the polynomial task's ``epsilon``).
    """

    name: str
    kind: TaskKind
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    n_outputs: int
    config: dict[str, Any]
    input_kind: InputKind = "continuous"
    vocab_size: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def n_train(self) -> int:
        """Number of training samples."""
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test samples."""
        return int(self.x_test.shape[0])

    @property
    def input_dim(self) -> int:
        """Feature dimension (continuous) or number of tokens per sample (tokens)."""
        return int(self.x_train.shape[1])

    def to(self, dtype: torch.dtype) -> Task:
        """Return a copy whose floating-point tensors have ``dtype`` (token/class ids unchanged)."""

        def cast(t: Tensor) -> Tensor:
            return t.to(dtype) if t.is_floating_point() else t

        return Task(
            name=self.name,
            kind=self.kind,
            x_train=cast(self.x_train),
            y_train=cast(self.y_train),
            x_test=cast(self.x_test),
            y_test=cast(self.y_test),
            n_outputs=self.n_outputs,
            config=dict(self.config),
            input_kind=self.input_kind,
            vocab_size=self.vocab_size,
            meta=dict(self.meta),
        )

    def __repr__(self) -> str:
        return (
            f"Task({self.name!r}, kind={self.kind!r}, n_train={self.n_train}, "
            f"n_test={self.n_test}, n_outputs={self.n_outputs})"
        )


def _validate(task: Task) -> None:
    if task.kind not in ("classification", "regression"):
        msg = f"Task kind must be 'classification' or 'regression', got {task.kind!r}."
        raise ValueError(msg)
    if task.input_kind not in ("continuous", "tokens"):
        msg = f"input_kind must be 'continuous' or 'tokens', got {task.input_kind!r}."
        raise ValueError(msg)
    if task.n_outputs < 1:
        msg = f"n_outputs must be >= 1, got {task.n_outputs}."
        raise ValueError(msg)
    if task.x_train.shape[1:] != task.x_test.shape[1:] or task.x_train.dtype != task.x_test.dtype:
        msg = (
            f"x_train {task.x_train.dtype} {tuple(task.x_train.shape)} and x_test "
            f"{task.x_test.dtype} {tuple(task.x_test.shape)} must share dtype and feature shape."
        )
        raise ValueError(msg)
    for split, x, y in (("train", task.x_train, task.y_train), ("test", task.x_test, task.y_test)):
        if x.ndim != 2:
            msg = (
                f"x_{split} must be 2-D (samples, features or tokens), got shape {tuple(x.shape)}."
            )
            raise ValueError(msg)
        if x.shape[0] != y.shape[0]:
            msg = (
                f"x_{split} has {x.shape[0]} samples but y_{split} has {y.shape[0]}; "
                "they must match."
            )
            raise ValueError(msg)
        if task.kind == "classification":
            if y.dtype != torch.int64 or y.ndim != 1:
                msg = (
                    f"Classification targets must be int64 class ids of shape (n,); y_{split} "
                    f"is {y.dtype} {tuple(y.shape)}. Use y.long() or kind='regression'."
                )
                raise ValueError(msg)
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= task.n_outputs):
                msg = f"y_{split} holds class ids outside [0, {task.n_outputs})."
                raise ValueError(msg)
        elif not y.is_floating_point() or y.ndim != 2 or y.shape[1] != task.n_outputs:
            msg = (
                f"Regression targets must be floating point of shape (n, {task.n_outputs}); "
                f"y_{split} is {y.dtype} {tuple(y.shape)}."
            )
            raise ValueError(msg)
        elif not bool(torch.isfinite(y).all()):
            msg = f"y_{split} holds NaN or infinite values."
            raise ValueError(msg)
        if task.input_kind == "tokens":
            if x.dtype != torch.int64:
                msg = f"Token inputs must be int64, x_{split} is {x.dtype}."
                raise ValueError(msg)
            if task.vocab_size is None:
                msg = "Token inputs need vocab_size (the number of distinct token ids)."
                raise ValueError(msg)
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= task.vocab_size):
                msg = f"x_{split} holds token ids outside [0, vocab_size={task.vocab_size})."
                raise ValueError(msg)
        elif not x.is_floating_point():
            msg = (
                f"Continuous inputs must be floating point, x_{split} is {x.dtype}. "
                "Pass input_kind='tokens' for token ids."
            )
            raise ValueError(msg)
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            msg = f"x_{split} holds NaN or infinite values."
            raise ValueError(msg)


def register_family(name: str) -> Callable[[Callable[..., Task]], Callable[..., Task]]:
    """Register a task constructor so that :func:`from_config` can rebuild its tasks."""

    def deco(fn: Callable[..., Task]) -> Callable[..., Task]:
        if name in _FAMILIES and _FAMILIES[name] is not fn:
            msg = f"A task family named {name!r} is already registered."
            raise ValueError(msg)
        _FAMILIES[name] = fn
        return fn

    return deco


def families() -> dict[str, Callable[..., Task]]:
    """Return the registered task families by name."""
    return dict(_FAMILIES)


def from_config(config: dict[str, Any]) -> Task:
    """Rebuild a task from ``task.config`` (``{"family": name, **kwargs}``).

    Raises
    ------
    ValueError
        If the family is unknown or a parameter is not one the family takes.
    """
    cfg = dict(config)
    family = cfg.pop("family", None)
    if not isinstance(family, str) or family not in _FAMILIES:
        msg = (
            f"Unknown task family {family!r}. Known families: {sorted(_FAMILIES)}. "
            "A task made with from_tensors cannot be rebuilt from its config."
        )
        raise ValueError(msg)
    fn = _FAMILIES[family]
    check_kwargs(fn, cfg, what=f"task {family!r}")
    return fn(**cfg)


def check_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any], *, what: str) -> None:
    """Raise a ``ValueError`` naming the valid parameters if ``kwargs`` holds an unknown one."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        msg = f"Unknown parameter(s) {unknown} for {what}. Valid parameters: {sorted(params)}."
        raise ValueError(msg)
