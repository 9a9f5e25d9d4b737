"""Teacher–student regression: targets from a random two-layer network."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from ._checks import check_int
from .base import Task, register_family

__all__ = ["ACTIVATIONS", "teacher_student"]

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": F.relu,
    "gelu": F.gelu,
    "silu": F.silu,
    "sigmoid": torch.sigmoid,
    "linear": lambda z: z,
}
"""Teacher activations by name."""


@register_family("teacher_student")
def teacher_student(
    d: int = 50,
    n_train: int = 500,
    n_test: int = 1000,
    hidden: int = 32,
    n_outputs: int = 1,
    activation: str = "tanh",
    noise: float = 0.0,
    seed: int = 0,
) -> Task:
    r"""Gaussian inputs labelled by a random two-layer teacher network, plus optional noise.

    .. math::

        x \sim \mathcal N(0, I_d), \quad
        W_1 \sim \mathcal N(0, 1/d)^{h \times d}, \quad
        W_2 \sim \mathcal N(0, 1/h)^{k \times h}, \quad
        y = W_2\, \sigma(W_1 x) + \eta\, \xi, \quad \xi \sim \mathcal N(0, I_k),

    with :math:`h` = ``hidden``, :math:`k` = ``n_outputs``, :math:`\sigma` = ``activation``,
    :math:`\eta` = ``noise``; the teacher has no biases. Noise is added to the train and the test
    targets alike.

    Sampling order (one ``torch.Generator`` seeded with ``seed``, float64, ``torch.randn``):
    ``W1`` ``(hidden, d)``, ``W2`` ``(n_outputs, hidden)``, train inputs ``(n_train, d)``, test
    inputs ``(n_test, d)``, train noise ``(n_train, n_outputs)``, test noise
    ``(n_test, n_outputs)``; the noise is always drawn, so changing ``noise`` changes nothing
    else. ``x`` is rounded to float32 and ``y`` computed from the rounded ``x``.

    Parameters
    ----------
    d : int
        Input dimension.
    n_train, n_test : int
        Number of training and test samples.
    hidden : int
        Width of the teacher's hidden layer.
    n_outputs : int
        Output dimension of the teacher (and of the regression).
    activation : {"tanh", "relu", "gelu", "silu", "sigmoid", "linear"}
        The teacher's hidden activation.
    noise : float
        Standard deviation of the Gaussian label noise (0 for clean targets).
    seed : int
        Non-negative seed of the generator.

    Returns
    -------
    Task
        Regression task, float32 ``x`` of shape ``(n, d)`` and ``y`` of shape ``(n, n_outputs)``.

    References
    ----------
    .. [1] Gardner & Derrida (1989). Three unfinished works on the optimal storage capacity of
       networks. J. Phys. A 22, 1983. (The teacher–student setting.)
    .. [2] Saad & Solla (1995). On-line learning in soft committee machines. Phys. Rev. E 52,
       4225.
    """
    d = check_int("d", d, 1)
    n_train = check_int("n_train", n_train, 1)
    n_test = check_int("n_test", n_test, 1)
    hidden = check_int("hidden", hidden, 1)
    n_outputs = check_int("n_outputs", n_outputs, 1)
    seed = check_int("seed", seed, 0)
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        msg = f"Unknown activation {activation!r}. Valid activations: {list(ACTIVATIONS)}."
        raise ValueError(msg)
    if (
        isinstance(noise, bool)
        or not isinstance(noise, numbers.Real)
        or not math.isfinite(noise)
        or noise < 0
    ):
        msg = f"noise must be a finite number >= 0 (a standard deviation), got {noise!r}."
        raise ValueError(msg)
    noise = float(noise)

    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    w1 = randn(hidden, d) / math.sqrt(d)
    w2 = randn(n_outputs, hidden) / math.sqrt(hidden)
    xs = [randn(n, d).float() for n in (n_train, n_test)]
    xis = [randn(n, n_outputs) for n in (n_train, n_test)]
    act = ACTIVATIONS[activation]
    ys = [
        (act(x.double() @ w1.T) @ w2.T + noise * xi).float() for x, xi in zip(xs, xis, strict=True)
    ]

    return Task(
        name=f"teacher_student(d={d}, hidden={hidden}, activation={activation!r})",
        kind="regression",
        x_train=xs[0],
        y_train=ys[0],
        x_test=xs[1],
        y_test=ys[1],
        n_outputs=n_outputs,
        config={
            "family": "teacher_student",
            "d": d,
            "n_train": n_train,
            "n_test": n_test,
            "hidden": hidden,
            "n_outputs": n_outputs,
            "activation": activation,
            "noise": noise,
            "seed": seed,
        },
        meta={"activation": activation, "noise": noise},
    )
