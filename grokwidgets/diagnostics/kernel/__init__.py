r"""Kernel diagnostics: the empirical NTK on a fixed probe batch and what it says about laziness.

Registered as ``ntk``. At every record it computes the trace NTK :math:`K` (``N × N``, the sum
of the output blocks; full ``N × N × O × O`` blocks with ``NTKOptions(blocks="full")``) of the
model on a fixed *probe batch* — the first ``n_probe = 256`` samples of a permutation of the
train split drawn with ``torch.Generator().manual_seed(seed)`` — exactly, layer by layer (see
:func:`empirical_ntk`), and reports, with :math:`Y` the one-hot labels (classification) or the
targets (regression) of the probe batch, :math:`H = I - \mathbf 1\mathbf 1^\top / N` and
:math:`\langle A, B\rangle = \sum_{ij} A_{ij} B_{ij}`:

.. math::

    \text{ntk\_alignment} = \frac{\langle K, YY^\top\rangle}{\|K\|_F\,\|YY^\top\|_F}, \qquad
    \text{ntk\_alignment\_centred} = \frac{\langle HKH, HYY^\top H\rangle}
        {\|HKH\|_F\,\|HYY^\top H\|_F},

    \text{ntk\_velocity} = 1 - \frac{\langle K_t, K_{t'}\rangle}{\|K_t\|_F\|K_{t'}\|_F}
    \ (t' \text{ the previous record}), \qquad
    \text{ntk\_cka\_init} = \frac{\langle HK_tH, HK_0H\rangle}{\|HK_tH\|_F\|HK_0H\|_F}, \qquad
    \text{ntk\_rel\_change} = \frac{\|K_t - K_0\|_F}{\|K_0\|_F},

    \text{ntk\_label\_power\_topk} = \frac{\sum_{i \le k} \|v_i^\top HY\|^2}{\|HY\|_F^2}
    \ (v_i \text{ the top-}k \text{ eigenvectors of } HKH), \qquad
    \text{ntk\_trace} = \tfrac1N \operatorname{tr} K,

    \text{lin\_gap} = \frac{\|f_\theta - f^{\mathrm{lin}}_\theta\|_F}
        {\|f_\theta - f_{\theta_0}\|_F}, \quad
    f^{\mathrm{lin}}_\theta = f_{\theta_0} + J_{\theta_0}(\theta - \theta_0), \qquad
    \text{param\_rel\_change} = \frac{\|\theta - \theta_0\|_2}{\|\theta_0\|_2}.

With full blocks the same formulas act on the ``NO × NO`` matrix and :math:`\mathrm{vec}(Y)`
(centring over samples only). Per-layer kernels (one per module; they sum to :math:`K`) give
``ntk_trace``, ``ntk_trace_share``, ``ntk_alignment`` and ``ntk_alignment_centred`` per layer.
``kernel_spectrum`` holds the top ``n_eig`` eigenvalues of :math:`K` (layer ``"model"``).

The *initial-kernel baseline* (the black line of Kumar et al., Fig. 1) is computed once, at
setup: kernel regression with the trace NTK at init from ``n_kernel_train = 1024`` train points
(the first of the same permutation, so they include the probe batch) to ``n_kernel_test = 512``
test points (the first of a permutation of the test split, same seed):
:math:`\hat Y_* = K_0(X_*, X)\,(K_0(X, X) + \lambda I)^{-1} Y` with
:math:`\lambda = \text{ridge}\cdot\operatorname{tr}K_0(X, X)/n` (``ridge = 1e-6``: ridgeless up
to numerical stability); ``ntk_init_kernel_test_loss`` is the mean over test points *and*
outputs of :math:`(\hat Y_* - Y_*)^2` (the ``mse`` loss; one-hot targets for classification)
and ``ntk_init_kernel_test_acc`` the arg-max accuracy. The network's own :math:`f_{\theta_0}`
is not added: for a centred model (:math:`f_{\theta_0} \equiv 0`, as in the paper) this is the
linearized network trained to convergence. The value is constant over a run (a horizontal line).

"Init" means the state when the monitor started (the run's start for ``gw.train``). The probe
indices, :math:`\theta_0`, :math:`K_0`, the baseline and the previous record's kernel live in
``probe.state`` (saved in checkpoints), so a resumed run reports the same values. The velocity
compares consecutive *records*, so it depends on the cadence (per step it is about
velocity / Δstep for small changes); in float32 values below ~1e-6 are rounding noise.

References
----------
.. [1] Kumar, Bordelon, Gershman & Pehlevan (2024), "Grokking as the transition from lazy to
   rich training dynamics", ICLR 2024, arXiv:2310.06110.
.. [2] Cristianini, Shawe-Taylor, Elisseeff & Kandola (2001), "On kernel-target alignment",
   NeurIPS 2001; Cortes, Mohri & Rostamizadeh (2012), "Algorithms for learning kernels based on
   centered alignment", JMLR 13.
.. [3] Fort, Dziugaite, Paul, Kharaghani, Roy & Ganguli (2020), "Deep learning versus kernel
   learning", NeurIPS 2020, arXiv:2010.15110 (kernel velocity).
.. [4] Kornblith, Norouzi, Lee & Hinton (2019), "Similarity of neural network representations
   revisited", arXiv:1905.00414 (CKA).
.. [5] Lee, Xiao, Schoenholz, Bahri, Novak, Sohl-Dickstein & Pennington (2019), "Wide neural
   networks of any depth evolve as linear models under gradient descent", arXiv:1902.06720.
.. [6] Ortiz-Jiménez, Moosavi-Dezfooli & Frossard (2021), "What can linearized neural networks
   actually say about generalization?", arXiv:2106.06770 (label power in NTK eigenvectors).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from grokwidgets._names import MODEL_LAYER
from grokwidgets.diagnostics._shared import seeded_subset
from grokwidgets.diagnostics.kernel.ntk import (
    BLOCKS,
    Blocks,
    NTKEngine,
    NTKFallbackWarning,
    empirical_ntk,
    layer_ntks,
    train_test_kernels,
)
from grokwidgets.diagnostics.kernel.stats import (
    as_matrix,
    kernel_alignment,
    kernel_cka,
    kernel_regression,
    kernel_velocity,
    label_power_topk,
    linearized_outputs,
)
from grokwidgets.diagnostics.probe import Probe
from grokwidgets.diagnostics.registry import MECHANISM_CADENCE, MetricInfo, register
from grokwidgets.tasks.base import Task
from grokwidgets.tasks.losses import accuracy

__all__ = [
    "NTKFallbackWarning",
    "NTKOptions",
    "empirical_ntk",
    "kernel_alignment",
    "kernel_cka",
    "kernel_regression",
    "kernel_velocity",
    "label_power_topk",
    "layer_ntks",
    "linearized_outputs",
    "ntk_metrics",
    "register_ntk",
]

_KUMAR = "Kumar, Bordelon, Gershman & Pehlevan (2024), arXiv:2310.06110"
_ALIGN = "Cristianini et al. (2001) kernel-target alignment; Kumar et al. (2024), arXiv:2310.06110"
_CORTES = "Cortes, Mohri & Rostamizadeh (2012), JMLR 13; Kumar et al. (2024), arXiv:2310.06110"
_FORT = "Fort et al. (2020), arXiv:2010.15110"
_CKA = "Kornblith et al. (2019), arXiv:1905.00414; Kumar et al. (2024), arXiv:2310.06110"
_JACOT = "Jacot, Gabriel & Hongler (2018), arXiv:1806.07572"
_ORTIZ = "Ortiz-Jiménez et al. (2021), arXiv:2106.06770; Kumar et al. (2024), arXiv:2310.06110"
_LEE = "Lee et al. (2019), arXiv:1902.06720; Kumar et al. (2024), arXiv:2310.06110"


@dataclass(frozen=True)
class NTKOptions:
    """Options of the ``ntk`` diagnostic (see :func:`register_ntk`).

    Parameters
    ----------
    n_probe : int
        Probe batch size: the first ``n_probe`` samples of a seeded permutation of the train
        split (all of them when the split is smaller).
    seed : int
        Seed of the permutations of the train and test splits.
    blocks : {"trace", "full"}
        Trace NTK (default) or full ``O × O`` output blocks (memory ``(N·O)²`` floats).
    top_k : int
        Eigenvectors counted by ``ntk_label_power_topk``.
    n_eig : int
        Eigenvalues kept in ``kernel_spectrum``.
    n_kernel_train, n_kernel_test : int
        Train and test points of the initial-kernel regression baseline (0 to skip it).
    ridge : float
        Ridge of the baseline relative to the mean diagonal of the train kernel.
    """

    n_probe: int = 256
    seed: int = 0
    blocks: Blocks = "trace"
    top_k: int = 10
    n_eig: int = 64
    n_kernel_train: int = 1024
    n_kernel_test: int = 512
    ridge: float = 1e-6

    def __post_init__(self) -> None:
        if self.blocks not in BLOCKS:
            msg = f"blocks must be one of {list(BLOCKS)}, got {self.blocks!r}."
            raise ValueError(msg)
        for name in ("n_probe", "top_k", "n_eig"):
            if int(getattr(self, name)) < 1:
                msg = f"{name} must be >= 1, got {getattr(self, name)!r}."
                raise ValueError(msg)
        if self.n_kernel_train < 0 or self.n_kernel_test < 0 or not self.ridge >= 0:
            msg = "n_kernel_train, n_kernel_test and ridge must be >= 0."
            raise ValueError(msg)


# -- the registered diagnostic ----------------------------------------------------------------


def ntk_metrics(options: NTKOptions | None = None) -> list[MetricInfo]:
    """The metrics the ``ntk`` diagnostic declares (descriptions, units, sources)."""
    k = (options or NTKOptions()).top_k
    return [
        MetricInfo(
            "ntk_trace",
            "mean diagonal of the (trace) NTK on the probe batch, tr K / N",
            "f²",
            _JACOT,
        ),
        MetricInfo(
            "ntk_trace_share", "layer's share of the NTK trace (layers sum to 1)", "1", _JACOT
        ),
        MetricInfo("ntk_alignment", "kernel-label alignment <K, YYᵀ> / (|K| |YYᵀ|)", "1", _ALIGN),
        MetricInfo(
            "ntk_alignment_centred",
            "centred kernel-label alignment <HKH, HYYᵀH> / (|HKH| |HYYᵀH|)",
            "1",
            _CORTES,
        ),
        MetricInfo(
            "ntk_velocity",
            "kernel velocity 1 - cos(K, K at the previous record) (depends on the cadence)",
            "1",
            _FORT,
        ),
        MetricInfo("ntk_cka_init", "CKA of the NTK with the NTK at init", "1", _CKA),
        MetricInfo(
            "ntk_rel_change", "relative change of the NTK from init |K - K0| / |K0|", "1", _KUMAR
        ),
        MetricInfo(
            "ntk_label_power_topk",
            f"share of centred label power in the top {k} eigenvectors of the centred NTK",
            "1",
            _ORTIZ,
        ),
        MetricInfo(
            "ntk_init_kernel_test_loss",
            "test MSE of (ridgeless) kernel regression with the NTK at init (one-hot targets)",
            "MSE",
            _KUMAR,
        ),
        MetricInfo(
            "ntk_init_kernel_test_acc",
            "test accuracy of kernel regression with the NTK at init",
            "1",
            _KUMAR,
        ),
        MetricInfo(
            "lin_gap",
            "|f - f_lin| / |f - f0| on the probe batch, f_lin the linearization at init",
            "1",
            _LEE,
        ),
        MetricInfo(
            "param_rel_change",
            "relative distance of all parameters from init |θ - θ0| / |θ0|",
            "1",
            _KUMAR,
        ),
    ]


_KERNEL_METRICS = (
    "ntk_trace",
    "ntk_alignment",
    "ntk_alignment_centred",
    "ntk_velocity",
    "ntk_cka_init",
    "ntk_rel_change",
    "ntk_label_power_topk",
)


class _Keys:
    """Names of the diagnostic's entries in ``probe.state`` (prefixed by its name)."""

    def __init__(self, prefix: str) -> None:
        self.idx = f"{prefix}.probe_idx"
        self.k0 = f"{prefix}.init_kernel"
        self.prev = f"{prefix}.prev_kernel"
        self.prev_step = f"{prefix}.prev_step"
        self.reg_loss = f"{prefix}.init_kernel_test_loss"
        self.reg_acc = f"{prefix}.init_kernel_test_acc"
        self.theta0 = f"{prefix}.theta0."


def _task(probe: Probe) -> Task:
    if probe.task is None:
        msg = "The ntk diagnostic needs a task (its probe batch comes from the train split)."
        raise ValueError(msg)
    return probe.task


def _targets(task: Task, y: Tensor) -> Tensor:
    if task.kind == "classification":
        return F.one_hot(y, task.n_outputs).to(torch.float64)
    return y.reshape(len(y), -1).to(torch.float64)


def _setup(probe: Probe, opt: NTKOptions, keys: _Keys) -> None:
    task = _task(probe)
    state = probe.state
    idx = seeded_subset(task.n_train, opt.n_probe, opt.seed)
    state[keys.idx] = idx
    for name, p in probe.model.named_parameters():
        if p.requires_grad:
            state[keys.theta0 + name] = p.detach().clone()
    x = task.x_train[idx]
    try:
        kernel = _total(layer_ntks(probe.model, x, opt.blocks))
    except FloatingPointError:
        kernel = None  # records explain the NaN
    if kernel is not None:
        state[keys.k0] = kernel
    n_tr, n_te = min(opt.n_kernel_train, task.n_train), min(opt.n_kernel_test, task.n_test)
    if n_tr and n_te:
        tr = seeded_subset(task.n_train, n_tr, opt.seed)
        te = seeded_subset(task.n_test, n_te, opt.seed)
        try:
            engine = NTKEngine(probe.model, task.x_train[tr], "trace", warn=False)
            k_tr, k_te = train_test_kernels(engine, task.x_train[tr], task.x_test[te])
        except FloatingPointError:
            return
        y_tr, y_te = _targets(task, task.y_train[tr]), _targets(task, task.y_test[te])
        pred = kernel_regression(k_tr, k_te, y_tr, opt.ridge)
        state[keys.reg_loss] = (pred - y_te).square().mean().reshape(())
        if task.kind == "classification":
            acc = accuracy(pred, task.y_test[te])
            state[keys.reg_acc] = torch.tensor(acc, dtype=torch.float64)


def _total(kernels: dict[str, Tensor]) -> Tensor:
    values = [k.to(torch.float64) for k in kernels.values()]
    if not values:
        msg = "No trainable parameter is used in the model's forward pass."
        raise ValueError(msg)
    return sum(values[1:], values[0])


def _mean_trace(k: Tensor) -> float:
    n = k.shape[0]
    if k.ndim == 2:
        return float(torch.diagonal(k).sum()) / n
    return float(torch.diagonal(torch.diagonal(k, dim1=0, dim2=1), dim1=0, dim2=1).sum()) / n


def _nan_all(probe: Probe, out: dict[str, Any], names: tuple[str, ...], reason: str) -> None:
    for name in names:
        out[name] = probe.nan(name, reason)


def _laziness(probe: Probe, x: Tensor, keys: _Keys) -> dict[str, float]:
    params0 = {
        name[len(keys.theta0) :]: t
        for name, t in probe.state.items()
        if name.startswith(keys.theta0)
    }
    current = {n: p for n, p in probe.model.named_parameters() if p.requires_grad}
    if not params0 or set(params0) != set(current):
        reason = "initial parameters unknown or the model's parameters changed since setup"
        return {
            "lin_gap": probe.nan("lin_gap", reason),
            "param_rel_change": probe.nan("param_rel_change", reason),
        }
    out: dict[str, float] = {}
    with torch.no_grad():
        diff_sq = sum(float((current[n].detach() - p0).square().sum()) for n, p0 in params0.items())
        init_sq = sum(float(p0.square().sum()) for p0 in params0.values())
    out["param_rel_change"] = (
        math.sqrt(diff_sq / init_sq)
        if init_sq > 0
        else probe.nan("param_rel_change", "all initial parameters are zero")
    )
    f, f0, f_lin = linearized_outputs(probe.model, params0, x)
    moved = float(torch.linalg.vector_norm((f - f0).to(torch.float64)))
    gap = float(torch.linalg.vector_norm((f - f_lin).to(torch.float64)))
    if not (math.isfinite(moved) and math.isfinite(gap)):
        out["lin_gap"] = probe.nan(
            "lin_gap", "non-finite outputs of the model or its linearization"
        )
    elif moved == 0.0:
        out["lin_gap"] = probe.nan("lin_gap", "the outputs have not moved from init (f = f0)")
    else:
        out["lin_gap"] = gap / moved
    return out


def _baseline(probe: Probe, task: Task, keys: _Keys) -> dict[str, float]:
    out: dict[str, float] = {}
    names = {"ntk_init_kernel_test_loss": keys.reg_loss}
    if task.kind == "classification":
        names["ntk_init_kernel_test_acc"] = keys.reg_acc
    why = "initial-kernel regression not computed (no test points, or non-finite kernel at init)"
    for name, key in names.items():
        value = probe.state.get(key)
        out[name] = float(value) if value is not None else probe.nan(name, why)
    return out


def _per_layer(
    probe: Probe, kernels: dict[str, Tensor], kernel: Tensor, labels: Tensor | None, why: str
) -> dict[str, dict[str, float]]:
    total = _mean_trace(kernel)
    traces: dict[str, float] = {MODEL_LAYER: total}
    shares: dict[str, float] = {}
    align: dict[str, float] = {}
    align_c: dict[str, float] = {}
    zero = "the kernel or the (centred) labels are zero on the probe batch"
    for layer, k in [*kernels.items(), (MODEL_LAYER, kernel)]:
        if layer != MODEL_LAYER:
            traces[layer] = _mean_trace(k)
            shares[layer] = (
                traces[layer] / total
                if total
                else probe.nan("ntk_trace_share", "the NTK trace is zero", layer)
            )
        for name, centred, store in (
            ("ntk_alignment", False, align),
            ("ntk_alignment_centred", True, align_c),
        ):
            value = math.nan if labels is None else kernel_alignment(k, labels, centred)
            store[layer] = (
                value
                if math.isfinite(value)
                else probe.nan(name, why if labels is None else zero, layer)
            )
    return {
        "ntk_trace": traces,
        "ntk_trace_share": shares,
        "ntk_alignment": align,
        "ntk_alignment_centred": align_c,
    }


def _movement(probe: Probe, kernel: Tensor, keys: _Keys) -> dict[str, float]:
    state = probe.state
    out: dict[str, float] = {}
    k0 = state.get(keys.k0)
    if k0 is None or k0.shape != kernel.shape:
        why = "no NTK at init (non-finite at setup, or the probe batch or blocks changed)"
        out["ntk_cka_init"] = probe.nan("ntk_cka_init", why)
        out["ntk_rel_change"] = probe.nan("ntk_rel_change", why)
    else:
        cka = kernel_cka(kernel, k0)
        out["ntk_cka_init"] = (
            cka if math.isfinite(cka) else probe.nan("ntk_cka_init", "a centred kernel is zero")
        )
        n0 = float(torch.linalg.vector_norm(k0))
        out["ntk_rel_change"] = (
            float(torch.linalg.vector_norm(kernel - k0)) / n0
            if n0
            else probe.nan("ntk_rel_change", "the NTK at init is zero")
        )
    prev, prev_step = state.get(keys.prev), state.get(keys.prev_step)
    if prev is None or prev_step is None:
        out["ntk_velocity"] = probe.nan("ntk_velocity", "first record: no previous kernel")
    elif int(prev_step) >= probe.step or prev.shape != kernel.shape:
        out["ntk_velocity"] = probe.nan(
            "ntk_velocity", "no earlier record with a comparable kernel"
        )
    else:
        v = kernel_velocity(kernel, prev)
        out["ntk_velocity"] = (
            v if math.isfinite(v) else probe.nan("ntk_velocity", "a kernel is zero")
        )
    if prev_step is None or int(prev_step) < probe.step:
        state[keys.prev] = kernel.clone()
        state[keys.prev_step] = torch.tensor(probe.step, dtype=torch.int64)
    return out


def _record(probe: Probe, opt: NTKOptions, keys: _Keys) -> dict[str, Any]:
    task = _task(probe)
    if keys.idx not in probe.state:  # e.g. the diagnostic was added when resuming a run
        _setup(probe, opt, keys)
    idx = probe.state[keys.idx]
    x, y = task.x_train[idx], task.y_train[idx]
    out: dict[str, Any] = {**_laziness(probe, x, keys), **_baseline(probe, task, keys)}
    try:
        kernels = {
            k: v.to(torch.float64) for k, v in layer_ntks(probe.model, x, opt.blocks).items()
        }
    except FloatingPointError as err:
        for name in _KERNEL_METRICS:
            out[name] = probe.nan(name, str(err))
        return out
    kernel = _total(kernels)
    probe.cache["ntk"] = {"kernel": kernel, "layers": kernels, "probe_idx": idx}
    labels: Tensor | None = _targets(task, y)
    why = ""
    if kernel.ndim == 4 and labels is not None and labels.shape[1] != kernel.shape[2]:
        why = f"full blocks: the model has {kernel.shape[2]} outputs, the task {task.n_outputs}"
        labels = None
    out.update(_per_layer(probe, kernels, kernel, labels, why))
    out.update(_movement(probe, kernel, keys))
    power = math.nan if labels is None else label_power_topk(kernel, labels, opt.top_k)
    out["ntk_label_power_topk"] = (
        power
        if math.isfinite(power)
        else probe.nan(
            "ntk_label_power_topk",
            why or "the centred labels are zero (one class in the probe batch)",
        )
    )
    km = as_matrix(kernel)
    evals = torch.linalg.eigvalsh(0.5 * (km + km.T)).flip(0)[: opt.n_eig]
    out["kernel_spectrum"] = {MODEL_LAYER: evals.numpy().astype(np.float64)}
    return out


def register_ntk(
    name: str = "ntk", options: NTKOptions | None = None, *, replace: bool = False
) -> None:
    """Register the kernel diagnostic under ``name`` with ``options``.

    The built-in ``ntk`` uses the default :class:`NTKOptions`; register a variant for other
    settings, e.g. ``register_ntk("ntk_full", NTKOptions(blocks="full", n_probe=64))``. Its
    state lives under ``f"{name}."`` in ``probe.state``.

    Parameters
    ----------
    name : str
        Diagnostic name for ``Monitor(diagnostics=[...])``.
    options : NTKOptions, optional
        Probe batch, blocks, spectrum size and baseline settings.
    replace : bool
        Replace an existing registration of ``name``.
    """
    opt = options or NTKOptions()
    keys = _Keys(name)

    def setup(probe: Probe) -> None:
        _setup(probe, opt, keys)

    def ntk(probe: Probe) -> dict[str, Any]:
        """Empirical NTK on the probe batch: alignment, velocity, CKA, spectrum, laziness."""
        return _record(probe, opt, keys)

    register(
        name,
        metrics=ntk_metrics(opt),
        arrays={"kernel_spectrum": "kernel_eig"},
        setup=setup,
        cadence=MECHANISM_CADENCE,
        replace=replace,
    )(ntk)


register_ntk("ntk")
