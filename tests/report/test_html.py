import re
import shutil
import subprocess

import numpy as np
import pytest

import grokwidgets as gw
from grokwidgets.report import metric_frame, render_report, report_specs, write_png, write_report
from grokwidgets.report.html import png_spec
from grokwidgets.views.panels import PHASE_COLORS
from grokwidgets.views.story import phase_spans, timeline
from tests._chromium import CHROMIUM, CHROMIUM_FLAGS
from tests.widgets._runs import story_dataset, write_run, write_story_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    task = gw.tasks.modular_arithmetic(p=11, train_fraction=0.5, seed=0)
    model = gw.models.MLP.for_task(task, width=16, depth=1, embed_dim=4)
    d = tmp_path_factory.mktemp("run")
    gw.train(task, model, steps=20, lr=1e-2, dir=d, progress=False)
    return d


def test_panels_then_one_chart_per_other_metric(run_dir):
    ds = gw.open_run(run_dir)
    specs = report_specs(ds)
    panels = [s["usermeta"]["panel"] for s in specs if "panel" in s.get("usermeta", {})]
    assert panels == ["loss", "accuracy"]  # the widgets' panels of the metrics recorded
    titles = [s["title"]["text"] for s in specs[len(panels) :]]
    drawn = {"train_loss", "test_loss", "train_acc", "test_acc"}
    assert titles == [str(m) for m in ds["metric"].values if m not in drawn]
    loss = specs[0]["datasets"]["loss"]
    for split in ("train", "test"):
        want = ds["metrics"].sel(metric=f"{split}_loss", layer="model").values[1:]
        np.testing.assert_allclose([r["value"] for r in loss if r["series"] == split], want)
    spec = specs[len(panels) + titles.index("weight_norm")]
    rows = next(iter(spec["datasets"].values()))
    frame = metric_frame(ds, "weight_norm")
    assert len(rows) == (frame["step"] > 0).sum()  # the log-step axis has no step 0
    want = ds["metrics"].sel(metric="weight_norm", layer="readout").values[1:]
    got = [r["value"] for r in rows if r["layer"] == "readout"]
    np.testing.assert_allclose(got, want)


def test_page_shows_panels_with_titles(run_dir):
    page = render_report(gw.open_run(run_dir))
    assert "<h2>panels</h2>" in page and "<h3>loss</h3>" in page and "<h2>metrics</h2>" in page


def test_report_is_self_contained(run_dir):
    html = write_report(run_dir).read_text()
    assert not re.search(r"<script[^>]+src=", html)
    assert "https://cdn" not in html
    assert "vegaEmbed" in html and "test_acc" in html


def test_empty_run_renders(tmp_path):
    task = gw.tasks.modular_arithmetic(p=5, train_fraction=0.5)
    gw.Monitor(gw.models.MLP.for_task(task, width=4, depth=1, embed_dim=2), task, dir=tmp_path)
    assert "No records yet" in render_report(gw.open_run(tmp_path))


def test_png(run_dir, tmp_path):
    out = write_png(gw.open_run(run_dir), tmp_path / "r.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    spec = png_spec(report_specs(gw.open_run(run_dir)), columns=2)
    n_metrics = len(report_specs(gw.open_run(run_dir))) - 2
    assert len(spec["vconcat"]) == 2 + -(-n_metrics // 2)  # a row per panel, then 2 a row
    assert all("$schema" not in row and "datasets" not in row for row in spec["vconcat"])
    with pytest.raises(ValueError, match="columns must be >= 1"):
        png_spec([], columns=0)


def test_png_of_an_empty_run_is_a_clear_error(tmp_path):
    task = gw.tasks.modular_arithmetic(p=5, train_fraction=0.5)
    gw.Monitor(gw.models.MLP.for_task(task, width=4, depth=1, embed_dim=2), task, dir=tmp_path)
    with pytest.raises(ValueError, match="no records yet"):
        write_png(gw.open_run(tmp_path), tmp_path / "r.png")


def test_report_opens_on_the_story_of_the_run(tmp_path):
    """The timeline (each event at its step) comes before the panels; the loss and accuracy
    panels, first, carry the phase bands and the time to grok as datasets."""
    ds = gw.open_run(write_story_run(tmp_path / "run", "anti"))
    page = render_report(ds)
    story = page.index('<section id="story">')
    assert story < page.index("<h2>panels</h2>") < page.index("<h3>loss</h3>")
    items = re.findall(r'<li data-step="(\d+)" data-kind="([a-z_]+)">(.*?)</li>', page)
    assert [(int(s), k) for s, k, _ in items] == [(e.step, e.kind) for e in timeline(ds)]
    assert [(int(s), k) for s, k, _ in items] == [
        (2000, "train_fit"),
        (4000, "frozen"),
        (10000, "frozen"),
        (10000, "feature_learning"),
        (12000, "generalized"),
        (15000, "anti_grokking"),
    ]
    text = re.sub(r"<[^>]+>", "", items[4][2])
    assert text == (
        "step 12,000: test accuracy ≥ 95% (time to grok, 10,000 steps after the train fit)"
    )
    assert "memorization (from step 2,000)" in page and "anti-grokking (from step 15,000)" in page
    specs = report_specs(ds)
    assert [s["usermeta"]["panel"] for s in specs[:2]] == ["loss", "accuracy"]
    want = phase_spans(ds)
    for spec in specs[:2]:
        bands = spec["datasets"]["phase_spans"]
        assert [(b["phase"], b["start"], b["end"]) for b in bands] == list(
            zip(want["phase"], want["start"], want["end"], strict=True)
        )
        assert spec["datasets"]["grok_marks"] == [
            {"step": 12000.0, "text": "time to grok: step 12,000"}
        ]
    assert '"phase_spans": [{"phase": "memorization", "start": 2000.0' in page


def test_report_of_a_run_without_phases(tmp_path):
    ds = story_dataset("flat")
    page = render_report(ds)
    assert "No events in the recorded data yet" in page and "shaded phases" not in page
    assert report_specs(ds)[0]["datasets"]["phase_spans"] == []
    for kind in ("flat", "regression", "grokking"):  # empty bands and marks break no PNG
        out = write_png(story_dataset(kind), tmp_path / f"{kind}.png")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="Debian's chromium is not installed (apt-get install chromium)",
)
@pytest.mark.parametrize("which", ["trained", "spectral", "story"])
def test_report_renders_offline_in_chromium(run_dir, tmp_path, which):
    """Headless Chromium with networking off draws every panel and chart as SVG."""
    if which == "trained":
        run = run_dir
    elif which == "spectral":
        run = write_run(tmp_path / "run", range(0, 30))
    else:
        run = write_story_run(tmp_path / "run", "grokking")
    html = write_report(run, tmp_path / "report.html")
    dom = subprocess.run(
        [
            CHROMIUM,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            html.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    n_charts = len(report_specs(gw.open_run(run)))
    assert dom.count("<svg") >= n_charts
    assert 'class="error"' not in dom  # the class a chart that failed to render gets
    if which == "spectral":
        assert "ESD (power law, xmin, MP edge)" in dom and "correlation traps" in dom
    if which == "story":  # the bands and the rule drawn, with their names, in both panels
        assert dom.count(">time to grok: step 12,000<") == 2
        for phase in ("memorization", "grokking", "generalized"):
            assert dom.count(f">{phase}</text>") == 2, phase
        bands = re.findall(
            r'aria-label="[^"]*phase: ([a-z-]+)[^"]*"[^>]*aria-roledescription="rect mark" '
            r'd="M[-\d.e]+,[-\d.e]+h([-\d.e]+)[^"]*" fill="(#[0-9a-f]+)"',
            dom,
        )
        want = [(p, PHASE_COLORS[p]) for p in ("memorization", "grokking", "generalized")]
        assert [(p, fill) for p, _, fill in bands] == want * 2  # loss, then accuracy
        assert all(float(width) > 0 for _, width, _ in bands)
        assert "step 2,000</span>: train fit reached (train accuracy ≥ 99%)" in dom
