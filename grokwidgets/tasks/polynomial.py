"""Quadratic single-index regression, the lazy-to-rich grokking task of Kumar et al. (2024)."""

from __future__ import annotations

import math
import numbers
from typing import Literal

import torch

from ._checks import check_int
from .base import Task, register_family

__all__ = ["VARIANTS", "polynomial_regression"]

VARIANTS = ("fig1", "fig3a")
"""The two input/target scalings of the paper (see :func:`polynomial_regression`)."""


@register_family("polynomial_regression")
def polynomial_regression(
    d: int = 100,
    n_train: int = 550,
    n_test: int = 1000,
    epsilon: float = 0.02,
    variant: Literal["fig1", "fig3a"] = "fig1",
    seed: int = 0,
) -> Task:
    r"""Regress the square of a random projection: :math:`y = (\beta \cdot x)^2 / 2`.

    With ``variant="fig1"`` (the paper's Fig. 1, the default)

    .. math::

        x \sim \mathcal N(0, I_D / D), \qquad \beta \sim \mathcal N(0, I_D), \qquad
        y = \tfrac12 (\beta \cdot x)^2,

    so :math:`\mathbb E[y] = \lVert\beta\rVert^2 / (2D) \approx 1/2`. With ``variant="fig3a"``
    (the paper's α sweep, Fig. 3a)

    .. math::

        x \sim \mathcal N(0, I_D), \qquad y = (\beta \cdot x / \sqrt D)^2 .

    The task itself does not depend on ``epsilon``: it is the kernel–task alignment knob of the
    paper's model activation :math:`\phi(z) = z + \tfrac{\varepsilon}{2} z^2`, kept with the task
    (``task.meta["epsilon"]`` and ``task.config``) so that a model built for the task can read it.

    Sampling order (one ``torch.Generator`` seeded with ``seed``, float64): ``beta`` of shape
    ``(d,)``, then the train inputs ``(n_train, d)``, then the test inputs ``(n_test, d)``, each
    from ``torch.randn``. ``x`` is rounded to float32 and ``y`` computed from the rounded ``x``.

    Parameters
    ----------
    d : int
        Input dimension :math:`D`.
    n_train, n_test : int
        Number of training (the paper's :math:`P`) and test samples.
    epsilon : float
        :math:`\varepsilon` of the model activation; stored, not used to make the data.
    variant : {"fig1", "fig3a"}
        Input and target scaling, as above.
    seed : int
        Non-negative seed of the generator.

    Returns
    -------
    Task
        Regression task with float32 ``x`` of shape ``(n, d)`` and ``y`` of shape ``(n, 1)``.

    References
    ----------
    .. [1] Kumar, Bordelon, Gershman & Pehlevan (2024). Grokking as the transition from lazy to
       rich training dynamics. ICLR 2024, arXiv:2310.06110.
    """
    d = check_int("d", d, 1)
    n_train = check_int("n_train", n_train, 1)
    n_test = check_int("n_test", n_test, 1)
    seed = check_int("seed", seed, 0)
    if (
        isinstance(epsilon, bool)
        or not isinstance(epsilon, numbers.Real)
        or not math.isfinite(epsilon)
    ):
        msg = f"epsilon must be a finite real number, got {epsilon!r}."
        raise ValueError(msg)
    epsilon = float(epsilon)
    if variant not in VARIANTS:
        msg = f"Unknown variant {variant!r}. Valid variants: {list(VARIANTS)}."
        raise ValueError(msg)

    gen = torch.Generator().manual_seed(seed)
    beta = torch.randn(d, generator=gen, dtype=torch.float64)
    x_scale = 1.0 / math.sqrt(d) if variant == "fig1" else 1.0
    xs = [
        (torch.randn(n, d, generator=gen, dtype=torch.float64) * x_scale).float()
        for n in (n_train, n_test)
    ]
    proj = [x.double() @ beta for x in xs]
    if variant == "fig1":
        ys = [(0.5 * z**2).float().unsqueeze(1) for z in proj]
    else:
        ys = [((z / math.sqrt(d)) ** 2).float().unsqueeze(1) for z in proj]

    return Task(
        name=f"polynomial_regression(d={d}, n_train={n_train}, epsilon={epsilon:g})",
        kind="regression",
        x_train=xs[0],
        y_train=ys[0],
        x_test=xs[1],
        y_test=ys[1],
        n_outputs=1,
        config={
            "family": "polynomial_regression",
            "d": d,
            "n_train": n_train,
            "n_test": n_test,
            "epsilon": epsilon,
            "variant": variant,
            "seed": seed,
        },
        meta={"epsilon": epsilon, "variant": variant},
    )
