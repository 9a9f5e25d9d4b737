r"""The engine of :mod:`grokwidgets.diagnostics.kernel`: exact empirical NTKs from layer factors.

For a model :math:`f_\theta : x \mapsto \mathbb R^O` the empirical neural tangent kernel of two
samples is the :math:`O \times O` block

.. math::

    \Theta(x_n, x_m)_{oo'} = \sum_p \frac{\partial f_o(x_n)}{\partial\theta_p}
    \frac{\partial f_{o'}(x_m)}{\partial\theta_p},

a sum over disjoint parameter groups (one per module here). The *trace* NTK is
:math:`\sum_o \Theta(x_n, x_m)_{oo}`. Instead of materialising the Jacobian (``N·O × P``) this
module uses the structure of each layer. A Linear layer :math:`z_t = W a_t + b`, applied at
positions :math:`t` (tokens; one position for a plain MLP layer), with back-propagated
gradients :math:`g_{t,o} = \partial f_o / \partial z_t`, contributes

.. math::

    \Theta^{W,b}(x_n, x_m)_{oo'} = \sum_{t,u} \big(a_{n,t}\cdot a_{m,u} + 1\big)
    \big(g_{n,t,o}\cdot g_{m,u,o'}\big),

the Hadamard product of the input Gram and the gradient Gram (the ``+1`` only with a bias).
An Embedding is a Linear layer on one-hot inputs: its input Gram is
:math:`[\mathrm{id}_{n,t} = \mathrm{id}_{m,u}]` (zero at ``padding_idx``). A LayerNorm
:math:`z = \gamma \odot \hat x + \beta` has per-sample Jacobians
:math:`\sum_t \hat x_{n,t} \odot g_{n,t,o}` (for γ) and :math:`\sum_t g_{n,t,o}` (for β), small
enough to form explicitly. Any other module with parameters, or a parameter shared between
modules, falls back to exact per-sample Jacobians from ``torch.func`` (``vmap(jacrev)``) with an
:class:`NTKFallbackWarning`. A one-hidden-layer :class:`~grokwidgets.models.MLP`'s trace
kernels need no backward pass at all: :mod:`.closed_form` gives them in closed form.

The gradients :math:`g` come from one batched backward pass (``is_grads_batched``) over the
``O`` output directions; layer inputs and outputs are captured with forward hooks. Samples
must not interact in ``eval`` mode (true of MLPs and transformers; not of BatchNorm in training
mode); the model is put in ``eval`` mode while the kernel is computed. A module used with no
batch dimension (a transformer's position embedding, applied to ``arange(T)`` and broadcast
over the batch) is handled exactly by expanding its output over the batch inside the hook,
after checking on a trial batch that this leaves the model's outputs unchanged.

References
----------
.. [1] Jacot, Gabriel & Hongler (2018), "Neural tangent kernel: convergence and generalization
   in neural networks", arXiv:1806.07572.
.. [2] Novak, Sohl-Dickstein & Schoenholz (2022), "Fast finite width neural tangent kernel",
   ICML 2022, arXiv:2206.08720 (structured NTK products).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from grokwidgets._transforms import TRANSFORMS
from grokwidgets.diagnostics._shared import eval_mode
from grokwidgets.diagnostics.kernel.closed_form import (
    MLPFactor,
    has_forward_hooks,
    one_hidden_layer_rule,
)
from grokwidgets.diagnostics.kernel.plan import check_finite, hooks, layer_name, make_plan

__all__ = [
    "BLOCKS",
    "Blocks",
    "NTKEngine",
    "NTKFallbackWarning",
    "empirical_ntk",
    "layer_ntks",
    "train_test_kernels",
]

Blocks = Literal["trace", "full"]
#: Valid values of ``blocks``: the trace NTK (N × N) or full output blocks (N × N × O × O).
BLOCKS: tuple[str, ...] = ("trace", "full")


class NTKFallbackWarning(UserWarning):
    """Some parameters have no structured NTK rule; their kernel comes from ``torch.func``."""


@dataclass
class _SeqFactor:
    """Linear or Embedding: ``K = sum_{t,u} A[n,t,m,u] (g[:, n, t] . g[:, m, u])``."""

    a: Tensor | None  # (N, T, d_in) inputs, (N, T) ids for embeddings; None: weight frozen
    g: Tensor  # (O, N, T, d_out) gradients of the outputs w.r.t. the layer's outputs
    bias: bool
    embedding: bool = False
    padding_idx: int | None = None


@dataclass
class _JacFactor:
    """Explicit per-sample Jacobian of a parameter group: ``K = J J^T``."""

    j: Tensor  # (N, O, P)


_Factor = _SeqFactor | _JacFactor | MLPFactor

#: The key of a batch's one factor when the closed form of a one-hidden-layer MLP applies.
_CLOSED_FORM = "<one-hidden-layer MLP>"


class NTKEngine:
    """Computes per-layer empirical NTKs of ``model`` exactly, reusing one plan.

    The plan (which layers get a structured rule, which fall back to ``torch.func``) is made
    once from a trial forward pass on ``x_example``; :meth:`factors` captures one batch's layer
    inputs and back-propagated gradients, and :meth:`kernels` combines two batches' factors.

    Parameters
    ----------
    model : nn.Module
        Maps a batch ``(N, ...)`` to outputs ``(N, O)`` (or ``(N,)``, one output), samples
        independently in ``eval`` mode.
    x_example : Tensor
        A batch of inputs (at least one sample) used to make the plan.
    blocks : {"trace", "full"}
        Trace NTK (``N1 × N2``) or full output blocks (``N1 × N2 × O × O``).
    warn : bool
        Warn (:class:`NTKFallbackWarning`) when some parameters fall back to ``torch.func``.
    closed_form : bool
        Use the closed form of a one-hidden-layer :class:`~grokwidgets.models.MLP`'s trace
        kernels where it applies (:mod:`.closed_form`; :attr:`rule` is then set). ``False``
        always takes the layer factors below: the same kernels, slower (for checks and
        benchmarks).
    """

    def __init__(
        self,
        model: nn.Module,
        x_example: Tensor,
        blocks: Blocks = "trace",
        warn: bool = True,
        *,
        closed_form: bool = True,
    ) -> None:
        if blocks not in BLOCKS:
            msg = f"blocks must be one of {list(BLOCKS)}, got {blocks!r}."
            raise ValueError(msg)
        if x_example.ndim < 1 or x_example.shape[0] < 1:
            msg = (
                f"The NTK needs a batch of at least one sample; got shape {tuple(x_example.shape)}."
            )
            raise ValueError(msg)
        self.model = model
        self.blocks: Blocks = blocks
        # A one-hidden-layer MLP's trace kernels in closed form (closed_form.py); the same
        # numbers as the layer factors below, without the batched backward over outputs.
        self.rule = one_hidden_layer_rule(model, blocks) if closed_form else None
        with eval_mode(model), torch.enable_grad():
            self.plan = make_plan(model, x_example)
        unsupported = {k: v for k, v in self.plan.reasons.items() if k in self.plan.fallback}
        if warn and unsupported:
            listed = "; ".join(f"{k}: {v}" for k, v in unsupported.items())
            msg = (
                f"empirical NTK: using torch.func Jacobians (exact, but slower) for {listed}. "
                "Linear, Embedding and LayerNorm layers have structured rules."
            )
            warnings.warn(msg, NTKFallbackWarning, stacklevel=3)

    @property
    def layers(self) -> list[str]:
        """Layer names of the kernels :meth:`kernels` returns, in module order."""
        if self.rule is not None:
            return self.rule.layers
        names = [layer_name(p) for p in self.plan.structured]
        return [*names, *(k for k in self.plan.fallback if k not in names)]

    def factors(self, x: Tensor) -> dict[str, _Factor]:
        """Capture the per-layer factors of batch ``x`` (inputs, back-propagated gradients).

        Raises
        ------
        FloatingPointError
            If the outputs or gradients are not finite.
        """
        if self.rule is not None and has_forward_hooks(self.model):
            self.rule = None  # a hook set since the engine was made: the layer factors from now
        if self.rule is not None:
            with eval_mode(self.model):
                return {_CLOSED_FORM: self.rule.factors(x)}
        with eval_mode(self.model), torch.enable_grad():
            out = self._structured(x)
            if self.plan.fallback:
                out.update(self._fallback(x))
        return out

    def _structured(self, x: Tensor) -> dict[str, _Factor]:
        n = int(x.shape[0])
        calls: dict[str, list[tuple[Tensor, Tensor]]] = {p: [] for p in self.plan.structured}
        modules = {p: m for p, (m, _) in self.plan.structured.items()}

        def make(path: str) -> Any:
            mode = self.plan.structured[path][1]

            def hook(_mod: nn.Module, args: tuple[Any, ...], z: Tensor) -> Tensor:
                inp = args[0].detach()
                if mode == "broadcast":
                    z = z.unsqueeze(0).expand(n, *z.shape)
                    inp = inp.unsqueeze(0).expand(n, *inp.shape)
                else:
                    # A copy flows on, so an in-place op downstream cannot alter z.
                    inp = inp.clone()
                    z_next = z.clone()
                    calls[path].append((inp, z))
                    return z_next
                calls[path].append((inp, z))
                return z

            return hook

        with hooks(modules, make):
            y = self.model(x)
        y = y.reshape(n, -1)
        check_finite(y, "model outputs")
        o = int(y.shape[1])
        flat = [(p, i, z) for p, cs in calls.items() for i, (_, z) in enumerate(cs)]
        if not flat:
            return {}
        basis = torch.eye(o, dtype=y.dtype, device=y.device).unsqueeze(1).expand(o, n, o)
        grads = torch.autograd.grad(
            y,
            [z for _, _, z in flat],
            grad_outputs=basis.contiguous(),
            is_grads_batched=True,
            allow_unused=True,
        )
        per_call: dict[str, list[tuple[Tensor, Tensor]]] = {p: [] for p in calls}
        for (path, i, z), g in zip(flat, grads, strict=True):
            if g is None:
                g = torch.zeros((o, *z.shape), dtype=z.dtype, device=z.device)
            check_finite(g, f"gradients at {layer_name(path)}")
            per_call[path].append((calls[path][i][0], g))
        out: dict[str, _Factor] = {}
        for path, pairs in per_call.items():
            if pairs:
                out[layer_name(path)] = self._factor(modules[path], pairs, n, o)
        return out

    @staticmethod
    def _factor(module: nn.Module, pairs: list[tuple[Tensor, Tensor]], n: int, o: int) -> _Factor:
        if isinstance(module, nn.LayerNorm):
            shape = tuple(module.normalized_shape)
            d = 1
            for s in shape:
                d *= s
            jw = []
            jb = []
            for inp, g in pairs:
                xhat = F.layer_norm(inp, shape, None, None, module.eps)
                gf = g.reshape(o, n, -1, d)
                jw.append((xhat.reshape(1, n, -1, d) * gf).sum(2))
                jb.append(gf.sum(2))
            parts = []
            if module.weight is not None and module.weight.requires_grad:
                parts.append(sum(jw[1:], jw[0]))
            if module.bias is not None and module.bias.requires_grad:
                parts.append(sum(jb[1:], jb[0]))
            return _JacFactor(torch.cat(parts, dim=-1).transpose(0, 1))
        if isinstance(module, nn.Embedding):
            ids = _cat([inp.reshape(n, -1) for inp, _ in pairs], dim=1)
            g = _cat([g.reshape(o, n, -1, g.shape[-1]) for _, g in pairs], dim=2)
            return _prune(
                _SeqFactor(
                    ids if module.weight.requires_grad else None,
                    g,
                    bias=False,
                    embedding=True,
                    padding_idx=module.padding_idx,
                )
            )
        assert isinstance(module, nn.Linear)
        a = _cat([inp.reshape(n, -1, inp.shape[-1]) for inp, _ in pairs], dim=1)
        g = _cat([g.reshape(o, n, -1, g.shape[-1]) for _, g in pairs], dim=2)
        bias = module.bias is not None and module.bias.requires_grad
        return _prune(_SeqFactor(a if module.weight.requires_grad else None, g, bias=bias))

    def _fallback(self, x: Tensor) -> dict[str, _Factor]:
        wanted = {n for names in self.plan.fallback.values() for n in names}
        params = {n: p.detach() for n, p in self.model.named_parameters() if n in wanted}
        model = self.model

        def single(p: dict[str, Tensor], xn: Tensor) -> Tensor:
            return functional_call(model, p, (xn.unsqueeze(0),)).reshape(-1)

        with torch.no_grad(), TRANSFORMS:
            jac = vmap(jacrev(single), in_dims=(None, 0))(params, x)
        n = int(x.shape[0])
        out: dict[str, _Factor] = {}
        for layer, names in self.plan.fallback.items():
            j = torch.cat([jac[name].reshape(n, jac[name].shape[1], -1) for name in names], -1)
            check_finite(j, f"Jacobians at {layer}")
            out[layer] = _JacFactor(j)
        return out

    def kernels(self, fa: dict[str, _Factor], fb: dict[str, _Factor]) -> dict[str, Tensor]:
        """Per-layer kernels between two batches' factors (from :meth:`factors`)."""
        if (_CLOSED_FORM in fa) != (_CLOSED_FORM in fb) or (
            _CLOSED_FORM in fa and self.rule is None
        ):
            msg = (
                "These factors were taken before a forward hook was set on the model (the "
                "closed form no longer applies): take them again with this engine's factors()."
            )
            raise ValueError(msg)
        if self.rule is not None:
            a, b = fa[_CLOSED_FORM], fb[_CLOSED_FORM]
            assert isinstance(a, MLPFactor) and isinstance(b, MLPFactor)
            return self.rule.kernels(a, b)
        return {layer: _pair_kernel(fa[layer], fb[layer], self.blocks) for layer in fa}


def _cat(parts: list[Tensor], dim: int) -> Tensor:
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=dim)


def _prune(f: _SeqFactor) -> _SeqFactor:
    """Drop positions whose gradients vanish for every sample and output (exact).

    In a one-layer transformer read out at the last position, the MLP, query and output
    projections at earlier positions do not reach the output: pruning them saves T² work.
    """
    t = f.g.shape[2]
    if t == 1:
        return f
    # Per-position max and min (vectorised reductions; much cheaper than abs() on big g).
    keep = torch.tensor(
        [bool(f.g[:, :, i].amax() != 0) or bool(f.g[:, :, i].amin() != 0) for i in range(t)]
    )
    if bool(keep.all()):
        return f
    if not bool(keep.any()):
        keep[0] = True  # keep one (zero) position so shapes stay valid
    a = None if f.a is None else f.a[:, keep]
    return _SeqFactor(a, f.g[:, :, keep], f.bias, f.embedding, f.padding_idx)


def _input_gram(fa: _SeqFactor, fb: _SeqFactor, dtype: torch.dtype) -> Tensor:
    """``A[n, t, m, u]`` = input inner product (+1 for a bias): shape (N1, T1, N2, T2)."""
    n1, t1 = fa.g.shape[1], fa.g.shape[2]
    n2, t2 = fb.g.shape[1], fb.g.shape[2]
    if fa.a is None or fb.a is None:
        gram = torch.zeros((n1, t1, n2, t2), dtype=dtype, device=fa.g.device)
    elif fa.embedding:
        ia, ib = fa.a, fb.a
        gram = (ia[:, :, None, None] == ib[None, None]).to(dtype)
        if fa.padding_idx is not None:
            gram = gram * (ia != fa.padding_idx).to(dtype)[:, :, None, None]
    else:
        gram = torch.einsum("ntd,mud->ntmu", fa.a, fb.a)
    return gram + 1 if fa.bias else gram


def _pair_kernel(fa: _Factor, fb: _Factor, blocks: Blocks) -> Tensor:
    if isinstance(fa, _JacFactor):
        assert isinstance(fb, _JacFactor)
        n1, o, p = fa.j.shape
        n2 = fb.j.shape[0]
        if blocks == "trace":
            return fa.j.reshape(n1, o * p) @ fb.j.reshape(n2, o * p).T
        k = fa.j.reshape(n1 * o, p) @ fb.j.reshape(n2 * o, p).T
        return k.reshape(n1, o, n2, o).permute(0, 2, 1, 3)
    assert isinstance(fa, _SeqFactor) and isinstance(fb, _SeqFactor)
    o, n1, t1, d = fa.g.shape
    n2, t2 = fb.g.shape[1], fb.g.shape[2]
    if blocks == "trace":
        if fa.embedding and fa.a is not None and fb.a is not None:
            return _embedding_trace(fa, fb)
        gram = _input_gram(fa, fb, fa.g.dtype)
        shared = _shared_gradient(fa.g, fb.g)
        if shared is not None:
            return (gram * shared.reshape(t1, t2)).sum(dim=(1, 3))
        ga = fa.g.permute(1, 2, 0, 3).reshape(n1 * t1, o * d)
        gb = ga if fb is fa else fb.g.permute(1, 2, 0, 3).reshape(n2 * t2, o * d)
        gg = (ga @ gb.T).reshape(n1, t1, n2, t2)
        return (gram * gg).sum(dim=(1, 3))
    gram = _input_gram(fa, fb, fa.g.dtype)
    k = torch.zeros((o, n1, o, n2), dtype=fa.g.dtype, device=fa.g.device)
    for t in range(t1):
        ga = fa.g[:, :, t].reshape(o * n1, d)
        for u in range(t2):
            gb = fb.g[:, :, u].reshape(o * n2, d)
            gg = (ga @ gb.T).reshape(o, n1, o, n2)
            k += gram[:, t, :, u][None, :, None, :] * gg
    return k.permute(1, 3, 0, 2)


def _shared_gradient(ga: Tensor, gb: Tensor) -> Tensor | None:
    """``(T1, T2)`` gradient Grams when no gradient depends on the sample, else ``None``.

    A readout :math:`f = W h + b` has :math:`g_{n,t,o} = e_o` for every sample, so the
    gradient Gram is one number per pair of positions and the ``N·O·d`` products are not
    needed (exact: checked by equality, not assumed).
    """
    if ga.shape[1] < 2 and gb.shape[1] < 2:
        return None
    first_a, first_b = ga[:, :1], gb[:, :1]
    # Two samples first: a sample-dependent gradient is usually told apart there, cheaply.
    if ga.shape[1] > 1 and not torch.equal(ga[:, 1:2], first_a):
        return None
    if not (torch.equal(ga, first_a.expand_as(ga)) and torch.equal(gb, first_b.expand_as(gb))):
        return None
    o, _, t1, d = ga.shape
    va = first_a[:, 0].permute(1, 0, 2).reshape(t1, o * d)
    vb = first_b[:, 0].permute(1, 0, 2).reshape(gb.shape[2], o * d)
    return va @ vb.T


def _token_rows(f: _SeqFactor) -> tuple[Tensor, Tensor, Tensor]:
    r"""The embedding Jacobian's nonzero rows: (sample, token id, summed gradient) per pair.

    Row ``(n, v)`` is :math:`\sum_{t: \mathrm{id}_{n,t} = v} g_{n,t}` flattened over outputs
    and dimensions; positions holding ``padding_idx`` carry no gradient to the weights.
    """
    assert f.a is not None
    o, n, t, d = f.g.shape
    ids = f.a.reshape(n, t).long()
    g = f.g.permute(1, 2, 0, 3).reshape(n * t, o * d)
    sample = torch.arange(n, device=ids.device).repeat_interleave(t)
    token = ids.reshape(-1)
    keep = token != f.padding_idx if f.padding_idx is not None else None
    if keep is not None:
        sample, token, g = sample[keep], token[keep], g[keep]
    # Merge repeats of a token within a sample: one row per (sample, token).
    key = sample * (int(token.max()) + 1 if token.numel() else 1) + token
    uniq, inverse = torch.unique(key, return_inverse=True)
    if uniq.numel() < key.numel():
        rows = g.new_zeros((uniq.numel(), g.shape[1])).index_add_(0, inverse, g)
        first = torch.zeros(uniq.numel(), dtype=torch.long, device=key.device)
        first.scatter_(0, inverse, torch.arange(key.numel(), device=key.device))
        sample, token, g = sample[first], token[first], rows
    return sample, token, g


def _embedding_trace(fa: _SeqFactor, fb: _SeqFactor) -> Tensor:
    r"""Trace NTK of an embedding: only sample pairs sharing a token contribute (exact).

    :math:`K_{nm} = \sum_v \langle J_{n,v}, J_{m,v}\rangle` with :math:`J_{n,v}` the
    summed gradients of sample ``n`` at the positions holding token ``v``: one small Gram per
    token instead of the dense ``(N·T)² · O·d`` product (``V`` times less work for ``V``
    tokens spread evenly).
    """
    n1, n2 = fa.g.shape[1], fb.g.shape[1]
    sa, ta, ga = _token_rows(fa)
    sb, tb, gb = (sa, ta, ga) if fb is fa else _token_rows(fb)
    # Rows grouped by token (one gather each), so every token's rows are a contiguous slice.
    order_a, order_b = torch.argsort(ta, stable=True), torch.argsort(tb, stable=True)
    ga_s, sa_s, ta_s = ga[order_a], sa[order_a], ta[order_a]
    if fb is fa:
        gb_s, sb_s, tb_s = ga_s, sa_s, ta_s
    else:
        gb_s, sb_s, tb_s = gb[order_b], sb[order_b], tb[order_b]
    tokens, count_a = torch.unique_consecutive(ta_s, return_counts=True)
    lo_b = torch.searchsorted(tb_s, tokens)
    count_b = torch.searchsorted(tb_s, tokens, right=True) - lo_b
    k = ga.new_zeros((n1, n2))
    # Each token's Gram block (count_a × count_b), flattened row-major, one after the other.
    bounds = torch.stack([torch.cumsum(count_a, 0) - count_a, count_a, lo_b, count_b]).T
    blocks = [
        (ga_s[a0 : a0 + na] @ gb_s[b0 : b0 + nb].T).reshape(-1)
        for a0, na, b0, nb in bounds.tolist()
        if nb
    ]
    if not blocks:
        return k
    # The (row, column) of every entry of those blocks, built without a loop: row i of a
    # token's block meets its count_b rows of b, starting at the token's first row in b.
    per_row = torch.repeat_interleave(count_b, count_a)  # count_b of each sorted a-row
    first_b = torch.repeat_interleave(lo_b, count_a)
    row = torch.repeat_interleave(torch.arange(len(ta_s), device=ta_s.device), per_row)
    start = torch.repeat_interleave(torch.cumsum(per_row, 0) - per_row, per_row)
    col = (
        torch.repeat_interleave(first_b, per_row)
        + torch.arange(int(per_row.sum()), device=ta_s.device)
        - start
    )
    # One accumulate for all tokens: a sample pair sharing two tokens gets both terms.
    k.index_put_((sa_s[row], sb_s[col]), torch.cat(blocks), accumulate=True)
    return k


def layer_ntks(
    model: nn.Module, x: Tensor, blocks: Blocks = "trace", *, x2: Tensor | None = None
) -> dict[str, Tensor]:
    """The empirical NTK of each parameter group (module); they sum to the model's NTK.

    Parameters
    ----------
    model, x, blocks, x2
        As in :func:`empirical_ntk`.

    Returns
    -------
    dict of str to Tensor
        Module path (``"root"`` for parameters the model holds itself) to that module's
        kernel, shaped as :func:`empirical_ntk`'s result.
    """
    engine = NTKEngine(model, x, blocks)
    fa = engine.factors(x)
    fb = fa if x2 is None else engine.factors(x2)
    kernels = engine.kernels(fa, fb)
    for layer, k in kernels.items():
        check_finite(k, f"NTK entries of {layer}")
    return kernels


def empirical_ntk(
    model: nn.Module, x: Tensor, blocks: Blocks = "trace", *, x2: Tensor | None = None
) -> Tensor:
    r"""The empirical neural tangent kernel of ``model`` on a batch, computed exactly.

    .. math::

        \Theta(x_n, x_m)_{oo'} = \sum_p \partial_{\theta_p} f_o(x_n)\,
        \partial_{\theta_p} f_{o'}(x_m), \qquad
        \Theta^{\mathrm{trace}}(x_n, x_m) = \sum_o \Theta(x_n, x_m)_{oo},

    over all trainable parameters. Linear, Embedding and LayerNorm layers use their structure
    (the Hadamard product of the input Gram and the back-propagated gradient Gram, summed over
    token positions); any other module with parameters falls back to ``torch.func`` Jacobians
    with an :class:`NTKFallbackWarning`. Both give the exact kernel. The model is evaluated in
    ``eval`` mode; its ``.grad`` fields are not touched.

    Parameters
    ----------
    model : nn.Module
        Maps ``(N, ...)`` inputs to ``(N, O)`` outputs (``(N,)`` counts as ``O = 1``); samples
        must not interact in ``eval`` mode.
    x : Tensor
        The batch ``(N, ...)``.
    blocks : {"trace", "full"}
        ``"trace"``: the ``N × N`` trace NTK (summed over outputs); ``"full"``: the
        ``N × N × O × O`` kernel with every output block.
    x2 : Tensor, optional
        A second batch ``(M, ...)``: return the cross kernel ``N × M`` (× O × O) instead.

    Returns
    -------
    Tensor
        In the model's dtype.

    Raises
    ------
    ValueError
        If ``blocks`` is unknown or the model has no trainable parameters.
    FloatingPointError
        If outputs, gradients or kernel entries are not finite.

    References
    ----------
    .. [1] Jacot, Gabriel & Hongler (2018), arXiv:1806.07572.
    .. [2] Novak, Sohl-Dickstein & Schoenholz (2022), arXiv:2206.08720.

    Examples
    --------
    >>> model = gw.models.MLP(4, 3, width=8, depth=1)       # doctest: +SKIP
    >>> empirical_ntk(model, torch.randn(5, 4)).shape       # doctest: +SKIP
    torch.Size([5, 5])
    """
    kernels = layer_ntks(model, x, blocks, x2=x2)
    values = list(kernels.values())
    if not values:
        msg = f"No trainable parameter of {type(model).__name__} was used in its forward pass."
        raise ValueError(msg)
    return sum(values[1:], values[0])


def _factor_bytes(factors: dict[str, _Factor]) -> int:
    total = 0
    for f in factors.values():
        if isinstance(f, MLPFactor):
            total += f.nbytes
            continue
        tensors = [f.j] if isinstance(f, _JacFactor) else [f.g, f.a]
        total += sum(t.numel() * t.element_size() for t in tensors if t is not None)
    return total


def train_test_kernels(
    engine: NTKEngine,
    x_train: Tensor,
    x_test: Tensor,
    chunk: int = 256,
    cache_bytes: int = 512 * 2**20,
) -> tuple[Tensor, Tensor]:
    """The model's NTK on a (large) train set and between test and train points, in blocks.

    Blocks of ``chunk`` samples keep memory bounded; the train factors are kept when they fit
    in ``cache_bytes`` (else recomputed), and the symmetric train kernel is computed once per
    pair of blocks.

    Returns
    -------
    k_train, k_test_train : Tensor
        ``(n, n)`` and ``(m, n)`` (with output blocks for ``engine.blocks == "full"``), float64.
    """
    starts = list(range(0, len(x_train), chunk))
    cache: dict[int, dict[str, _Factor]] = {}
    cached = 0

    def train_factors(i: int) -> dict[str, _Factor]:
        nonlocal cached
        if i in cache:
            return cache[i]
        f = engine.factors(x_train[starts[i] : starts[i] + chunk])
        size = _factor_bytes(f)
        if cached + size <= cache_bytes:
            cache[i] = f
            cached += size
        return f

    def block(fa: dict[str, _Factor], fb: dict[str, _Factor]) -> Tensor:
        layers = engine.kernels(fa, fb)
        out = sum(k.to(torch.float64) for k in layers.values())
        assert isinstance(out, Tensor)
        return out

    grid: dict[tuple[int, int], Tensor] = {}
    for i in range(len(starts)):
        fa = train_factors(i)
        for j in range(i, len(starts)):
            kb = block(fa, fa if j == i else train_factors(j))
            grid[i, j] = kb
            grid[j, i] = kb.transpose(0, 1)
    k_train = torch.cat(
        [torch.cat([grid[i, j] for j in range(len(starts))], dim=1) for i in range(len(starts))]
    )
    rows = []
    for s in range(0, len(x_test), chunk):
        ft = engine.factors(x_test[s : s + chunk])
        rows.append(torch.cat([block(ft, train_factors(j)) for j in range(len(starts))], dim=1))
    k_test = torch.cat(rows) if rows else k_train.new_zeros((0, *k_train.shape[1:]))
    check_finite(k_train, "NTK entries")
    check_finite(k_test, "NTK entries")
    return k_train, k_test
