r"""Kernel statistics for :mod:`grokwidgets.diagnostics.kernel`: plain functions of tensors.

Alignment with labels, CKA between kernels, kernel velocity, label power in the top
eigenvectors, kernel regression, and the linearization of a model around its initial
parameters. Kernels are ``N × N`` or ``N × N × O × O`` (full output blocks, viewed as the
``NO × NO`` matrix with samples centred only); everything is computed in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp

from grokwidgets._transforms import forward_mode
from grokwidgets.diagnostics._shared import eval_mode

__all__ = [
    "as_matrix",
    "kernel_alignment",
    "kernel_cka",
    "kernel_regression",
    "kernel_velocity",
    "label_power_topk",
    "linearized_outputs",
]


def _centre(k: Tensor) -> Tensor:
    """:math:`HKH` over the two sample axes (the first two) of an NTK."""
    k = k - k.mean(dim=0, keepdim=True)
    return k - k.mean(dim=1, keepdim=True)


def as_matrix(k: Tensor) -> Tensor:
    """An ``N × N`` kernel as is; an ``N × N × O × O`` one as the ``NO × NO`` matrix."""
    if k.ndim == 2:
        return k
    n, _, o, _ = k.shape
    return k.permute(0, 2, 1, 3).reshape(n * o, n * o)


def _labels_for(k: Tensor, y: Tensor) -> Tensor:
    y = y.reshape(len(y), -1).to(torch.float64)
    if k.ndim == 4:
        if y.shape[1] != k.shape[2]:
            msg = (
                f"Full-block NTK with {k.shape[2]} outputs needs {k.shape[2]} label columns, "
                f"got {y.shape[1]}."
            )
            raise ValueError(msg)
        return y.reshape(-1, 1)
    return y


def _cosine(a: Tensor, b: Tensor) -> float:
    na, nb = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    if float(na) == 0.0 or float(nb) == 0.0:
        return math.nan
    return float((a * b).sum() / (na * nb))


def kernel_alignment(k: Tensor, y: Tensor, centred: bool = False) -> float:
    r"""Kernel–label alignment :math:`\langle K, YY^\top\rangle_F / (\|K\|_F \|YY^\top\|_F)`.

    .. math::

        A(K, Y) = \frac{\operatorname{tr}(Y^\top K Y)}{\|K\|_F\,\|Y^\top Y\|_F},

    and with ``centred=True`` the same for :math:`HKH` and :math:`HY`,
    :math:`H = I - \mathbf 1\mathbf 1^\top/N` (Cortes et al. 2012; for one output Kumar et
    al.'s :math:`\tilde y^\top K_c \tilde y / (\|K_c\|_F \|\tilde y\|^2)`).

    Parameters
    ----------
    k : Tensor
        ``N × N`` kernel, or ``N × N × O × O`` full blocks (then :math:`Y` is compared as
        :math:`\mathrm{vec}(Y)`, centring over samples).
    y : Tensor
        ``(N,)`` or ``(N, C)`` labels (one-hot for classes).
    centred : bool
        Centre kernel and labels over samples first.

    Returns
    -------
    float
        In [-1, 1]; NaN when the kernel or the labels are zero (after centring).

    References
    ----------
    .. [1] Cristianini et al. (2001), "On kernel-target alignment", NeurIPS 2001.
    .. [2] Kumar, Bordelon, Gershman & Pehlevan (2024), arXiv:2310.06110.
    """
    k = k.to(torch.float64)
    y = y.reshape(len(y), -1).to(torch.float64)
    if centred:
        k = _centre(k)
        y = y - y.mean(dim=0, keepdim=True)
    km, ym = as_matrix(k), _labels_for(k, y)
    denom = float(torch.linalg.vector_norm(km)) * float(torch.linalg.matrix_norm(ym.T @ ym))
    if denom == 0.0:
        return math.nan
    return float(((km @ ym) * ym).sum()) / denom


def kernel_cka(k1: Tensor, k2: Tensor) -> float:
    r"""Centred kernel alignment of two kernels on the same samples.

    .. math:: \mathrm{CKA}(K_1, K_2) = \frac{\langle HK_1H, HK_2H\rangle_F}
        {\|HK_1H\|_F\,\|HK_2H\|_F}

    NaN when a centred kernel is zero.

    References
    ----------
    .. [1] Kornblith, Norouzi, Lee & Hinton (2019), arXiv:1905.00414.
    """
    return _cosine(_centre(k1.to(torch.float64)), _centre(k2.to(torch.float64)))


def kernel_velocity(k_now: Tensor, k_prev: Tensor) -> float:
    r"""One minus the cosine similarity of two kernels (Fort et al. 2020's kernel velocity).

    .. math:: v = 1 - \frac{\langle K_t, K_{t'}\rangle_F}{\|K_t\|_F \|K_{t'}\|_F}
        = \tfrac12 \Big\| \frac{K_t}{\|K_t\|_F} - \frac{K_{t'}}{\|K_{t'}\|_F} \Big\|_F^2,

    computed in the second form (no cancellation near 0). NaN when a kernel is zero.

    References
    ----------
    .. [1] Fort et al. (2020), "Deep learning versus kernel learning", arXiv:2010.15110.
    """
    a, b = k_now.to(torch.float64), k_prev.to(torch.float64)
    na, nb = float(torch.linalg.vector_norm(a)), float(torch.linalg.vector_norm(b))
    if na == 0.0 or nb == 0.0:
        return math.nan
    return 0.5 * float(torch.linalg.vector_norm(a / na - b / nb) ** 2)


def label_power_topk(k: Tensor, y: Tensor, top_k: int) -> float:
    r"""Share of the centred labels' power in the top ``top_k`` eigenvectors of :math:`HKH`.

    .. math:: P_k = \frac{\sum_{i \le k} \|v_i^\top HY\|^2}{\|HY\|_F^2}

    with :math:`v_i` the eigenvectors of the centred kernel by decreasing eigenvalue. Near 1:
    the labels lie in the kernel's top eigenspace (fast to learn by the linearized model);
    for full blocks :math:`\mathrm{vec}(HY)` and the ``NO × NO`` matrix. NaN when
    :math:`HY = 0`.

    References
    ----------
    .. [1] Ortiz-Jiménez, Moosavi-Dezfooli & Frossard (2021), arXiv:2106.06770.
    .. [2] Kumar, Bordelon, Gershman & Pehlevan (2024), arXiv:2310.06110 (Fig. 5).
    """
    kc = _centre(k.to(torch.float64))
    y = y.reshape(len(y), -1).to(torch.float64)
    ym = _labels_for(kc, y - y.mean(dim=0, keepdim=True))
    total = float(ym.square().sum())
    if total == 0.0:
        return math.nan
    km = as_matrix(kc)
    _, vecs = torch.linalg.eigh(0.5 * (km + km.T))
    top = vecs[:, -min(int(top_k), vecs.shape[1]) :]
    return float((top.T @ ym).square().sum()) / total


def kernel_regression(
    k_train: Tensor, k_test_train: Tensor, y_train: Tensor, ridge: float = 1e-6
) -> Tensor:
    r"""Kernel (ridge) regression predictions.

    .. math:: \hat Y_* = K_{*X}\,(K_{XX} + \lambda I)^{-1} Y, \qquad
        \lambda = \text{ridge}\cdot\operatorname{tr}(K_{XX})/n,

    solved through the eigendecomposition of :math:`K_{XX}` (negative rounding-level
    eigenvalues are clipped to 0), in float64.

    Parameters
    ----------
    k_train : Tensor
        ``n × n`` kernel of the training points.
    k_test_train : Tensor
        ``m × n`` kernel between test and training points.
    y_train : Tensor
        ``(n,)`` or ``(n, C)`` targets.
    ridge : float
        Ridge relative to the mean diagonal of ``k_train``.

    Returns
    -------
    Tensor
        ``(m, C)`` predictions, float64.
    """
    k = k_train.to(torch.float64)
    y = y_train.reshape(len(y_train), -1).to(torch.float64)
    lam = ridge * float(torch.diagonal(k).mean()) if len(k) else 0.0
    evals, vecs = torch.linalg.eigh(0.5 * (k + k.T))
    evals = evals.clamp(min=0.0) + lam
    if float(evals.min()) <= 0.0:
        msg = "The training kernel is singular and ridge is 0: pass a ridge > 0."
        raise ValueError(msg)
    coef = vecs @ ((vecs.T @ y) / evals[:, None])
    return k_test_train.to(torch.float64) @ coef


def linearized_outputs(
    model: nn.Module, params0: dict[str, Tensor], x: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    r"""The outputs of the model, of the model at :math:`\theta_0`, and of its linearization.

    .. math:: f^{\mathrm{lin}}_\theta(x) = f_{\theta_0}(x) + J_{\theta_0}(x)\,(\theta - \theta_0)

    computed with one forward-mode product (``torch.func.jvp``) at :math:`\theta_0`, in
    ``eval`` mode. Parameters missing from ``params0`` keep their current values (and are not
    linearized).

    Parameters
    ----------
    model : nn.Module
    params0 : dict of str to Tensor
        Initial values of (some of) ``model.named_parameters()``.
    x : Tensor
        Inputs ``(N, ...)``.

    Returns
    -------
    f, f0, f_lin : Tensor
        Each ``(N, O)``.

    References
    ----------
    .. [1] Lee et al. (2019), arXiv:1902.06720.
    """
    current = dict(model.named_parameters())
    missing = sorted(set(params0) - set(current))
    if missing:
        msg = f"params0 names parameters the model does not have: {missing[:5]}."
        raise ValueError(msg)
    primals = {name: p0.detach() for name, p0 in params0.items()}
    tangents = {name: (current[name].detach() - p0) for name, p0 in primals.items()}

    def fn(params: dict[str, Tensor]) -> Tensor:
        return functional_call(model, params, (x,))

    with eval_mode(model), torch.no_grad():
        f = model(x)
        with forward_mode():
            res = jvp(fn, (primals,), (tangents,))
        f0, df = res[0], res[1]
    n = len(x)
    return f.reshape(n, -1), f0.reshape(n, -1), (f0 + df).reshape(n, -1)
