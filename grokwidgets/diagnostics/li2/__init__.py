r"""Li₂ feature emergence: the back-propagated gradient, its energy, the stages, Fourier features.

Tian (2025, arXiv:2509.21519, seed 001 of the paper suite) follows a two-layer net

.. math:: \hat Y = F V, \qquad F = \sigma(X W) \in \mathbb R^{n \times K},

through three stages read off the *back-propagated gradient* :math:`G_F` at the hidden layer:
(I) **lazy** learning, where the readout :math:`V` fits the random hidden features and
:math:`W` barely moves; (II) **independent** feature learning, where weight decay makes
:math:`G_F` carry the labels and each hidden node climbs its own energy :math:`E`; (III)
**interactive** feature learning, where the nodes couple through :math:`\tilde F^\top \tilde F`.

Notation: :math:`P_1 = I - \mathbf 1\mathbf 1^\top / n` centres over samples,
:math:`\tilde F = P_1 F`, :math:`\tilde Y = P_1 Y` (one-hot targets for classification, the
targets themselves for regression), :math:`f_j` the column of node :math:`j`.

The family's parts: :mod:`.hidden` (the hidden layer's quantities, :math:`G_F` and the energy
of the independent stage, with its derivation), :mod:`.stage` (the stage rule),
:mod:`.fourier` (Fourier features of the first layer) and :mod:`.structure` (which modules
form the two-layer net); this module registers the ``li2`` diagnostic.

Metrics (layer = the readout's module path unless said; rows = the train rows, at most
``max_rows`` of them, a fixed seeded subset beyond)
---------------------------------------------------------------------------------------
- ``li2_grad_norm`` :math:`\|G_F\|_F/\sqrt n` with :math:`G_F = -n\,\partial L/\partial F`,
  the negative gradient of the *summed* per-sample training loss at the readout's input,
  by autograd through the model's own readout and output scaling. For
  :math:`L = \frac1{2n}\sum_i\|y_i - \hat y_i\|^2` and :math:`\hat y = \alpha(V f + c)`
  (``nn.Linear`` stores :math:`V` as :math:`C \times K`, the transpose of Tian's) this is
  exactly Tian's :math:`(Y - \hat Y)V`, times :math:`\alpha`; other losses give their own
  residual (cross-entropy: :math:`Y - \mathrm{softmax}`).
- ``li2_grad_alignment`` :math:`\langle G_F, \tilde Y\tilde Y^\top\tilde F\rangle /
  (\|G_F\|_F\,\|\tilde Y\tilde Y^\top\tilde F\|_F)`: how close :math:`G_F` is to the
  independent-stage form (ours, from the derivation in :mod:`.hidden`).
- ``li2_ftf_offdiag`` mean :math:`|(\tilde F^\top\tilde F)_{jl}|` over :math:`j \ne l` divided
  by the mean diagonal entry (the authors' diagonal / off-diagonal averages, as a ratio in
  [0, 1]: 0 for uncorrelated nodes, 1 for identical ones).
- ``li2_fft_dist`` :math:`\|FF^\top - (aI + b\mathbf 1\mathbf 1^\top)\|_F / \|FF^\top\|_F` at
  the least-squares :math:`a, b` (:math:`a + b` = mean diagonal, :math:`b` = mean
  off-diagonal entry), :math:`F` uncentred as in the authors' code; computed from the
  :math:`K \times K` Gram matrix, never the :math:`n \times n` one.
- ``li2_energy_mean`` the mean of :math:`E_j` over nodes; the array ``li2_energy`` (dim
  ``li2_node``) holds every :math:`E_j`.
- ``li2_weight_change`` (layer = the first layer, e.g. ``encoder.0``)
  :math:`\|W - W_0\|_F / \|W_0\|_F` of the hidden nodes' input weights
  (bias included; for token inputs the embedding composed with the first layer, i.e. the
  weights on the one-hot inputs), :math:`W_0` when the monitor started. Two-layer nets only.
- ``li2_stage`` (layer ``model``): a numeric code, see :data:`STAGES` and :func:`stage_code`.
  Two-layer nets only.
- ``fourier_concentration_mean`` (layer = the first hidden layer): mean over its nodes of
  :func:`fourier_concentration` of the node's weights on the one-hot tokens; arrays
  ``fourier_concentration`` and ``fourier_frequency`` (dim ``fourier_node``) hold each node's
  share and dominant frequency. ``fourier_concentration_weighted`` (the same, each node weighted
  by its Fourier power: :func:`weighted_concentration`) and ``fourier_live_share`` (the share
  of live nodes that are concentrated: :func:`live_concentrated_share`) beside it; the
  unweighted mean understates the features because nodes weight decay shrank to noise count
  as much as live ones. ``fourier_ipr_mean``: the mean over nodes of :func:`fourier_ipr`, the
  inverse participation ratio of the same power (Manning-Coe et al. [2]_ compare its mean
  between grokking and steady training). Modular addition/subtraction only, with token inputs
  through an embedding or one-hot inputs (``modular_arithmetic(encoding="onehot")``).

Bad input: a model that is not two-layer (deeper MLPs, transformers) gets every quantity
defined by the readout and its input (``li2_grad_*``, ``li2_ftf_offdiag``, ``li2_fft_dist``,
``li2_energy*``) and NaN with the reason for the rest; so does a task that is not modular
addition or subtraction for the Fourier metrics.

References
----------
.. [1] Tian (2025), "Provable scaling laws of feature emergence from learning dynamics of
   grokking" (Li₂), arXiv:2509.21519; code: github.com/yuandong-tian/understanding,
   ssl/real-dataset/cogo.
.. [2] Manning-Coe, Gliozzi, Stapleton, Hirst, De Tomasi, Bradlyn & Berman (2025), "Grokking
   vs. learning: same features, different encodings", arXiv:2502.01739.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from grokwidgets._names import MODEL_LAYER
from grokwidgets.diagnostics._shared import all_finite, seeded_subset
from grokwidgets.diagnostics.li2.fourier import (
    CONCENTRATED,
    LIVE_POWER,
    concentration,
    dominant_frequencies,
    fourier_concentration,
    fourier_ipr,
    fourier_power,
    live_concentrated_share,
    participation,
    weighted_concentration,
)
from grokwidgets.diagnostics.li2.hidden import (
    Labels,
    centred_targets,
    fft_dist,
    fft_isotropy_distance,
    ftf_offdiag_ratio,
    gradient_alignment,
    hidden_gradient,
    independent_energy,
    offdiag,
    readout_features,
)
from grokwidgets.diagnostics.li2.stage import STAGES, stage_code, stage_codes, stage_label
from grokwidgets.diagnostics.li2.structure import Net, input_weights, structure
from grokwidgets.diagnostics.probe import Probe
from grokwidgets.diagnostics.registry import (
    MECHANISM_CADENCE,
    DiagnosticFn,
    MetricInfo,
    SetupFn,
    register,
)
from grokwidgets.tasks.base import Task

__all__ = [
    "STAGES",
    "Li2Options",
    "centred_targets",
    "dominant_frequencies",
    "fourier_concentration",
    "fourier_ipr",
    "fourier_power",
    "fft_isotropy_distance",
    "ftf_offdiag_ratio",
    "gradient_alignment",
    "hidden_gradient",
    "independent_energy",
    "live_concentrated_share",
    "register_li2",
    "stage_code",
    "stage_codes",
    "stage_label",
    "weighted_concentration",
]

_TIAN = "Tian (2025) Li2, arXiv:2509.21519"
_MANNING = "Manning-Coe et al. (2025) Grokking vs. learning, arXiv:2502.01739"
_ADDITIVE_OPS = ("+", "-")  # the DFT over token ids diagonalises the additive group Z_p only


@dataclass(frozen=True)
class Li2Options:
    r"""Options of the ``li2`` diagnostic (see :func:`register_li2`).

    Parameters
    ----------
    max_rows : int
        Train rows used: all of them up to this many, else a fixed seeded subset.
    seed : int
        Seed of that subset.
    independent_alignment : float
        Stage rule: the gradient alignment at and above which the stage is independent
        (default :math:`1/\sqrt 2`: the independent form explains half of
        :math:`\|G_F\|^2`).
    """

    max_rows: int = 4096
    seed: int = 0
    independent_alignment: float = math.sqrt(0.5)

    def __post_init__(self) -> None:
        if isinstance(self.max_rows, bool) or not isinstance(self.max_rows, int):
            msg = f"max_rows must be an integer >= 2, got {self.max_rows!r}."
            raise ValueError(msg)
        if self.max_rows < 2:
            msg = f"max_rows must be an integer >= 2, got {self.max_rows!r}."
            raise ValueError(msg)
        if not -1 <= self.independent_alignment <= 1:
            msg = f"independent_alignment must be in [-1, 1], got {self.independent_alignment!r}."
            raise ValueError(msg)


# -- the registered diagnostic -------------------------------------------------------------------

_READOUT_METRICS = (
    "li2_grad_norm",
    "li2_grad_alignment",
    "li2_ftf_offdiag",
    "li2_fft_dist",
    "li2_energy_mean",
)


def _metric_infos() -> list[MetricInfo]:
    f = "of the readout's input F on the train rows"
    return [
        MetricInfo(
            "li2_grad_norm",
            "|G_F|_F / sqrt(n), G_F = -n dL/dF the back-propagated gradient at the readout's "
            "input F on the train rows",
            "loss per feature",
            _TIAN,
        ),
        MetricInfo(
            "li2_grad_alignment",
            "cosine between G_F and its independent-stage form Ỹ Ỹᵀ F̃ (Ỹ, F̃ centred over "
            "the train rows)",
            "1",
            _TIAN,
        ),
        MetricInfo(
            "li2_ftf_offdiag",
            f"mean |off-diagonal| over mean diagonal of F̃ᵀF̃ {f} (0: uncorrelated nodes)",
            "1",
            _TIAN,
        ),
        MetricInfo(
            "li2_fft_dist",
            f"|FFᵀ - (aI + b11ᵀ)|_F / |FFᵀ|_F at the least-squares a, b, {f}",
            "1",
            _TIAN,
        ),
        MetricInfo(
            "li2_energy_mean",
            "mean over hidden nodes of the independent-stage energy E_j = |Ỹᵀ f_j / n|² / 2 "
            "(per-node values in the array li2_energy)",
            "target × feature units squared",
            _TIAN,
        ),
        MetricInfo(
            "li2_weight_change",
            "|W - W0|_F / |W0|_F of the hidden nodes' weights on the raw (one-hot) inputs, "
            "bias included (two-layer nets)",
            "1",
            _TIAN,
        ),
        MetricInfo(
            "li2_stage",
            "Li₂ stage code: 1 independent (li2_grad_alignment >= 1/sqrt 2), else 0 lazy "
            "before the first such record, 2 interactive after it (two-layer nets)",
            "code",
            _TIAN,
        ),
        MetricInfo(
            "fourier_concentration_mean",
            "mean over the first hidden layer's nodes of the share of their one-hot input "
            "weights' non-constant DFT power on the top frequency (modular addition)",
            "1",
            _TIAN + "; Nanda et al. (2023) arXiv:2301.05217",
        ),
        MetricInfo(
            "fourier_concentration_weighted",
            "the first hidden layer's nodes' concentrations averaged with their non-constant "
            "Fourier power (squared centred weight norm) as weights: the share of the layer's "
            "power on each node's own top frequency (modular addition)",
            "1",
            _TIAN + "; Nanda et al. (2023) arXiv:2301.05217",
        ),
        MetricInfo(
            "fourier_ipr_mean",
            "mean over the first hidden layer's nodes of the inverse participation ratio "
            "sum_k P(k)^2 / (sum_k P(k))^2 of their one-hot input weights' non-constant DFT "
            "power (1: one frequency; modular addition)",
            "1",
            _MANNING,
        ),
        MetricInfo(
            "fourier_live_share",
            f"share of the live nodes (Fourier power >= {LIVE_POWER:g} of the largest node's) "
            f"whose concentration is >= {CONCENTRATED:g} (first hidden layer, modular addition)",
            "1",
            _TIAN,
        ),
    ]


#: The Fourier metrics with one value per layer.
_FOURIER_SCALARS = (
    "fourier_concentration_mean",
    "fourier_ipr_mean",
    "fourier_concentration_weighted",
    "fourier_live_share",
)


def _train_rows(task: Task, opts: Li2Options) -> tuple[Tensor, Tensor]:
    rows = seeded_subset(task.n_train, opts.max_rows, opts.seed)
    return task.x_train[rows], task.y_train[rows]


def _fourier_p(task: Task) -> tuple[int, str]:
    """(p, "") for modular addition/subtraction with token or one-hot inputs, else (0, why)."""
    p, op = task.meta.get("p"), task.meta.get("op")
    onehot = task.meta.get("encoding") == "onehot"
    if not isinstance(p, int) or not (task.input_kind == "tokens" or onehot):
        return 0, "not a modular-arithmetic task with token or one-hot inputs (no p in meta)"
    if op not in _ADDITIVE_OPS:
        return 0, (
            f"op {op!r} is not addition or subtraction: the DFT over token ids diagonalises "
            "only the additive group Z_p"
        )
    return p, ""


def _setup_fn(name: str, opts: Li2Options) -> SetupFn:
    def setup(probe: Probe) -> None:
        if probe.task is None:
            msg = f"The {name!r} diagnostic needs a task: pass one to Monitor(model, task)."
            raise ValueError(msg)
        x, _ = _train_rows(probe.task, opts)
        net = structure(probe.model, x[:8])
        if not net.not_two_layer:
            probe.state[f"{name}.w0"] = input_weights(probe.model, net, bias=True).clone()

    return setup


def _li2_fn(name: str, opts: Li2Options) -> DiagnosticFn:
    def li2(probe: Probe) -> dict[str, Any]:
        task = probe.task
        if task is None:
            msg = f"The {name!r} diagnostic needs a task: pass one to Monitor(model, task)."
            raise ValueError(msg)
        x, y = _train_rows(task, opts)
        net = structure(probe.model, x[:8])
        out: dict[str, Any] = {}
        r_layer = net.readout
        values = _readout_values(probe, net, x, y, task, out)
        for metric in _READOUT_METRICS:
            out[metric] = {r_layer: values[metric]}

        # the first layer's weights: stored under that layer (the readout's when there is none)
        w_layer = net.first or r_layer
        if net.not_two_layer:
            change = probe.nan("li2_weight_change", net.not_two_layer, w_layer)
        else:
            w0 = probe.state.get(f"{name}.w0")
            w = input_weights(probe.model, net, bias=True)
            if w0 is None or w0.shape != w.shape:
                change = probe.nan(
                    "li2_weight_change",
                    "no initial weights stored (the run started without this diagnostic)",
                    w_layer,
                )
            else:
                change = float(torch.linalg.vector_norm(w - w0) / torch.linalg.vector_norm(w0))
        out["li2_weight_change"] = {w_layer: change}

        if net.not_two_layer:
            stage = probe.nan("li2_stage", net.not_two_layer)
        else:
            key = f"{name}.reached"
            reached = bool(probe.state.get(key, torch.zeros(1)).item())
            stage = stage_code(values["li2_grad_alignment"], reached, opts.independent_alignment)
            if stage == 1.0:
                probe.state[key] = torch.ones(1)
            if math.isnan(stage):
                stage = probe.nan("li2_stage", "the gradient alignment is NaN (see its reason)")
        out["li2_stage"] = {MODEL_LAYER: stage}

        _fourier_values(probe, net, task, out)
        return out

    li2.__doc__ = f"Li₂ feature-emergence diagnostics ({name!r})."
    return li2


def _readout_values(
    probe: Probe, net: Net, x: Tensor, y: Tensor, task: Task, out: dict[str, Any]
) -> dict[str, float]:
    """The readout-defined quantities; puts the per-node energies in ``out["li2_energy"]``."""
    layer = net.readout
    values: dict[str, float] = {}

    def nan_all(reason: str) -> dict[str, float]:
        return {m: probe.nan(m, reason, layer) for m in _READOUT_METRICS}

    try:
        if probe.loss_fn is not None:
            feats, grad = hidden_gradient(probe.model, x, y, probe.loss_fn)
        else:
            feats, grad = readout_features(probe.model, x), None
    except ValueError as err:
        return nan_all(str(err))
    f = feats.to(torch.float64)
    if not all_finite(f):
        return nan_all("non-finite activations at the readout's input")
    n = f.shape[0]
    mean = f.mean(dim=0)
    fc = f - mean
    labels = Labels(y, task.n_outputs if task.kind == "classification" else None)
    s = labels.t_matmul(fc)  # Ỹᵀ F̃ = Ỹᵀ F  (C, K)
    if grad is None:
        reason = "no loss function (pass loss=... to Monitor)"
        values["li2_grad_norm"] = probe.nan("li2_grad_norm", reason, layer)
        values["li2_grad_alignment"] = probe.nan("li2_grad_alignment", reason, layer)
    else:
        g = grad.to(torch.float64)
        g_norm = float(torch.linalg.vector_norm(g))
        values["li2_grad_norm"] = g_norm / math.sqrt(n)
        # ⟨G, ỸỸᵀF̃⟩ = ⟨ỸᵀG, ỸᵀF̃⟩ and ‖ỸỸᵀF̃‖ by class: (C, K) work, not (n, K)
        den = g_norm * labels.matmul_norm(s)
        values["li2_grad_alignment"] = (
            float((labels.t_matmul(g) * s).sum()) / den
            if den > 0
            else probe.nan("li2_grad_alignment", "G_F or ỸỸᵀF̃ is 0", layer)
        )
    gram = f.T @ f
    off = offdiag(gram - n * torch.outer(mean, mean))  # F̃ᵀF̃ = FᵀF - n μμᵀ
    values["li2_ftf_offdiag"] = (
        off
        if not math.isnan(off)
        else probe.nan("li2_ftf_offdiag", "fewer than two hidden nodes, or no variance", layer)
    )
    dist = fft_dist(f, gram)
    values["li2_fft_dist"] = (
        dist if not math.isnan(dist) else probe.nan("li2_fft_dist", "F is all zero", layer)
    )
    energy = 0.5 * (s / n).square().sum(dim=0)
    values["li2_energy_mean"] = float(energy.mean())
    out["li2_energy"] = {layer: energy.numpy()}
    return values


def _fourier_values(probe: Probe, net: Net, task: Task, out: dict[str, Any]) -> None:
    layer = net.first or MODEL_LAYER
    p, why = _fourier_p(task)
    weights = None
    if not why and net.first is None:
        why = (
            "no nn.Linear layer reads the one-hot inputs, or the token embeddings of an "
            "nn.Embedding, directly"
        )
    elif not why:
        # the first layer's weights on the one-hot tokens: read directly from one-hot inputs,
        # composed with the embedding for token ids; either way two blocks of p group elements
        weights = input_weights(probe.model, net, bias=False)
        if weights.shape[1] != 2 * p:
            why = f"the first layer reads {weights.shape[1]} one-hot inputs, not 2 x p = {2 * p}"
    if why:
        for name in _FOURIER_SCALARS:
            out[name] = {layer: probe.nan(name, why, layer)}
        return
    assert weights is not None  # read whenever there is no reason against it
    power = fourier_power(weights, p)
    share, freq = concentration(power)
    valid = ~torch.isnan(share)
    if bool(valid.any()):
        out["fourier_concentration_mean"] = {layer: float(share[valid].mean())}
        out["fourier_concentration_weighted"] = {layer: weighted_concentration(power)}
        out["fourier_ipr_mean"] = {layer: float(participation(power)[valid].mean())}
        out["fourier_live_share"] = {layer: live_concentrated_share(power)}
    else:
        for name in _FOURIER_SCALARS:
            out[name] = {layer: probe.nan(name, "every node's weights are constant", layer)}
    out["fourier_concentration"] = {layer: share.numpy()}
    out["fourier_frequency"] = {
        layer: np.where(freq.numpy() < 0, np.nan, freq.numpy().astype(np.float64))
    }


def register_li2(
    name: str = "li2", *, options: Li2Options | None = None, replace: bool = False
) -> None:
    """Register the Li₂ family under ``name`` with ``options``.

    ``"li2"`` is registered with the defaults. Its state (``"{name}.w0"``, the hidden nodes'
    initial input weights of a two-layer net) is saved in every checkpoint.

    Parameters
    ----------
    name : str
        The diagnostic's name in ``Monitor(diagnostics=[...])``.
    options : Li2Options, optional
        Rows used and the stage rule's thresholds.
    replace : bool
        Replace an existing registration of ``name``.
    """
    opts = options or Li2Options()
    register(
        name,
        metrics=_metric_infos(),
        arrays={
            "li2_energy": "li2_node",
            "fourier_concentration": "fourier_node",
            "fourier_frequency": "fourier_node",
        },
        setup=_setup_fn(name, opts),
        cadence=MECHANISM_CADENCE,
        replace=replace,
    )(_li2_fn(name, opts))


register_li2("li2")
