"""The story of a run, read off its recorded data: phase bands, the time to grok, a timeline.

One derivation shared by the report (:mod:`grokwidgets.report`), the ``LiveMonitor`` and the
``Explorer``: the loss and accuracy panels read two datasets it fills,

- ``phase_spans`` (:func:`phase_spans`; columns ``phase``, ``start``, ``end``): the offline
  phase labels of :func:`~grokwidgets.diagnostics.phases.label_run` (memorization, grokking,
  generalized, anti-grokking; never ``undetermined``), one row per run of records with the same
  label, drawn as translucent bands;
- ``grok_marks`` (:func:`grok_marks`; columns ``step``, ``text``): the time to grok, drawn as a
  vertical rule with its label;

and a short :func:`timeline` of events in words, each at its step. Nothing is written per
run: every step and every word comes from the recorded metrics (layer ``model``):

- ``train_fit``: :func:`~grokwidgets.diagnostics.phases.time_to_grok` ``.memorized`` (the first
  ``train_acc`` ≥ 99%); regression: the first ``train_loss`` ≤ 1% of its first value
  (:func:`~grokwidgets.diagnostics.phases.loss_time_to_grok`, the train fit of ``label_run``'s
  loss mode);
- the detector's kinds (:data:`~grokwidgets.diagnostics.detector.EVENTS`: ``train_fit``,
  ``frozen``, ``feature_learning``, ``alpha_low``, ``traps``, ``collapse_warning``): the rising
  edges (0 → 1) of its flags ``phase_train_fit``, ``phase_frozen``, ``phase_onset``,
  ``phase_alpha_low``, ``phase_traps``, ``phase_collapse_warning``, worded by
  :data:`~grokwidgets.diagnostics.detector.MESSAGES`;
- ``generalized``: ``time_to_grok(ds).generalized`` (the first ``test_acc`` ≥ 95%: the time to
  grok); regression: the first ``test_loss`` ≤ 10% of its first value;
- ``anti_grokking``: the first record ``label_run`` labels ``anti-grokking``.

A flag's rising edge is read as :class:`~grokwidgets.monitor.watcher.PhaseWatcher` reads it
live: the flag was not 1 at its previous finite value (a flag that is 1 at its first record
rises there); records where it is NaN (not recorded) are skipped. For the feature-learning
onset the timeline names the detector's signals the run recorded before it (``probe_test_acc``
of a layer, the kernel speed ``phase_kernel_speed``), never a guess of which one fired.

Pure code: a Dataset in, tables and events out (no store, no widget).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from grokwidgets._names import MODEL_LAYER
from grokwidgets.diagnostics.detector import EVENTS, MESSAGES
from grokwidgets.diagnostics.phases import (
    PhaseRules,
    label_run,
    loss_time_to_grok,
    time_to_grok,
)
from grokwidgets.views.frame import Table

__all__ = [
    "SHADED_PHASES",
    "STORY_DATASETS",
    "STORY_METRICS",
    "TEST_THRESHOLD",
    "TRAIN_THRESHOLD",
    "LOSS_TEST_RATIO",
    "Story",
    "TimelineEvent",
    "empty_story",
    "format_step",
    "grok_marks",
    "merge_story_metrics",
    "phase_spans",
    "story",
    "story_metrics",
    "timeline",
]

#: Phases drawn as bands, in the order of a run (``undetermined`` is never shaded).
SHADED_PHASES: tuple[str, ...] = ("memorization", "grokking", "generalized", "anti-grokking")

#: The datasets the loss and accuracy panels read from the story.
STORY_DATASETS: tuple[str, ...] = ("phase_spans", "grok_marks")

#: Train accuracy at which the train split counts as fit (``time_to_grok``'s default).
TRAIN_THRESHOLD = 0.99
#: Test accuracy that marks the time to grok (``time_to_grok``'s default).
TEST_THRESHOLD = 0.95
#: Regression: test loss, as a share of its first value, that marks the (loss) time to grok.
LOSS_TEST_RATIO = 0.1

#: Metrics the story reads (layer ``model``, but ``probe_test_acc`` of any layer).
STORY_METRICS: tuple[str, ...] = (
    "train_acc",
    "test_acc",
    "train_loss",
    "test_loss",
    *EVENTS.values(),
    "phase_kernel_speed",
    "probe_test_acc",
)

# Order of events at one step: the offline reading first, then the detector's.
_ORDER = ("train_fit", *EVENTS, "generalized", "anti_grokking")


def format_step(step: int) -> str:
    """A step with thousands separators: ``4571`` → ``"4,571"``."""
    return f"{int(step):,}"


@dataclass(frozen=True)
class TimelineEvent:
    """Something that happened at ``step``: its ``kind`` and what it was, in words."""

    step: int
    kind: str
    text: str

    @property
    def label(self) -> str:
        """``"step 4,571: test accuracy ≥ 95% (time to grok)"``."""
        return f"step {format_step(self.step)}: {self.text}"

    def __str__(self) -> str:
        return self.label

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (``step``, ``kind``, ``text``, ``label``), as the widgets sync it."""
        return {"step": self.step, "kind": self.kind, "text": self.text, "label": self.label}


@dataclass(frozen=True)
class Story:
    """Everything :func:`story` derives: the two tables and the timeline."""

    phase_spans: Table
    grok_marks: Table
    timeline: list[TimelineEvent]

    def tables(self) -> dict[str, Table]:
        """The datasets of :data:`STORY_DATASETS`, by name."""
        return {"phase_spans": self.phase_spans, "grok_marks": self.grok_marks}


def _metrics(ds: xr.Dataset) -> set[str]:
    return {str(m) for m in ds["metric"].values}


def _model(ds: xr.Dataset, metric: str) -> np.ndarray | None:
    """``metric`` at layer ``model`` over steps (float64), or ``None`` if not recorded."""
    if metric not in _metrics(ds) or MODEL_LAYER not in ds["layer"].values:
        return None
    return np.asarray(ds["metrics"].sel(metric=metric, layer=MODEL_LAYER).values, np.float64)


def _classification(ds: xr.Dataset) -> bool:
    return {"train_acc", "test_acc"} <= _metrics(ds)


def _empty_spans() -> Table:
    return {
        "phase": np.zeros(0, dtype=object),
        "start": np.zeros(0, np.float64),
        "end": np.zeros(0, np.float64),
    }


def _empty_marks() -> Table:
    return {"step": np.zeros(0, np.float64), "text": np.zeros(0, dtype=object)}


def empty_story() -> dict[str, Table]:
    """The story datasets with no rows (a run with nothing to tell yet)."""
    return {"phase_spans": _empty_spans(), "grok_marks": _empty_marks()}


def _labels(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Steps and ``label_run`` labels of the records whose two curves are both finite.

    Classification reads ``train_acc``/``test_acc``, regression ``train_loss``/``test_loss``
    (``label_run``'s loss mode). Records where a curve is NaN (another family's record, say)
    carry no label of their own and are left out. Empty when the run has neither pair.
    """
    names = ("train_acc", "test_acc") if _classification(ds) else ("train_loss", "test_loss")
    train, test = _model(ds, names[0]), _model(ds, names[1])
    if train is None or test is None or not ds.sizes["step"]:
        return np.zeros(0, np.int64), np.zeros(0, dtype="<U13")
    try:
        labels = label_run(ds).values
    except (KeyError, ValueError):  # no curves to read, or steps that do not increase
        return np.zeros(0, np.int64), np.zeros(0, dtype="<U13")
    ok = np.isfinite(train) & np.isfinite(test)
    return ds["step"].values.astype(np.int64)[ok], labels[ok]


def _spans(steps: np.ndarray, labels: np.ndarray) -> Table:
    """Stretches of equal labels, shaded phases only.

    Each reaches the next stretch's first step (the bands tile the run without gaps), the last
    one the last record.
    """
    starts = np.ones(len(labels), dtype=bool)
    starts[1:] = labels[1:] != labels[:-1]
    first = np.flatnonzero(starts)
    ends = np.append(steps[first[1:]], steps[-1:])
    keep = np.isin(labels[first], SHADED_PHASES)
    return {
        "phase": np.asarray([str(x) for x in labels[first][keep]], dtype=object),
        "start": steps[first][keep].astype(np.float64),
        "end": ends[keep].astype(np.float64),
    }


def phase_spans(ds: xr.Dataset) -> Table:
    """Phase bands of a run: ``phase``, ``start``, ``end`` (steps), one row per stretch.

    Derived from :func:`~grokwidgets.diagnostics.phases.label_run` (offline labels from
    ``train_acc``/``test_acc``; ``train_loss``/``test_loss`` for a run without accuracies).
    A stretch is a run of consecutive records (both curves finite) with the same label; it
    ends at the step of the next record, the last at the last record. Only
    :data:`SHADED_PHASES` get a row: a run that never fits its train split has none.
    """
    return _spans(*_labels(ds))


def _grok_time(ds: xr.Dataset) -> tuple[int | None, int | None]:
    """(train fit step, time to grok step): accuracy-based, else loss-based, else none."""
    if _classification(ds):
        times = time_to_grok(ds, TRAIN_THRESHOLD, TEST_THRESHOLD)
        return times.memorized, times.generalized
    if _model(ds, "train_loss") is None or _model(ds, "test_loss") is None:
        return None, None
    try:
        times = loss_time_to_grok(ds, PhaseRules().loss_ratio, LOSS_TEST_RATIO)
    except ValueError:  # a first loss that is not positive: no ratio to read
        return None, None
    return times.memorized, times.generalized


def _mark_text(ds: xr.Dataset, step: int) -> str:
    what = "time to grok" if _classification(ds) else "loss time to grok"
    return f"{what}: step {format_step(step)}"


def _marks(ds: xr.Dataset, generalized: int | None) -> Table:
    if generalized is None:
        return _empty_marks()
    return {
        "step": np.asarray([float(generalized)]),
        "text": np.asarray([_mark_text(ds, generalized)], dtype=object),
    }


def grok_marks(ds: xr.Dataset) -> Table:
    """The time to grok as a mark: ``step``, ``text`` (``"time to grok: step 4,571"``).

    The first step where ``test_acc`` ≥ :data:`TEST_THRESHOLD`
    (:func:`~grokwidgets.diagnostics.phases.time_to_grok`); for a run without accuracies, the
    first step where ``test_loss`` ≤ :data:`LOSS_TEST_RATIO` × its first value (``"loss time
    to grok"``). No row when the run never gets there.
    """
    return _marks(ds, _grok_time(ds)[1])


def _percent(x: float) -> str:
    return f"{100 * x:g}%"


def _rising_edges(values: np.ndarray, steps: np.ndarray) -> list[int]:
    """Steps where a 0/1 flag turns 1 (NaN: not recorded, skipped; it starts at 0)."""
    ok = np.isfinite(values)
    v, at = values[ok], steps[ok]
    before = np.concatenate([[0.0], v[:-1]])
    return [int(x) for x in at[(v == 1.0) & (before != 1.0)]]


def _signal_starts(ds: xr.Dataset) -> dict[str, int]:
    """First step at which each onset signal was recorded.

    The probe accuracy (``probe_test_acc`` of any layer) and the kernel speed
    (``phase_kernel_speed``).
    """
    steps = ds["step"].values
    found: dict[str, int] = {}
    if "probe_test_acc" in _metrics(ds):
        probe = ds["metrics"].sel(metric="probe_test_acc").transpose("step", "layer").values
        at = np.flatnonzero(np.isfinite(probe).any(axis=1))
        if at.size:
            found["probe accuracy"] = int(steps[at[0]])
    speed = _model(ds, "phase_kernel_speed")
    if speed is not None:
        at = np.flatnonzero(np.isfinite(speed))
        if at.size:
            found["kernel speed"] = int(steps[at[0]])
    return found


def _detector_events(ds: xr.Dataset) -> list[TimelineEvent]:
    steps = ds["step"].values
    starts = _signal_starts(ds)
    out = []
    for kind, metric in EVENTS.items():
        values = _model(ds, metric)
        if values is None:
            continue
        for step in _rising_edges(values, steps):
            where = "online detector"
            if kind == "feature_learning":
                signals = [name for name, first in starts.items() if first <= step]
                if signals:
                    where += ", from the " + " or the ".join(signals)
            out.append(TimelineEvent(step, kind, f"{MESSAGES[kind]} — {where}"))
    return out


def _events(
    ds: xr.Dataset, steps: np.ndarray, labels: np.ndarray, times: tuple[int | None, int | None]
) -> list[TimelineEvent]:
    memorized, generalized = times
    acc = _classification(ds)
    events: list[TimelineEvent] = []
    if memorized is not None:
        if acc:
            why = f"train accuracy ≥ {_percent(TRAIN_THRESHOLD)}"
        else:
            why = f"train loss ≤ {_percent(PhaseRules().loss_ratio)} of its first value"
        events.append(TimelineEvent(memorized, "train_fit", f"train fit reached ({why})"))
    events += _detector_events(ds)
    if generalized is not None:
        if acc:
            text = f"test accuracy ≥ {_percent(TEST_THRESHOLD)} (time to grok"
        else:
            text = f"test loss ≤ {_percent(LOSS_TEST_RATIO)} of its first value (loss time to grok"
        if memorized is not None and generalized > memorized:
            text += f", {format_step(generalized - memorized)} steps after the train fit"
        events.append(TimelineEvent(generalized, "generalized", text + ")"))
    anti = np.flatnonzero(labels == "anti-grokking")
    if anti.size:
        curve = "test accuracy" if acc else "test loss"
        events.append(
            TimelineEvent(
                int(steps[anti[0]]),
                "anti_grokking",
                f"{curve} collapsed from its peak with the train split still fit (anti-grokking)",
            )
        )
    return _merge(events)


def _merge(events: list[TimelineEvent]) -> list[TimelineEvent]:
    """Sorted by step (then the reading order of kinds); one event per step and kind."""
    rank = {kind: i for i, kind in enumerate(_ORDER)}
    out: list[TimelineEvent] = []
    seen: set[tuple[int, str]] = set()
    for e in sorted(events, key=lambda e: (e.step, rank.get(e.kind, len(rank)))):
        if (e.step, e.kind) in seen:
            continue
        seen.add((e.step, e.kind))
        out.append(e)
    return out


def timeline(ds: xr.Dataset) -> list[TimelineEvent]:
    """The run's events in words, by step (see the module docstring for what each reads).

    The train fit and the time to grok (:func:`~grokwidgets.diagnostics.phases.time_to_grok`,
    or the loss ratios for regression), the rising edges of the online detector's flags
    (``phase_*`` metrics, :data:`~grokwidgets.diagnostics.detector.EVENTS`), and the first
    record labelled anti-grokking (``label_run``). Sorted by step; two events of the same
    kind at one step (the train fit read offline and by the detector) are one.
    """
    if not ds.sizes["step"]:
        return []
    return _events(ds, *_labels(ds), _grok_time(ds))


def story(ds: xr.Dataset) -> Story:
    """:func:`phase_spans`, :func:`grok_marks` and :func:`timeline` of ``ds`` at once.

    The labels and grok times are derived once for the three (what the widgets call on every
    update).
    """
    if not ds.sizes["step"]:
        tables = empty_story()
        return Story(tables["phase_spans"], tables["grok_marks"], [])
    steps, labels = _labels(ds)
    times = _grok_time(ds)
    return Story(_spans(steps, labels), _marks(ds, times[1]), _events(ds, steps, labels, times))


def story_metrics(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` reduced to what the story reads: the ``metrics`` of :data:`STORY_METRICS`.

    Every layer is kept (the story reads layer ``model``, and ``probe_test_acc`` of any
    layer); a live view keeps these few numbers per record to tell the story of the rows it
    received.
    """
    names = [m for m in STORY_METRICS if m in _metrics(ds)]
    return ds[["metrics"]].sel(metric=names)


def merge_story_metrics(held: xr.Dataset | None, new: xr.Dataset) -> xr.Dataset:
    """The :func:`story_metrics` of the records ``held`` and then ``new``, one row per step.

    What a live view keeps to tell the story of every row it received so far, however they
    came in batches. A step given again (a late record at the writer's newest step) keeps,
    per metric and layer, its last finite value; steps end up increasing.
    """
    add = story_metrics(new)
    if held is None or not held.sizes["step"]:
        both = add
    elif not add.sizes["step"]:
        return held
    else:
        both = xr.concat(
            [held, add],
            dim="step",
            data_vars="all",
            coords="minimal",
            compat="override",
            join="outer",
            fill_value=np.nan,
        )
    steps = both["step"].values
    if len(steps) < 2 or bool(np.all(np.diff(steps) > 0)):
        return both
    da = both["metrics"].transpose("step", "layer", "metric")
    shape = da.shape
    flat = pd.DataFrame(da.values.reshape(shape[0], -1))
    last = flat.groupby(steps, sort=True).last()  # the last non-NaN value per column
    values = last.to_numpy(np.float64).reshape(len(last), *shape[1:])
    out = xr.DataArray(
        values,
        coords={"step": last.index.to_numpy(), "layer": da["layer"], "metric": da["metric"]},
        dims=("step", "layer", "metric"),
    )
    return xr.Dataset({"metrics": out}, attrs=both.attrs)
