r"""Fourier features: the DFT power of hidden nodes' weights on one-hot inputs of Z_p.

For modular addition or subtraction the group's characters diagonalise the task, and trained
nodes put their input weights on one frequency each (Nanda et al. 2023; Tian 2025):
:func:`fourier_concentration` measures how far each node has gone, :func:`dominant_frequencies`
which frequency it chose.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CONCENTRATED",
    "LIVE_POWER",
    "concentration",
    "dominant_frequencies",
    "fourier_concentration",
    "fourier_ipr",
    "fourier_power",
    "live_concentrated_share",
    "weighted_concentration",
]

#: A node is *live* when its non-constant Fourier power is at least this share of the largest
#: node's (its centred weight norm at least ~10% of the largest).
LIVE_POWER = 0.01
#: A node is *concentrated* when at least this share of its power is on one frequency.
CONCENTRATED = 0.5

ArrayLike = Tensor | np.ndarray


def _rows_of(weight: ArrayLike, p: int) -> Tensor:
    """``weight`` as float64 ``(K, m, p)`` blocks, with a clear error for a bad shape."""
    if isinstance(p, bool) or not isinstance(p, int | np.integer) or p < 2:
        msg = f"p must be an integer >= 2 (the group's order), got {p!r}."
        raise ValueError(msg)
    w = torch.as_tensor(weight).detach().to("cpu", torch.float64)
    if w.ndim == 1:
        w = w.unsqueeze(0)
    if w.ndim != 2 or w.shape[1] == 0 or w.shape[1] % int(p):
        msg = (
            f"weight must be (nodes, m*p): each row the node's weights on m one-hot blocks of "
            f"p={p} group elements; got shape {tuple(w.shape)}."
        )
        raise ValueError(msg)
    if not bool(torch.isfinite(w).all()):
        msg = "weight holds NaN or infinite values."
        raise ValueError(msg)
    return w.reshape(w.shape[0], -1, int(p))


def fourier_power(weight: ArrayLike, p: int) -> Tensor:
    r"""Power of each row's weights at each frequency of :math:`\mathbb Z_p`, summed over blocks.

    Row :math:`j` of ``weight`` holds node :math:`j`'s weights on :math:`m` one-hot blocks of
    :math:`p` group elements (``m = 2`` for the operands ``a``, ``b`` of :math:`a + b \bmod p`).
    With :math:`\hat w_{t}(k) = \sum_{a} w_{t}(a)\, e^{-2\pi i k a / p}`,

    .. math::

        P_j(k) = \frac{c_k}{p} \sum_{t=1}^{m} |\hat w_{t}(k)|^2, \qquad
        k = 0, \dots, \lfloor p/2 \rfloor,

    with :math:`c_k = 2` for :math:`0 < k < p/2` (frequencies :math:`k` and :math:`p - k`
    carry the same power for real weights and are one frequency here) and :math:`c_k = 1`
    otherwise, so that :math:`\sum_k P_j(k) = \|w_j\|_2^2` (Parseval).

    Returns
    -------
    Tensor
        ``(K, p // 2 + 1)`` float64.

    Raises
    ------
    ValueError
        If ``p < 2``, the rows are not a whole number of blocks of ``p``, or values are not
        finite.
    """
    w = _rows_of(weight, p)
    spec = torch.fft.rfft(w, dim=-1).abs().square().sum(dim=1)
    scale = torch.full((spec.shape[1],), 2.0, dtype=torch.float64)
    scale[0] = 1.0
    if p % 2 == 0:
        scale[-1] = 1.0  # the Nyquist frequency p/2 is its own mirror
    return spec * scale / p


def concentration(power: Tensor) -> tuple[Tensor, Tensor]:
    """(share of the top non-constant frequency, that frequency) per row; NaN / -1 if none."""
    ac = power[:, 1:]
    total = ac.sum(dim=1)
    top, idx = ac.max(dim=1)  # first maximum: ties go to the lowest frequency
    none = _no_ac(power)
    share = torch.where(none, torch.full_like(top, math.nan), top / total.clamp_min(1e-300))
    freq = torch.where(none, torch.full_like(idx, -1), idx + 1)
    return share, freq


def _no_ac(power: Tensor) -> Tensor:
    """Rows with no power off the constant (or all zero), up to round-off."""
    return ~(power[:, 1:].sum(dim=1) > 1e-24 * power.sum(dim=1))


def _non_constant(power: Tensor) -> Tensor:
    """The powers at k >= 1; zero on the rows :func:`_no_ac` finds."""
    ac = power[:, 1:]
    return torch.where(_no_ac(power)[:, None], torch.zeros_like(ac), ac)


def weighted_concentration(power: Tensor) -> float:
    r"""The nodes' concentrations averaged with their Fourier power as weights.

    .. math::

        \bar\kappa_w = \frac{\sum_j \max_{k\ge1} P_j(k)}{\sum_j \sum_{k\ge1} P_j(k)}
        = \sum_j \frac{A_j}{\sum_l A_l}\,\kappa_j, \qquad A_j = \sum_{k \ge 1} P_j(k),

    the share of all the layer's non-constant power that sits on each node's own top
    frequency. :math:`A_j` is node :math:`j`'s squared centred weight norm (Parseval), so
    nodes that weight decay shrank to noise hardly count, where the unweighted mean of
    :math:`\kappa_j` counts them as much as the live ones and understates the features the
    network uses. NaN when no node has non-constant power.
    """
    ac = _non_constant(power)
    total = float(ac.sum())
    if not total > 0:
        return math.nan
    return float(ac.max(dim=1).values.sum()) / total


def live_concentrated_share(
    power: Tensor, live: float = LIVE_POWER, threshold: float = CONCENTRATED
) -> float:
    """Among the live nodes, the share whose concentration is at least ``threshold``.

    A node is live when its non-constant power :math:`A_j` is at least ``live`` times the
    largest node's. NaN when no node has non-constant power.
    """
    ac = _non_constant(power)
    amount = ac.sum(dim=1)
    top = float(amount.max()) if len(amount) else 0.0
    if not top > 0:
        return math.nan
    alive = amount >= live * top
    share = ac.max(dim=1).values[alive] / amount[alive]
    return float((share >= threshold).to(torch.float64).mean())


def fourier_concentration(weight: ArrayLike, p: int) -> Tensor:
    r"""Share of each row's non-constant DFT power on its top frequency (one value per node).

    .. math::

        \kappa_j = \frac{\max_{k \ge 1} P_j(k)}{\sum_{k \ge 1} P_j(k)} \in
        \Big[\frac{1}{\lfloor p/2 \rfloor}, 1\Big],

    with :math:`P_j` from :func:`fourier_power` (frequencies :math:`\pm k` pooled, blocks
    summed, the constant :math:`k = 0` left out: a constant offset on every group element
    carries no information about it). 1 for a pure (co)sine
    :math:`\cos(2\pi k a/p + \phi)`; for Gaussian white noise and odd :math:`p` each of the
    :math:`m = (p - 1)/2` frequencies holds :math:`1/m = 2/(p - 1)` of the power on average
    and the top one :math:`H_m / m \approx (\ln m + 0.58)/m` in expectation with one block
    (the shares are a flat Dirichlet: the largest of :math:`m` uniform spacings); 0.093 for
    :math:`p = 97`. NaN for a row with no non-constant power. The dominant frequencies are
    :func:`dominant_frequencies`.

    Parameters
    ----------
    weight : Tensor or ndarray
        ``(K, m * p)``: each row a node's weights on ``m`` one-hot blocks of ``p`` group
        elements (a 1-D array is one row).
    p : int
        Order of the cyclic group :math:`\mathbb Z_p`.

    Returns
    -------
    Tensor
        ``(K,)`` float64.

    References
    ----------
    .. [1] Tian (2025), arXiv:2509.21519; Nanda et al. (2023), "Progress measures for
       grokking via mechanistic interpretability", arXiv:2301.05217.
    """
    return concentration(fourier_power(weight, p))[0]


def participation(power: Tensor) -> Tensor:
    """Inverse participation ratio of each row's non-constant power; NaN if it has none."""
    ac = power[:, 1:]
    total = ac.sum(dim=1)
    ipr = ac.square().sum(dim=1) / total.square().clamp_min(1e-300)
    return torch.where(_no_ac(power), torch.full_like(ipr, math.nan), ipr)


def fourier_ipr(weight: ArrayLike, p: int) -> Tensor:
    r"""Inverse participation ratio of each row's DFT power over the non-constant frequencies.

    .. math::

        \mathrm{IPR}_j = \frac{\sum_{k \ge 1} P_j(k)^2}{\big(\sum_{k \ge 1} P_j(k)\big)^2}
        \in \Big[\frac{1}{\lfloor p/2 \rfloor}, 1\Big],

    the :math:`r = 2` IPR :math:`\sum_k |\hat w_k|^4 / (\sum_k |\hat w_k|^2)^2` of
    Manning-Coe et al. [1]_ taken over frequencies, with :math:`P_j` from :func:`fourier_power`
    (frequencies :math:`\pm k` pooled, the two operand blocks summed, the constant left out):
    1 for a node on one frequency, :math:`1/n` for power spread evenly over :math:`n`
    frequencies. Where :func:`fourier_concentration` reads only the top frequency, the IPR
    counts how many carry the power. NaN for a row with no non-constant power. ``weight`` and
    ``p`` as in :func:`fourier_concentration`; returns ``(K,)`` float64.

    References
    ----------
    .. [1] Manning-Coe, Gliozzi, Stapleton, Hirst, De Tomasi, Bradlyn & Berman (2025),
       "Grokking vs. learning: same features, different encodings", arXiv:2502.01739.
    """
    return participation(fourier_power(weight, p))


def dominant_frequencies(weight: ArrayLike, p: int) -> Tensor:
    r"""Each row's top non-constant frequency :math:`k \in \{1, \dots, \lfloor p/2 \rfloor\}`.

    The frequency whose power share :func:`fourier_concentration` reports (the lowest one on
    a tie), as int64; ``-1`` for a row with no non-constant power.
    """
    return concentration(fourier_power(weight, p))[1]
