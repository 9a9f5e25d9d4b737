r"""Phases of a run read off its recorded curves: time to grok and a phase label per record.

**Time to grok.** Power et al. (2022) [1]_ measure grokking as the gap between the step where
train accuracy reaches (near) 100% and the step where test accuracy does:

.. math::

    t_\text{mem} = \min\{t : \text{train\_acc}(t) \ge a_\text{train}\}, \qquad
    t_\text{grok} = \min\{t : \text{test\_acc}(t) \ge a_\text{test}\}

Kumar et al. (2024) [2]_ (seed 004) read grokking off loss curves normalized by their initial
value, which also works for regression. The loss-based times are

.. math::

    t^\ell_\text{mem} = \min\{t : L_\text{train}(t) \le r_\text{train} L_\text{train}(t_0)\},
    \qquad
    t^\ell_\text{grok} = \min\{t : L_\text{test}(t) \le r_\text{test} L_\text{test}(t_0)\}

with :math:`t_0` the first record (defaults :math:`r_\text{train} = r_\text{test} = 0.1`).

**Phase labels** (:func:`label_phases`), one per record, from
``undetermined``, ``memorization``, ``grokking``, ``generalized``, ``anti-grokking``
(:data:`PHASES`; their index is the phase code, :data:`PHASE_CODES`). The test curve is read as
a *score* :math:`s(t)`: the test accuracy, or :math:`-\ln L_\text{test}(t)` when only losses
are given (regression, or ``mode="loss"``). With :math:`t^*` the first record of the best score
:math:`s^* = s(t^*)`, the baseline :math:`b` is the chance accuracy when given, else the worst
score at or before :math:`t^*`, and the test progress is

.. math:: u(t) = \frac{s(t) - b}{s^* - b}.

The run *generalizes* only if the gain :math:`s^* - b` is at least ``min_gain`` (0.1 in
accuracy, :math:`\ln 4` in log-loss: the test loss fell four-fold from its worst); otherwise no
record is ``grokking``, ``generalized`` or ``anti-grokking``. The train split is *fit* once
train accuracy reaches ``train_threshold`` (0.99), or the train loss falls to ``loss_ratio``
(0.01) of its first value; it stays fit until accuracy falls below ``train_threshold -
train_slack`` (loss: rises above ``loss_slack ×`` that level). Then, record by record:

- ``generalized``: :math:`u \ge` ``generalized`` (0.9), with train fit or not (a run that
  learns steadily is generalized too); once generalized, a record stays ``generalized`` until
  a collapse;
- ``anti-grokking``: after generalization, the train split still fit and :math:`u` at least
  ``drop`` (0.15) below its highest value since generalization (Prakash & Martin [3]_: test
  accuracy collapses while train accuracy stays at 100%); if the train split is no longer fit
  the drop is an optimizer failure, not anti-grokking, and the record is ``undetermined``;
- ``grokking``: train fit, not yet generalized, :math:`u \ge` ``onset`` (0.1);
- ``memorization``: train fit, :math:`u <` ``onset``;
- ``undetermined``: anything else: before the train split is fit, a NaN in the curves, or
  fewer than ``min_records`` (5) complete records in the whole run (never a guess).

The labels use the whole run (:math:`s^*` is its best score), so they are an offline reading;
the test-free online detector is :mod:`grokwidgets.diagnostics.detector`.

References
----------
.. [1] Power, Burda, Edwards, Babuschkin & Misra (2022), "Grokking: generalization beyond
   overfitting on small algorithmic datasets", arXiv:2201.02177.
.. [2] Kumar, Bordelon, Gershman & Pehlevan (2024), "Grokking as the transition from lazy to
   rich training dynamics", ICLR 2024, arXiv:2310.06110.
.. [3] Prakash & Martin (2025), "Grokking and generalization collapse: insights from HTSR
   theory", arXiv:2506.04434.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import xarray as xr

from grokwidgets._names import MODEL_LAYER

__all__ = [
    "PHASES",
    "PHASE_CODES",
    "GrokTimes",
    "PhaseRules",
    "first_step_reaching",
    "grok_times",
    "label_phases",
    "label_run",
    "loss_grok_times",
    "loss_time_to_grok",
    "select_metric",
    "time_to_grok",
]

#: The phase labels; a label's index is its phase code.
PHASES: tuple[str, ...] = (
    "undetermined",
    "memorization",
    "grokking",
    "generalized",
    "anti-grokking",
)
#: Label -> numeric phase code (as stored by the online detector's ``phase_code``).
PHASE_CODES: dict[str, int] = {label: code for code, label in enumerate(PHASES)}

ArrayLike = Sequence[float] | np.ndarray
Mode = Literal["auto", "accuracy", "loss"]


def select_metric(ds: xr.Dataset, metric: str, layer: str = MODEL_LAYER) -> xr.DataArray:
    """One metric of one layer over steps, with a clear error for an unknown name."""
    metrics = [str(m) for m in ds["metric"].values]
    if metric not in metrics:
        msg = f"Metric {metric!r} was not recorded in this run. Recorded metrics: {metrics}."
        raise KeyError(msg)
    layers = [str(x) for x in ds["layer"].values]
    if layer not in layers:
        msg = f"Layer {layer!r} is not in this run. Layers: {layers}."
        raise KeyError(msg)
    return ds["metrics"].sel(metric=metric, layer=layer)


def first_step_reaching(
    ds: xr.Dataset, metric: str, threshold: float, layer: str = MODEL_LAYER
) -> int | None:
    """First recorded step where ``metric >= threshold``, or ``None`` if never."""
    da = select_metric(ds, metric, layer)
    with np.errstate(invalid="ignore"):
        return _first(da["step"].values, da.values >= threshold)


@dataclass(frozen=True)
class GrokTimes:
    """Steps at which memorization and generalization were reached."""

    memorized: int | None
    generalized: int | None

    @property
    def delay(self) -> int | None:
        """Steps from memorization to generalization (the grokking delay)."""
        if self.memorized is None or self.generalized is None:
            return None
        return self.generalized - self.memorized


def time_to_grok(
    ds: xr.Dataset, train_threshold: float = 0.99, test_threshold: float = 0.95
) -> GrokTimes:
    """Time to memorize (train accuracy) and to generalize (test accuracy) of a run.

    Raises
    ------
    KeyError
        If the run has no accuracies (a regression task: use :func:`loss_time_to_grok`).
    """
    metrics = {str(m) for m in ds["metric"].values}
    if not {"train_acc", "test_acc"} <= metrics:
        msg = (
            "time_to_grok needs train_acc and test_acc, which this run did not record (a "
            f"regression task?); use loss_time_to_grok. Recorded metrics: {sorted(metrics)}."
        )
        raise KeyError(msg)
    return grok_times(
        select_metric(ds, "train_acc").values,
        select_metric(ds, "test_acc").values,
        ds["step"].values,
        train_threshold=train_threshold,
        test_threshold=test_threshold,
    )


# -- arrays ------------------------------------------------------------------------------------


def _steps(steps: ArrayLike | None, n: int) -> np.ndarray:
    if steps is None:
        return np.arange(n, dtype=np.int64)
    s = np.asarray(steps)
    if s.ndim != 1 or len(s) != n:
        msg = f"steps must be 1-D with one entry per record ({n}), got shape {s.shape}."
        raise ValueError(msg)
    if n > 1 and not np.all(np.diff(s) > 0):
        msg = "steps must be strictly increasing (one record per step, in order)."
        raise ValueError(msg)
    return s.astype(np.int64)


def _curve(values: ArrayLike | None, name: str, n: int | None = None) -> np.ndarray | None:
    if values is None:
        return None
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        msg = f"{name} must be 1-D (one value per record), got shape {v.shape}."
        raise ValueError(msg)
    if n is not None and len(v) != n:
        msg = f"{name} has {len(v)} values but the other curves have {n}."
        raise ValueError(msg)
    return v


def _first(steps: np.ndarray, hit: np.ndarray) -> int | None:
    idx = np.flatnonzero(hit)
    return int(steps[idx[0]]) if idx.size else None


def grok_times(
    train_acc: ArrayLike,
    test_acc: ArrayLike,
    steps: ArrayLike | None = None,
    *,
    train_threshold: float = 0.99,
    test_threshold: float = 0.95,
) -> GrokTimes:
    """Accuracy-based time to memorize and to generalize, from arrays (Power et al. 2022).

    ``steps`` defaults to the record index; NaN values never reach a threshold.
    """
    tr = _curve(train_acc, "train_acc")
    assert tr is not None
    te = _curve(test_acc, "test_acc", len(tr))
    assert te is not None
    s = _steps(steps, len(tr))
    with np.errstate(invalid="ignore"):
        return GrokTimes(_first(s, tr >= train_threshold), _first(s, te >= test_threshold))


def loss_grok_times(
    train_loss: ArrayLike,
    test_loss: ArrayLike,
    steps: ArrayLike | None = None,
    *,
    train_ratio: float = 0.1,
    test_ratio: float = 0.1,
) -> GrokTimes:
    r"""Loss-based time to memorize and to generalize (Kumar et al. 2024, seed 004).

    The first step where each loss falls to ``ratio`` times its value at the first record
    with a finite value (see the module docstring); works for regression as well.

    Raises
    ------
    ValueError
        For ratios outside (0, 1), or a first finite loss that is not positive.
    """
    for label, r in (("train_ratio", train_ratio), ("test_ratio", test_ratio)):
        if not 0.0 < r < 1.0:
            msg = f"{label} must be strictly between 0 and 1, got {r}."
            raise ValueError(msg)
    tr = _curve(train_loss, "train_loss")
    assert tr is not None
    te = _curve(test_loss, "test_loss", len(tr))
    assert te is not None
    s = _steps(steps, len(tr))
    out: list[int | None] = []
    for name, v, r in (("train_loss", tr, train_ratio), ("test_loss", te, test_ratio)):
        finite = np.flatnonzero(np.isfinite(v))
        if not finite.size:
            out.append(None)
            continue
        v0 = v[finite[0]]
        if not v0 > 0:
            msg = f"The first finite {name} is {v0}; a loss ratio needs a positive loss."
            raise ValueError(msg)
        with np.errstate(invalid="ignore"):
            out.append(_first(s, v <= r * v0))
    return GrokTimes(out[0], out[1])


def loss_time_to_grok(
    ds: xr.Dataset, train_ratio: float = 0.1, test_ratio: float = 0.1
) -> GrokTimes:
    """Loss-based :func:`time_to_grok` of a run (``train_loss`` and ``test_loss``)."""
    tr = select_metric(ds, "train_loss")
    te = select_metric(ds, "test_loss")
    return loss_grok_times(
        tr.values, te.values, ds["step"].values, train_ratio=train_ratio, test_ratio=test_ratio
    )


# -- phase labels ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseRules:
    """Thresholds of :func:`label_phases` (see the module docstring for the rules).

    Parameters
    ----------
    train_threshold, train_slack : float
        The train split is fit at accuracy ≥ ``train_threshold`` and stays fit down to
        ``train_threshold - train_slack``.
    loss_ratio, loss_slack : float
        Loss mode: fit at ``train_loss <= loss_ratio × first train loss``, lost above
        ``loss_slack`` times that level.
    onset, generalized, drop : float
        Shares of the test gain :math:`s^* - b`: onset of grokking, generalized, and the drop
        from the running peak that marks a collapse.
    min_gain : float, optional
        Smallest gain that counts as generalization; default 0.1 (accuracy) or ln 4 (log
        loss).
    min_records : int
        Fewer complete records than this: every label is ``undetermined``.
    """

    train_threshold: float = 0.99
    train_slack: float = 0.05
    loss_ratio: float = 0.01
    loss_slack: float = 3.0
    onset: float = 0.1
    generalized: float = 0.9
    drop: float = 0.15
    min_gain: float | None = None
    min_records: int = 5

    def __post_init__(self) -> None:
        if not 0.0 < self.onset < self.generalized <= 1.0:
            msg = (
                f"Need 0 < onset < generalized <= 1, got onset={self.onset}, "
                f"generalized={self.generalized}."
            )
            raise ValueError(msg)
        if not 0.0 < self.drop < 1.0:
            msg = f"drop must be strictly between 0 and 1, got {self.drop}."
            raise ValueError(msg)
        if not 0.0 < self.loss_ratio < 1.0 or not self.loss_slack >= 1.0:
            msg = "Need 0 < loss_ratio < 1 and loss_slack >= 1."
            raise ValueError(msg)
        if self.train_slack < 0 or self.min_records < 1:
            msg = "Need train_slack >= 0 and min_records >= 1."
            raise ValueError(msg)


def _fit_flags(
    train: np.ndarray, mode: Literal["accuracy", "loss"], rules: PhaseRules
) -> np.ndarray:
    """Train split fit per record, with hysteresis (NaN records keep the previous state)."""
    fit = np.zeros(len(train), dtype=bool)
    if mode == "accuracy":
        on, off = rules.train_threshold, rules.train_threshold - rules.train_slack
        reached, lost = (lambda v: v >= on), (lambda v: v < off)
    else:
        finite = np.flatnonzero(np.isfinite(train))
        if not finite.size or not train[finite[0]] > 0:
            return fit
        level = rules.loss_ratio * train[finite[0]]
        reached, lost = (lambda v: v <= level), (lambda v: v > rules.loss_slack * level)
    state = False
    for i, v in enumerate(train):
        if math.isfinite(v):
            state = (not lost(v)) if state else bool(reached(v))
        fit[i] = state
    return fit


def label_phases(
    train_acc: ArrayLike | None = None,
    test_acc: ArrayLike | None = None,
    steps: ArrayLike | None = None,
    *,
    train_loss: ArrayLike | None = None,
    test_loss: ArrayLike | None = None,
    chance: float | None = None,
    mode: Mode = "auto",
    rules: PhaseRules | None = None,
) -> np.ndarray:
    """One phase label per record from the train and test curves (see the module docstring).

    Parameters
    ----------
    train_acc, test_acc : array-like, optional
        Accuracy curves (classification).
    steps : array-like, optional
        The records' steps, strictly increasing (default: the record index). Only checked:
        the labels do not depend on the spacing.
    train_loss, test_loss : array-like, optional
        Loss curves, used when accuracies are not given (regression) or with ``mode="loss"``.
    chance : float, optional
        Chance test accuracy (1 / classes), the accuracy baseline; default the worst test
        accuracy before the best.
    mode : {"auto", "accuracy", "loss"}
        ``auto``: accuracies when both are given, else losses.
    rules : PhaseRules, optional

    Returns
    -------
    numpy.ndarray of str
        One label from :data:`PHASES` per record.

    Raises
    ------
    ValueError
        If neither both accuracies nor both losses are given (or the chosen mode's curves are
        missing), on curves of different lengths, or on steps that do not increase.

    Examples
    --------
    >>> label_phases(train_acc=[0.1, 1, 1, 1, 1, 1], test_acc=[0.1, 0.1, 0.1, 0.5, 1, 1])
    array(['undetermined', 'memorization', 'memorization', 'grokking',
           'generalized', 'generalized'], dtype='<U13')
    """
    rules = rules or PhaseRules()
    has_acc = train_acc is not None and test_acc is not None
    has_loss = train_loss is not None and test_loss is not None
    if mode == "auto":
        mode = "accuracy" if has_acc else "loss"
    if mode not in ("accuracy", "loss"):
        msg = f"mode must be 'auto', 'accuracy' or 'loss', got {mode!r}."
        raise ValueError(msg)
    if (mode == "accuracy" and not has_acc) or (mode == "loss" and not has_loss):
        msg = (
            "label_phases needs train_acc and test_acc (classification) or train_loss and "
            f"test_loss (regression: use the loss versions); mode {mode!r} lacks its curves."
        )
        raise ValueError(msg)
    if mode == "accuracy":
        train = _curve(train_acc, "train_acc")
        assert train is not None
        test = _curve(test_acc, "test_acc", len(train))
        assert test is not None
        score = test
        min_gain = 0.1 if rules.min_gain is None else rules.min_gain
    else:
        train = _curve(train_loss, "train_loss")
        assert train is not None
        test = _curve(test_loss, "test_loss", len(train))
        assert test is not None
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(test > 0, -np.log(np.where(test > 0, test, 1.0)), np.nan)
        score[test == 0] = np.inf
        min_gain = math.log(4.0) if rules.min_gain is None else rules.min_gain
    n = len(train)
    _steps(steps, n)
    labels = np.full(n, PHASES[0], dtype="<U13")
    complete = np.isfinite(train) & ~np.isnan(score)
    if int(complete.sum()) < rules.min_records:
        return labels
    fit = _fit_flags(train, mode, rules)
    u = _progress(score, complete, chance if mode == "accuracy" else None, min_gain)
    generalized = False
    peak = -math.inf
    for i in range(n):
        if not complete[i]:
            continue
        if u is None:  # the run never generalizes
            labels[i] = PHASES[1] if fit[i] else PHASES[0]
            continue
        ui = float(u[i])
        if not generalized and ui >= rules.generalized:
            generalized = True
        if generalized:
            peak = max(peak, ui)
            if ui <= peak - rules.drop:
                labels[i] = PHASES[4] if fit[i] else PHASES[0]
            else:
                labels[i] = PHASES[3]
        elif fit[i]:
            labels[i] = PHASES[2] if ui >= rules.onset else PHASES[1]
    return labels


def _progress(
    score: np.ndarray, complete: np.ndarray, chance: float | None, min_gain: float
) -> np.ndarray | None:
    """Test progress u(t) = (s - b) / (s* - b), or None when the gain is below ``min_gain``."""
    s = np.where(complete, score, np.nan)
    k = int(np.nanargmax(s))
    best = float(s[k])
    base = float(chance) if chance is not None else float(np.nanmin(s[: k + 1]))
    if math.isinf(best):  # a zero test loss: progress is 1 there, 0 at the baseline
        return np.where(np.isinf(s), 1.0, 0.0) if best - base >= min_gain else None
    gain = best - base
    if not gain >= min_gain:
        return None
    return (s - base) / gain


def label_run(
    ds: xr.Dataset,
    *,
    chance: float | None = None,
    mode: Mode = "auto",
    rules: PhaseRules | None = None,
) -> xr.DataArray:
    """Phase labels of a recorded run, one per step (:func:`label_phases` on its curves).

    Uses ``train_acc``/``test_acc`` when both were recorded (classification) and ``mode`` is
    not ``"loss"``, else ``train_loss``/``test_loss`` (regression).

    Returns
    -------
    xarray.DataArray
        Labels over ``step``, named ``"phase"``.
    """
    metrics = {str(m) for m in ds["metric"].values}
    use_acc = mode != "loss" and {"train_acc", "test_acc"} <= metrics
    if mode == "accuracy" and not use_acc:
        msg = "This run has no train_acc/test_acc (a regression task?): use mode='loss'."
        raise KeyError(msg)
    kw: dict[str, np.ndarray] = {}
    names = ("train_acc", "test_acc") if use_acc else ("train_loss", "test_loss")
    for name in names:
        kw[name] = np.asarray(select_metric(ds, name).values, dtype=np.float64)
    steps = np.asarray(ds["step"].values)
    # Rows recorded only by another family (a mechanism family on its own cadence) have no
    # curves: they take the label of the last row that has them, not "undetermined".
    known = np.isfinite(kw[names[0]]) | np.isfinite(kw[names[1]])
    labels = np.full(len(steps), PHASES[0], dtype="<U13")
    if known.any():
        labels[known] = label_phases(
            **{k: v[known] for k, v in kw.items()},
            steps=steps[known],
            chance=chance,
            mode="accuracy" if use_acc else "loss",
            rules=rules,
        )
        last = np.maximum.accumulate(np.where(known, np.arange(len(steps)), -1))
        later = ~known & (last >= 0)
        labels[later] = labels[last[later]]
    return xr.DataArray(labels, coords={"step": ds["step"].values}, dims="step", name="phase")
