"""A one-layer decoder-only transformer for modular arithmetic (Nanda et al. 2023)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from grokwidgets.models.mlp import seeded_default_init
from grokwidgets.tasks.base import Task

__all__ = ["Attention", "Block", "Transformer"]


class Attention(nn.Module):
    r"""Causal multi-head self-attention with separate named projections.

    .. math::

        A^h = \operatorname{softmax}\!\Big(\frac{Q^h K^{h\top}}{\sqrt{d_\text{head}}}
        + M\Big), \qquad
        \operatorname{attn}(H) = \big[A^1 V^1, \dots, A^{n_\text{heads}} V^{n_\text{heads}}\big]
        W_O^\top,

    with :math:`Q = H W_Q^\top`, :math:`K = H W_K^\top`, :math:`V = H W_V^\top` split into heads
    of width :math:`d_\text{head} = d_\text{model} / n_\text{heads}`, and the causal mask
    :math:`M_{ij} = -\infty` for :math:`j > i`. The projections ``q``, ``k``, ``v``, ``o`` have
    no bias (as in Nanda et al.). ``pattern`` is an ``nn.Identity`` applied to the attention
    probabilities :math:`A` of shape ``(n, n_heads, T, T)``: hook it to read them.
    """

    def __init__(self, d_model: int, n_heads: int, device: torch.device | None = None) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.d_head = d_model // n_heads
        self.q = nn.Linear(d_model, d_model, bias=False, device=device)
        self.k = nn.Linear(d_model, d_model, bias=False, device=device)
        self.v = nn.Linear(d_model, d_model, bias=False, device=device)
        self.o = nn.Linear(d_model, d_model, bias=False, device=device)
        self.pattern = nn.Identity()

    def forward(self, h: Tensor) -> Tensor:
        """Attend over ``h`` of shape ``(n, T, d_model)``; return the same shape."""
        n, t, d = h.shape

        def heads(z: Tensor) -> Tensor:
            return z.view(n, t, self.n_heads, self.d_head).transpose(1, 2)

        q, k, v = heads(self.q(h)), heads(self.k(h)), heads(self.v(h))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_head)
        causal = torch.ones(t, t, dtype=torch.bool, device=h.device).tril()
        scores = scores.masked_fill(~causal, float("-inf"))
        pattern = self.pattern(scores.softmax(dim=-1))
        z = (pattern @ v).transpose(1, 2).reshape(n, t, d)
        return self.o(z)


class Block(nn.Module):
    r"""One transformer block on the residual stream: attention, then an MLP.

    .. math::

        H \leftarrow H + \operatorname{attn}(\operatorname{LN}(H)), \qquad
        H \leftarrow H + W_\text{out}\,\operatorname{ReLU}(W_\text{in} \operatorname{LN}(H)
        + b_\text{in}) + b_\text{out},

    followed by a final LN; with ``layer_norm=False`` (Nanda et al.) every LN is the identity
    and the modules ``ln_attn``, ``ln_mlp``, ``ln_final`` are ``None``. Submodules: ``attn``
    (:class:`Attention`) and ``mlp`` = ``nn.Sequential(Linear, ReLU, Linear)``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_mlp: int,
        layer_norm: bool = False,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()

        def ln() -> nn.LayerNorm | None:
            return nn.LayerNorm(d_model, device=device) if layer_norm else None

        self.ln_attn = ln()
        self.attn = Attention(d_model, n_heads, device=device)
        self.ln_mlp = ln()
        self.mlp = nn.Sequential(
            nn.Linear(d_model, d_mlp, device=device),
            nn.ReLU(),
            nn.Linear(d_mlp, d_model, device=device),
        )
        self.ln_final = ln()

    def forward(self, h: Tensor) -> Tensor:
        """Update the residual stream ``h`` of shape ``(n, T, d_model)``."""
        h = h + self.attn(h if self.ln_attn is None else self.ln_attn(h))
        h = h + self.mlp(h if self.ln_mlp is None else self.ln_mlp(h))
        return h if self.ln_final is None else self.ln_final(h)


class Transformer(nn.Module):
    r"""One-layer decoder-only transformer that reads ``a b =`` and predicts at ``=``.

    The input tokens ``(n, n_tokens)`` get an ``"="`` token (id ``vocab_size``) appended, then

    .. math::

        H_0 = W_E[x] + W_\text{pos}, \qquad H = \operatorname{block}(H_0), \qquad
        f(x) = \alpha\, W_U H_{T-1},

    the readout :math:`W_U` (no bias) acting on the residual stream at the last (``"="``)
    position. Module paths: ``embed`` (``vocab_size + 1`` tokens), ``pos_embed``,
    ``encoder.attn.{q,k,v,o}`` (``encoder.attn.pattern`` is a hook point for the attention
    probabilities), ``encoder.mlp.0`` (Linear), ``encoder.mlp.1`` (ReLU), ``encoder.mlp.2``
    (Linear) and ``readout``. ``encoder`` maps ``(n, T, d_model)`` to ``(n, T, d_model)``;
    the readout's input is its last position.

    Initialisation is PyTorch's default (embeddings :math:`\mathcal N(0, 1)`, Linear layers
    :math:`U(\pm 1/\sqrt{\text{fan\_in}})`) from a private generator seeded with ``seed``, then
    every parameter times ``init_scale``; Nanda et al. used a smaller embedding init.

    Parameters
    ----------
    vocab_size : int
        Number of input token ids (``p`` for arithmetic mod ``p``).
    n_tokens : int
        Input tokens per sample (2 for ``a ∘ b``).
    out_dim : int or None
        Number of outputs; defaults to ``vocab_size``.
    d_model, n_heads, d_mlp : int
        Residual width, attention heads (``d_model`` must be divisible by it), MLP width.
    layer_norm : bool
        Pre-LayerNorm before attention and MLP and a final one; off by default, as in [1]_.
    alpha : float
        Output scale α.
    init_scale : float
        Every parameter is multiplied by this after the default init.
    seed : int
        Seed of the private generator used for init (the global RNG is not touched).

    References
    ----------
    .. [1] Nanda, Chan, Lieberum, Smith & Steinhardt (2023), "Progress measures for grokking via
       mechanistic interpretability", ICLR 2023, arXiv:2301.05217.
    .. [2] Power, Burda, Edwards, Babuschkin & Misra (2022), "Grokking: Generalization beyond
       overfitting on small algorithmic datasets", arXiv:2201.02177.
    """

    def __init__(
        self,
        vocab_size: int,
        n_tokens: int = 2,
        out_dim: int | None = None,
        d_model: int = 128,
        n_heads: int = 4,
        d_mlp: int = 512,
        layer_norm: bool = False,
        alpha: float = 1.0,
        init_scale: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        out_dim = int(vocab_size) if out_dim is None else int(out_dim)
        for label, value in (
            ("vocab_size", vocab_size),
            ("n_tokens", n_tokens),
            ("out_dim", out_dim),
            ("d_model", d_model),
            ("n_heads", n_heads),
            ("d_mlp", d_mlp),
        ):
            if int(value) < 1:
                msg = f"{label} must be a positive integer, got {value!r}."
                raise ValueError(msg)
        if int(d_model) % int(n_heads):
            msg = f"d_model ({d_model}) must be divisible by n_heads ({n_heads})."
            raise ValueError(msg)
        self.vocab_size = int(vocab_size)
        self.n_tokens = int(n_tokens)
        self.out_dim = out_dim
        self.d_model = int(d_model)
        self.n_heads = int(n_heads)
        self.d_mlp = int(d_mlp)
        self.layer_norm = bool(layer_norm)
        self.alpha = float(alpha)
        self.init_scale = float(init_scale)
        self.seed = int(seed)

        meta = torch.device("meta")
        self.embed = nn.Embedding(self.vocab_size + 1, self.d_model, device=meta)
        self.pos_embed = nn.Embedding(self.n_tokens + 1, self.d_model, device=meta)
        self.encoder = Block(
            self.d_model, self.n_heads, self.d_mlp, layer_norm=self.layer_norm, device=meta
        )
        self.readout = nn.Linear(self.d_model, self.out_dim, bias=False, device=meta)
        self.to_empty(device="cpu")
        seeded_default_init(self, self.seed, self.init_scale)

    @property
    def equals_token(self) -> int:
        """Id of the ``"="`` token appended to every input."""
        return self.vocab_size

    @property
    def config(self) -> dict[str, Any]:
        """JSON-serialisable recipe; ``grokwidgets.models.from_config(config)`` rebuilds it."""
        return {
            "class": "Transformer",
            "vocab_size": self.vocab_size,
            "n_tokens": self.n_tokens,
            "out_dim": self.out_dim,
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "d_mlp": self.d_mlp,
            "layer_norm": self.layer_norm,
            "alpha": self.alpha,
            "init_scale": self.init_scale,
            "seed": self.seed,
        }

    @classmethod
    def for_task(
        cls,
        task: Task,
        d_model: int = 128,
        n_heads: int = 4,
        d_mlp: int = 512,
        layer_norm: bool = False,
        alpha: float = 1.0,
        init_scale: float = 1.0,
        seed: int = 0,
    ) -> Transformer:
        """Build a transformer sized for a token task.

        ``vocab_size = task.vocab_size``, ``n_tokens = task.input_dim``,
        ``out_dim = task.n_outputs``; the other arguments are as in :class:`Transformer`.

        Raises
        ------
        ValueError
            If the task's inputs are not tokens.
        """
        if task.input_kind != "tokens" or task.vocab_size is None:
            msg = (
                f"Transformer needs a token task (input_kind='tokens' with a vocab_size); "
                f"{task.name!r} has input_kind={task.input_kind!r}. Use MLP.for_task instead."
            )
            raise ValueError(msg)
        return cls(
            task.vocab_size,
            n_tokens=task.input_dim,
            out_dim=task.n_outputs,
            d_model=d_model,
            n_heads=n_heads,
            d_mlp=d_mlp,
            layer_norm=layer_norm,
            alpha=alpha,
            init_scale=init_scale,
            seed=seed,
        )

    def forward(self, x: Tensor) -> Tensor:
        r"""Return :math:`\alpha W_U H_{T-1}` for token ids ``x`` of shape ``(n, n_tokens)``.

        Returns
        -------
        Tensor
            ``(n, out_dim)``.
        """
        if x.is_floating_point() or x.ndim != 2 or x.shape[1] != self.n_tokens:
            msg = (
                f"This Transformer takes int64 token ids of shape (n, {self.n_tokens}); "
                f"got {x.dtype} {tuple(x.shape)}."
            )
            raise ValueError(msg)
        eq = torch.full((x.shape[0], 1), self.equals_token, dtype=x.dtype, device=x.device)
        tokens = torch.cat([x, eq], dim=1)
        positions = torch.arange(tokens.shape[1], device=x.device)
        h = self.embed(tokens) + self.pos_embed(positions)
        h = self.encoder(h)
        return self.readout(h[:, -1]) * self.alpha

    def extra_repr(self) -> str:
        """Show α and init scale in the module's repr."""
        return f"alpha={self.alpha}, init_scale={self.init_scale}"
