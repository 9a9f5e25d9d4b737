r"""The Li₂ stage of a record: lazy, independent or interactive, from the gradient alignment.

The stage rule
--------------
Tian characterises the stages by the structure of :math:`G_F` (random in I, the per-node
form :math:`\propto\tilde Y\tilde Y^\top\tilde F` in II, modified by the coupling of the
nodes in III) but gives no numeric test; this one is ours. With :math:`a` =
``li2_grad_alignment``, :math:`a^2` is the share of :math:`\|G_F\|_F^2` that the
independent form explains; at the default threshold :math:`a^* = 1/\sqrt2` it explains at
least half:

- ``1`` independent: :math:`a \ge a^*`.
- ``0`` lazy: :math:`a < a^*` at every record so far: :math:`G_F` has not yet had the
  independent form (the readout still fits random features).
- ``2`` interactive: :math:`a < a^*` after some earlier record had :math:`a \ge a^*`: the
  nodes' gradients are no longer their own, the coupling through :math:`\tilde F^\top\tilde F`
  (repulsion, top-down modulation) matters.

Whether :math:`a^*` was reached is kept in ``probe.state`` (checkpointed, so a resumed run
labels as an uninterrupted one); a monitor attached mid-run labels its first records lazy
until :math:`a \ge a^*`. :func:`stage_codes` applies the rule to a recorded alignment curve
and :func:`stage_label` maps codes to labels. On the ``modular-addition`` preset (AdamW, lr
3e-3, weight decay 1) the rule gives lazy for steps 0–6, independent through memorization,
interactive while test accuracy rises (steps ≈ 3,000–5,600, alignment 0.65–0.70) and
independent again once it has grokked. On Tian's own setup (p = 23, one-hot inputs, x²,
no biases, centred MSE, Adam lr 0.01, weight decay 2e-4, half the pairs) it gives lazy for
steps 0–2, independent for 3–10 while the train set is fitted, and interactive from step 14
on (alignment 0.0–0.68, falling to 0.35–0.48 while test accuracy rises, steps ≈ 300–450).
``li2_weight_change`` is recorded beside it but not
used: under Adam every weight moves by about the learning rate from the first step, so the
relative change passes any small threshold at once.
"""

from __future__ import annotations

import math

import numpy as np
from torch import Tensor

__all__ = ["STAGES", "stage_code", "stage_codes", "stage_label"]

ArrayLike = Tensor | np.ndarray

#: Stage labels by code: ``STAGES[int(code)]``; a NaN code is ``"undetermined"``.
STAGES = ("lazy", "independent", "interactive")


def stage_code(
    alignment: float, reached: bool, independent_alignment: float = math.sqrt(0.5)
) -> float:
    """The stage code of one record (module docstring): 0 lazy, 1 independent, 2 interactive.

    Parameters
    ----------
    alignment : float
        ``li2_grad_alignment`` at this record.
    reached : bool
        Whether an earlier record had ``alignment >= independent_alignment``.
    independent_alignment : float
        The threshold :math:`a^*`.

    Returns
    -------
    float
        The code; NaN when ``alignment`` is NaN. See :data:`STAGES`.
    """
    if math.isnan(alignment):
        return math.nan
    if alignment >= independent_alignment:
        return 1.0
    return 2.0 if reached else 0.0


def stage_codes(alignments: ArrayLike, independent_alignment: float = math.sqrt(0.5)) -> np.ndarray:
    """The stage code of each record of an alignment curve (in step order), as float64.

    NaN alignments get NaN codes and do not change whether the threshold was reached.
    """
    codes = []
    reached = False
    for a in np.asarray(alignments, dtype=np.float64).reshape(-1):
        codes.append(stage_code(float(a), reached, independent_alignment))
        reached = reached or codes[-1] == 1.0
    return np.asarray(codes, dtype=np.float64)


def stage_label(code: float) -> str:
    """The label of a stage code.

    ``"lazy"`` (0), ``"independent"`` (1), ``"interactive"`` (2), ``"undetermined"`` (NaN).

    Raises
    ------
    ValueError
        For a number that is not a stage code.
    """
    value = float(code)
    if math.isnan(value):
        return "undetermined"
    if value not in (0.0, 1.0, 2.0):
        msg = f"{code!r} is not a stage code; codes are 0 (lazy), 1 (independent), 2 (interactive)."
        raise ValueError(msg)
    return STAGES[int(value)]
