r"""Comparator progress measures: activation sparsity, weight entropy, circuit complexity, norms.

The measures that Prakash & Martin (2025) [1]_ set against HTSR's α (seed 003 of the paper
suite): they track pre-grokking and grokking but, by that paper's claim, not the later
anti-grokking collapse. The first three come from Golechha (2024) [2]_; the paper's text leaves
some choices open, and the ones made here are stated with each formula. Registered as
``comparative``; :math:`W` is a layer's weight, :math:`\theta` all parameters, subscript 0 the
values when the monitor started, :math:`a_{ij}` the activations of a layer on the fixed *train*
rows (:mod:`~grokwidgets.diagnostics._features`; no test data is used).

.. math::

    \text{activation\_sparsity} = \frac{1}{n d}\sum_{i,j} \mathbb 1\big[|a_{ij}| \le \tau\big]
    \qquad (\tau = 0: \text{the share of exactly inactive units, e.g. ReLU zeros})

    \text{abs\_weight\_entropy} = -\sum_k |w_k| \ln |w_k| \qquad (0 \ln 0 = 0)

    \text{abs\_weight\_entropy\_norm} = -\frac{1}{\ln n}\sum_k p_k \ln p_k, \quad
    p_k = \frac{|w_k|}{\sum_l |w_l|}

    \text{circuit\_complexity} = \frac{1}{n}\sum_i
        D_\mathrm{KL}\big(\operatorname{softmax} f_\theta(x_i)\,\big\|\,
        \operatorname{softmax} f_{\theta \odot m}(x_i)\big)

    \text{weight\_l1} = \textstyle\sum |W|, \quad \text{weight\_norm} = \|W\|_F, \quad
    \text{dist\_from\_init} = \|W - W_0\|_F

**Circuit-complexity proxy** (Golechha's *approximate local circuit complexity*, as we read it:
how much the model's predictions change when a small part of its circuit is removed). The mask
:math:`m` zeroes a fixed random share ``mask_fraction`` (default 10%) of one layer's weight
entries (per layer) or of every weight layer's entries at once (layer ``"model"``); the masks
are drawn from a generator seeded by the layer's path, so the same entries are removed at every
record and the curve follows the model, not the draw. Regression outputs use the KL divergence
of unit-variance Gaussians centred on the two outputs, :math:`\tfrac12\|f_\theta(x_i) -
f_{\theta\odot m}(x_i)\|^2`. Large values: the function depends on many entries (a dense,
memorizing circuit); small values: it is robust to losing them.

The unnormalized entropy (Golechha's form) mixes the weights' scale with their spread; the
normalized one is scale-free, 1 for equal magnitudes and 0 for a single non-zero weight.

L2 norms reuse the names and meanings of the ``weights`` diagnostic (``weight_norm`` per layer,
``param_norm`` for all parameters), so ``comparative`` alone has them; ``rel_change`` there is
the *relative* distance from init, ``dist_from_init`` here the absolute one. Per-layer entropy,
L1 and distance use the layer's ``weight``; the ``"model"`` values use every parameter
(biases too). Initial values share the ``init.<param>`` state of ``weights``.

References
----------
.. [1] Prakash & Martin (2025), "Grokking and generalization collapse: insights from HTSR
   theory", arXiv:2506.04434.
.. [2] Golechha (2024), "Progress measures for grokking on real-world tasks", HiLD @ ICML 2024,
   arXiv:2405.12755.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from grokwidgets._names import MODEL_LAYER
from grokwidgets.diagnostics import basic as _basic  # noqa: F401  (registers "weights" first)
from grokwidgets.diagnostics._features import (
    RowSubsets,
    capture,
    fill_aliases,
    representation_points,
)
from grokwidgets.diagnostics._shared import eval_mode, finite_float64, seeded_subset
from grokwidgets.diagnostics.probe import EVAL_CHUNK, Probe
from grokwidgets.diagnostics.registry import (
    MECHANISM_CADENCE,
    DiagnosticFn,
    MetricInfo,
    SetupFn,
    register,
    resolve,
)

__all__ = [
    "ComparativeOptions",
    "abs_weight_entropy",
    "abs_weight_entropy_norm",
    "activation_sparsity",
    "circuit_complexity",
    "register_comparative",
    "weight_mask",
]

_GOLECHHA = "Golechha (2024) Progress measures for grokking on real-world tasks, arXiv:2405.12755"
_PRAKASH = "Prakash & Martin (2025), arXiv:2506.04434"
_BOTH = f"{_GOLECHHA}; compared in {_PRAKASH}"
_OMNIGROK = "Liu, Michaud & Tegmark (2022) Omnigrok, arXiv:2210.01117"

Kind = Literal["classification", "regression"]


@dataclass(frozen=True)
class ComparativeOptions:
    """Options of the ``comparative`` diagnostic.

    Parameters
    ----------
    sets : RowSubsets
        Fixed rows; the train rows are used (default ``RowSubsets()``, shared with the
        ``probes`` family so one hooked forward pass serves both).
    sparsity_threshold : float
        τ: an activation with ``|a| <= τ`` counts as inactive (0: exact zeros).
    mask_fraction : float
        Share of a layer's weight entries removed by the circuit-complexity mask, in (0, 1).
    n_rows : int
        Circuit complexity uses the first ``n_rows`` fixed train rows (a uniform random
        subset); each layer costs one forward pass over them.
    seed : int
        Seed of the masks (combined with each layer's path).
    """

    sets: RowSubsets = field(default_factory=RowSubsets)
    sparsity_threshold: float = 0.0
    mask_fraction: float = 0.1
    n_rows: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sparsity_threshold) and self.sparsity_threshold >= 0):
            msg = f"sparsity_threshold must be a finite number >= 0, got {self.sparsity_threshold}."
            raise ValueError(msg)
        if not 0.0 < self.mask_fraction < 1.0:
            msg = f"mask_fraction must be strictly between 0 and 1, got {self.mask_fraction}."
            raise ValueError(msg)
        if isinstance(self.n_rows, bool) or not isinstance(self.n_rows, int) or self.n_rows < 1:
            msg = f"n_rows must be a positive integer, got {self.n_rows!r}."
            raise ValueError(msg)


# -- the measures on their own ---------------------------------------------------------------


def _finite(t: Tensor | np.ndarray, name: str) -> Tensor:
    x = finite_float64(t, name)
    if x.numel() == 0:
        msg = f"{name} is empty."
        raise ValueError(msg)
    return x


def activation_sparsity(acts: Tensor | np.ndarray, threshold: float = 0.0) -> float:
    r"""Share of activations with :math:`|a| \le \tau` (Golechha 2024, arXiv:2405.12755).

    .. math:: \frac{1}{N}\sum_{k} \mathbb 1\big[|a_k| \le \tau\big]

    over every entry of ``acts`` (any shape, e.g. ``(samples, units)``).

    Parameters
    ----------
    acts : Tensor or ndarray
        Activations; must be finite.
    threshold : float
        τ ≥ 0; 0 counts exact zeros (the inactive units of a ReLU layer).
    """
    if not (math.isfinite(threshold) and threshold >= 0):
        msg = f"threshold must be a finite number >= 0, got {threshold}."
        raise ValueError(msg)
    a = _finite(acts, "acts")
    return float((a.abs() <= threshold).to(torch.float64).mean())


def abs_weight_entropy(weight: Tensor | np.ndarray) -> float:
    r"""Absolute weight entropy :math:`-\sum_k |w_k| \ln |w_k|` (Golechha 2024).

    Zero entries contribute 0 (the limit of :math:`x \ln x`). Not scale-free: see
    :func:`abs_weight_entropy_norm`.

    References
    ----------
    .. [1] Golechha (2024), "Progress measures for grokking on real-world tasks",
       arXiv:2405.12755.
    """
    return _entropy(_finite(weight, "weight").abs().reshape(-1))


def _entropy(a: Tensor) -> float:
    a = a[a > 0]
    return float(-(a * a.log()).sum())


def abs_weight_entropy_norm(weight: Tensor | np.ndarray) -> float:
    r"""Normalized entropy of the weight magnitudes, in [0, 1].

    .. math::

        -\frac{1}{\ln n}\sum_k p_k \ln p_k, \qquad p_k = |w_k| / \textstyle\sum_l |w_l|,

    with :math:`n` the number of entries: 1 when all magnitudes are equal, 0 when one entry
    holds all the mass. NaN for an all-zero weight or a single entry.
    """
    return _entropy_norm(_finite(weight, "weight").abs().reshape(-1))


def _entropy_norm(a: Tensor) -> float:
    total = float(a.sum())
    n = a.numel()
    if not total > 0 or n < 2:
        return math.nan
    p = a[a > 0] / total
    return float(-(p * p.log()).sum()) / math.log(n)


def weight_mask(shape: torch.Size | tuple[int, ...], fraction: float, key: str) -> Tensor:
    """Boolean mask (True = keep) that removes ``round(fraction * numel)`` entries.

    The removed entries are the first ones of ``torch.randperm`` drawn from a generator seeded
    by ``crc32(key)``, so a key always gives the same mask.
    """
    numel = int(math.prod(shape))
    drop = seeded_subset(numel, round(fraction * numel), zlib.crc32(key.encode()))
    keep = torch.ones(numel, dtype=torch.bool)
    keep[drop] = False
    return keep.reshape(shape)


def _outputs(model: nn.Module, x: Tensor, params: Mapping[str, Tensor] | None) -> Tensor:
    chunks = []
    for i in range(0, len(x), EVAL_CHUNK):
        xb = x[i : i + EVAL_CHUNK]
        chunks.append(model(xb) if params is None else functional_call(model, dict(params), (xb,)))
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


def _divergence(ref: Tensor, out: Tensor, kind: Kind) -> float:
    ref64, out64 = ref.to(torch.float64), out.to(torch.float64)
    if kind == "classification":
        logp = F.log_softmax(ref64.reshape(len(ref64), -1), dim=-1)
        logq = F.log_softmax(out64.reshape(len(out64), -1), dim=-1)
        return float((logp.exp() * (logp - logq)).sum(dim=-1).mean())
    diff = (ref64 - out64).reshape(len(ref64), -1)
    return float(0.5 * diff.square().sum(dim=-1).mean())


def circuit_complexity(
    model: nn.Module,
    x: Tensor,
    layers: Iterable[str],
    *,
    fraction: float = 0.1,
    seed: int = 0,
    kind: Kind = "classification",
    reference: Tensor | None = None,
) -> float:
    r"""Circuit-complexity proxy: divergence of the predictions when weights are removed.

    .. math::

        \frac1n\sum_i D_\mathrm{KL}\big(\operatorname{softmax} f_\theta(x_i)\,\big\|\,
        \operatorname{softmax} f_{\theta\odot m}(x_i)\big)

    where :math:`m` zeroes ``fraction`` of the ``weight`` entries of every module in
    ``layers`` (masks from :func:`weight_mask` with key ``f"{seed}:{path}"``); for
    ``kind="regression"`` the divergence is :math:`\tfrac12\|f_\theta(x_i) -
    f_{\theta\odot m}(x_i)\|^2`. The model runs in eval mode without gradients; its
    parameters are not modified (the masked weights go through ``torch.func.functional_call``).

    Parameters
    ----------
    model : nn.Module
    x : Tensor
        Inputs (a batch).
    layers : iterable of str
        Module paths whose ``weight`` is masked (together).
    fraction : float
        Share of each weight's entries removed, in (0, 1).
    seed : int
    kind : {"classification", "regression"}
    reference : Tensor, optional
        The unmasked outputs on ``x`` if already computed.

    References
    ----------
    .. [1] Golechha (2024), "Progress measures for grokking on real-world tasks",
       arXiv:2405.12755 (approximate local circuit complexity).
    """
    if not 0.0 < fraction < 1.0:
        msg = f"fraction must be strictly between 0 and 1, got {fraction}."
        raise ValueError(msg)
    if kind not in ("classification", "regression"):
        msg = f"kind must be 'classification' or 'regression', got {kind!r}."
        raise ValueError(msg)
    modules = dict(model.named_modules())
    params: dict[str, Tensor] = {}
    for path in layers:
        weight = getattr(modules.get(path), "weight", None)
        if not isinstance(weight, Tensor):
            msg = f"{path!r} is not a module with a weight in {type(model).__name__}."
            raise ValueError(msg)
        keep = weight_mask(weight.shape, fraction, f"{seed}:{path}").to(weight.device)
        params[f"{path}.weight"] = weight.detach() * keep
    if not params:
        msg = "circuit_complexity needs at least one layer to mask."
        raise ValueError(msg)
    with eval_mode(model), torch.no_grad():
        ref = _outputs(model, x, None) if reference is None else reference
        out = _outputs(model, x, params)
    return _divergence(ref, out, kind)


# -- the registered diagnostic ---------------------------------------------------------------


def _metric_infos() -> list[MetricInfo]:
    weights = {m.name: m for m in resolve(["weights"])[0].metrics}
    return [
        MetricInfo(
            "activation_sparsity",
            "share of the layer's activations on the fixed train rows with |a| <= τ "
            "(model: pooled over hidden layers)",
            "1",
            _BOTH,
        ),
        MetricInfo(
            "abs_weight_entropy",
            "absolute weight entropy -Σ|w| ln|w| of the layer's weight (model: all parameters)",
            "nats",
            _BOTH,
        ),
        MetricInfo(
            "abs_weight_entropy_norm",
            "entropy of |w| / Σ|w| divided by ln(number of entries), in [0, 1]",
            "1",
            _GOLECHHA,
        ),
        MetricInfo(
            "circuit_complexity",
            "mean KL(softmax f || softmax f masked) on the fixed train rows when a fixed random "
            "share of the layer's weights (model: of every layer's) is zeroed",
            "nats",
            _BOTH,
        ),
        MetricInfo("weight_l1", "L1 norm Σ|W| of the layer's weight", "1", _PRAKASH),
        MetricInfo("param_l1", "L1 norm of all parameters", "1", _PRAKASH),
        weights["weight_norm"],
        weights["param_norm"],
        MetricInfo(
            "dist_from_init",
            "distance from init ||W - W0||_F (model: ||θ - θ0|| over all parameters)",
            "1",
            _OMNIGROK,
        ),
    ]


def _setup(probe: Probe) -> None:
    for name, param in probe.model.named_parameters():
        probe.state.setdefault(f"init.{name}", param.detach().clone())


def _weight_metrics(probe: Probe) -> dict[str, dict[str, float]]:
    names = ("abs_weight_entropy", "abs_weight_entropy_norm", "weight_l1", "weight_norm",
             "dist_from_init", "param_l1", "param_norm")  # fmt: skip
    out: dict[str, dict[str, float]] = {m: {} for m in names}
    with torch.no_grad():
        for path, module in probe.layers.items():
            w = cast(Tensor, module.weight).detach().to(torch.float64).reshape(-1)
            if not bool(torch.isfinite(w).all()):
                for metric in names[:5]:
                    out[metric][path] = probe.nan(metric, "the weight has non-finite entries", path)
                continue
            a = w.abs()
            out["abs_weight_entropy"][path] = _entropy(a)
            h = _entropy_norm(a)
            out["abs_weight_entropy_norm"][path] = (
                h if not math.isnan(h)
                else probe.nan("abs_weight_entropy_norm", "all-zero weight or one entry", path)
            )  # fmt: skip
            out["weight_l1"][path] = float(a.sum())
            out["weight_norm"][path] = float(torch.linalg.vector_norm(w))
            init = probe.state.get(f"init.{path}.weight")
            out["dist_from_init"][path] = (
                float(torch.linalg.vector_norm(w - init.to(torch.float64).reshape(-1)))
                if init is not None and init.numel() == w.numel()
                else probe.nan("dist_from_init", "no initial weight stored", path)
            )
        named = list(probe.model.named_parameters())
        if not named:
            return out
        flat = torch.cat([p.detach().to(torch.float64).reshape(-1) for _, p in named])
        a = flat.abs()
        out["param_l1"][MODEL_LAYER] = float(a.sum())
        out["param_norm"][MODEL_LAYER] = float(torch.linalg.vector_norm(flat))
        if bool(torch.isfinite(flat).all()):
            out["abs_weight_entropy"][MODEL_LAYER] = _entropy(a)
            h = _entropy_norm(a)
            if not math.isnan(h):
                out["abs_weight_entropy_norm"][MODEL_LAYER] = h
        inits = [probe.state.get(f"init.{n}") for n, _ in named]
        if all(i is not None for i in inits):
            init_flat = torch.cat([cast(Tensor, i).to(torch.float64).reshape(-1) for i in inits])
            if init_flat.shape == flat.shape:
                out["dist_from_init"][MODEL_LAYER] = float(
                    torch.linalg.vector_norm(flat - init_flat)
                )
    return out


def _comparative_fn(options: ComparativeOptions) -> DiagnosticFn:
    def comparative(probe: Probe) -> dict[str, dict[str, float]]:
        task = probe.task
        if task is None:
            msg = "The 'comparative' diagnostic needs a task: pass one to Monitor(model, task)."
            raise ValueError(msg)
        out = _weight_metrics(probe)
        cap = capture(probe, "train", options.sets)
        sparsity: dict[str, float] = {}
        embeddings = {p.name for p in representation_points(probe.model) if p.flatten}
        pooled_zero = 0.0
        pooled_n = 0
        for layer in cap.layers:
            if layer in cap.aliases:
                continue
            if layer in cap.skipped:
                sparsity[layer] = probe.nan("activation_sparsity", cap.skipped[layer], layer)
                continue
            acts = cap.features[layer]
            inactive = float((acts.abs() <= options.sparsity_threshold).sum())
            sparsity[layer] = inactive / acts.numel()
            if layer not in embeddings:
                pooled_zero += inactive
                pooled_n += acts.numel()
        if pooled_n:
            sparsity[MODEL_LAYER] = pooled_zero / pooled_n
        values = {"activation_sparsity": sparsity}
        fill_aliases(probe, cap, values)
        out["activation_sparsity"] = values["activation_sparsity"]

        x, _ = probe.data("train")
        rows = cap.rows[: options.n_rows]
        xs, ref = x[rows], cap.outputs[: options.n_rows]
        kind: Kind = "classification" if task.kind == "classification" else "regression"
        complexity: dict[str, float] = {}
        paths = list(probe.layers)
        for path in paths:
            complexity[path] = circuit_complexity(
                probe.model, xs, [path], fraction=options.mask_fraction, seed=options.seed,
                kind=kind, reference=ref,
            )  # fmt: skip
        if paths:
            complexity[MODEL_LAYER] = circuit_complexity(
                probe.model, xs, paths, fraction=options.mask_fraction, seed=options.seed,
                kind=kind, reference=ref,
            )  # fmt: skip
        for layer, value in complexity.items():
            if not math.isfinite(value):
                why = "non-finite model outputs on the fixed train rows"
                complexity[layer] = probe.nan("circuit_complexity", why, layer)
        out["circuit_complexity"] = complexity
        return out

    comparative.__doc__ = "Comparator progress measures (Golechha 2024; Prakash & Martin 2025)."
    return comparative


def register_comparative(
    name: str = "comparative",
    options: ComparativeOptions | None = None,
    *,
    replace: bool = False,
) -> None:
    """Register the comparator family under ``name`` with its own options.

    ``"comparative"`` is registered with the defaults.

    Parameters
    ----------
    name : str
        The diagnostic's name in ``Monitor(diagnostics=[...])``.
    options : ComparativeOptions, optional
        Probe rows, sparsity threshold, mask share and seed.
    replace : bool
        Replace an existing registration of ``name``.
    """
    options = options or ComparativeOptions()
    setup: SetupFn = _setup
    register(
        name,
        metrics=_metric_infos(),
        setup=setup,
        cadence=MECHANISM_CADENCE,
        replace=replace,
        shares=("weight_norm", "param_norm"),  # the weights diagnostic's, same values
    )(_comparative_fn(options))


register_comparative("comparative")
