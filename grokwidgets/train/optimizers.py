"""Optimizers: Muon (with AdamW for the non-matrix parameters) and a factory by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["OPTIMIZERS", "Muon", "make_optimizer", "newton_schulz"]

#: Optimizer names accepted by :func:`make_optimizer`.
OPTIMIZERS = ("sgd", "adam", "adamw", "muon")

#: Coefficients (a, b, c) of the quintic Newton–Schulz iteration of Jordan (2024).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g: Tensor, steps: int = 5, eps: float = 1e-7) -> Tensor:
    r"""Approximately orthogonalise a matrix with the quintic Newton–Schulz iteration.

    .. math::

        X_0 = G / (\lVert G \rVert_F + \epsilon), \qquad
        X_{k+1} = a X_k + (b A_k + c A_k^2) X_k, \quad A_k = X_k X_k^\top,

    with :math:`(a, b, c) = (3.4445, -4.7750, 2.0315)`. Each step maps every singular value
    :math:`\sigma` of :math:`X_k` to :math:`a\sigma + b\sigma^3 + c\sigma^5` and keeps the
    singular vectors, so :math:`X_K \approx U S' V^\top` with :math:`S'` roughly in
    :math:`[0.7, 1.2]` where :math:`G = U S V^\top`: an approximation of the polar factor
    :math:`U V^\top` that does not converge to it exactly but is fast. The iteration runs on
    the wide orientation (``X Xᵀ`` the smaller Gram matrix) in at least float32.

    Parameters
    ----------
    g : Tensor
        A 2-D matrix.
    steps : int
        Number of iterations.
    eps : float
        Added to the Frobenius norm.

    Returns
    -------
    Tensor
        Same shape as ``g``, in ``promote_types(g.dtype, float32)``.

    References
    ----------
    .. [1] Jordan, Jin, Boza, You, Cesista, Newhouse & Bernstein (2024), "Muon: An optimizer for
       hidden layers in neural networks", https://kellerjordan.github.io/posts/muon/
    """
    if g.ndim != 2:
        msg = f"newton_schulz needs a 2-D matrix, got shape {tuple(g.shape)}."
        raise ValueError(msg)
    a, b, c = NS_COEFFICIENTS
    x = g.to(torch.promote_types(g.dtype, torch.float32))
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / (torch.linalg.matrix_norm(x) + eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    r"""Muon for matrix parameters, AdamW for the rest, in one optimizer.

    Each param group has a flag ``use_muon`` (default ``True``).

    **Muon groups** (every parameter at least 2-D; higher-dimensional ones are flattened to
    ``(shape[0], -1)``): with momentum :math:`\beta`, learning rate :math:`\eta` and weight
    decay :math:`\lambda`,

    .. math::

        B_t = \beta B_{t-1} + (1 - \beta) G_t, \qquad
        M_t = \begin{cases} (1 - \beta) G_t + \beta B_t & \text{nesterov} \\
                            B_t & \text{otherwise} \end{cases},

        W_t = (1 - \eta\lambda) W_{t-1}
              - \eta \, \sqrt{\max(1, r / c)} \, \operatorname{NS}_5(M_t),

    where :math:`\operatorname{NS}_5` is :func:`newton_schulz` (5 steps by default) and
    :math:`r \times c` the matrix shape (PyTorch's ``(out_features, in_features)`` for a
    Linear weight). The shape factor :math:`\sqrt{\max(1, r/c)}` is the one of Jordan's
    reference implementation (it keeps the update's RMS per output about equal for tall
    matrices); the alternative :math:`0.2\sqrt{\max(r, c)}` of Liu et al. (2025), which matches
    AdamW's update RMS so one learning rate fits both groups, is not used. The momentum is the
    exponential average of the reference implementation; after the scale-free
    orthogonalisation it gives the same update as classic momentum :math:`B_t = \beta B_{t-1} +
    G_t`. Newton–Schulz runs in float32 (float64 for float64 parameters), never bfloat16.

    With ``rms_scale=False`` the shape factor is left out (:math:`\eta\,\operatorname{NS}_5(M_t)`),
    as in the Muon of Tian's Li₂ code (``update_rms_compensate=False``).

    **AdamW groups** (``use_muon=False``): exactly ``torch.optim.AdamW`` (decoupled weight
    decay, bias correction; no amsgrad), with ``betas`` and ``eps`` of the group. With
    ``coupled_decay=True`` they are exactly ``torch.optim.Adam`` instead: the weight decay is
    the L2 penalty added to the gradient, :math:`G_t + \lambda W_{t-1}`, as Tian's code trains
    the readout ``V`` beside Muon on ``W``.

    All per-parameter state is tensors (``momentum_buffer``; ``step``, ``exp_avg``,
    ``exp_avg_sq``), so ``state_dict()`` round-trips through safetensors; param groups hold
    plain scalars (and the ``betas`` pair) only.

    Parameters
    ----------
    params : iterable
        Parameters or param groups (dicts that may set ``use_muon`` and any default below).
    lr : float
        Learning rate η.
    momentum : float
        Muon's momentum β.
    nesterov : bool
        Nesterov momentum for Muon.
    ns_steps : int
        Newton–Schulz iterations.
    weight_decay : float
        Decoupled weight decay λ (both kinds of groups).
    betas : tuple of float
        AdamW's (β₁, β₂).
    eps : float
        AdamW's ε.
    rms_scale : bool
        Muon groups: multiply the update by :math:`\sqrt{\max(1, r/c)}` (Jordan's default).
    coupled_decay : bool
        Non-Muon groups: coupled L2 weight decay (``torch.optim.Adam``) instead of decoupled
        (``torch.optim.AdamW``).

    References
    ----------
    .. [1] Jordan et al. (2024), "Muon: An optimizer for hidden layers in neural networks",
       https://kellerjordan.github.io/posts/muon/ (code: github.com/KellerJordan/Muon).
    .. [2] Liu et al. (2025), "Muon is scalable for LLM training", arXiv:2502.16982.
    .. [3] Tian (2025), "Provable scaling laws of feature emergence from learning dynamics of
       grokking" (Li₂), arXiv:2509.21519.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.02,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        rms_scale: bool = True,
        coupled_decay: bool = False,
    ) -> None:
        if lr < 0 or weight_decay < 0 or eps < 0:
            msg = f"lr, weight_decay and eps must be >= 0, got {lr}, {weight_decay}, {eps}."
            raise ValueError(msg)
        if not 0.0 <= momentum < 1.0 or not all(0.0 <= b < 1.0 for b in betas):
            msg = f"momentum and betas must lie in [0, 1), got {momentum} and {betas}."
            raise ValueError(msg)
        if ns_steps < 1:
            msg = f"ns_steps must be >= 1, got {ns_steps}."
            raise ValueError(msg)
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_steps": ns_steps,
            "weight_decay": weight_decay,
            "betas": tuple(betas),
            "eps": eps,
            "use_muon": True,
            "rms_scale": bool(rms_scale),
            "coupled_decay": bool(coupled_decay),
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; a Muon group (``use_muon=True``, the default) takes only matrices.

        Raises
        ------
        ValueError
            If a Muon group holds a parameter with fewer than 2 dimensions.
        """
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if group["use_muon"]:
            for p in group["params"]:
                if p.ndim < 2:
                    msg = (
                        f"Muon orthogonalises matrices, but a group with use_muon=True holds a "
                        f"parameter of shape {tuple(p.shape)}. Put biases, gains and other "
                        "non-matrix parameters in a group with use_muon=False (AdamW)."
                    )
                    raise ValueError(msg)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Take one optimisation step; ``closure`` re-evaluates the loss if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["use_muon"]:
                self._muon_step(group)
            else:
                self._adamw_step(group)
        return loss

    def _muon_step(self, group: dict[str, Any]) -> None:
        lr, wd, beta = group["lr"], group["weight_decay"], group["momentum"]
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = p.grad
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            buf = state["momentum_buffer"]
            buf.lerp_(grad, 1 - beta)
            update = grad.lerp(buf, beta) if group["nesterov"] else buf
            matrix = update.reshape(update.shape[0], -1)
            rows, cols = matrix.shape
            ortho = newton_schulz(matrix, steps=group["ns_steps"])
            scale = max(1.0, rows / cols) ** 0.5 if group["rms_scale"] else 1.0
            if wd != 0:
                p.mul_(1 - lr * wd)
            p.add_(ortho.view(p.shape).to(p.dtype), alpha=-lr * scale)

    def _adamw_step(self, group: dict[str, Any]) -> None:
        # The arithmetic of torch.optim.AdamW's single-tensor path, operation for operation.
        lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = p.grad
            state = self.state[p]
            if "step" not in state:
                state["step"] = torch.tensor(0.0, dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            step_t, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
            step_t += 1
            if wd != 0 and group["coupled_decay"]:
                grad = grad.add(p, alpha=wd)  # torch.optim.Adam: L2 in the gradient
            elif wd != 0:
                p.mul_(1 - lr * wd)
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step = step_t.item()
            bias_correction1 = 1 - beta1**step
            bias_correction2 = 1 - beta2**step
            step_size = lr / bias_correction1
            denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
            p.addcdiv_(exp_avg, denom, value=-step_size)


def _muon_param_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split into (Muon: 2-D weights of Linear layers in ``model.encoder``, AdamW: the rest)."""
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.Module):
        msg = (
            f"make_optimizer('muon', ...) puts the Linear weights of model.encoder under Muon, "
            f"but {type(model).__name__} has no `encoder` submodule. Build "
            "Muon([{'params': matrices, 'use_muon': True}, "
            "{'params': the_rest, 'use_muon': False}]) yourself."
        )
        raise ValueError(msg)
    muon_ids = {
        id(m.weight)
        for m in encoder.modules()
        if isinstance(m, nn.Linear) and m.weight.ndim == 2 and m.weight.requires_grad
    }
    seen: set[int] = set()
    muon: list[nn.Parameter] = []
    rest: list[nn.Parameter] = []
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        (muon if id(p) in muon_ids else rest).append(p)
    return muon, rest


_TORCH_CLASSES: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
}
_MUON_KWARGS = (
    "momentum",
    "nesterov",
    "ns_steps",
    "betas",
    "eps",
    "adamw_lr",
    "rms_scale",
    "coupled_decay",
)


def make_optimizer(
    name: str, model: nn.Module, lr: float, weight_decay: float = 0.0, **kwargs: Any
) -> torch.optim.Optimizer:
    """Build an optimizer for ``model`` by name.

    Parameters
    ----------
    name : {"sgd", "adam", "adamw", "muon"}
        ``"sgd"``, ``"adam"``, ``"adamw"`` are the ``torch.optim`` classes on all parameters
        (``"adam"``'s weight decay is the coupled L2 penalty, ``"adamw"``'s decoupled).
        ``"muon"`` is :class:`Muon` with Muon on the 2-D weights of every ``nn.Linear`` inside
        ``model.encoder`` (for :class:`~grokwidgets.models.MLP` all hidden layers including
        the first, ``encoder.0``, as in Tian's Li₂ setup where Muon trains ``W``; for the
        transformer the attention and MLP matrices) and AdamW on everything else: embeddings,
        the readout, biases and norms, as Jordan recommends.
    model : nn.Module
        The model whose parameters to optimise.
    lr : float
        Learning rate (for ``"muon"``, of both groups unless ``adamw_lr`` is given).
    weight_decay : float
        Weight decay (decoupled for ``"adamw"`` and ``"muon"``).
    **kwargs
        Further arguments of the torch class (e.g. ``momentum`` for SGD, ``betas`` for Adam);
        for ``"muon"``: ``momentum``, ``nesterov``, ``ns_steps``, ``betas``, ``eps``,
        ``adamw_lr`` (learning rate of the AdamW group), ``rms_scale`` and ``coupled_decay``
        (see :class:`Muon`). Tian's Li₂ code is ``momentum=0.99, nesterov=False,
        rms_scale=False, coupled_decay=True``: Muon on ``W`` with decoupled decay, Adam with
        the coupled L2 penalty on ``V``, one learning rate.

    Returns
    -------
    torch.optim.Optimizer

    Raises
    ------
    ValueError
        For an unknown name or keyword argument (the message lists the valid ones), or for
        ``"muon"`` when the model has no Linear layer in ``model.encoder``.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in OPTIMIZERS:
        msg = f"Unknown optimizer {name!r}. Valid optimizers: {list(OPTIMIZERS)}."
        raise ValueError(msg)
    if key == "muon":
        _check_kwargs(key, kwargs, _MUON_KWARGS)
        opts = dict(kwargs)
        adamw_lr = opts.pop("adamw_lr", lr)
        muon, rest = _muon_param_groups(model)
        if not muon:
            msg = (
                f"{type(model).__name__}.encoder has no Linear weight for Muon to train "
                "(depth=0?). Use 'adamw' instead."
            )
            raise ValueError(msg)
        groups: list[dict[str, Any]] = [{"params": muon, "use_muon": True}]
        if rest:
            groups.append({"params": rest, "use_muon": False, "lr": adamw_lr})
        return Muon(groups, lr=lr, weight_decay=weight_decay, **opts)
    cls = _TORCH_CLASSES[key]
    valid = [p for p in inspect.signature(cls).parameters if p not in ("params", "lr")]
    valid.remove("weight_decay")
    _check_kwargs(key, kwargs, valid)
    return cls(model.parameters(), lr=lr, weight_decay=weight_decay, **kwargs)


def _check_kwargs(name: str, kwargs: dict[str, Any], valid: Iterable[str]) -> None:
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        msg = (
            f"Unknown argument(s) {unknown} for optimizer {name!r}. Valid arguments besides "
            f"lr and weight_decay: {sorted(valid)}."
        )
        raise ValueError(msg)
