import re
import shutil
import subprocess

import numpy as np
import pytest

import grokwidgets as gw
from grokwidgets.report import metric_frame, render_report, report_specs, write_png, write_report
from grokwidgets.report.html import png_spec
from tests._chromium import CHROMIUM, CHROMIUM_FLAGS
from tests.widgets._runs import write_run


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


@pytest.mark.skipif(
    shutil.which("chromium") is None,
    reason="Debian's chromium is not installed (apt-get install chromium)",
)
@pytest.mark.parametrize("which", ["trained", "spectral"])
def test_report_renders_offline_in_chromium(run_dir, tmp_path, which):
    """Headless Chromium with networking off draws every panel and chart as SVG."""
    run = run_dir if which == "trained" else write_run(tmp_path / "run", range(0, 30))
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
