r"""Information geometry of the training path: Fisher step length, path length, straightness.

Registered as ``infogeo``. Manning-Coe et al. [1]_ follow training in the geometry the Fisher
information puts on parameter space: with consecutive parameter vectors :math:`\theta_e` and
the step :math:`s_e = \theta_{e+1} - \theta_e`, the Fisher step length and the straightness of
consecutive steps are

.. math::

    \ell_e = \sqrt{s_e^\top F s_e}, \qquad
    S_e = \frac{s_{e-1}^\top F\, s_e}{\sqrt{(s_{e-1}^\top F s_{e-1})(s_e^\top F s_e)}},

with :math:`F` the diagonal Fisher (their code: at the step's start for :math:`\ell`, at the
point the two steps share for :math:`S`). :math:`S = 1` on a straight path, :math:`S = \cos\phi`
when the path turns by the angle :math:`\phi` in the Fisher metric; they find grokking follows a
straight path in information space. Here :math:`e` runs over *records*: at a record
:math:`t` with previous records :math:`t-1, t-2`, :math:`s = \theta_t - \theta_{t-1}`,
:math:`s' = \theta_{t-1} - \theta_{t-2}` and :math:`F = F(\theta_{t-1})`, the Fisher computed at
the previous record (kept in ``probe.state``) — the paper's choice for both. Values therefore
depend on the recording cadence, as any between-record quantity does.

Also recorded: the Euclidean counterparts (the paper's comparison), the Fisher path length
:math:`\sum_e \ell_e` since the first record, and how far the model's *predictive
distribution* moved between records on fixed rows (up to 2,048 test rows), averaged as a
root mean square over rows (the geodesic distance on the product of the rows' manifolds,
divided by :math:`\sqrt n`):

.. math::

    d_{FR} = \Big(\frac1n \sum_n d_{FR}(p_n, q_n)^2\Big)^{1/2}, \qquad
    d_H = \Big(\frac1n \sum_n H(p_n, q_n)^2\Big)^{1/2}.

Categorical (softmax) predictions: the Fisher–Rao distance
:math:`d_{FR}(p, q) = 2\arccos\sum_c\sqrt{p_c q_c} = 4\arcsin(\|\sqrt p - \sqrt q\|/2)` (the
second form is the one computed, exact and stable for small steps) and the Hellinger distance
:math:`H(p, q) = \|\sqrt p - \sqrt q\|/\sqrt 2 \in [0, 1]` (Amari [2]_). Gaussian predictions
:math:`\mathcal N(\mu, I)` (regression, MSE-trained classifiers): :math:`d_{FR} = \|\mu - \mu'\|`
and :math:`H^2 = 1 - \exp(-\|\mu - \mu'\|^2/8)`. To second order :math:`d_{FR}^2` is the
quadratic form of the full Fisher of the fixed rows, so for a step that moves one parameter
:math:`\ell` and :math:`d_{FR}` agree when both are taken on the same rows (tested).

The Fisher is that of :mod:`~grokwidgets.diagnostics._fisher` (default: true Fisher, one label
drawn from the model per row, up to 2,048 train rows); the ``compress`` diagnostic shares it
within a record when both use the same options.

References
----------
.. [1] Manning-Coe, Gliozzi, Stapleton, Hirst, De Tomasi, Bradlyn & Berman (2025), "Grokking
   vs. learning: same features, different encodings", arXiv:2502.01739.
.. [2] Amari (2016), *Information Geometry and Its Applications*, Springer (Fisher–Rao metric
   on the simplex; Hellinger distance).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from grokwidgets._names import MODEL_LAYER
from grokwidgets.diagnostics._fisher import (
    FisherOptions,
    Likelihood,
    flat,
    param_names,
    predictive,
    probe_fisher,
    resolve_likelihood,
)
from grokwidgets.diagnostics._shared import seeded_subset
from grokwidgets.diagnostics.probe import Probe
from grokwidgets.diagnostics.registry import MetricInfo, register

__all__ = [
    "FisherOptions",
    "InfoGeoOptions",
    "fisher_rao_distance",
    "fisher_step_length",
    "fisher_straightness",
    "hellinger_distance",
    "output_distance",
    "register_infogeo",
]

_MANNING = "Manning-Coe et al. (2025) Grokking vs. learning, arXiv:2502.01739"
_AMARI = "Amari (2016) Information Geometry and Its Applications"


# -- the formulas ------------------------------------------------------------------------------


def _vectors(*xs: Tensor) -> list[Tensor]:
    out = [torch.as_tensor(x).detach().to(torch.float64).reshape(-1) for x in xs]
    if any(v.shape != out[0].shape for v in out):
        msg = f"Step and Fisher vectors must have the same size, got {[v.numel() for v in out]}."
        raise ValueError(msg)
    return out


def fisher_step_length(step: Tensor, fisher: Tensor) -> float:
    r"""Length of a parameter step in the diagonal Fisher metric, :math:`\sqrt{s^\top F s}`.

    Parameters
    ----------
    step : Tensor
        :math:`s`, any shape (flattened).
    fisher : Tensor
        The diagonal of :math:`F`, same size, non-negative.

    References
    ----------
    .. [1] Manning-Coe et al. (2025), arXiv:2502.01739.
    """
    s, f = _vectors(step, fisher)
    return math.sqrt(max(float((f * s * s).sum()), 0.0))


def fisher_straightness(prev_step: Tensor, step: Tensor, fisher: Tensor) -> float:
    r"""Cosine of consecutive steps in the diagonal Fisher metric.

    .. math:: S = \frac{s'^\top F s}{\sqrt{(s'^\top F s')(s^\top F s)}}

    1 for a straight path, :math:`\cos\phi` for a turn by :math:`\phi` (in the Fisher metric);
    NaN when either step has zero Fisher length.

    References
    ----------
    .. [1] Manning-Coe et al. (2025), arXiv:2502.01739.
    """
    a, b, f = _vectors(prev_step, step, fisher)
    den = math.sqrt(max(float((f * a * a).sum()), 0.0) * max(float((f * b * b).sum()), 0.0))
    return float((f * a * b).sum()) / den if den > 0 else math.nan


def _check_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    a64, b64 = a.detach().to(torch.float64), b.detach().to(torch.float64)
    if a64.shape != b64.shape or a64.ndim != 2:
        msg = (
            f"Need two (rows, outputs) arrays of one shape, got {tuple(a.shape)}, {tuple(b.shape)}."
        )
        raise ValueError(msg)
    return a64, b64


def fisher_rao_distance(a: Tensor, b: Tensor, likelihood: Likelihood = "categorical") -> Tensor:
    r"""Fisher–Rao distance between two predictive distributions, per row.

    Categorical (``a``, ``b`` probabilities): :math:`4\arcsin(\|\sqrt a - \sqrt b\|/2)
    = 2\arccos\sum_c\sqrt{a_c b_c}`. Gaussian :math:`\mathcal N(\cdot, I)` (``a``, ``b`` means):
    :math:`\|a - b\|`.

    References
    ----------
    .. [1] Amari (2016), *Information Geometry and Its Applications*, Springer.
    """
    a64, b64 = _check_pair(a, b)
    if likelihood == "gaussian":
        return torch.linalg.vector_norm(a64 - b64, dim=1)
    chord = torch.linalg.vector_norm(a64.clamp_min(0).sqrt() - b64.clamp_min(0).sqrt(), dim=1)
    return 4.0 * torch.asin((chord / 2.0).clamp(max=1.0))


def hellinger_distance(a: Tensor, b: Tensor, likelihood: Likelihood = "categorical") -> Tensor:
    r"""Hellinger distance :math:`H \in [0, 1]` between two predictive distributions, per row.

    Categorical: :math:`H = \|\sqrt a - \sqrt b\|/\sqrt 2`, i.e.
    :math:`H^2 = 1 - \sum_c \sqrt{a_c b_c}`. Gaussian :math:`\mathcal N(\cdot, I)`:
    :math:`H^2 = 1 - \exp(-\|a - b\|^2/8)`.

    References
    ----------
    .. [1] Amari (2016), *Information Geometry and Its Applications*, Springer.
    """
    a64, b64 = _check_pair(a, b)
    if likelihood == "gaussian":
        sq = (a64 - b64).square().sum(dim=1)
        return (-torch.expm1(-sq / 8.0)).clamp_min(0).sqrt()
    chord = torch.linalg.vector_norm(a64.clamp_min(0).sqrt() - b64.clamp_min(0).sqrt(), dim=1)
    return chord / math.sqrt(2.0)


def output_distance(
    a: Tensor, b: Tensor, likelihood: Likelihood = "categorical"
) -> tuple[float, float]:
    """Root-mean-square Fisher–Rao and Hellinger distances over rows (module docstring)."""
    fr = fisher_rao_distance(a, b, likelihood)
    h = hellinger_distance(a, b, likelihood)
    return math.sqrt(float(fr.square().mean())), math.sqrt(float(h.square().mean()))


# -- the registered diagnostic -----------------------------------------------------------------


@dataclass(frozen=True)
class InfoGeoOptions:
    """Options of the ``infogeo`` diagnostic (see :func:`register_infogeo`).

    Parameters
    ----------
    fisher : FisherOptions
        Which Fisher, on which rows (default: true Fisher, one sampled label per row, up to
        2,048 train rows).
    output_split : {"test", "train"}
        Rows whose predictive distributions are compared between records.
    n_output_rows : int
        At most this many of them (a seeded permutation's first).
    seed : int
        Seed of that permutation.
    """

    fisher: FisherOptions = field(default_factory=FisherOptions)
    output_split: Literal["train", "test"] = "test"
    n_output_rows: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        if self.output_split not in ("train", "test"):
            msg = f"output_split must be 'train' or 'test', got {self.output_split!r}."
            raise ValueError(msg)
        if self.n_output_rows < 1:
            msg = f"n_output_rows must be >= 1, got {self.n_output_rows}."
            raise ValueError(msg)


def infogeo_metrics() -> list[MetricInfo]:
    """The metrics the ``infogeo`` diagnostic declares."""
    return [
        MetricInfo(
            "fisher_step_length",
            "Fisher length sqrt(sᵀ F s) of the step since the previous record, F the diagonal "
            "Fisher there (layers: their own parameters)",
            "nats^½",
            _MANNING,
        ),
        MetricInfo(
            "fisher_path_length",
            "sum of Fisher step lengths since the first record",
            "nats^½",
            _MANNING,
        ),
        MetricInfo(
            "fisher_straightness",
            "s'ᵀF s / sqrt((s'ᵀF s')(sᵀF s)) of the last two steps (1: straight path)",
            "1",
            _MANNING,
        ),
        MetricInfo(
            "param_step_length",
            "Euclidean length of the step since the previous record",
            "1",
            _MANNING,
        ),
        MetricInfo(
            "param_step_cosine",
            "Euclidean cosine between the last two steps",
            "1",
            _MANNING,
        ),
        MetricInfo(
            "output_fisher_rao_step",
            "RMS over the fixed rows of the Fisher-Rao distance between the predictive "
            "distributions at this and the previous record",
            "1",
            _AMARI,
        ),
        MetricInfo(
            "output_hellinger_step",
            "RMS over the fixed rows of the Hellinger distance between the predictive "
            "distributions at this and the previous record",
            "1",
            _AMARI,
        ),
        MetricInfo(
            "output_path_length",
            "sum of output_fisher_rao_step since the first record",
            "1",
            _AMARI,
        ),
    ]


_LAYERED = ("fisher_step_length", "fisher_straightness", "param_step_length", "param_step_cosine")
_SCALARS = (
    "fisher_path_length",
    "output_fisher_rao_step",
    "output_hellinger_step",
    "output_path_length",
)


class _Keys:
    """Names of the diagnostic's entries in ``probe.state`` (prefixed by its name)."""

    def __init__(self, prefix: str) -> None:
        self.step = f"{prefix}.prev_step"
        self.theta = f"{prefix}.prev_theta"
        self.delta = f"{prefix}.prev_delta"
        self.fisher = f"{prefix}.prev_fisher"
        self.pred = f"{prefix}.prev_predictive"
        self.path = f"{prefix}.fisher_path_length"
        self.out_path = f"{prefix}.output_path_length"


def _slices(model: nn.Module, layers: dict[str, nn.Module], names: list[str]) -> dict[str, Tensor]:
    """Indices into the flat parameter vector of each layer's own parameters."""
    offsets: dict[str, tuple[int, int]] = {}
    start = 0
    params = dict(model.named_parameters())
    for n in names:
        offsets[n] = (start, start + params[n].numel())
        start += params[n].numel()
    out: dict[str, Tensor] = {}
    for path, module in layers.items():
        idx = [
            torch.arange(*offsets[f"{path}.{pn}"])
            for pn, _ in module.named_parameters(recurse=False)
            if f"{path}.{pn}" in offsets
        ]
        if idx:
            out[path] = torch.cat(idx)
    return out


def _steps(
    probe: Probe,
    s: Tensor,
    prev: Tensor | None,
    fisher: Tensor | None,
    why_fisher: str,
    parts: dict[str, Tensor],
    out: dict[str, dict[str, float]],
) -> None:
    """Fisher and Euclidean step lengths and straightness, per layer and for the model."""
    for layer, idx in [*parts.items(), (MODEL_LAYER, None)]:
        si = s if idx is None else s[idx]
        pi = None if prev is None else (prev if idx is None else prev[idx])
        fi = None if fisher is None else (fisher if idx is None else fisher[idx])
        norm = float(torch.linalg.vector_norm(si))
        out["param_step_length"][layer] = norm
        if fi is None:
            out["fisher_step_length"][layer] = probe.nan("fisher_step_length", why_fisher, layer)
        else:
            out["fisher_step_length"][layer] = fisher_step_length(si, fi)
        if pi is None:
            why = "needs two steps: fewer than three records so far"
            for m in ("param_step_cosine", "fisher_straightness"):
                out[m][layer] = probe.nan(m, why, layer)
            continue
        pnorm = float(torch.linalg.vector_norm(pi))
        out["param_step_cosine"][layer] = (
            float((pi * si).sum()) / (pnorm * norm)
            if pnorm * norm > 0
            else probe.nan(
                "param_step_cosine", "a step is zero (the parameters did not move)", layer
            )
        )
        if fi is None:
            out["fisher_straightness"][layer] = probe.nan("fisher_straightness", why_fisher, layer)
            continue
        value = fisher_straightness(pi, si, fi)
        out["fisher_straightness"][layer] = (
            value
            if math.isfinite(value)
            else probe.nan("fisher_straightness", "a step has zero Fisher length", layer)
        )


def _f64(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.to(torch.float64)


def _state_dtype(model: nn.Module) -> torch.dtype:
    dtype = torch.float32
    for p in model.parameters():
        if p.is_floating_point():
            dtype = torch.promote_types(dtype, p.dtype)
    return dtype


def _record(probe: Probe, opt: InfoGeoOptions, keys: _Keys) -> dict[str, Any]:
    task = probe.task
    if task is None:
        msg = "The infogeo diagnostic needs a task: pass one to Monitor(model, task)."
        raise ValueError(msg)
    state = probe.state
    model = probe.model
    names = param_names(model)
    theta = flat(dict(model.named_parameters()), names)
    likelihood = resolve_likelihood(probe, opt.fisher)
    parts = _slices(model, probe.layers, names)
    prev_step = state.get(keys.step)
    if prev_step is not None and int(prev_step) >= probe.step:
        why = "no earlier record to compare with (a second record at the same step)"
        layered = {m: {k: probe.nan(m, why, k) for k in [*parts, MODEL_LAYER]} for m in _LAYERED}
        return {**layered, **{m: probe.nan(m, why) for m in _SCALARS}}

    fisher: Tensor | None = None  # F at this record, used at the next one
    try:
        fisher = flat(probe_fisher(probe, opt.fisher), names)
    except FloatingPointError:
        fisher = None

    pred: Tensor | None = None
    x_all, _ = probe.data(opt.output_split)
    if len(x_all):
        rows = seeded_subset(len(x_all), opt.n_output_rows, opt.seed)
        pred = predictive(probe.outputs(opt.output_split)[rows], likelihood)
        if not bool(torch.isfinite(pred).all()):
            pred = None

    out: dict[str, Any] = {m: {} for m in _LAYERED}
    prev_theta = state.get(keys.theta)
    first = prev_theta is None or prev_theta.shape != theta.shape
    path = float(state[keys.path]) if keys.path in state and not first else 0.0
    out_path = float(state[keys.out_path]) if keys.out_path in state and not first else 0.0
    delta: Tensor | None = None
    if first:
        why = (
            "first record: no previous parameters"
            if prev_theta is None
            else "the parameters changed shape since the previous record"
        )
        for m in _LAYERED:
            out[m] = {layer: probe.nan(m, why, layer) for layer in [*parts, MODEL_LAYER]}
        out["output_fisher_rao_step"] = probe.nan("output_fisher_rao_step", why)
        out["output_hellinger_step"] = probe.nan("output_hellinger_step", why)
    else:
        assert prev_theta is not None
        delta = theta - prev_theta.to(torch.float64)
        prev_delta = _f64(state.get(keys.delta))
        if prev_delta is not None and prev_delta.shape != delta.shape:
            prev_delta = None
        prev_fisher = _f64(state.get(keys.fisher))
        if prev_fisher is not None and prev_fisher.shape != delta.shape:
            prev_fisher = None
        why_fisher = "no Fisher at the previous record (its outputs were not finite)"
        if bool(torch.isfinite(delta).all()):
            _steps(probe, delta, prev_delta, prev_fisher, why_fisher, parts, out)
        else:
            why = "non-finite parameters at this or the previous record"
            for m in _LAYERED:
                out[m] = {layer: probe.nan(m, why, layer) for layer in [*parts, MODEL_LAYER]}
        step_len = out["fisher_step_length"][MODEL_LAYER]
        if math.isfinite(step_len):
            path += step_len
        prev_pred = _f64(state.get(keys.pred))
        if pred is None or prev_pred is None or prev_pred.shape != pred.shape:
            why = (
                f"no predictions on the {opt.output_split} rows at this or the previous record "
                "(empty split or non-finite outputs)"
            )
            out["output_fisher_rao_step"] = probe.nan("output_fisher_rao_step", why)
            out["output_hellinger_step"] = probe.nan("output_hellinger_step", why)
        else:
            fr, hel = output_distance(prev_pred, pred, likelihood)
            out["output_fisher_rao_step"] = fr
            out["output_hellinger_step"] = hel
            out_path += fr
    out["fisher_path_length"] = path
    out["output_path_length"] = out_path

    # Kept in the parameters' precision (exact for θ; a float32 model's checkpoint grows by
    # ~3 parameter copies, not 6); this record and a resumed run both read the stored values.
    store = _state_dtype(model)
    state[keys.step] = torch.tensor(probe.step, dtype=torch.int64)
    state[keys.path] = torch.tensor(path, dtype=torch.float64)
    state[keys.out_path] = torch.tensor(out_path, dtype=torch.float64)
    for key, value in (
        (keys.theta, theta),
        (keys.delta, delta),
        (keys.fisher, fisher),
        (keys.pred, pred),
    ):
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value.to(store).contiguous()
    return out


def register_infogeo(
    name: str = "infogeo",
    options: InfoGeoOptions | None = None,
    *,
    replace: bool = False,
    prefix: str = "",
) -> None:
    """Register the information-geometry diagnostic under ``name`` with ``options``.

    The built-in ``infogeo`` uses the default :class:`InfoGeoOptions`. Its state (the previous
    record's parameters, step, Fisher and predictions, and the path lengths) lives under
    ``f"{name}."`` in ``probe.state``, saved in checkpoints, so a resumed run records what the
    uninterrupted one does.

    Parameters
    ----------
    name : str
        Diagnostic name for ``Monitor(diagnostics=[...])``.
    options : InfoGeoOptions, optional
    replace : bool
        Replace an existing registration of ``name``.
    prefix : str
        Prepended to the metric names, to record a variant beside ``infogeo`` itself, e.g.
        the Gauss-Newton Fisher of Manning-Coe et al. on test rows::

            register_infogeo("infogeo_gn", InfoGeoOptions(fisher=FisherOptions(
                likelihood="gaussian", exact=True, split="test", n_rows=512)), prefix="gn_")
    """
    opt = options or InfoGeoOptions()
    keys = _Keys(name)

    def infogeo(probe: Probe) -> dict[str, Any]:
        """Fisher step length, path length and straightness; output-distribution distance."""
        return _record(probe, opt, keys)

    register(name, metrics=infogeo_metrics(), replace=replace, prefix=prefix)(infogeo)


register_infogeo("infogeo")
