r"""Which modules form Li₂'s two-layer net :math:`\sigma(XW)V`, read off one hooked pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from grokwidgets.diagnostics._features import find_readout, representation_points
from grokwidgets.diagnostics._shared import eval_mode
from grokwidgets.diagnostics.probe import weight_layers

__all__ = ["Net", "input_weights", "structure"]


@dataclass(frozen=True)
class Net:
    """How the hidden layer, the first layer and the readout connect (from one hooked pass)."""

    readout: str
    hidden: str | None  # the nn.Linear whose activation output is the readout's input
    first: str | None  # the nn.Linear that reads the inputs (directly or flattened embeddings)
    embed: str | None  # the nn.Embedding whose flattened output ``first`` reads
    not_two_layer: str  # why the model is not a two-layer net σ(XW)V; "" when it is


def structure(model: nn.Module, x: Tensor) -> Net:
    """The readout, hidden, first and embedding layers of ``model``, from one pass over ``x``."""
    readout_path, readout = find_readout(model)
    modules = dict(model.named_modules())
    acts = {p.name: p.module for p in representation_points(model) if p.mode == "output"}
    acts = {k: v for k, v in acts.items() if isinstance(modules.get(k), nn.Linear)}
    watched = {path: m for path, m in modules.items() if isinstance(m, nn.Linear | nn.Embedding)}
    ins: dict[str, list[Tensor]] = {}
    outs: dict[str, list[Tensor]] = {}
    handles = []

    def make(key: str, want_in: bool) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            if want_in and args and isinstance(args[0], Tensor):
                ins.setdefault(key, []).append(args[0])
            if isinstance(out, Tensor):
                outs.setdefault(key, []).append(out)

        return hook

    with eval_mode(model):
        try:
            for path, m in watched.items():
                handles.append(m.register_forward_hook(make(path, True)))
            for path, act in acts.items():
                handles.append(act.register_forward_hook(make("act:" + path, False)))
            with torch.no_grad():
                model(x)
        finally:
            for h in handles:
                h.remove()

    def once(store: dict[str, list[Tensor]], key: str) -> Tensor | None:
        got = store.get(key, [])
        return got[0] if len(got) == 1 else None

    f_in = once(ins, readout_path)
    hidden = None
    for path in acts:
        a = once(outs, "act:" + path)
        if f_in is not None and a is not None and a.shape == f_in.shape and torch.equal(a, f_in):
            hidden = path
    embeds = [p for p, m in watched.items() if isinstance(m, nn.Embedding)]
    first = embed = None
    for path, m in watched.items():
        lin_in = once(ins, path)
        if not isinstance(m, nn.Linear) or path == readout_path or lin_in is None:
            continue
        if x.is_floating_point() and lin_in.shape == x.shape and torch.equal(lin_in, x):
            first = path
            break
        for e in embeds:
            e_out = once(outs, e)
            if e_out is not None and e_out.ndim == 3 and e_out.shape[0] == x.shape[0]:
                flat = e_out.flatten(1)
                if flat.shape == lin_in.shape and torch.equal(flat, lin_in):
                    first, embed = path, e
                    break
        if first is not None:
            break
    others = [p for p in weight_layers(model) if p not in (readout_path, hidden, embed)]
    if hidden is None:
        why = (
            "the readout's input is not the activation of an nn.Linear layer in an "
            "nn.Sequential, so it has no hidden layer F = σ(XW) of a two-layer net"
        )
    elif first is None:
        why = (
            "no nn.Linear layer reads the model's inputs (or the flattened output of an "
            "nn.Embedding) directly, so the hidden layer is not σ(XW) of the inputs X"
        )
    elif hidden != first:
        why = (
            f"the hidden layer {hidden!r} does not read the model's inputs: the model has more "
            "than one hidden layer, and Li₂'s stages are defined for two-layer nets σ(XW)V"
        )
    elif others:
        why = f"the model has weight layers besides the two of σ(XW)V: {others}"
    else:
        why = ""
    return Net(readout_path, hidden, first, embed, why)


def input_weights(model: nn.Module, net: Net, bias: bool) -> Tensor:
    """The first layer's weights on the raw inputs (one-hot tokens through the embedding)."""
    assert net.first is not None
    lin = model.get_submodule(net.first)
    assert isinstance(lin, nn.Linear)
    w = lin.weight.detach().to(torch.float64)
    if net.embed is not None:
        emb = model.get_submodule(net.embed)
        assert isinstance(emb, nn.Embedding)
        e = emb.weight.detach().to(torch.float64)  # (V, D)
        w = (w.reshape(w.shape[0], -1, e.shape[1]) @ e.T).reshape(w.shape[0], -1)
    if bias and lin.bias is not None:
        w = torch.cat([w, lin.bias.detach().to(torch.float64).unsqueeze(1)], dim=1)
    return w
