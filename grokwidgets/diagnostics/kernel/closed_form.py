r"""The trace NTK of a one-hidden-layer :class:`~grokwidgets.models.MLP` in closed form.

For :math:`f(x) = \alpha\,(W_2\,\phi(z) + b_2)` with :math:`z = W_1 h + b_1` (:math:`h` the
input, or the concatenated embeddings :math:`e_{x_t} = E[x_t]` of the tokens), write
:math:`a = \phi(z)` and :math:`s = \phi'(z)` (elementwise). The output gradients need no
backward pass: :math:`\partial f_o / \partial z = \alpha\, s \odot W_2[o]`, so summing the
gradient Grams over the :math:`O` outputs leaves one weighted product per layer. Per parameter
group, between samples :math:`n` and :math:`m`:

.. math::

    K^{\text{readout}}_{nm} &= \alpha^2 O\,(a_n\cdot a_m + 1), \\
    K^{\text{hidden}}_{nm} &= \alpha^2 (h_n\cdot h_m + 1)\; s_n^\top \operatorname{diag}(c)\, s_m,
    \qquad c_j = \textstyle\sum_o W_{2,oj}^2, \\
    K^{\text{embed}}_{nm} &= \alpha^2 \sum_{t,u} [x_{n,t} = x_{m,u}]\;
    s_n^\top \big((W_{1,t} W_{1,u}^\top) \odot (W_2^\top W_2)\big)\, s_m,

with :math:`W_{1,t}` the columns of :math:`W_1` that read token position :math:`t` (the
``+ 1`` only for a trained bias; a frozen weight drops its product). This is the exact kernel
the layer-factor engine (:mod:`.ntk`) computes, with :math:`O` times fewer products for the
hidden layer and no batched backward over the outputs: on the ``modular-addition`` preset
(256 samples, width 256, 97 outputs) a record's kernels cost a few milliseconds instead of
about fifty.

The rule is used only where its algebra is known to hold: an instance of ``MLP`` itself (not a
subclass, whose forward may differ) of depth 1 with exactly its own modules (``embed``,
``encoder.0``, ``encoder.1``, ``readout``; none replaced, added or given a ``forward`` of its
own), an elementwise activation of :data:`~grokwidgets.models.mlp.ACTIVATIONS`, stock
``nn.Linear``/``nn.Embedding`` modules, no parameter shared between them, the trace kernel,
and no forward hook anywhere (a hook may change what flows; checked again at every batch).
Everything else takes the general engine, which is exact for any model.

References
----------
.. [1] Jacot, Gabriel & Hongler (2018), "Neural tangent kernel: convergence and generalization
   in neural networks", arXiv:1806.07572.
.. [2] Novak, Sohl-Dickstein & Schoenholz (2022), "Fast finite width neural tangent kernel",
   ICML 2022, arXiv:2206.08720 (structured products of layer factors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _torch_module

from grokwidgets.diagnostics.kernel.plan import check_finite
from grokwidgets.models.mlp import MLP, Poly, Square

__all__ = ["MLPFactor", "OneHiddenLayerRule", "has_forward_hooks", "one_hidden_layer_rule"]

# Activation modules known to act elementwise (what make_activation builds), by exact type.
_ELEMENTWISE = (nn.ReLU, nn.GELU, nn.Tanh, nn.SiLU, nn.Identity, Square, Poly)


@dataclass
class MLPFactor:
    """One batch's factors: what the closed form needs of the samples and of the weights."""

    h: Tensor  # (N, F) the hidden layer's input
    ids: Tensor | None  # (N, T) token ids (embedding models)
    a: Tensor  # (N, W) hidden activations phi(z)
    s: Tensor  # (N, W) activation derivatives phi'(z)
    c: Tensor  # (W,) alpha^2 * sum_o W2[o]^2: the hidden layer's output-gradient weights
    mixed: Tensor | None  # (T, T, W, W) alpha^2 (W1_t W1_u^T) * (W2^T W2), embedding models
    readout_scale: float  # alpha^2 * O

    @property
    def nbytes(self) -> int:
        """Memory held by the factor's tensors."""
        parts = [self.h, self.ids, self.a, self.s, self.c, self.mixed]
        return sum(t.numel() * t.element_size() for t in parts if t is not None)


def has_forward_hooks(model: nn.Module) -> bool:
    """Whether a forward hook or pre-hook is set on ``model``, a submodule, or globally."""
    if _torch_module._global_forward_hooks or _torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def one_hidden_layer_rule(model: nn.Module, blocks: str) -> OneHiddenLayerRule | None:
    """The closed-form rule for ``model``, or ``None`` when the module docstring's terms fail."""
    if blocks != "trace" or type(model) is not MLP or model.depth != 1:
        return None
    expected = {"", "encoder", "encoder.0", "encoder.1", "readout"}
    if model.embed is not None:
        expected.add("embed")
    modules = dict(model.named_modules(remove_duplicate=False))
    if set(modules) != expected or type(model.encoder) is not nn.Sequential:
        return None  # a module added, removed or shared: not the MLP the algebra describes
    # A forward (or MLP._g) set on an instance replaces the class's: its algebra is unknown.
    if any("forward" in m.__dict__ for m in modules.values()) or "_g" in model.__dict__:
        return None
    hidden, act = model.encoder[0], model.encoder[1]
    if type(hidden) is not nn.Linear or type(model.readout) is not nn.Linear:
        return None
    if type(act) not in _ELEMENTWISE:
        return None
    embed = model.embed
    if embed is not None and (
        type(embed) is not nn.Embedding or embed.max_norm is not None or embed.scale_grad_by_freq
    ):
        return None
    if has_forward_hooks(model):
        return None
    # Tied weights (one tensor in two places) add cross terms the per-layer formulas omit.
    tensors: list[Tensor] = [t for _, t in model.named_parameters(remove_duplicate=False)]
    tensors += [t for _, t in model.named_buffers(remove_duplicate=False)]
    if len({id(t) for t in tensors}) != len(tensors):
        return None
    if not any(p.requires_grad for p in model.parameters()):
        return None
    return OneHiddenLayerRule(model)


def _trained(t: Tensor | None) -> bool:
    return isinstance(t, nn.Parameter) and t.requires_grad


class OneHiddenLayerRule:
    """Factors and per-layer trace kernels of a one-hidden-layer MLP (module docstring)."""

    def __init__(self, model: MLP) -> None:
        self.model = model
        hidden = cast(nn.Linear, model.encoder[0])
        self.groups: dict[str, tuple[bool, bool]] = {}  # layer -> (weight trained, bias trained)
        if model.embed is not None and _trained(model.embed.weight):
            self.groups["embed"] = (True, False)
        for name, lin in (("encoder.0", hidden), ("readout", model.readout)):
            w, b = _trained(lin.weight), _trained(lin.bias)
            if w or b:
                self.groups[name] = (w, b)

    @property
    def layers(self) -> list[str]:
        """Names of the kernels :meth:`kernels` returns, in module order."""
        return list(self.groups)

    def factors(self, x: Tensor) -> MLPFactor:
        """One forward pass (no backward): the samples' factors and the weights' constants."""
        model = self.model
        hidden, act = cast(nn.Linear, model.encoder[0]), model.encoder[1]
        w2 = model.readout.weight.detach()
        alpha2 = model.alpha**2
        with torch.no_grad():
            ids: Tensor | None = None
            tokens = model.embed is not None
            width = model.n_tokens if tokens else model.in_dim
            if x.ndim != 2 or x.shape[1] != width or x.is_floating_point() == tokens:
                model(x)  # the model's own message for a wrong input
            if model.embed is not None:
                ids = x
                h = model.embed(x).flatten(1)
            else:
                h = x
            z = hidden(h)
        with torch.enable_grad():
            zg = z.detach().requires_grad_(True)
            a = act(zg.clone())  # a clone, so an in-place activation leaves the leaf alone
            (s,) = torch.autograd.grad(a, zg, torch.ones_like(a))
        a = a.detach()
        for t, what in ((h, "layer inputs"), (a, "hidden activations"), (s, "their derivatives")):
            check_finite(t, what)
        c = alpha2 * w2.square().sum(0)
        mixed = None
        if "embed" in self.groups:
            assert model.embed is not None and model.n_tokens is not None
            t_count, d = model.n_tokens, model.embed.embedding_dim
            w1 = hidden.weight.detach().reshape(hidden.out_features, t_count, d).transpose(0, 1)
            gram2 = alpha2 * (w2.T @ w2)
            mixed = torch.einsum("tjd,ukd->tujk", w1, w1) * gram2
        return MLPFactor(h, ids, a, s, c, mixed, alpha2 * w2.shape[0])

    def kernels(self, fa: MLPFactor, fb: MLPFactor) -> dict[str, Tensor]:
        """The per-layer trace kernels ``(N_a, N_b)`` between two batches' factors."""
        out: dict[str, Tensor] = {}
        for layer, (weight, bias) in self.groups.items():
            if layer == "embed":
                out[layer] = self._embedding(fa, fb)
                continue
            inp_a, inp_b = (fa.h, fb.h) if layer == "encoder.0" else (fa.a, fb.a)
            gram = inp_a @ inp_b.T if weight else inp_a.new_zeros((len(inp_a), len(inp_b)))
            if bias:
                gram = gram + 1
            if layer == "encoder.0":
                out[layer] = gram * ((fa.s * fa.c) @ fb.s.T)
            else:
                out[layer] = gram * fa.readout_scale
        return out

    def _embedding(self, fa: MLPFactor, fb: MLPFactor) -> Tensor:
        """The embedding's kernel: only sample pairs sharing a token meet.

        One ``(N, W) @ (W, W)`` product per pair of positions, then a dot product per pair of
        samples sharing a token there (about ``N²/V`` of them for ``V`` tokens).
        """
        assert fa.ids is not None and fb.ids is not None and fa.mixed is not None
        embed = self.model.embed
        assert embed is not None
        pad = embed.padding_idx
        k = fa.a.new_zeros((len(fa.a), len(fb.a)))
        t_count = fa.ids.shape[1]
        for t in range(t_count):
            left = fa.ids[:, t]
            for u in range(t_count):
                right = fb.ids[:, u]
                share = left[:, None] == right[None, :]
                if pad is not None:
                    share &= (left != pad)[:, None]
                rows, cols = share.nonzero(as_tuple=True)
                if rows.numel():
                    q = fa.s @ fa.mixed[t, u]
                    k[rows, cols] += (q[rows] * fb.s[cols]).sum(1)
        return k
