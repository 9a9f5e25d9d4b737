r"""Each layer's representation on fixed row subsets, captured with forward hooks once per record.

Shared by the representation families (``probes``, ``geometry``) and anything else that needs
a layer's features: :func:`capture` runs one forward pass over a split's fixed rows and
caches the result in ``probe.cache``, so every diagnostic of one record sees the same tensors.

Fixed row subsets
-----------------
:class:`RowSubsets` picks, for each split, the rows
``torch.randperm(n_split, generator=torch.Generator().manual_seed(seed))[:n]`` (all rows when
the split has at most ``n``; :func:`~grokwidgets.diagnostics._shared.seeded_subset`), kept in
that permuted order so that any prefix is itself a
uniform random subset (``geometry`` uses the first ``n_rows`` of the test rows). The rows
depend only on ``(seed, n, n_split)``: the same rows at every record and after a resume.

Which layers, and their names
-----------------------------
A representation is named by the module path of the weight layer that produces it, so it lines
up with the other per-layer metrics (``weight_norm``, ``htsr_alpha``, ...):

- ``readout``: the *input* of the readout, i.e. the features the model's last linear map reads.
  The readout is the submodule at path ``readout`` if the model has one, else the last
  ``nn.Linear`` in ``model.named_modules()`` order.
- an ``nn.Embedding`` at path ``P``: its output, recorded as ``P``.
- an ``nn.Linear`` at path ``P`` inside an ``nn.Sequential`` whose next module has no
  parameters (an activation): that activation's output, recorded as ``P``. For
  :class:`~grokwidgets.models.MLP` these are ``encoder.0``, ``encoder.2``, ... (the
  post-activation hidden layers); for :class:`~grokwidgets.models.Transformer`,
  ``encoder.mlp.0`` (the MLP's hidden ReLU layer). Linear layers not followed by an
  activation module (attention projections, a block's output projection) are not captured.
- a hidden representation that *is* the readout's input (the same storage, as the MLP's last
  activation output is) is computed once and its values recorded under both names: for a
  depth-2 MLP the layers are ``embed`` (token inputs only), ``encoder.0``, ``encoder.2`` (=
  ``readout``) and ``readout``.

Shapes: a 2-D output ``(n, d)`` is used as is; an embedding's ``(n, T, d)`` output is flattened
to ``(n, T·d)``; any other output with a sequence axis, ``(n, T, ...)``, is read at the last
position (where the transformer predicts), then flattened. Outputs whose first axis is not the
batch (``pos_embed``) are ignored. The model's own input is not a representation and is not
captured. Models whose activations are functions (``F.relu`` inside ``forward``) rather than
modules only get ``readout``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from grokwidgets.diagnostics._shared import eval_mode, seeded_subset
from grokwidgets.diagnostics.probe import EVAL_CHUNK, Probe

__all__ = [
    "Capture",
    "HookPoint",
    "RowSubsets",
    "capture",
    "fill_aliases",
    "find_readout",
    "representation_points",
]

Split = Literal["train", "test"]


@dataclass(frozen=True)
class RowSubsets:
    """Sizes and seed of the fixed row subsets of each split (deterministic, seeded).

    Parameters
    ----------
    n_train, n_test : int
        At most this many rows of the train / test split (all rows of a smaller split).
    seed : int
        Seed of the permutation that picks the rows.
    """

    n_train: int = 2048
    n_test: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        for label, value in (("n_train", self.n_train), ("n_test", self.n_test)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                msg = f"RowSubsets.{label} must be a positive integer, got {value!r}."
                raise ValueError(msg)

    def rows(self, split: Split, n_split: int) -> Tensor:
        """Indices (int64, in permuted order) of the rows of a split of ``n_split`` rows."""
        n = self.n_train if split == "train" else self.n_test
        return seeded_subset(n_split, n, self.seed)


@dataclass(frozen=True)
class HookPoint:
    """Where one layer's representation is read.

    ``name`` is the layer name in the Dataset, ``module`` the hooked module, ``mode``
    whether its output or its (first positional) input is taken, ``flatten`` whether a
    sequence axis is flattened (embeddings) rather than read at its last position.
    """

    name: str
    module: nn.Module
    mode: Literal["output", "input"]
    flatten: bool = False


@dataclass(frozen=True)
class Capture:
    """The representations of one split's fixed rows at one record.

    Attributes
    ----------
    split : {"train", "test"}
    rows : Tensor
        Row indices into the split (int64, permuted order).
    targets : Tensor
        The split's targets at those rows.
    outputs : Tensor
        The model's outputs at those rows.
    features : dict of str to Tensor
        Layer name -> ``(n_rows, d)`` representation, in the model's dtype, finite.
    skipped : dict of str to str
        Layer name -> why it has no usable representation (non-finite values, ...).
    aliases : dict of str to str
        Layer name -> the layer whose representation it is (a last hidden layer whose output
        is the readout's input): computed once, recorded under both names.
    embeddings : dict of str to (Tensor, Tensor)
        Embedding layer name -> ``(ids, table)``: its token ids at the rows, ``(n_rows, T)``,
        and its weight, ``(V, e)``, so that ``features[name]`` is ``table[ids]`` flattened.
        Lets a consumer work on the ``V`` table rows instead of the feature rows (the probes'
        solver does).
    order : tuple of str
        Every layer name (features, skipped and aliases) in model order.
    """

    split: Split
    rows: Tensor
    targets: Tensor
    outputs: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    order: tuple[str, ...] = ()
    embeddings: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)

    @property
    def layers(self) -> list[str]:
        """Every layer name, captured, skipped or aliased, in model order."""
        return list(self.order)


def find_readout(model: nn.Module) -> tuple[str, nn.Linear]:
    """Return ``(path, module)`` of the model's readout.

    The submodule at path ``readout`` when it is an ``nn.Linear``, else the last
    ``nn.Linear`` in ``model.named_modules()`` order.

    Raises
    ------
    ValueError
        If the model has no ``nn.Linear`` layer.
    """
    modules = dict(model.named_modules())
    named = modules.get("readout")
    if isinstance(named, nn.Linear):
        return "readout", named
    linears = [(p, m) for p, m in modules.items() if p and isinstance(m, nn.Linear)]
    if not linears:
        msg = (
            f"{type(model).__name__} has no nn.Linear layer, so it has no readout whose input "
            "the representation diagnostics (probes, geometry) could read. Give the model a "
            "final nn.Linear (ideally named 'readout'), or leave these diagnostics out."
        )
        raise ValueError(msg)
    return linears[-1]


def representation_points(model: nn.Module) -> list[HookPoint]:
    """Where each layer's representation is read, in model order (see the module docstring).

    Raises
    ------
    ValueError
        If the model has no ``nn.Linear`` layer (no readout).
    """
    readout_path, readout = find_readout(model)
    points: list[HookPoint] = []
    for parent_path, parent in model.named_modules():
        children = list(parent.named_children())
        for i, (child_name, child) in enumerate(children):
            path = f"{parent_path}.{child_name}" if parent_path else child_name
            if child is readout:
                continue
            if isinstance(child, nn.Embedding):
                points.append(HookPoint(path, child, "output", flatten=True))
            elif isinstance(child, nn.Linear) and isinstance(parent, nn.Sequential):
                if i + 1 < len(children):
                    nxt = children[i + 1][1]
                    if not any(True for _ in nxt.parameters()):
                        points.append(HookPoint(path, nxt, "output"))
    points.append(HookPoint(readout_path, readout, "input"))
    return points


def _as_rows(t: Tensor, n: int, flatten: bool) -> Tensor | None:
    """``(n, d)`` view of a captured tensor, or None when its first axis is not the batch."""
    if t.ndim == 0 or t.shape[0] != n:
        return None
    if t.ndim == 1:
        return t.unsqueeze(1)
    if t.ndim > 2 and not flatten:
        t = t[:, -1]
    return t.reshape(n, -1)


@dataclass
class _Hooks:
    """Forward-hook handles and what they captured in the current pass."""

    handles: list[torch.utils.hooks.RemovableHandle] = field(default_factory=list)
    seen: dict[str, list[Tensor]] = field(default_factory=dict)
    ids: dict[str, Tensor] = field(default_factory=dict)  # an embedding's input, per pass


@contextlib.contextmanager
def _hooked(points: list[HookPoint]) -> Iterator[_Hooks]:
    hooks = _Hooks()

    def make(point: HookPoint) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            value = out if point.mode == "output" else (args[0] if args else None)
            if isinstance(value, Tensor):
                hooks.seen.setdefault(point.name, []).append(value)
            if isinstance(module, nn.Embedding) and args and isinstance(args[0], Tensor):
                hooks.ids[point.name] = args[0]

        return hook

    try:
        for point in points:
            hooks.handles.append(point.module.register_forward_hook(make(point)))
        yield hooks
    finally:
        for handle in hooks.handles:
            handle.remove()


def _forward_features(model: nn.Module, x: Tensor, points: list[HookPoint]) -> _Captured:
    """One hooked pass over ``x`` in chunks: outputs, features by layer, skipped layers."""
    readout = points[-1].name
    chunks: dict[str, list[Tensor]] = {p.name: [] for p in points}
    id_chunks: dict[str, list[Tensor]] = {p.name: [] for p in points}
    skipped: dict[str, str] = {}
    aliases: dict[str, str] = {}
    ignored: set[str] = set()
    outs: list[Tensor] = []
    with eval_mode(model), torch.no_grad(), _hooked(points) as hooks:
        for start in range(0, len(x), EVAL_CHUNK):
            xb = x[start : start + EVAL_CHUNK]
            hooks.seen.clear()
            hooks.ids.clear()
            outs.append(model(xb))
            ref = hooks.seen.get(readout, [None])[0]
            for point in points:
                seen = hooks.seen.get(point.name, [])
                if len(seen) != 1:
                    skipped[point.name] = (
                        f"the hooked module ran {len(seen)} times in one forward pass "
                        "(expected once), so its representation is ambiguous"
                    )
                    continue
                raw = seen[0]
                if (
                    point.name != readout
                    and ref is not None
                    and raw.data_ptr() == ref.data_ptr()
                    and raw.numel() == ref.numel()
                ):
                    aliases[point.name] = readout
                    continue
                rows = _as_rows(raw, len(xb), point.flatten)
                if rows is None:
                    ignored.add(point.name)  # not per sample (a positional embedding)
                    continue
                chunks[point.name].append(rows.detach().clone())
                ids = hooks.ids.get(point.name)
                if ids is not None and ids.shape[0] == len(xb):
                    id_chunks[point.name].append(ids.detach().reshape(len(xb), -1).clone())
    features: dict[str, Tensor] = {}
    embeddings: dict[str, tuple[Tensor, Tensor]] = {}
    order: list[str] = []
    for point in points:
        name = point.name
        if name in ignored:
            continue
        order.append(name)
        if name in skipped or name in aliases:
            continue
        feats = chunks[name][0] if len(chunks[name]) == 1 else torch.cat(chunks[name])
        if not feats.is_floating_point():
            feats = feats.to(torch.get_default_dtype())
        # A finite sum means no NaN or inf (cheap); only otherwise count them.
        bad = 0 if bool(torch.isfinite(feats.sum())) else int((~torch.isfinite(feats)).sum())
        if bad:
            skipped[name] = f"non-finite activations ({bad} of {feats.numel()} values)"
            continue
        features[name] = feats
        if isinstance(point.module, nn.Embedding) and len(id_chunks[name]) == len(chunks[name]):
            ids = torch.cat(id_chunks[name])
            table = point.module.weight.detach().clone()
            # Kept only when it describes the features exactly (a max_norm embedding
            # renormalizes rows inside forward; the weight read here is the one it used).
            if ids.shape[1] * table.shape[1] == feats.shape[1] and torch.equal(
                table[ids].reshape(feats.shape).to(feats.dtype), feats
            ):
                embeddings[name] = (ids, table)
    output = outs[0] if len(outs) == 1 else torch.cat(outs)
    return _Captured(output, features, skipped, aliases, tuple(order), embeddings)


@dataclass(frozen=True)
class _Captured:
    outputs: Tensor
    features: dict[str, Tensor]
    skipped: dict[str, str]
    aliases: dict[str, str]
    order: tuple[str, ...]
    embeddings: dict[str, tuple[Tensor, Tensor]]


def capture(probe: Probe, split: Split, sets: RowSubsets | None = None) -> Capture:
    """Representations of every layer on ``split``'s fixed rows, once per record.

    The result is cached in ``probe.cache`` under ``f"features:{split}:{sets!r}"``, so the
    diagnostics of one record share a single hooked forward pass per split.

    Parameters
    ----------
    probe : Probe
        The record's probe (model in any mode; the pass runs in eval mode without gradients).
    split : {"train", "test"}
    sets : RowSubsets, optional
        Which rows; default ``RowSubsets()`` (up to 2048 rows per split, seed 0).

    Returns
    -------
    Capture

    Raises
    ------
    ValueError
        If the monitor has no task, or the model has no ``nn.Linear`` readout.
    """
    sets = sets or RowSubsets()
    key = f"features:{split}:{sets!r}"
    cached = probe.cache.get(key)
    if isinstance(cached, Capture):
        return cached
    x, y = probe.data(split)
    rows = sets.rows(split, int(x.shape[0]))
    points = representation_points(probe.model)
    got = _forward_features(probe.model, x[rows], points)
    result = Capture(
        split,
        rows,
        y[rows],
        got.outputs,
        got.features,
        got.skipped,
        got.aliases,
        got.order,
        got.embeddings,
    )
    probe.cache[key] = result
    return result


def fill_aliases(probe: Probe, cap: Capture, values: dict[str, dict[str, float]]) -> None:
    """Copy each aliased layer's values (and NaN reasons) from the layer it is an alias of.

    ``values`` maps metric -> layer -> value and is updated in place (each metric's layers
    are put in model order).
    """
    for alias, target in cap.aliases.items():
        for metric, per_layer in values.items():
            if target not in per_layer:
                continue
            value = per_layer[target]
            if math.isnan(value):
                reason = probe.nan_reasons.get(metric, {}).get(target, "see layer " + target)
                value = probe.nan(metric, reason, layer=alias)
            per_layer[alias] = value
    for metric, per_layer in values.items():  # model order, so the Dataset's layers are too
        ordered = {layer: per_layer[layer] for layer in cap.order if layer in per_layer}
        ordered.update({k: v for k, v in per_layer.items() if k not in ordered})
        values[metric] = ordered
