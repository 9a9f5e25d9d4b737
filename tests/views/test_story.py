"""The story of a run (views/story.py) on synthetic runs whose phases are known by construction.

The expected spans, marks and texts below are worked out by hand from the curves of
``tests.widgets._runs.story_record`` (its docstring), not from the code under test.
"""

import numpy as np
import pytest
import vl_convert as vlc

from grokwidgets.diagnostics.detector import MESSAGES
from grokwidgets.store.records import Record, records_dataset
from grokwidgets.views.panels import PANELS, inline_spec, panel_spec
from grokwidgets.views.story import (
    STORY_DATASETS,
    TimelineEvent,
    empty_story,
    format_step,
    grok_marks,
    merge_story_metrics,
    phase_spans,
    story,
    story_metrics,
    timeline,
)
from grokwidgets.views.tables import series_tables
from tests.widgets._runs import story_dataset, story_record


def spans(ds):
    t = phase_spans(ds)
    return list(zip(t["phase"].tolist(), t["start"].tolist(), t["end"].tolist(), strict=True))


def labels(ds):
    return [e.label for e in timeline(ds)]


ONSET = f"{MESSAGES['feature_learning']} — online detector, from the probe accuracy"
FROZEN = f"{MESSAGES['frozen']} — online detector"


def test_grokking_run_spans_mark_and_timeline():
    ds = story_dataset("grokking")
    # memorization while test accuracy stays at its baseline, grokking at 11,000 (u = 0.46),
    # generalized from 12,000; each band reaches the next one (no gap), the last the last step
    assert spans(ds) == [
        ("memorization", 2000.0, 11000.0),
        ("grokking", 11000.0, 12000.0),
        ("generalized", 12000.0, 20000.0),
    ]
    marks = grok_marks(ds)
    assert marks["step"].tolist() == [12000.0]  # first test accuracy >= 0.95
    assert marks["text"].tolist() == ["time to grok: step 12,000"]
    assert labels(ds) == [
        "step 2,000: train fit reached (train accuracy ≥ 99%)",  # detector's fit merged in
        f"step 4,000: {FROZEN}",
        f"step 10,000: {FROZEN}",  # frozen again: a second rising edge
        f"step 10,000: {ONSET}",
        "step 12,000: test accuracy ≥ 95% (time to grok, 10,000 steps after the train fit)",
    ]
    kinds = [(e.step, e.kind) for e in timeline(ds)]
    assert kinds == [
        (2000, "train_fit"),
        (4000, "frozen"),
        (10000, "frozen"),
        (10000, "feature_learning"),
        (12000, "generalized"),
    ]


def test_no_grokking_run():
    ds = story_dataset("no_grok")
    assert spans(ds) == [("memorization", 2000.0, 20000.0)]
    assert grok_marks(ds)["step"].size == 0
    assert labels(ds) == ["step 2,000: train fit reached (train accuracy ≥ 99%)"]


def test_anti_grokking_run():
    ds = story_dataset("anti")
    assert spans(ds)[-2:] == [
        ("generalized", 12000.0, 15000.0),
        ("anti-grokking", 15000.0, 20000.0),
    ]
    last = timeline(ds)[-1]
    assert (last.step, last.kind) == (15000, "anti_grokking")
    assert last.text == (
        "test accuracy collapsed from its peak with the train split still fit (anti-grokking)"
    )


def test_regression_run_reads_the_losses():
    ds = story_dataset("regression")
    assert "train_acc" not in ds["metric"].values
    # train fit: train loss <= 1% of its first; test score -ln(loss) gains ln(50) > ln 4
    assert spans(ds) == [
        ("memorization", 2000.0, 11000.0),
        ("grokking", 11000.0, 12000.0),
        ("generalized", 12000.0, 20000.0),
    ]
    assert grok_marks(ds)["text"].tolist() == ["loss time to grok: step 12,000"]
    assert labels(ds) == [
        "step 2,000: train fit reached (train loss ≤ 1% of its first value)",
        "step 12,000: test loss ≤ 10% of its first value "
        "(loss time to grok, 10,000 steps after the train fit)",
    ]


def test_a_run_with_no_phase_tells_nothing():
    ds = story_dataset("flat")
    told = story(ds)
    assert told.timeline == []
    assert all(t[next(iter(t))].size == 0 for t in told.tables().values())
    none = ds.isel(step=slice(0, 0))
    assert story(none).timeline == [] and timeline(none) == []
    assert phase_spans(none)["phase"].size == 0


def test_story_is_the_three_functions_at_once():
    ds = story_dataset("anti")
    told = story(ds)
    assert told.timeline == timeline(ds)
    for name, table in (("phase_spans", phase_spans(ds)), ("grok_marks", grok_marks(ds))):
        got = told.tables()[name]
        assert got.keys() == table.keys()
        assert all(np.array_equal(got[k], table[k]) for k in table)
    assert set(told.tables()) == set(STORY_DATASETS) == set(empty_story())


def test_records_without_curves_carry_no_band():
    # another family's records between the curves' (NaN train/test): the bands skip them
    recs = [story_record(s, "grokking") for s in range(0, 20_001, 1000)]
    recs += [Record(step=s, values={("readout", "htsr_alpha"): 3.0}) for s in (2500, 11500)]
    ds = records_dataset(sorted(recs, key=lambda r: r.step))
    assert spans(ds) == spans(story_dataset("grokking"))


def _flags(values):
    recs = []
    for i, v in enumerate(values):
        rec = Record(step=10 * (i + 1))
        rec.values[("model", "train_loss")] = 1.0
        if v is not None:
            rec.values[("model", "phase_alpha_low")] = v
        recs.append(rec)
    return records_dataset(recs)


@pytest.mark.parametrize(
    ("values", "steps"),
    [
        ([1, 1, 0, 1], [10, 40]),  # on at the first record: a rising edge there
        ([0, None, 1, None, 1], [30]),  # NaN (not recorded) is skipped, never a reset
        ([0, 1, None, 0, None, 1], [20, 60]),
        ([0, 0, None], []),
    ],
)
def test_detector_events_are_rising_edges(values, steps):
    ds = _flags(values)
    events = timeline(ds)
    assert [e.step for e in events] == steps
    assert all(e.kind == "alpha_low" for e in events)
    assert all(e.text == f"{MESSAGES['alpha_low']} — online detector" for e in events)


def test_onset_names_the_signals_recorded_before_it():
    def run(probe_from=None, kernel_from=None):
        recs = []
        for s in range(0, 6):
            rec = Record(step=100 * s)
            rec.values[("model", "phase_onset")] = float(s >= 3)
            if probe_from is not None and s >= probe_from:
                rec.values[("encoder.0", "probe_test_acc")] = 0.5
            if kernel_from is not None and s >= kernel_from:
                rec.values[("model", "phase_kernel_speed")] = 1e-3
            recs.append(rec)
        (event,) = timeline(records_dataset(recs))
        assert event.step == 300 and event.kind == "feature_learning"
        return event.text.removeprefix(MESSAGES["feature_learning"])

    assert run() == " — online detector"
    assert run(probe_from=4) == " — online detector"  # the probe came only after the onset
    assert run(probe_from=1) == " — online detector, from the probe accuracy"
    assert run(kernel_from=0) == " — online detector, from the kernel speed"
    both = run(probe_from=2, kernel_from=3)
    assert both == " — online detector, from the probe accuracy or the kernel speed"


def test_same_step_and_kind_merge_but_different_steps_do_not():
    recs = [story_record(s, "no_grok") for s in range(0, 6000, 1000)]
    recs[3].values[("model", "phase_train_fit")] = 1.0  # the detector saw the fit at 3,000
    events = timeline(records_dataset(recs))
    assert [(e.step, e.kind) for e in events] == [(2000, "train_fit"), (3000, "train_fit")]
    assert events[1].text == f"{MESSAGES['train_fit']} — online detector"
    recs[3].values.pop(("model", "phase_train_fit"))
    recs[2].values[("model", "phase_train_fit")] = 1.0  # at 2,000, as read offline: one
    events = timeline(records_dataset(recs))
    assert [(e.step, e.kind) for e in events] == [(2000, "train_fit")]
    assert events[0].text == "train fit reached (train accuracy ≥ 99%)"


def test_steps_have_thousands_separators():
    assert format_step(4571) == "4,571" and format_step(41) == "41"
    assert format_step(1_234_567) == "1,234,567"
    event = TimelineEvent(4571, "generalized", "test accuracy ≥ 95%")
    assert str(event) == event.label == "step 4,571: test accuracy ≥ 95%"
    assert event.to_dict() == {
        "step": 4571,
        "kind": "generalized",
        "text": "test accuracy ≥ 95%",
        "label": "step 4,571: test accuracy ≥ 95%",
    }


def test_merged_batches_tell_the_story_of_the_whole_run():
    ds = story_dataset("anti")
    held = None
    for lo in range(0, 21, 4):  # in batches, the last record of each batch given again
        batch = story_dataset("anti", [1000 * s for s in range(max(lo - 1, 0), min(lo + 4, 21))])
        held = merge_story_metrics(held, batch)
    assert held["step"].values.tolist() == ds["step"].values.tolist()
    assert timeline(held) == timeline(ds)
    assert spans(held) == spans(ds)


def test_a_step_given_again_keeps_its_last_finite_values():
    first = records_dataset([Record(step=5, values={("model", "test_acc"): 0.1})])
    late = Record(step=5, values={("model", "train_acc"): 1.0, ("readout", "probe_test_acc"): 0.7})
    held = merge_story_metrics(first, records_dataset([late, Record(step=6)]))
    assert held["step"].values.tolist() == [5, 6]
    at5 = held["metrics"].sel(step=5)
    assert float(at5.sel(layer="model", metric="test_acc")) == 0.1  # kept: NaN in the late one
    assert float(at5.sel(layer="model", metric="train_acc")) == 1.0
    assert float(at5.sel(layer="readout", metric="probe_test_acc")) == 0.7
    assert "weight_norm" not in story_metrics(first)["metric"].values


@pytest.mark.parametrize("kind", ["grokking", "flat", "regression"])
def test_loss_and_accuracy_panels_draw_the_story_in_png(kind):
    """The bands and the mark are named datasets of the panels; empty ones break nothing."""
    ds = story_dataset(kind)
    told = story(ds)
    tables = {**series_tables(ds), **told.tables()}
    for panel in PANELS[:2]:
        assert set(STORY_DATASETS) <= set(panel.datasets)
        spec = inline_spec(panel_spec(panel, cursor=True), tables)
        assert spec["usermeta"]["overlays"] == sorted(["cursor", *STORY_DATASETS])
        rows = spec["datasets"]["phase_spans"]
        assert [r["phase"] for r in rows] == told.phase_spans["phase"].tolist()
        assert [r["text"] for r in spec["datasets"]["grok_marks"]] == (
            told.grok_marks["text"].tolist()
        )
        if kind == "regression" and panel.id == "accuracy":
            continue  # a regression run has no accuracy panel
        png = bytes(vlc.vegalite_to_png(spec))
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        svg = vlc.vegalite_to_svg(spec)
        assert svg.count("time to grok: step") == 0 or told.grok_marks["step"].size
        for text in told.grok_marks["text"]:
            assert svg.count(f">{text}<") == 1  # the rule's label, once
        for phase in told.phase_spans["phase"]:
            assert f">{phase}<" in svg  # each band carries its name
