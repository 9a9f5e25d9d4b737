"""The story of a run in the widgets: the same ``views.story`` as the report, fed as rows arrive."""

import numpy as np
import xarray as xr

from grokwidgets.store import run_dir
from grokwidgets.store.zarr_store import ZarrRecordWriter
from grokwidgets.views.frame import decode_frame
from grokwidgets.views.story import phase_spans, story, timeline
from grokwidgets.widgets import Compare, Explorer, LiveMonitor

from ._runs import STORY_STEPS, story_dataset, story_record, write_story_run


def snapshot(widget):
    return decode_frame(bytes(widget._snapshot))[1]


def capture(widget):
    sent = []
    widget.send = lambda content, buffers=None: sent.append(decode_frame(bytes(buffers[0]))[1])
    return sent


def rows(table):
    return list(zip(*(table[k].tolist() for k in table), strict=True))


def test_live_monitor_tells_the_story_of_a_dataset():
    ds = story_dataset("grokking")
    live = LiveMonitor(ds, min_interval=0)
    assert live.timeline == [e.to_dict() for e in timeline(ds)]
    assert live.timeline[-1]["label"] == (
        "step 12,000: test accuracy ≥ 95% (time to grok, 10,000 steps after the train fit)"
    )
    snap = snapshot(live)
    mode, bands = snap["phase_spans"]
    assert mode == "replace"
    assert rows(bands) == [
        ("memorization", 2000.0, 11000.0),
        ("grokking", 11000.0, 12000.0),
        ("generalized", 12000.0, 20000.0),
    ]
    assert rows(snap["grok_marks"][1]) == [(12000.0, "time to grok: step 12,000")]
    text = live._repr_mimebundle_()[0]["text/plain"]
    assert "step 2,000: train fit reached (train accuracy ≥ 99%)" in text
    page = live.to_html()
    assert '<ol class="gw-timeline"><li data-step="2000">step 2,000: train fit' in page
    assert '"phase_spans": [{"phase": "memorization"' in page
    assert live.to_png()[:4] == b"\x89PNG"
    live.close()


def test_live_monitor_retells_the_story_as_records_arrive():
    """Record by record (the monitor's listener path): the timeline and bands follow the
    run, and the bands are sent only when they change."""
    first = [s for s in STORY_STEPS if s <= 14_000]
    live = LiveMonitor(story_dataset("anti", first), min_interval=0)
    sent = capture(live)
    assert [e["kind"] for e in live.timeline][-1] == "generalized"
    assert "anti-grokking" not in snapshot(live)["phase_spans"][1]["phase"]
    for step in (15_000, 16_000):
        live._on_record(story_record(step, "anti"))
    whole = story_dataset("anti", [*first, 15_000, 16_000])
    assert live.timeline == [e.to_dict() for e in timeline(whole)]
    assert live.timeline[-1]["label"] == (
        "step 15,000: test accuracy collapsed from its peak with the train split still fit "
        "(anti-grokking)"
    )
    assert [("phase_spans" in f, "loss" in f) for f in sent] == [(True, True), (True, True)]
    mode, bands = sent[-1]["phase_spans"]
    assert mode == "replace" and rows(bands)[-1] == ("anti-grokking", 15000.0, 16000.0)
    want = phase_spans(whole)
    np.testing.assert_array_equal(live.tables()["phase_spans"]["start"], want["start"])
    # a record that changes no band: its rows go out, the bands are not sent again
    live.push(story_dataset("anti", [16_000]).assign_coords(step=[16_500]))
    assert "loss" in sent[-1] and "phase_spans" in sent[-1] and "grok_marks" not in sent[-1]
    live.push(story_dataset("flat", [16_700]).drop_sel(metric=["train_acc", "test_acc"]))
    assert "loss" in sent[-1] and "phase_spans" not in sent[-1]
    live.close()


def test_followed_run_truncated_tells_the_story_again(tmp_path):
    run = write_story_run(tmp_path / "run", "grokking")
    run_dir.update_run_json(run, status="running")
    live = LiveMonitor(run, poll=3600)  # ticks by hand
    assert [e["step"] for e in live.timeline][-1] == 12_000
    resumed = ZarrRecordWriter(run / run_dir.METRICS, "a", flush_every=10**9)
    resumed.truncate(8000)  # resumed from step 8,000: the grokking never happened (yet)
    resumed.close()
    assert live._tick()
    assert [(e["step"], e["kind"]) for e in live.timeline] == [
        (2000, "train_fit"),
        (4000, "frozen"),
    ]
    assert rows(live.tables()["phase_spans"]) == [("memorization", 2000.0, 8000.0)]
    assert live.tables()["grok_marks"]["step"].size == 0
    live.close()


def test_explorer_tells_the_story_of_the_whole_run(tmp_path):
    ds = story_dataset("anti")
    ex = Explorer(ds, step=3000)
    told = story(ds)
    assert ex.timeline == [e.to_dict() for e in told.timeline]
    assert rows(ex.tables()["phase_spans"]) == rows(told.phase_spans)
    ex.step = 20_000  # scrubbing changes the step state, not the story
    assert rows(ex.tables()["grok_marks"]) == [(12000.0, "time to grok: step 12,000")]
    assert ex.to_png(tmp_path / "ex.png")[:4] == b"\x89PNG"
    assert "step 15,000: test accuracy collapsed" in ex.to_html()


def test_compare_tells_no_single_story():
    runs = [story_dataset("grokking"), story_dataset("no_grok")]
    cmp = Compare(xr.concat(runs, dim=xr.DataArray([0, 1], dims="seed", name="seed"), join="outer"))
    assert cmp.timeline == []
    assert cmp.tables()["phase_spans"]["phase"].size == 0
    assert cmp.to_png()[:4] == b"\x89PNG"  # empty bands and marks break no static form
