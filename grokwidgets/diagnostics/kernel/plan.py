"""The plan of an empirical NTK: which modules get a structured rule, which fall back.

A module gets a structured rule (:mod:`.ntk`) when it is a stock ``nn.Linear``,
``nn.Embedding`` (no ``max_norm``, no ``scale_grad_by_freq``) or ``nn.LayerNorm``, owns its
parameters alone and is called once per forward pass on one tensor whose first axis is the
batch, found by trial passes on batches of one and two copies of a sample. A module called
without a batch dimension (a transformer's position embedding) keeps its rule when expanding its
output over the batch leaves the model's outputs unchanged. Every other module's parameters
fall back to ``torch.func`` Jacobians, with the reason kept in the plan.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from grokwidgets.diagnostics._shared import all_finite

__all__ = ["ROOT_LAYER", "Plan", "check_finite", "hooks", "layer_name", "make_plan"]

ROOT_LAYER = "root"  # the layer name of parameters held directly by the model itself

Mode = Literal["batched", "broadcast"]


@dataclass
class Plan:
    """Structured modules (with how they meet the batch) and fallback parameters, by layer."""

    structured: dict[str, tuple[nn.Module, Mode]] = field(default_factory=dict)
    fallback: dict[str, list[str]] = field(default_factory=dict)  # layer -> parameter names
    reasons: dict[str, str] = field(default_factory=dict)  # layer -> why it falls back


def _has_stock_forward(module: nn.Module) -> bool:
    for base in (nn.Linear, nn.Embedding, nn.LayerNorm):
        if isinstance(module, base):
            return type(module).forward is base.forward
    return False


def _supported(module: nn.Module) -> bool:
    if not _has_stock_forward(module):
        return False
    if isinstance(module, nn.Embedding):
        # max_norm renormalises weights in place; scale_grad_by_freq is not a Jacobian.
        return module.max_norm is None and not module.scale_grad_by_freq
    return True


def check_finite(t: Tensor, what: str) -> None:
    """Raise a ``FloatingPointError`` naming ``what`` if ``t`` holds a NaN or an inf."""
    if not all_finite(t):
        msg = (
            f"The {what} on the NTK batch are not finite (NaN or inf): the kernel is undefined. "
            "Lower the learning rate or init scale, or compute in float64."
        )
        raise FloatingPointError(msg)


def layer_name(path: str) -> str:
    """The layer name of a module path (``"root"`` for the model itself)."""
    return path if path else ROOT_LAYER


@contextlib.contextmanager
def hooks(modules: dict[str, nn.Module], make: Any) -> Iterator[None]:
    """Forward hooks ``make(path)`` on each module for the block, removed afterwards.

    They run before the module's own forward hooks (``prepend``): a user's hook that changes
    the output then acts downstream of the captured output, inside the gradients, as it does
    in the model's Jacobian.
    """
    handles = [m.register_forward_hook(make(path), prepend=True) for path, m in modules.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _repeat_first(x: Tensor, n: int) -> Tensor:
    return x[:1].repeat(n, *([1] * (x.ndim - 1)))


def _leading_dims(model: nn.Module, x: Tensor, modules: dict[str, nn.Module]) -> list[dict]:
    """For trial batches of 1 and 2 copies of ``x[0]``: per module, (input, output) dim 0."""
    seen: dict[str, list[tuple[int, int] | None]] = {p: [] for p in modules}

    def make(path: str) -> Any:
        def hook(_mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            ok = (
                len(args) == 1
                and isinstance(args[0], Tensor)
                and isinstance(out, Tensor)
                and args[0].ndim >= 1
                and out.ndim >= 1
            )
            seen[path].append((int(args[0].shape[0]), int(out.shape[0])) if ok else None)

        return hook

    runs = []
    with hooks(modules, make), torch.no_grad():
        for b in (1, 2):
            for v in seen.values():
                v.clear()
            model(_repeat_first(x, b))
            runs.append({p: list(v) for p, v in seen.items()})
    return runs


def _check_broadcast(
    model: nn.Module, x: Tensor, modules: dict[str, nn.Module]
) -> dict[str, nn.Module]:
    """Keep the unbatched modules whose output can be expanded over the batch unchanged."""
    xb = x[:2]
    with torch.no_grad():
        ref = model(xb)
    ok: dict[str, nn.Module] = {}
    for path, module in modules.items():
        n = xb.shape[0]

        def make(_p: str, n: int = n) -> Any:
            def hook(_mod: nn.Module, _args: tuple[Any, ...], out: Tensor) -> Tensor:
                return out.unsqueeze(0).expand(n, *out.shape)

            return hook

        try:
            with hooks({path: module}, make), torch.no_grad():
                got = model(xb)
        except Exception:  # noqa: BLE001 (any failure means: cannot broadcast, fall back)
            continue
        if isinstance(got, Tensor) and got.shape == ref.shape and torch.equal(got, ref):
            ok[path] = module
    return ok


def make_plan(model: nn.Module, x: Tensor) -> Plan:
    """The plan for ``model``, from trial passes on copies of ``x[0]`` (module docstring)."""
    names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    if not names:
        msg = (
            f"{type(model).__name__} has no trainable parameters (requires_grad=True), so its "
            "NTK is zero; check that the model is not frozen."
        )
        raise ValueError(msg)
    owned: list[tuple[str, nn.Module, list[Tensor]]] = []
    owners: dict[int, int] = {}
    for path, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own:
            owned.append((path, module, own))
            for p in own:
                owners[id(p)] = owners.get(id(p), 0) + 1
    plan = Plan()
    candidates: dict[str, nn.Module] = {}
    for path, module, own in owned:
        if any(owners[id(p)] > 1 for p in own):
            plan.reasons[layer_name(path)] = "shares a parameter with another module"
        elif _supported(module):
            candidates[path] = module
        else:
            plan.reasons[layer_name(path)] = f"no structured rule for {type(module).__name__}"
    run1, run2 = _leading_dims(model, x, candidates) if candidates else ({}, {})
    unbatched: dict[str, nn.Module] = {}
    for path, module in candidates.items():
        c1, c2 = run1[path], run2[path]
        if len(c1) != len(c2) or any(c is None for c in c1 + c2):
            plan.reasons[layer_name(path)] = "not called once per batch with a single tensor"
        elif all(c == (1, 1) for c in c1) and all(c == (2, 2) for c in c2):
            plan.structured[path] = (module, "batched")
        elif c1 and c1 == c2:
            unbatched[path] = module
        else:
            plan.reasons[layer_name(path)] = "its batch dimension is not the first"
    good = _check_broadcast(model, x, unbatched) if unbatched else {}
    for path, module in unbatched.items():
        if path in good:
            plan.structured[path] = (module, "broadcast")
        else:
            plan.reasons[layer_name(path)] = "used without a batch dimension"
    order = {path: i for i, (path, _, _) in enumerate(owned)}
    plan.structured = dict(sorted(plan.structured.items(), key=lambda kv: order[kv[0]]))
    claimed: set[int] = set()
    for path, _module, own in owned:
        if path in plan.structured:
            continue
        params = [names[id(p)] for p in own if id(p) not in claimed]
        claimed.update(id(p) for p in own)
        if params:
            plan.fallback[layer_name(path)] = params
    return plan
