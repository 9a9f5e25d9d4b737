r"""An online phase detector that needs no test data: a metric each record and a callback.

Offline, :func:`~grokwidgets.diagnostics.phases.label_phases` reads the phase off the test
curve. During training the test curve may not exist (or may be what one wants to predict), so
this detector reads only what the train split and the weights say, record by record, from the
other families' metrics of the *same* record when they are recorded (the Monitor runs it after
them) and falls back gracefully when they are not:

=======================  ======================================  ========================
signal                   read from (layer ``model`` unless       without it
                         said)
=======================  ======================================  ========================
train fit                ``train_acc`` ≥ 0.99 (kept down to      computed from the train
                         0.94), or ``train_loss`` ≤ 0.01 × its   split by the detector
                         first value (regression)                itself
representation frozen    kernel angular speed (below) under 10%  weight speed, the change
                         of its peak so far                      of ``rel_change`` per
                                                                 step; else NaN
feature-learning onset   after the fit: kernel speed ≥ 2 × its   NaN (not determined)
                         minimum since the fit, or the best
                         layer's ``probe_test_acc`` 0.05 above
                         its value at the fit
α < 2                    ``htsr_alpha`` of any layer < 2         NaN
correlation traps        ``htsr_num_traps`` of the layers with   NaN
                         an α fit (≥ 20 eigenvalues), summed,
                         ≥ its count at the fit + 2 (the model
                         total when no layer has a fit)
collapse warning         train fit and (α < 2 or traps)          NaN if neither is there
=======================  ======================================  ========================

The kernel angular speed turns the kernel velocity :math:`v = 1 - \cos(K_t, K_{t'})` of the
``ntk`` family (Fort et al. [1]_) into a rate per step independent of the cadence,
:math:`\omega = \arccos(1 - v) / (t - t')` (the angle between consecutive kernels per step);
give the detector the same cadence as ``ntk`` (it costs microseconds) so that :math:`t'` is
the kernel's previous record. The frozen / onset reading follows Kumar et al. [2]_: grokking
is the late departure from a lazy (kernel) fit. The warning signs of collapse are those of
Prakash & Martin [3]_ (seed 003): a layer with α < 2 and correlation traps. ``probe_test_acc``
is a linear probe's accuracy on the *test* split (seed 000): used when recorded, never needed.

Metrics (layer ``"model"``), recorded by the ``phase_detector`` diagnostic:

- ``phase_code``: 0 undetermined (fewer than ``min_records`` records, or the train split not
  fit), 1 memorization (train fit, no onset yet), 2 grokking (feature learning seen after the
  fit). Codes follow :data:`~grokwidgets.diagnostics.phases.PHASES`; 3 (generalized) and 4
  (anti-grokking) need the test curve and are never emitted online.
- ``phase_train_fit``, ``phase_frozen``, ``phase_onset``, ``phase_alpha_low``,
  ``phase_traps``, ``phase_collapse_warning``: 1 or 0 (NaN when the signal is not available,
  with the reason in ``ds.attrs["nan_reasons"]``). The onset is latched: once seen it stays 1.
- ``phase_kernel_speed``: ω at this record (NaN without a new kernel velocity).

The state (a few numbers) lives in ``probe.state`` and is saved with checkpoints, so a resumed
run continues exactly. :class:`~grokwidgets.monitor.watcher.PhaseWatcher` turns the flags'
rising edges into events that the loop can act on: call back (a widget, a notebook cell),
checkpoint, or request a stop.

References
----------
.. [1] Fort, Dziugaite, Paul, Kharaghani, Roy & Ganguli (2020), "Deep learning versus kernel
   learning", NeurIPS 2020, arXiv:2010.15110.
.. [2] Kumar, Bordelon, Gershman & Pehlevan (2024), "Grokking as the transition from lazy to
   rich training dynamics", ICLR 2024, arXiv:2310.06110.
.. [3] Prakash & Martin (2025), "Grokking and generalization collapse: insights from HTSR
   theory", arXiv:2506.04434.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
import xarray as xr

from grokwidgets._names import MODEL_LAYER
from grokwidgets.diagnostics.phases import PHASES
from grokwidgets.diagnostics.probe import RECORD_VALUES, Probe
from grokwidgets.diagnostics.registry import MECHANISM_CADENCE, MetricInfo, register

__all__ = [
    "EVENTS",
    "OUTPUT_METRICS",
    "DetectorOutput",
    "DetectorRules",
    "PhaseDetector",
    "MESSAGES",
    "replay",
]

STATE_KEY = "phase_detector.state"

_FORT = "Fort et al. (2020), arXiv:2010.15110"
_KUMAR = "Kumar, Bordelon, Gershman & Pehlevan (2024), arXiv:2310.06110"
_PRAKASH = "Prakash & Martin (2025), arXiv:2506.04434"
_POWER = "Power et al. (2022), arXiv:2201.02177"

Values = Mapping[tuple[str, str], float]

#: The metrics the detector records, in order.
OUTPUT_METRICS = (
    "phase_code",
    "phase_train_fit",
    "phase_frozen",
    "phase_onset",
    "phase_alpha_low",
    "phase_traps",
    "phase_collapse_warning",
    "phase_kernel_speed",
)


@dataclass(frozen=True)
class DetectorRules:
    """Thresholds of the online detector (see the module docstring).

    Parameters
    ----------
    min_records : int
        Records before any phase is decided (``phase_code`` 0 until then).
    train_threshold, train_slack : float
        The train split counts as fit at train accuracy ≥ ``train_threshold`` and stays fit
        until it falls below ``train_threshold - train_slack`` (minibatch noise).
    loss_ratio, loss_slack : float
        Without accuracy (regression): fit at ``train_loss <= loss_ratio ×`` its first value,
        lost above ``loss_slack`` times that level.
    frozen_share : float
        Frozen when the speed is below this share of its peak so far.
    onset_factor : float
        Onset when the kernel speed reaches this multiple of its minimum since the fit.
    probe_gain : float
        Onset when the best layer's ``probe_test_acc`` gains this much since the fit.
    alpha_low : float
        A layer with ``htsr_alpha`` below this raises ``phase_alpha_low``.
    trap_rise : float
        ``phase_traps`` when ``htsr_num_traps`` (model total) is at least this much above its
        count when the train split was fit (before the fit: its first recorded count).
    """

    min_records: int = 3
    train_threshold: float = 0.99
    train_slack: float = 0.05
    loss_ratio: float = 0.01
    loss_slack: float = 3.0
    frozen_share: float = 0.1
    onset_factor: float = 2.0
    probe_gain: float = 0.05
    alpha_low: float = 2.0
    trap_rise: float = 2.0

    def __post_init__(self) -> None:
        if self.min_records < 1:
            msg = f"min_records must be >= 1, got {self.min_records}."
            raise ValueError(msg)
        if not 0.0 < self.frozen_share < 1.0 or not self.onset_factor > 1.0:
            msg = "Need 0 < frozen_share < 1 and onset_factor > 1."
            raise ValueError(msg)
        if not 0.0 < self.loss_ratio < 1.0:
            msg = f"loss_ratio must be strictly between 0 and 1, got {self.loss_ratio}."
            raise ValueError(msg)
        if self.train_slack < 0 or self.loss_slack < 1:
            msg = "Need train_slack >= 0 and loss_slack >= 1."
            raise ValueError(msg)
        if not (self.probe_gain > 0 and self.trap_rise > 0):
            msg = "probe_gain and trap_rise must be > 0."
            raise ValueError(msg)


@dataclass
class _State:
    """What the detector remembers between records (all floats, NaN = not yet known)."""

    n: float = 0.0
    first_train_loss: float = math.nan
    fit: float = 0.0
    kernel_step: float = math.nan  # step of the previous kernel record
    peak_speed: float = math.nan
    min_speed_fit: float = math.nan  # minimum kernel speed since the fit
    n_speed_fit: float = 0.0
    rel_change: float = math.nan  # previous weight distance, for the weight speed
    rel_step: float = math.nan
    peak_weight_speed: float = math.nan
    probe_fit: float = math.nan  # best probe accuracy at the fit
    onset: float = 0.0
    traps_base: float = math.nan

    def to_tensor(self) -> torch.Tensor:
        return torch.from_numpy(np.fromiter(self.__dict__.values(), np.float64, len(_FIELDS)))

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> _State:
        values = t.to(torch.float64).tolist()
        if len(values) != len(_FIELDS):
            msg = f"Detector state has {len(values)} numbers, expected {len(_FIELDS)}."
            raise ValueError(msg)
        return cls(*values)


_FIELDS = tuple(f.name for f in fields(_State))


@dataclass(frozen=True)
class DetectorOutput:
    """The detector's reading at one record (flags are 1.0, 0.0 or NaN)."""

    step: int
    phase_code: int
    train_fit: float
    frozen: float
    onset: float
    alpha_low: float
    traps: float
    collapse_warning: float
    kernel_speed: float
    reasons: dict[str, str] = field(default_factory=dict)  # metric -> why it is NaN

    @property
    def phase(self) -> str:
        """The phase label of :attr:`phase_code`."""
        return PHASES[self.phase_code]

    def metrics(self) -> dict[str, float]:
        """The recorded metrics, by name."""
        return {
            "phase_code": float(self.phase_code),
            "phase_train_fit": self.train_fit,
            "phase_frozen": self.frozen,
            "phase_onset": self.onset,
            "phase_alpha_low": self.alpha_low,
            "phase_traps": self.traps,
            "phase_collapse_warning": self.collapse_warning,
            "phase_kernel_speed": self.kernel_speed,
        }


def _get(values: Values, metric: str, layer: str = MODEL_LAYER) -> float:
    v = values.get((layer, metric), math.nan)
    return float(v) if v is not None else math.nan


def _per_layer(values: Values, metric: str) -> list[float]:
    return [
        float(v)
        for (layer, name), v in values.items()
        if name == metric and layer != MODEL_LAYER and math.isfinite(v)
    ]


def _fitted_traps(values: Values) -> float:
    """The trap count the detector watches: summed over the layers with an α fit.

    A layer with fewer than 20 eigenvalues (a 200 × 10 readout) has no α, and its traps come
    from 5 pooled shuffles against an MP edge fitted to a handful of eigenvalues: they flicker
    between 0 and ~5 from record to record (the anti-grokking notebook measured it) and would
    raise the warning by themselves. Without per-layer values, the model total is used.
    """
    fitted = [
        float(v)
        for (layer, name), v in values.items()
        if name == "htsr_num_traps"
        and layer != MODEL_LAYER
        and math.isfinite(v)
        and math.isfinite(_get(values, "htsr_alpha", layer))
    ]
    if fitted:
        return float(sum(fitted))
    total = _get(values, "htsr_num_traps")
    if math.isfinite(total):
        return total
    layers = _per_layer(values, "htsr_num_traps")
    return float(sum(layers)) if layers else math.nan


def _flag(value: bool) -> float:
    return 1.0 if value else 0.0


class PhaseDetector:
    """The online phase detector: feed it each record's values, get a :class:`DetectorOutput`.

    Parameters
    ----------
    rules : DetectorRules, optional

    Examples
    --------
    >>> det = PhaseDetector()
    >>> for step, acc in enumerate([0.1, 0.5, 1.0, 1.0]):
    ...     out = det.update(step, {("model", "train_acc"): acc})
    >>> out.phase
    'memorization'
    """

    def __init__(self, rules: DetectorRules | None = None) -> None:
        self.rules = rules or DetectorRules()
        self._s = _State()

    # -- state ----------------------------------------------------------------------------
    def state_tensor(self) -> torch.Tensor:
        """The state as a float64 tensor (what checkpoints keep)."""
        return self._s.to_tensor()

    def load_state_tensor(self, t: torch.Tensor) -> None:
        """Restore the state saved by :meth:`state_tensor`."""
        self._s = _State.from_tensor(t)

    def state(self) -> dict[str, float]:
        """The state, by field name (for inspection)."""
        return asdict(self._s)

    # -- reading ---------------------------------------------------------------------------
    def update(self, step: int, values: Values) -> DetectorOutput:
        """Read one record's values (``{(layer, metric): value}``) and return the reading."""
        reasons: dict[str, str] = {}
        self._s.n += 1
        was_fit = self._s.fit == 1.0
        fit = self._train_fit(values, reasons)
        kernel_record, speed = self._kernel_speed(step, values, reasons)
        frozen = self._frozen(step, values, speed, reasons)
        onset = self._onset(values, speed, kernel_record, was_fit, reasons)
        alpha_low, traps, collapse = self._collapse_signs(values, was_fit, reasons)
        s = self._s
        if s.n < self.rules.min_records or s.fit != 1.0 or math.isnan(fit):
            code = 0
        else:
            code = 2 if s.onset == 1.0 else 1
        return DetectorOutput(
            step=int(step),
            phase_code=code,
            train_fit=fit,
            frozen=frozen,
            onset=onset,
            alpha_low=alpha_low,
            traps=traps,
            collapse_warning=collapse,
            kernel_speed=speed,
            reasons=reasons,
        )

    def _train_fit(self, values: Values, reasons: dict[str, str]) -> float:
        r, s = self.rules, self._s
        acc, loss = _get(values, "train_acc"), _get(values, "train_loss")
        if math.isfinite(loss) and math.isnan(s.first_train_loss):
            s.first_train_loss = loss
        was = s.fit == 1.0
        if math.isfinite(acc):
            bar = r.train_threshold - r.train_slack if was else r.train_threshold
            fit = _flag(acc >= bar)
        elif math.isfinite(loss) and s.first_train_loss > 0:
            level = r.loss_ratio * s.first_train_loss
            fit = _flag(loss <= (r.loss_slack * level if was else level))
        else:
            reasons["phase_train_fit"] = "no train_acc or train_loss in this record"
            return math.nan
        s.fit = fit
        return fit

    def _kernel_speed(
        self, step: int, values: Values, reasons: dict[str, str]
    ) -> tuple[bool, float]:
        """Whether this is a kernel record, and ω = arccos(1 - velocity) / Δstep."""
        s = self._s
        speed = math.nan
        # ntk_velocity is NaN at the kernel's first record; ntk_trace is not
        kernel_record = any((MODEL_LAYER, m) in values for m in ("ntk_velocity", "ntk_trace"))
        if kernel_record:
            v = _get(values, "ntk_velocity")
            if math.isfinite(v) and math.isfinite(s.kernel_step) and step > s.kernel_step:
                speed = math.acos(min(max(1.0 - v, -1.0), 1.0)) / (step - s.kernel_step)
            s.kernel_step = float(step)
        if math.isnan(speed):
            reasons["phase_kernel_speed"] = "no kernel velocity at this record (ntk not recorded)"
        else:
            s.peak_speed = speed if math.isnan(s.peak_speed) else max(s.peak_speed, speed)
        return kernel_record, speed

    def _frozen(self, step: int, values: Values, speed: float, reasons: dict[str, str]) -> float:
        r, s = self.rules, self._s
        w_speed = math.nan  # the weights' speed, used when there is no kernel
        rel = _get(values, "rel_change")
        if math.isfinite(rel):
            if math.isfinite(s.rel_step) and step > s.rel_step:
                w_speed = abs(rel - s.rel_change) / (step - s.rel_step)
                s.peak_weight_speed = (
                    w_speed if math.isnan(s.peak_weight_speed)
                    else max(s.peak_weight_speed, w_speed)
                )  # fmt: skip
            s.rel_change, s.rel_step = rel, float(step)
        if math.isfinite(s.peak_speed):
            if math.isfinite(speed):
                return _flag(speed < r.frozen_share * s.peak_speed)
        elif math.isfinite(w_speed):
            return _flag(w_speed < r.frozen_share * s.peak_weight_speed)
        reasons["phase_frozen"] = "no new kernel velocity (ntk) or rel_change (weights)"
        return math.nan

    def _onset(
        self,
        values: Values,
        speed: float,
        kernel_record: bool,
        was_fit: bool,
        reasons: dict[str, str],
    ) -> float:
        r, s = self.rules, self._s
        probe = max(_per_layer(values, "probe_test_acc"), default=math.nan)
        if s.fit == 1.0 and not was_fit:  # the fit starts: reset the post-fit references
            s.min_speed_fit, s.n_speed_fit, s.probe_fit = math.nan, 0.0, probe
        if s.fit == 1.0 and math.isnan(s.probe_fit) and math.isfinite(probe):
            s.probe_fit = probe
        if s.fit == 1.0 and s.onset == 0.0:
            if math.isfinite(speed):
                if s.n_speed_fit >= 1 and speed >= r.onset_factor * s.min_speed_fit > 0:
                    s.onset = 1.0
                s.min_speed_fit = (
                    speed if math.isnan(s.min_speed_fit) else min(s.min_speed_fit, speed)
                )
                s.n_speed_fit += 1
            if math.isfinite(probe) and probe >= s.probe_fit + r.probe_gain:
                s.onset = 1.0
        signal = kernel_record or math.isfinite(probe)
        signal = signal or math.isfinite(s.peak_speed) or math.isfinite(s.probe_fit)
        if signal or s.onset == 1.0:
            return s.onset
        reasons["phase_onset"] = "needs ntk (kernel velocity) or probes (probe_test_acc)"
        return math.nan

    def _collapse_signs(
        self, values: Values, was_fit: bool, reasons: dict[str, str]
    ) -> tuple[float, float, float]:
        r, s = self.rules, self._s
        alphas = _per_layer(values, "htsr_alpha")
        alpha_low = _flag(min(alphas) < r.alpha_low) if alphas else math.nan
        if not alphas:
            reasons["phase_alpha_low"] = "no htsr_alpha in this record (htsr not recorded)"
        traps_now = _fitted_traps(values)
        if s.fit == 1.0 and not was_fit:  # the count at the fit is the baseline from now on
            s.traps_base = traps_now
        traps = math.nan
        if math.isfinite(traps_now):
            if math.isnan(s.traps_base):
                s.traps_base = traps_now
            traps = _flag(traps_now >= s.traps_base + r.trap_rise)
        else:
            reasons["phase_traps"] = "no htsr_num_traps in this record (htsr not recorded)"
        signs = [x for x in (alpha_low, traps) if math.isfinite(x)]
        if not signs:
            reasons["phase_collapse_warning"] = "needs htsr (alpha, correlation traps)"
            return alpha_low, traps, math.nan
        return alpha_low, traps, _flag(s.fit == 1.0 and max(signs) == 1.0)


# -- offline replay ----------------------------------------------------------------------------


def replay(ds: xr.Dataset, rules: DetectorRules | None = None) -> xr.Dataset:
    """Run the detector over a recorded run, record by record, as it would have run live.

    A NaN in the run's ``metrics`` means "not recorded at that step", so it is left out of
    the values the detector sees.

    Returns
    -------
    xarray.Dataset
        One variable per detector metric (``phase_code``, ``phase_train_fit``, ...) over
        ``step``.
    """
    det = PhaseDetector(rules)
    layers = [str(x) for x in ds["layer"].values]
    metrics = [str(x) for x in ds["metric"].values]
    data = np.asarray(ds["metrics"].transpose("step", "layer", "metric").values)
    rows: list[dict[str, float]] = []
    for i, step in enumerate(ds["step"].values):
        block = data[i]
        li, mi = np.nonzero(np.isfinite(block))
        values = {(layers[a], metrics[b]): float(block[a, b]) for a, b in zip(li, mi, strict=True)}
        rows.append(det.update(int(step), values).metrics())
    out = {
        name: ("step", np.asarray([row[name] for row in rows], dtype=np.float64))
        for name in OUTPUT_METRICS
    }
    return xr.Dataset(out, coords={"step": ds["step"].values})


# -- the registered diagnostic -----------------------------------------------------------------

METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("phase_code", "online phase: 0 undetermined, 1 memorization, 2 grokking "
               "(feature learning after the train fit); test-free", "code", _KUMAR),
    MetricInfo("phase_train_fit", "1 when the train split is fit (train acc >= 0.99, or train "
               "loss <= 1% of its first value)", "flag", _POWER),
    MetricInfo("phase_frozen", "1 when the kernel (else the weights) moves at < 10% of its "
               "peak speed", "flag", _KUMAR),
    MetricInfo("phase_onset", "1 once feature learning starts after the fit (kernel speed "
               "x2 from its minimum, or probe accuracy +0.05); latched", "flag", _KUMAR),
    MetricInfo("phase_alpha_low", "1 when a layer has HTSR alpha < 2", "flag", _PRAKASH),
    MetricInfo("phase_traps", "1 when correlation traps (summed over the layers with an alpha "
               "fit) rose by >= 2 over their count at the train fit", "flag", _PRAKASH),
    MetricInfo("phase_collapse_warning", "1 when the train split is fit and a layer has "
               "alpha < 2 or traps appeared (anti-grokking warning)", "flag", _PRAKASH),
    MetricInfo("phase_kernel_speed", "angle between consecutive NTKs per step, "
               "arccos(1 - ntk_velocity) / steps", "rad/step", _FORT),
)  # fmt: skip


def _detector_fn(rules: DetectorRules) -> Callable[[Probe], dict[str, float]]:
    def phase_detector(probe: Probe) -> dict[str, float]:
        values: dict[tuple[str, str], float] = dict(probe.cache.get(RECORD_VALUES, {}))
        task = probe.task
        if task is not None and (MODEL_LAYER, "train_loss") not in values:
            if task.kind == "classification":
                values[(MODEL_LAYER, "train_acc")] = probe.accuracy("train")
            if probe.loss_fn is not None:
                values[(MODEL_LAYER, "train_loss")] = probe.loss("train")
        det = PhaseDetector(rules)
        saved = probe.state.get(STATE_KEY)
        if saved is not None:
            det.load_state_tensor(saved)
        out = det.update(probe.step, values)
        probe.state[STATE_KEY] = det.state_tensor()
        for metric, why in out.reasons.items():
            probe.nan(metric, why)
        return out.metrics()

    # The Monitor runs functions marked reads_record after the other diagnostics.
    phase_detector.reads_record = True  # type: ignore[attr-defined]
    phase_detector.__doc__ = "The online phase detector (see grokwidgets.diagnostics.detector)."
    return phase_detector


def register_detector(
    name: str = "phase_detector", rules: DetectorRules | None = None, *, replace: bool = False
) -> None:
    """Register the detector under ``name`` with its own rules (``phase_detector``: defaults)."""
    register(name, metrics=METRICS, cadence=MECHANISM_CADENCE, replace=replace)(
        _detector_fn(rules or DetectorRules())
    )


register_detector()


# -- events (grokwidgets.monitor.watcher acts on them) ----------------------------------------

#: Event kinds: the rising edge of each flag.
EVENTS: dict[str, str] = {
    "train_fit": "phase_train_fit",
    "frozen": "phase_frozen",
    "feature_learning": "phase_onset",
    "alpha_low": "phase_alpha_low",
    "traps": "phase_traps",
    "collapse_warning": "phase_collapse_warning",
}

MESSAGES = {
    "train_fit": "the train split is fit (memorization)",
    "frozen": "the representation is frozen",
    "feature_learning": "feature learning started after the fit (grokking onset)",
    "alpha_low": "a layer has HTSR alpha < 2",
    "traps": "correlation traps appeared",
    "collapse_warning": "warning sign of anti-grokking collapse (alpha < 2 or traps, train fit)",
}
