"""Real-browser tests: JupyterLab on localhost, Debian's Chromium driven by Playwright.

Enable them with ``apt-get install chromium`` and ``pip install jupyterlab playwright``
(never ``playwright install``: the system Chromium is used; ``GW_CHROMIUM`` points
elsewhere). One JupyterLab, one notebook and one kernel serve every test; each test runs
its own cells. Screenshots of the cells are saved under ``build/browser-artifacts/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests._chromium import CHROMIUM, CHROMIUM_FLAGS, jupyter_lab, missing

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "build" / "browser-artifacts"

_missing = missing()
pytestmark = [
    pytest.mark.skipif(bool(_missing), reason="browser tests need: " + "; ".join(_missing)),
    pytest.mark.slow,
]

TRAIN_STEPS, CADENCE = 4000, 50  # a run of a few seconds: several 0.25 s live updates
STORY_FIRST = 14_000  # the story cell's last step before its update
SEEDS = (0, 1, 2)

# The notebook's cells, by name: the page runs 'setup', then each test runs its own cells.
CELLS = {
    "setup": f"""import sys; sys.path.insert(0, {str(ROOT)!r})
from tests.widgets._runs import dataset
from grokwidgets.widgets import LiveMonitor, Explorer, Compare""",
    "live": """live = LiveMonitor(dataset(range(0, 40), spectrum=False), min_interval=0)
live""",
    "live_update": "live.push(dataset(range(40, 47), spectrum=False))",
    "explorer": "ex = Explorer(dataset(range(0, 25)), step=0)\nex",
    "train": f"""import grokwidgets as gw, torch
torch.set_num_threads(1)  # two threads on a busy 2-core runner contend: 10x slower
task = gw.tasks.modular_arithmetic(p=23, op="+", train_fraction=0.5, seed=0)
model = gw.models.MLP.for_task(task, width=64, depth=1, embed_dim=16, seed=0)
run = gw.train(task, model, steps={TRAIN_STEPS}, lr=3e-3, weight_decay=1.0, cadence={CADENCE},
               dir="train_run", progress=False, live=True)""",
    "compare": f"""import xarray as xr
runs = []
for seed in {SEEDS!r}:  # seed s: steps 0..19+10s, losses x(1+s), accuracies x(1-s/4)
    ds = dataset(range(0, 20 + 10 * seed), spectrum=False)
    scale = [1 + seed if m.endswith("loss") else 1 - seed / 4 for m in ds.metric.values]
    ds["metrics"] = ds["metrics"] * xr.DataArray(scale, dims="metric")
    runs.append(ds)
sweep = xr.concat(runs, dim=xr.DataArray(list({SEEDS!r}), dims="seed", name="seed"), join="outer")
cmp = Compare(sweep)
cmp""",
    "compare_facet": """import xarray as xr
facets = []
for frac in (0.3, 0.5):  # 2 seeds x 2 train fractions: colour by seed, a panel per fraction
    per_seed = [dataset(range(0, 12 if frac == 0.3 else 16), spectrum=False) for _ in (0, 1)]
    facets.append(xr.concat(per_seed, dim=xr.DataArray([0, 1], dims="seed"), join="outer"))
grid = xr.concat(facets, dim=xr.DataArray([0.3, 0.5], dims="train_fraction"), join="outer")
cmp2 = Compare(grid, color="seed", facet="train_fraction")
cmp2""",
    "bad": "bad = LiveMonitor(dataset(range(0, 10), spectrum=False), min_interval=0)\nbad",
    "bad_frame": 'bad.send({"type": "frame"}, [b"garbage"])',
    "bad_specs": """import copy
spec = copy.deepcopy(bad._specs[0])  # a panel whose dataflow throws on the rows it gets
for unit in spec.get("layer", [spec]):  # the loss curves (under them: the phase bands)
    if unit.get("data") == {"name": "loss"}:
        unit["transform"] = [{"calculate": "datum.value.foo.bar", "as": "boom"}]
spec["usermeta"] = {**spec["usermeta"], "panel": "boom", "title": "throws on its rows"}
nonsense = {"usermeta": {"panel": "nonsense", "title": "not a mark", "datasets": ["loss"]},
            "data": {"name": "loss"}, "mark": "nonsense"}
bad._specs = [spec, nonsense]""",
    # A tiny run that records only "basic", with checkpoints at 0, 10, 20: htsr is computable.
    "compute": """import grokwidgets as gw, torch
torch.set_num_threads(1)
tiny = gw.tasks.modular_arithmetic(p=11, op="+", train_fraction=0.5, seed=0)
gw.train(tiny, gw.models.MLP.for_task(tiny, width=32, depth=1, seed=0), steps=20, lr=1e-2,
         dir="compute_run", progress=False, diagnostics=["basic"], cadence=10,
         checkpoint_cadence=10)
cex = Explorer("compute_run", step=0)
cex""",
    "compute_state": """import json
print(json.dumps({"step": cex.step, "computable": cex.computable,
                  "esd": len(cex.tables()["esd"]["lam"]), "computing": cex.computing}))""",
    "compute_corrupt": """from grokwidgets.store.checkpoints import checkpoint_path
broken = checkpoint_path(cex.run_dir, 20)
broken.write_bytes(b"\\x00" * 8 + b"not a safetensors file")
cex.step = 20
print(broken)""",
    # A run that memorizes, groks, generalizes (time to grok 12,000), then collapses at 15,000.
    "story": f"""from tests.widgets._runs import story_dataset
story_live = LiveMonitor(story_dataset("anti", range(0, {STORY_FIRST + 1}, 1000)), min_interval=0)
story_live""",
    "story_update": "story_live.push(story_dataset('anti', [15_000, 16_000]))",
}
INDEX = {name: i for i, name in enumerate(CELLS)}


def _notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in CELLS.values()]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    _notebook(root / "widgets.ipynb")
    try:
        with jupyter_lab(root) as (url, token):
            yield root, url, token
    except RuntimeError as err:
        pytest.fail(str(err))


@pytest.fixture(scope="module")
def page(lab):
    from playwright.sync_api import sync_playwright

    _, url, token = lab
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1800, "height": 1800})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}/lab/tree/widgets.ipynb?reset&token={token}")
        page.wait_for_function(
            "() => window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell')",
            timeout=60_000,
        )
        page.wait_for_function(
            "() => document.querySelector('.jp-Notebook-ExecutionIndicator[data-status=idle]')"
            " || document.querySelector('.jp-KernelStatus')",
            timeout=60_000,
        )
        page.evaluate("() => window.jupyterapp.shell.collapseLeft()")  # room for the panels
        page.gw_errors = errors  # type: ignore[attr-defined]
        _run_cell(page, "setup")
        yield page
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "lab.png"))  # the whole window: no pop-up over it
        browser.close()


RUN_CELL = """async (i) => {
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  await panel.sessionContext.ready;
  panel.content.activeCellIndex = i;
  await app.commands.execute('notebook:run-cell');  // resolves when the cell has run
  return panel.content.widgets[i].model.outputs.toJSON();
}"""


def _check_outputs(name: str, outputs: list[dict]) -> None:
    for out in outputs:
        if out.get("output_type") == "error":
            tb = "\n".join(out.get("traceback", []))
            pytest.fail(f"cell {name!r} raised {out['ename']}: {out['evalue']}\n{tb}")


def _run_cell(page, name: str) -> None:
    _check_outputs(name, page.evaluate(RUN_CELL, INDEX[name]))


def _stdout(page, name: str) -> str:
    """Run the cell and return what it printed."""
    outputs = page.evaluate(RUN_CELL, INDEX[name])
    _check_outputs(name, outputs)
    return "".join(
        "".join(o["text"]) if isinstance(o["text"], list) else o["text"]
        for o in outputs
        if o.get("output_type") == "stream" and o.get("name") == "stdout"
    )


def _cell(page, name: str):
    return page.locator(".jp-Notebook .jp-Cell").nth(INDEX[name])


def _attr(cell, panel: str, attr: str) -> int:
    value = cell.locator(f".gw-panel[data-panel={panel}]").get_attribute(f"data-{attr}")
    return int(value) if value is not None else -1


def _shot(cell, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    cell.screenshot(path=str(ARTIFACTS / name))


def _series_rows(cell, panel: str, dataset: str) -> list[dict]:
    return cell.locator(f".gw-panel[data-panel={panel}]").evaluate(
        f"el => el.gwView.data({dataset!r}).map(d => ({{...d}}))"
    )


def test_live_monitor_update_adds_exactly_the_new_points(page):
    _run_cell(page, "live")
    cell = _cell(page, "live")
    cell.locator(".gw-panel[data-panel=loss][data-items='78']").wait_for(timeout=60_000)
    assert _attr(cell, "loss", "rows") == 78  # steps 1..39, train and test
    assert _attr(cell, "accuracy", "items") == 78
    _run_cell(page, "live_update")
    cell.locator(".gw-panel[data-panel=loss][data-items='92']").wait_for(timeout=30_000)
    assert _attr(cell, "loss", "rows") == 92  # exactly 7 steps x 2 series more
    assert not page.gw_errors, page.gw_errors
    assert cell.locator(".gw-error").count() == 0
    _shot(cell, "live_monitor.png")


def test_explorer_scrubber_changes_the_esd(page):
    _run_cell(page, "explorer")
    cell = _cell(page, "explorer")
    scrub = cell.locator(".gw-scrub input[type=range]")
    scrub.wait_for(timeout=60_000)
    spectral = cell.locator(".gw-panel[data-panel=spectral]:not([data-rows='0'])")
    spectral.wait_for(timeout=30_000)
    esd = spectral.element_handle()
    label = cell.locator(".gw-scrub span").element_handle()
    first_lam = "(el.gwView.data('esd')[0]?.lam ?? -1)"

    def wait_label(text: str) -> None:
        page.wait_for_function("([el, t]) => el.textContent === t", arg=[label, text])

    wait_label("step 0")
    at0 = esd.evaluate(f"el => {first_lam}")
    assert at0 > 0  # the ESD of step 0 is shown
    scrub.focus()
    page.keyboard.press("End")
    wait_label("step 24")
    page.wait_for_function(f"([el, at0]) => {first_lam} !== at0", arg=[esd, at0])
    assert esd.evaluate(f"el => {first_lam}") != at0
    scrub.focus()  # JupyterLab may take the focus back to the notebook between key presses
    page.keyboard.press("ArrowLeft")
    wait_label("step 23")
    scrub.focus()
    page.keyboard.press("Home")
    wait_label("step 0")
    page.wait_for_function(f"([el, at0]) => {first_lam} === at0", arg=[esd, at0])
    assert cell.locator(".gw-error").count() == 0
    _shot(cell, "explorer.png")


# Samples the loss panel of cell i every 25 ms while the cell runs.
RUN_SAMPLED = """async (i) => {
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  await panel.sessionContext.ready;
  const node = panel.content.widgets[i].node;
  const samples = [];
  let running = true;
  const sample = () => {
    const loss = node.querySelector('.gw-panel[data-panel=loss]');
    const bar = node.querySelector('.gw-status');
    samples.push({running, items: Number(loss?.dataset.items ?? -1),
                  status: bar ? bar.textContent : ''});
  };
  const timer = setInterval(sample, 25);
  panel.content.activeCellIndex = i;
  await app.commands.execute('notebook:run-cell');
  running = false;
  sample();
  clearInterval(timer);
  return {samples, outputs: panel.content.widgets[i].model.outputs.toJSON()};
}"""


def test_train_live_updates_the_cell_while_it_runs(page, lab):
    import grokwidgets as gw

    res = page.evaluate(RUN_SAMPLED, INDEX["train"])
    _check_outputs("train", res["outputs"])
    samples = res["samples"]
    cell = _cell(page, "train")
    during = [s for s in samples if s["running"] and s["status"].startswith("running")]
    counts = [s["items"] for s in during if s["items"] > 0]
    # The view grew while gw.train was still running, in several updates, never shrinking.
    assert len(set(counts)) >= 3, samples[-5:]
    assert counts == sorted(counts)

    ds = gw.open_run(lab[0] / "train_run")
    loss = ds["metrics"].sel(layer="model")
    steps = ds["step"].values
    expected = {}
    for split in ("train", "test"):
        col = loss.sel(metric=f"{split}_loss").values
        ok = np.isfinite(col) & (steps > 0)  # the log-step axis has no step 0
        expected[split] = (steps[ok], col[ok])
    n = sum(len(s) for s, _ in expected.values())
    assert n == 2 * (TRAIN_STEPS // CADENCE)  # a record every CADENCE steps, both losses
    assert max(counts) <= n
    cell.locator(f".gw-panel[data-panel=loss][data-items='{n}']").wait_for(timeout=30_000)
    cell.locator(".gw-status", has_text="finished").wait_for(timeout=30_000)
    assert _attr(cell, "loss", "rows") == n
    assert _attr(cell, "accuracy", "items") == n
    rows = _series_rows(cell, "loss", "loss")
    for split, (s, v) in expected.items():
        got = sorted((r["step"], r["value"]) for r in rows if r["series"] == split)
        np.testing.assert_array_equal([g[0] for g in got], s)
        np.testing.assert_allclose([g[1] for g in got], v, rtol=1e-6)
    assert cell.locator(".gw-error").count() == 0
    assert not page.gw_errors, page.gw_errors
    _shot(cell, "live_train.png")


# Per line of a panel: its series label, stroke colour, dash and number of points drawn.
LINES = """el => {
  const out = [];
  const walk = (item) => {
    if (!item) return;
    if (item.marktype === 'line') {
      if (item.items.length) {
        const first = item.items[0];
        out.push({series: first.datum.series,
                  stroke: first.stroke, dash: String(first.strokeDash ?? ''),
                  n: item.items.length});
      }
      return;
    }
    for (const child of item.items ?? []) walk(child);
  };
  walk(el.gwView.scenegraph().root);
  return out;
}"""


def test_compare_overlays_one_line_per_run_and_series(page):
    _run_cell(page, "compare")
    cell = _cell(page, "compare")
    # seed s: steps 1..19+10s drawn, train and test
    per_seed = {s: 19 + 10 * s for s in SEEDS}
    n = 2 * sum(per_seed.values())
    for panel in ("loss", "accuracy"):
        cell.locator(f".gw-panel[data-panel={panel}][data-items='{n}']").wait_for(timeout=60_000)
        assert _attr(cell, panel, "rows") == n
        lines = cell.locator(f".gw-panel[data-panel={panel}]").evaluate(LINES)
        want = {
            f"seed={s} · {split}": k for s, k in per_seed.items() for split in ("train", "test")
        }
        assert {line["series"]: line["n"] for line in lines} == want
        assert len(lines) == len(want)  # one line per run and split
        runs = {line["series"].split(" · ")[0] for line in lines}
        assert len(runs) == len(SEEDS)
        for a in lines:  # colour by run (the sweep value), dash by split
            for b in lines:
                same_run = a["series"].split(" · ")[0] == b["series"].split(" · ")[0]
                assert (a["stroke"] == b["stroke"]) == same_run, (a, b)
                if same_run and a is not b:
                    assert a["dash"] != b["dash"], (a, b)
    assert "3 runs by seed" in cell.locator(".gw-status").inner_text()
    assert cell.locator(".gw-error").count() == 0
    _shot(cell, "compare.png")


def test_compare_facets_draw_a_panel_per_value(page):
    _run_cell(page, "compare_facet")
    cell = _cell(page, "compare_facet")
    for frac, steps in ((0.3, 11), (0.5, 15)):  # steps 1.. drawn, 2 seeds x train/test
        panel = f"accuracy · train_fraction={frac}"
        sel = f".gw-panel[data-panel='{panel}'][data-items='{4 * steps}']"
        cell.locator(sel).wait_for(timeout=60_000)
        lines = cell.locator(f".gw-panel[data-panel='{panel}']").evaluate(LINES)
        assert {line["series"]: line["n"] for line in lines} == {
            f"train_fraction={frac},seed={s} · {split}": steps
            for s in (0, 1)
            for split in ("train", "test")
        }
        assert len({line["stroke"] for line in lines}) == 2  # coloured by seed
    assert "by seed, faceted by train_fraction" in cell.locator(".gw-status").inner_text()
    assert cell.locator(".gw-error").count() == 0
    _shot(cell, "compare_facet.png")


def test_front_end_errors_show_in_the_cell(page):
    before = list(page.gw_errors)
    _run_cell(page, "bad")
    cell = _cell(page, "bad")
    cell.locator(".gw-panel[data-panel=loss][data-items='18']").wait_for(timeout=60_000)
    host = cell.locator(".gw-root [data-seq]")
    assert host.get_attribute("data-seq") == "1"

    _run_cell(page, "bad_frame")  # a frame the front end cannot decode
    err = cell.locator(".gw-error", has_text="could not read an update sent by the kernel")
    err.wait_for(timeout=30_000)
    assert err.is_visible()
    assert 'not a grokwidgets frame (7 bytes starting with "garb"' in err.inner_text()
    # ... and the view asked for a new snapshot, so it still shows every row.
    cell.locator(".gw-root [data-seq='2']").wait_for(timeout=30_000)
    assert _attr(cell, "loss", "rows") == 18

    _run_cell(page, "bad_specs")  # a panel that throws on its rows, one Vega cannot compile
    boom = cell.locator(".gw-panel[data-panel=boom] .gw-error")
    boom.wait_for(timeout=30_000)
    assert boom.is_visible()
    text = boom.inner_text()
    assert 'the panel "throws on its rows" failed to draw' in text
    assert "bar" in text  # Vega's own message: cannot read 'bar' of undefined
    nonsense = cell.locator(".gw-panel[data-panel=nonsense] .gw-error")
    nonsense.wait_for(timeout=30_000)
    assert nonsense.is_visible()
    assert 'the panel "not a mark" cannot be drawn' in nonsense.inner_text()
    assert len(nonsense.inner_text()) > len('the panel "not a mark" cannot be drawn: ')
    # the earlier error stays, and nothing escaped as an uncaught page error
    assert err.is_visible()
    assert page.gw_errors == before, page.gw_errors
    _shot(cell, "errors.png")


# Points drawn by the ESD histogram (its line's point overlay: one symbol per row drawn).
ESD_POINTS = """el => {
  let n = 0;
  const walk = (item) => {
    if (!item) return;
    if (item.marktype === 'symbol') {
      n += item.items.filter((d) => d.datum && 'lam' in d.datum && 'density' in d.datum).length;
      return;
    }
    for (const child of item.items ?? []) walk(child);
  };
  walk(el.gwView.scenegraph().root);
  return n;
}"""


def test_explorer_computes_htsr_at_a_checkpoint_and_tells_a_corrupt_one(page):
    import json

    before = list(page.gw_errors)
    _run_cell(page, "compute")
    cell = _cell(page, "compute")
    scrub = cell.locator(".gw-scrub input[type=range]")
    scrub.wait_for(timeout=60_000)
    label = cell.locator(".gw-scrub span")
    pick = cell.get_by_role("combobox", name="diagnostics to compute")
    button = cell.get_by_role("button", name="compute here")
    assert label.inner_text() == "step 0 (checkpoint)"
    assert cell.locator(".gw-panel[data-panel=spectral]").count() == 0  # no htsr recorded
    scrub.focus()
    page.keyboard.press("ArrowRight")  # steps 0, 10, 20: to step 10
    cell.locator(".gw-scrub span", has_text="step 10 (checkpoint)").wait_for(timeout=30_000)
    state = json.loads(_stdout(page, "compute_state"))
    assert state["step"] == 10
    computable = state["computable"]
    assert "htsr" in computable
    assert not {"loss", "weights", "grad_norm"} & set(computable)  # recorded by "basic"
    assert pick.is_visible() and button.is_visible() and button.is_enabled()
    options = pick.locator("option")
    assert options.evaluate_all("os => os.map(o => o.value)") == ["", *computable]
    assert options.first.text_content() == f"all ({len(computable)})"

    pick.select_option("htsr")
    button.click()
    status = cell.locator(".gw-status")
    done = cell.locator(".gw-status", has_text="computed htsr at step 10 from step_00000010")
    done.wait_for(timeout=60_000)
    assert "cannot" not in status.inner_text()
    spectral = cell.locator(".gw-panel[data-panel=spectral]:not([data-rows='0'])")
    spectral.wait_for(timeout=30_000)
    state = json.loads(_stdout(page, "compute_state"))
    assert state["esd"] > 0 and not state["computing"]
    assert "htsr" not in state["computable"]
    drawn = spectral.evaluate(ESD_POINTS)
    sent = spectral.evaluate("el => el.gwView.data('esd').length")
    assert drawn == sent == state["esd"]
    assert "htsr" not in options.evaluate_all("os => os.map(o => o.value)")
    assert options.evaluate_all("os => os.map(o => o.value)") == ["", *state["computable"]]
    assert cell.locator(".gw-error").count() == 0
    # the panel's three charts sit side by side, even with α at one step only
    xs = spectral.evaluate(
        "el => el.gwView.scenegraph().root.items[0].items.map(m => m.items[0].x)"
    )
    assert len(xs) == 3 and all(isinstance(x, int | float) for x in xs), xs
    assert xs[0] < xs[1] < xs[2], xs
    _shot(cell, "explorer_compute.png")

    # A corrupt checkpoint at step 20: the cell says which file and why; the rest stays.
    broken = _stdout(page, "compute_corrupt").strip()
    cell.locator(".gw-scrub span", has_text="step 20 (checkpoint)").wait_for(timeout=30_000)
    loss_items = _attr(cell, "loss", "items")
    assert loss_items > 0
    button.wait_for(state="visible", timeout=30_000)
    button.click()
    bad = cell.locator(".gw-status.gw-bad", has_text="cannot be read")
    bad.wait_for(timeout=60_000)
    text = bad.inner_text()
    assert bad.is_visible()
    assert "cannot compute at step 20" in text and broken in text, text
    cell.locator(".gw-scrub button:not([disabled])").wait_for(timeout=30_000)
    # the panels stay drawn: the ESD shown is still step 10's (the last with a spectrum)
    cell.locator(f".gw-panel[data-panel=loss][data-items='{loss_items}']").wait_for(timeout=30_000)
    spectral.wait_for(timeout=30_000)
    assert spectral.evaluate(ESD_POINTS) == state["esd"]
    after = json.loads(_stdout(page, "compute_state"))  # the kernel still runs cells
    assert after["step"] == 20 and not after["computing"]
    assert "htsr" in after["computable"]  # nothing was cached at step 20
    assert page.gw_errors == before, page.gw_errors
    _shot(cell, "explorer_compute_error.png")


# The phase bands (rect items with a phase) and the labels (text items) a panel draws.
STORY_MARKS = """el => {
  const bands = [], texts = [];
  const walk = (item) => {
    if (!item) return;
    if (item.marktype === 'rect' || item.marktype === 'text') {
      for (const d of item.items ?? []) {
        const row = d.datum ?? {};
        const story = 'phase' in row || ('step' in row && 'text' in row);  // a band, the mark
        if (story && item.marktype === 'text') texts.push(d.text);
        if (story && item.marktype === 'rect') {
          bands.push({phase: row.phase, fill: d.fill, width: d.width});
        }
      }
      return;
    }
    for (const child of item.items ?? []) walk(child);
  };
  walk(el.gwView.scenegraph().root);
  return {bands, texts};
}"""


def test_live_monitor_shows_the_story_timeline_and_phase_bands(page):
    """The timeline lists the story's events; the loss and accuracy panels shade the phases
    and mark the time to grok; a push of new records retells both."""
    from grokwidgets.views.panels import PHASE_COLORS
    from grokwidgets.views.story import timeline
    from tests.widgets._runs import story_dataset

    before = list(page.gw_errors)
    _run_cell(page, "story")
    cell = _cell(page, "story")
    first = story_dataset("anti", range(0, STORY_FIRST + 1, 1000))
    want = [e.label for e in timeline(first)]
    assert len(want) == 5 and want[-1].startswith("step 12,000: test accuracy ≥ 95%")
    items = cell.locator(".gw-timeline li")
    cell.locator(f".gw-timeline li:nth-child({len(want)})").wait_for(timeout=60_000)
    assert items.all_inner_texts() == want
    phases = ["memorization", "grokking", "generalized"]
    for panel in ("loss", "accuracy"):
        cell.locator(f".gw-panel[data-panel={panel}][data-bands='3']").wait_for(timeout=30_000)
        assert _attr(cell, panel, "rows") == 2 * 14  # the curves' rows, not the overlays'
        drawn = cell.locator(f".gw-panel[data-panel={panel}]").evaluate(STORY_MARKS)
        assert [(b["phase"], b["fill"]) for b in drawn["bands"]] == [
            (p, PHASE_COLORS[p]) for p in phases
        ]
        assert all(b["width"] > 0 for b in drawn["bands"])
        assert sorted(drawn["texts"]) == sorted([*phases, "time to grok: step 12,000"])
    _shot(cell, "story.png")

    _run_cell(page, "story_update")  # the test accuracy collapses at 15,000
    cell.locator(f".gw-timeline li:nth-child({len(want) + 1})").wait_for(timeout=30_000)
    whole = story_dataset("anti", [*range(0, STORY_FIRST + 1, 1000), 15_000, 16_000])
    assert items.all_inner_texts() == [e.label for e in timeline(whole)]
    assert items.last.inner_text().startswith("step 15,000: test accuracy collapsed")
    loss = cell.locator(".gw-panel[data-panel=loss][data-bands='4']")
    loss.wait_for(timeout=30_000)
    assert loss.evaluate(STORY_MARKS)["bands"][-1]["phase"] == "anti-grokking"
    assert cell.locator(".gw-error").count() == 0
    assert page.gw_errors == before, page.gw_errors
    _shot(cell, "story_update.png")
