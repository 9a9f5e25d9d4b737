"""A multilayer perceptron with named encoder/readout, output scale α and centring at init."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

from grokwidgets.tasks.base import Task

__all__ = ["ACTIVATIONS", "INITS", "MLP", "READOUTS", "Poly", "Square", "make_activation"]

#: Activation names accepted by :func:`make_activation` (``"poly"`` also as ``"poly:EPS"``).
ACTIVATIONS = ("relu", "gelu", "tanh", "silu", "identity", "square", "poly")

#: ε of ``"poly"`` when none is given: the value of Kumar et al. (2024), Fig. 1.
DEFAULT_POLY_EPSILON = 0.02

_G0_PREFIX = "g0__"

#: Weight initialisations :class:`MLP` accepts (``init=``), before ``init_scale`` multiplies.
INITS = ("default", "xavier_normal", "normal")

#: Readouts :class:`MLP` accepts (``readout=``): trained, or fixed at 1/width (not a parameter).
READOUTS = ("trained", "fixed")


class Square(nn.Module):
    r"""The quadratic activation :math:`\phi(z) = z^2` (Tian's Li₂ setup, Kumar et al. Fig. 2)."""

    def forward(self, z: Tensor) -> Tensor:
        """Return ``z ** 2``."""
        return z * z


class Poly(nn.Module):
    r"""The activation :math:`\phi(z) = z + \tfrac{\varepsilon}{2} z^2`.

    ε sets how aligned the initial features are with a quadratic target: ε → 0 is a linear
    network, larger ε learns features faster.

    Parameters
    ----------
    epsilon : float
        Weight ε of the quadratic term.

    References
    ----------
    .. [1] Kumar, Bordelon, Gershman & Pehlevan (2024), "Grokking as the transition from lazy to
       rich training dynamics", ICLR 2024, arXiv:2310.06110.
    """

    def __init__(self, epsilon: float = DEFAULT_POLY_EPSILON) -> None:
        super().__init__()
        self.epsilon = float(epsilon)

    def forward(self, z: Tensor) -> Tensor:
        """Return ``z + (epsilon / 2) * z ** 2``."""
        return z + (self.epsilon / 2) * (z * z)

    def extra_repr(self) -> str:
        """Show ε in the module's repr."""
        return f"epsilon={self.epsilon}"


def make_activation(name: str) -> nn.Module:
    """Build an activation module from its name.

    Parameters
    ----------
    name : str
        One of :data:`ACTIVATIONS`. The polynomial activation takes its ε in the name:
        ``"poly:0.05"`` is :math:`z + 0.025 z^2`; plain ``"poly"`` uses ε = 0.02.

    Returns
    -------
    nn.Module
        A module, so forward hooks can capture the activations.

    Raises
    ------
    ValueError
        If the name is unknown or ε does not parse as a finite number.
    """
    if not isinstance(name, str):
        msg = f"activation must be a string, one of {list(ACTIVATIONS)}; got {name!r}."
        raise ValueError(msg)
    base, sep, arg = name.partition(":")
    if base == "poly":
        epsilon = DEFAULT_POLY_EPSILON
        if sep:
            try:
                epsilon = float(arg)
            except ValueError:
                epsilon = math.nan
            if not math.isfinite(epsilon):
                msg = f"Cannot read ε from activation {name!r}: write e.g. 'poly:0.02'."
                raise ValueError(msg)
        return Poly(epsilon)
    simple: dict[str, type[nn.Module]] = {
        "relu": nn.ReLU,
        "gelu": nn.GELU,
        "tanh": nn.Tanh,
        "silu": nn.SiLU,
        "identity": nn.Identity,
        "square": Square,
    }
    if sep or base not in simple:
        msg = (
            f"Unknown activation {name!r}. Valid activations: {list(ACTIVATIONS)} "
            "(the polynomial one as 'poly' or 'poly:EPSILON')."
        )
        raise ValueError(msg)
    return simple[base]()


def seeded_default_init(
    module: nn.Module, seed: int, init_scale: float = 1.0, init: str = "default"
) -> None:
    r"""Initialise ``module`` from a private generator, then scale.

    ``init="default"`` is PyTorch's default: every ``nn.Linear`` gets
    :math:`W, b \sim U(-1/\sqrt{\text{fan\_in}}, 1/\sqrt{\text{fan\_in}})` (what
    ``kaiming_uniform_(a=√5)`` gives). ``init="xavier_normal"`` gives every ``nn.Linear``
    :math:`W \sim \mathcal N\big(0, 2/(\text{fan\_in} + \text{fan\_out})\big)` (Glorot &
    Bengio 2010, ``nn.init.xavier_normal_``) and zero biases, the init of Manning-Coe et al.
    (2025). ``init="normal"`` gives every ``nn.Linear`` :math:`W \sim \mathcal N(0, 1)` (unit
    variance whatever the fan-in) and zero biases, the init of Kumar et al. (2024), under
    which the pre-activations :math:`w \cdot x` are of order :math:`\lVert x\rVert`. Every
    ``nn.Embedding`` gets :math:`\mathcal N(0, 1)` and every
    ``nn.LayerNorm`` ones and zeros; the draws come from a ``torch.Generator`` seeded with
    ``seed``, in module order, so the result is deterministic and the global RNG is untouched.
    Finally every parameter is multiplied by ``init_scale``.

    Raises
    ------
    TypeError
        If a module type with parameters is not one of the above.
    ValueError
        If ``init`` is not one of :data:`INITS`.
    """
    if init not in INITS:
        msg = f"Unknown init {init!r}. Valid inits: {list(INITS)}."
        raise ValueError(msg)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.Linear) and init in ("xavier_normal", "normal"):
                fan_out, fan_in = sub.weight.shape
                std = 1.0
                if init == "xavier_normal":
                    std = math.sqrt(2.0 / (fan_in + fan_out)) if fan_in + fan_out > 0 else 0.0
                sub.weight.copy_(torch.randn(sub.weight.shape, generator=gen) * std)
                if sub.bias is not None:
                    sub.bias.zero_()
            elif isinstance(sub, nn.Linear):
                bound = 1.0 / math.sqrt(sub.in_features) if sub.in_features > 0 else 0.0
                _uniform(sub.weight, bound, gen)
                if sub.bias is not None:
                    _uniform(sub.bias, bound, gen)
            elif isinstance(sub, nn.Embedding):
                w = torch.randn(sub.weight.shape, generator=gen, dtype=sub.weight.dtype)
                sub.weight.copy_(w)
            elif isinstance(sub, nn.LayerNorm):
                if sub.weight is not None:
                    sub.weight.fill_(1.0)
                if sub.bias is not None:
                    sub.bias.zero_()
            elif any(True for _ in sub.parameters(recurse=False)):
                msg = f"No default init known for {type(sub).__name__}."
                raise TypeError(msg)
        if init_scale != 1.0:
            for p in module.parameters():
                p.mul_(init_scale)


def _uniform(t: Tensor, bound: float, gen: torch.Generator) -> None:
    u = torch.rand(t.shape, generator=gen, dtype=t.dtype)
    t.copy_(u * (2 * bound) - bound)


class MLP(nn.Module):
    r"""Multilayer perceptron with named encoder and readout, output scale α, optional centring.

    .. math::

        h_0 = x \text{ (or the concatenated token embeddings)}, \quad
        h_{\ell} = \phi(W_\ell h_{\ell-1} + b_\ell), \quad
        g(x) = W_{\text{out}} h_L + b_{\text{out}},

    and the model returns :math:`f(x) = \alpha\, g(x)`, or with ``centred=True``
    :math:`f(x) = \alpha\,(g(x) - g_0(x))` where :math:`g_0` is the network at its initial
    parameters, so that :math:`f \equiv 0` at init (Kumar et al. [2]_; Chizat et al. [3]_).
    A large α makes training lazy (kernel regime), a small α rich.

    Module paths: ``embed`` (token inputs only), ``encoder.0``, ``encoder.2``, … (the hidden
    ``nn.Linear`` layers; ``encoder.1``, ``encoder.3``, … are the activations) and ``readout``.
    With ``depth=0`` the encoder is an empty ``nn.Sequential`` and the readout acts on the
    input features. The output of ``encoder`` is always the readout's input.

    Parameters
    ----------
    in_dim : int
        Input features (continuous inputs) or tokens per sample (token inputs).
    out_dim : int
        Number of outputs (classes or regression targets).
    width : int
        Hidden width of every encoder layer.
    depth : int
        Number of hidden (Linear, activation) pairs.
    activation : str
        One of :data:`ACTIVATIONS`; the polynomial activation
        :math:`\phi(z) = z + \tfrac{\varepsilon}{2} z^2` takes ε in the name, ``"poly:0.02"``.
    bias : bool
        Whether every Linear layer (encoder and readout) has a bias.
    alpha : float
        Output scale α.
    centred : bool
        Subtract the network's output at init. :math:`g_0`'s parameters are kept as buffers
        named ``g0__<parameter path with '.' → '__'>`` (in ``state_dict``, not in
        ``parameters()``); see :meth:`initial_parameters`.
    init_scale : float
        Every parameter is multiplied by this after the init (Liu et al. [1]_).
    init : {"default", "xavier_normal", "normal"}
        ``"default"``: PyTorch's default init; ``"xavier_normal"``: Xavier-normal weights
        and zero biases, the init of Manning-Coe et al. [4]_; ``"normal"``: weights
        :math:`\mathcal N(0, 1)` and zero biases, Kumar et al.'s [2]_
        (:func:`seeded_default_init`).
    readout : {"trained", "fixed"}
        ``"fixed"``: the readout weights are all :math:`1/\text{width}` and its bias 0, held
        as buffers, not parameters, so no optimizer moves them and the NTK leaves them out:
        :math:`g(x) = \frac1N\sum_i \phi(w_i \cdot x)`, Kumar et al.'s model [2]_ with its
        readouts fixed at 1. One output only (every output would be the same).
    vocab_size : int or None
        Token inputs: number of token ids; adds ``embed`` = ``nn.Embedding(vocab_size,
        embed_dim)`` whose outputs for the ``n_tokens`` tokens are concatenated.
    n_tokens : int or None
        Tokens per sample; defaults to ``in_dim`` (and must equal it).
    embed_dim : int or None
        Embedding width; defaults to 128.
    seed : int
        Seed of the private generator used for init (the global RNG is not touched).

    References
    ----------
    .. [1] Liu, Michaud & Tegmark (2022), "Omnigrok: Grokking beyond algorithmic data",
       arXiv:2210.01117.
    .. [2] Kumar, Bordelon, Gershman & Pehlevan (2024), "Grokking as the transition from lazy to
       rich training dynamics", ICLR 2024, arXiv:2310.06110.
    .. [3] Chizat, Oyallon & Bach (2019), "On lazy training in differentiable programming",
       arXiv:1812.07956.
    .. [4] Manning-Coe, Gliozzi, Stapleton, Hirst, De Tomasi, Bradlyn & Berman (2025),
       "Grokking vs. learning: same features, different encodings", arXiv:2502.01739.
    """

    _g0_net: MLP  # centred models only: storage-free copy that evaluates g0 (not a submodule)

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        width: int = 256,
        depth: int = 2,
        activation: str = "relu",
        bias: bool = True,
        alpha: float = 1.0,
        centred: bool = False,
        init_scale: float = 1.0,
        init: str = "default",
        readout: str = "trained",
        vocab_size: int | None = None,
        n_tokens: int | None = None,
        embed_dim: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for label, value in (("in_dim", in_dim), ("out_dim", out_dim), ("width", width)):
            if int(value) < 1:
                msg = f"{label} must be a positive integer, got {value!r}."
                raise ValueError(msg)
        if int(depth) < 0:
            msg = f"depth must be >= 0, got {depth!r}."
            raise ValueError(msg)
        make_activation(activation)  # validate before building anything
        if readout not in READOUTS:
            msg = f"Unknown readout {readout!r}. Valid readouts: {list(READOUTS)}."
            raise ValueError(msg)
        if readout == "fixed" and int(out_dim) != 1:
            msg = (
                f"readout='fixed' sets every readout weight to 1/width, so all {out_dim} outputs "
                "would be equal: use it with one output (regression)."
            )
            raise ValueError(msg)
        if vocab_size is None:
            if n_tokens is not None or embed_dim is not None:
                msg = "n_tokens and embed_dim apply to token inputs only: pass vocab_size too."
                raise ValueError(msg)
        else:
            n_tokens = int(in_dim) if n_tokens is None else int(n_tokens)
            if n_tokens != int(in_dim):
                msg = f"n_tokens ({n_tokens}) must equal in_dim ({in_dim}) for token inputs."
                raise ValueError(msg)
            embed_dim = 128 if embed_dim is None else int(embed_dim)
            vocab_size = int(vocab_size)
        self.in_dim = int(in_dim)
        self.out_dim = int(out_dim)
        self.width = int(width)
        self.depth = int(depth)
        self.activation = activation
        self.bias = bool(bias)
        self.alpha = float(alpha)
        self.centred = bool(centred)
        self.init_scale = float(init_scale)
        self.init = init
        self.readout_mode = readout
        self.vocab_size = vocab_size
        self.n_tokens = n_tokens
        self.embed_dim = embed_dim
        self.seed = int(seed)

        meta = torch.device("meta")
        self.embed: nn.Embedding | None = None
        if vocab_size is not None:
            assert embed_dim is not None and n_tokens is not None
            self.embed = nn.Embedding(vocab_size, embed_dim, device=meta)
            features = n_tokens * embed_dim
        else:
            features = self.in_dim
        layers: list[nn.Module] = []
        for _ in range(self.depth):
            layers += [nn.Linear(features, self.width, bias=self.bias, device=meta)]
            layers += [make_activation(activation)]
            features = self.width
        self.encoder = nn.Sequential(*layers)
        self.readout = nn.Linear(features, self.out_dim, bias=self.bias, device=meta)
        self.to_empty(device="cpu")
        seeded_default_init(self, self.seed, self.init_scale, init)
        self._fixed_names: list[str] = []
        if readout == "fixed":
            self._fix_readout()

        self._g0_names: list[tuple[str, str]] = []
        if self.centred:
            # An unregistered, storage-free copy of the network: g0 is evaluated through it with
            # functional_call, so hooks on this model's modules do not fire for the g0 pass.
            skeleton = copy.deepcopy(self).to(meta)
            skeleton.centred = False
            skeleton.alpha = 1.0
            object.__setattr__(self, "_g0_net", skeleton)
            for name, p in self.named_parameters():
                buf = _G0_PREFIX + name.replace(".", "__")
                self.register_buffer(buf, p.detach().clone())
                self._g0_names.append((name, buf))

    @property
    def config(self) -> dict[str, Any]:
        """JSON-serialisable recipe; ``grokwidgets.models.from_config(config)`` rebuilds it."""
        return {
            "class": "MLP",
            "in_dim": self.in_dim,
            "out_dim": self.out_dim,
            "width": self.width,
            "depth": self.depth,
            "activation": self.activation,
            "bias": self.bias,
            "alpha": self.alpha,
            "centred": self.centred,
            "init_scale": self.init_scale,
            "init": self.init,
            "readout": self.readout_mode,
            "vocab_size": self.vocab_size,
            "n_tokens": self.n_tokens,
            "embed_dim": self.embed_dim,
            "seed": self.seed,
        }

    @classmethod
    def for_task(
        cls,
        task: Task,
        width: int = 256,
        depth: int = 2,
        alpha: float = 1.0,
        centred: bool = False,
        init_scale: float = 1.0,
        activation: str | None = None,
        bias: bool = True,
        embed_dim: int = 128,
        seed: int = 0,
        init: str = "default",
        readout: str = "trained",
    ) -> MLP:
        """Build an MLP sized for ``task``.

        Continuous inputs give ``in_dim = task.input_dim``; token inputs an embedding with
        ``vocab_size = task.vocab_size`` and ``n_tokens = task.input_dim``; ``out_dim`` is
        ``task.n_outputs``.

        Parameters
        ----------
        task : Task
            The task the model is for.
        width, depth, alpha, centred, init_scale, init, readout, bias, embed_dim, seed
            As in :class:`MLP`.
        activation : str or None
            As in :class:`MLP`. ``None`` (the default) means ``"poly:<ε>"`` when
            ``task.meta`` has an ``"epsilon"`` (the polynomial-regression task of Kumar et
            al.), else ``"relu"``.

        Returns
        -------
        MLP
        """
        if activation is None:
            eps = task.meta.get("epsilon")
            activation = "relu" if eps is None else f"poly:{float(eps)!r}"
        if task.input_kind == "tokens":
            if task.vocab_size is None:
                msg = f"Token task {task.name!r} has no vocab_size; cannot size the embedding."
                raise ValueError(msg)
            return cls(
                task.input_dim,
                task.n_outputs,
                width=width,
                depth=depth,
                activation=activation,
                bias=bias,
                alpha=alpha,
                centred=centred,
                init_scale=init_scale,
                init=init,
                readout=readout,
                vocab_size=task.vocab_size,
                n_tokens=task.input_dim,
                embed_dim=embed_dim,
                seed=seed,
            )
        return cls(
            task.input_dim,
            task.n_outputs,
            width=width,
            depth=depth,
            activation=activation,
            bias=bias,
            alpha=alpha,
            centred=centred,
            init_scale=init_scale,
            init=init,
            readout=readout,
            seed=seed,
        )

    def _fix_readout(self) -> None:
        """Replace the readout's parameters by buffers: weights 1/width, bias 0."""
        lin = self.readout
        fixed = {"weight": torch.full_like(lin.weight.detach(), 1.0 / lin.in_features)}
        if lin.bias is not None:
            fixed["bias"] = torch.zeros_like(lin.bias.detach())
        for name, value in fixed.items():
            delattr(lin, name)
            lin.register_buffer(name, value)
            self._fixed_names.append(f"readout.{name}")

    def recentre(self) -> None:
        r"""Make the current parameters the reference :math:`g_0`, so that :math:`f \equiv 0` now.

        For a centred model re-initialised (or otherwise changed) after it was built: the
        copy of the initial parameters is what :math:`f = \alpha (g - g_0)` subtracts, and it
        is not updated by assigning new parameters.

        Raises
        ------
        ValueError
            If the model is not centred.
        """
        self._require_centred("has a g0 to recentre")
        with torch.no_grad():
            for name, buf in self._g0_names:
                self.get_buffer(buf).copy_(self.get_parameter(name))

    def initial_parameters(self) -> dict[str, Tensor]:
        """Return the parameters of :math:`g_0` (centred models only), keyed by parameter path.

        Raises
        ------
        ValueError
            If the model is not centred.
        """
        self._require_centred("keeps its initial parameters")
        return {name: self.get_buffer(buf) for name, buf in self._g0_names}

    def _require_centred(self, what: str) -> None:
        if not self.centred:
            msg = f"Only a centred MLP (centred=True) {what}."
            raise ValueError(msg)

    def forward(self, x: Tensor) -> Tensor:
        r"""Return :math:`\alpha g(x)`, or :math:`\alpha (g(x) - g_0(x))` when centred.

        Parameters
        ----------
        x : Tensor
            ``(n, in_dim)`` floats, or ``(n, n_tokens)`` int64 token ids for token models.

        Returns
        -------
        Tensor
            ``(n, out_dim)``.
        """
        out = self._g(x)
        if self.centred:
            with torch.no_grad():
                fixed = {name: self.get_buffer(name) for name in self._fixed_names}
                out0 = torch.func.functional_call(
                    self._g0_net, {**self.initial_parameters(), **fixed}, (x,), strict=True
                )
            out = out - out0
        return out * self.alpha

    def _g(self, x: Tensor) -> Tensor:
        if self.embed is not None:
            if x.is_floating_point() or x.ndim != 2 or x.shape[1] != self.n_tokens:
                msg = (
                    f"This MLP takes int64 token ids of shape (n, {self.n_tokens}); "
                    f"got {x.dtype} {tuple(x.shape)}."
                )
                raise ValueError(msg)
            h = self.embed(x).flatten(1)
        else:
            if x.ndim != 2 or x.shape[1] != self.in_dim:
                msg = f"This MLP takes inputs of shape (n, {self.in_dim}); got {tuple(x.shape)}."
                raise ValueError(msg)
            h = x
        return self.readout(self.encoder(h))

    def extra_repr(self) -> str:
        """Show α, centring and init scale in the module's repr."""
        init = "" if self.init == "default" else f", init={self.init!r}"
        if self.readout_mode != "trained":
            init += f", readout={self.readout_mode!r}"
        return f"alpha={self.alpha}, centred={self.centred}, init_scale={self.init_scale}{init}"
