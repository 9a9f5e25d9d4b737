r"""A model's linearization around its initial parameters, as a model that trains.

.. math::

    f^{\mathrm{lin}}_\theta(x) = f_{\theta_0}(x) + J_{\theta_0}(x)\,(\theta - \theta_0)

Trained by gradient descent it is kernel regression with the network's NTK at init
(Jacot et al. 2018; Lee et al. 2019): the *lazy* limit that Kumar et al. (2024) compare a
grokking network with. Its parameters have the same names and shapes as the wrapped model's,
start at :math:`\theta_0`, and each forward pass is one forward-mode product
(``torch.func.jvp``) at :math:`\theta_0`, so the gradient with respect to :math:`\theta` is
:math:`J_{\theta_0}^\top` applied to the loss gradient, exactly.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import Tensor, nn
from torch.func import functional_call, jvp

from grokwidgets._transforms import forward_mode
from grokwidgets.models.mlp import MLP
from grokwidgets.models.transformer import Transformer
from grokwidgets.tasks.base import Task, check_kwargs

__all__ = ["Linearized"]

_SEP = "__"

#: The models a config may name to linearize (``{"class": ..., **kwargs}``); with
#: ``Linearized`` itself, the classes :func:`grokwidgets.models.from_config` knows.
LINEARIZABLE: dict[str, type[nn.Module]] = {"MLP": MLP, "Transformer": Transformer}


def _inner_class(config: dict[str, Any]) -> tuple[type[nn.Module], dict[str, Any]]:
    spec = dict(config)
    name = spec.pop("class", "MLP")
    if name not in LINEARIZABLE:
        msg = f"Unknown model class {name!r} to linearize; known: {sorted(LINEARIZABLE)}."
        raise ValueError(msg)
    return LINEARIZABLE[name], spec


class Linearized(nn.Module):
    r"""The first-order Taylor expansion of ``model`` around its current parameters.

    Parameters
    ----------
    model : nn.Module or dict
        The network to linearize (it is copied; the original is not touched), or its
        ``model.config`` (``{"class": "MLP", ...}``), rebuilt with
        :func:`grokwidgets.models.from_config`. Its buffers (a centred MLP's :math:`g_0`, a
        fixed readout) are kept as they are.

    Attributes
    ----------
    theta : nn.ParameterDict
        :math:`\theta`, keyed by the wrapped model's parameter paths with ``.`` → ``__``;
        the only parameters, so an optimizer given ``parameters()`` trains them.

    Notes
    -----
    The reference :math:`\theta_0` is held as buffers (``theta0__<path>``), so it travels in
    ``state_dict`` and checkpoints. The network is evaluated in whatever mode this module is
    in (``train``/``eval``); a network with dropout gets a stochastic linearization.

    References
    ----------
    .. [1] Lee, Xiao, Schoenholz, Bahri, Novak, Sohl-Dickstein & Pennington (2019), "Wide
       neural networks of any depth evolve as linear models under gradient descent",
       arXiv:1902.06720.
    .. [2] Kumar, Bordelon, Gershman & Pehlevan (2024), "Grokking as the transition from lazy to
       rich training dynamics", ICLR 2024, arXiv:2310.06110.
    """

    net: nn.Module  # the wrapped copy: not a submodule, so its parameters are not ours

    def __init__(self, model: nn.Module | dict[str, Any]) -> None:
        super().__init__()
        if isinstance(model, dict):
            cls, spec = _inner_class(model)
            check_kwargs(cls, spec, what=f"model {cls.__name__!r}")
            model = cls(**spec)
        if not isinstance(model, nn.Module):
            msg = f"Linearized wraps an nn.Module or its config dict, got {type(model).__name__}."
            raise TypeError(msg)
        net = copy.deepcopy(model)
        self.theta = nn.ParameterDict()
        self._names: list[str] = []
        for name, p in net.named_parameters():
            key = name.replace(".", _SEP)
            self.theta[key] = nn.Parameter(p.detach().clone())
            self.register_buffer("theta0" + _SEP + key, p.detach().clone())
            p.requires_grad_(False)
            self._names.append(name)
        if not self._names:
            msg = "The model has no parameters to linearize."
            raise ValueError(msg)
        object.__setattr__(self, "net", net)

    @classmethod
    def for_task(cls, task: Task, model: dict[str, Any]) -> Linearized:
        """The linearization of the model ``model`` (a config section) built for ``task``."""
        inner, spec = _inner_class(model)
        return cls(inner.for_task(task, **spec))  # type: ignore[attr-defined]

    @property
    def config(self) -> dict[str, Any]:
        """``{"class": "Linearized", "model": <the wrapped model's config>}``."""
        inner = getattr(self.net, "config", None)
        if not isinstance(inner, dict):
            msg = "The wrapped model has no `config`; this linearization cannot be rebuilt."
            raise AttributeError(msg)
        return {"class": "Linearized", "model": dict(inner)}

    @property
    def alpha(self) -> float:
        """The wrapped model's output scale α (for ``train(lr_per_alpha2=True)``)."""
        alpha = getattr(self.net, "alpha", None)
        if alpha is None:
            msg = f"The wrapped {type(self.net).__name__} has no output scale `alpha`."
            raise AttributeError(msg)
        return float(alpha)

    def initial_parameters(self) -> dict[str, Tensor]:
        r""":math:`\theta_0`, keyed by the wrapped model's parameter paths."""
        return {n: self.get_buffer("theta0" + _SEP + n.replace(".", _SEP)) for n in self._names}

    def parameters_by_path(self) -> dict[str, Tensor]:
        r""":math:`\theta`, keyed by the wrapped model's parameter paths."""
        return {n: self.theta[n.replace(".", _SEP)] for n in self._names}

    def forward(self, x: Tensor) -> Tensor:
        r"""Return :math:`f_{\theta_0}(x) + J_{\theta_0}(x)(\theta - \theta_0)`."""
        theta0 = self.initial_parameters()
        theta = self.parameters_by_path()
        tangents = {n: theta[n] - theta0[n] for n in self._names}
        self.net.train(self.training)

        def f(params: dict[str, Tensor]) -> Tensor:  # the net's own buffers stay in place
            return functional_call(self.net, params, (x,))

        with forward_mode():
            res = jvp(f, (theta0,), (tangents,))
        return res[0] + res[1]

    def _apply(self, fn: Any, recurse: bool = True) -> Linearized:  # noqa: ANN401
        # .to(dtype/device) moves the wrapped copy too (it is not a registered submodule)
        super()._apply(fn, recurse)
        self.net._apply(fn, recurse)
        return self
