"""Real-browser tests: JupyterLab on localhost, Debian's Chromium driven by Playwright.

Enable them with ``apt-get install chromium`` and ``pip install jupyterlab playwright``
(never ``playwright install``: the system Chromium is used). Screenshots are saved under
``build/browser-artifacts/``.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests._chromium import CHROMIUM
from tests._chromium import CHROMIUM_FLAGS as ARGS

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "build" / "browser-artifacts"
JUPYTER = Path(sys.executable).with_name("jupyter")

_missing = [
    why
    for ok, why in (
        (Path(CHROMIUM).exists(), f"chromium not found at {CHROMIUM} (apt-get install chromium)"),
        (JUPYTER.exists(), "jupyter not installed (pip install jupyterlab)"),
    )
    if not ok
]
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    _missing.append("playwright not installed (pip install playwright; no 'playwright install')")

pytestmark = [
    pytest.mark.skipif(bool(_missing), reason="browser tests need: " + "; ".join(_missing)),
    pytest.mark.slow,
]

SETUP = f"""
import sys; sys.path.insert(0, {str(ROOT)!r})
from tests.widgets._runs import dataset
from grokwidgets.widgets import LiveMonitor, Explorer
live = LiveMonitor(dataset(range(0, 40), spectrum=False), min_interval=0)
live
"""
UPDATE = "live.push(dataset(range(40, 47), spectrum=False))"
EXPLORER = "ex = Explorer(dataset(range(0, 25)), step=0)\nex"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in (SETUP, UPDATE, EXPLORER)]
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
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [
        str(JUPYTER), "lab", "--no-browser", "--allow-root", "--ip=127.0.0.1",
        f"--port={port}", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
    ]  # fmt: skip
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(root / ".jupyter")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    pytest.fail(f"JupyterLab did not start:\n{err[-3000:]}")
                time.sleep(0.3)
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def page(lab):
    url, token = lab
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
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
        page.gw_errors = errors  # type: ignore[attr-defined]
        yield page
        browser.close()


def _run_cell(page, index: int) -> None:
    page.evaluate(
        """async (i) => {
          const app = window.jupyterapp;
          const panel = app.shell.currentWidget;
          await panel.sessionContext.ready;
          panel.content.activeCellIndex = i;
          await app.commands.execute('notebook:run-cell');
        }""",
        index,
    )


def _panel(page, which: str, attr: str) -> int:
    value = page.evaluate(
        f"() => document.querySelector('.gw-panel[data-panel={which}]')?.dataset.{attr}"
    )
    return int(value) if value is not None else -1


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_live_monitor_update_adds_exactly_the_new_points(page):
    _run_cell(page, 0)
    page.wait_for_selector(".gw-panel[data-panel=loss][data-items='78']", timeout=60_000)
    assert _panel(page, "loss", "rows") == 78  # steps 1..39, train and test
    assert _panel(page, "accuracy", "items") == 78
    _run_cell(page, 1)
    page.wait_for_selector(".gw-panel[data-panel=loss][data-items='92']", timeout=30_000)
    assert _panel(page, "loss", "rows") == 92  # exactly 7 steps x 2 series more
    assert not page.gw_errors, page.gw_errors
    assert not page.query_selector(".gw-error")
    _shot(page, "live_monitor.png")


def test_explorer_scrubber_changes_the_esd(page):
    _run_cell(page, 2)
    scrub = page.wait_for_selector(".gw-scrub input[type=range]", timeout=60_000)
    page.wait_for_selector(".gw-panel[data-panel=spectral]:not([data-rows='0'])", timeout=30_000)

    esd_js = "document.querySelector('.gw-panel[data-panel=spectral]').gwView.data('esd')[0]?.lam"

    def esd_first() -> float:
        return page.evaluate(
            "() => document.querySelector('.gw-panel[data-panel=spectral]').gwView"
            ".data('esd')[0]?.lam ?? -1"
        )

    def label() -> str:
        return page.inner_text(".gw-scrub span")

    assert label() == "step 0"
    at0 = esd_first()
    scrub.focus()
    page.keyboard.press("End")
    page.wait_for_function(
        "() => document.querySelector('.gw-scrub span').textContent === 'step 24'"
    )
    page.wait_for_function(f"() => {esd_js} !== {at0}")
    at_end = esd_first()
    assert at_end != at0
    scrub.focus()  # JupyterLab may take the focus back to the notebook between key presses
    page.keyboard.press("ArrowLeft")
    page.wait_for_function(
        "() => document.querySelector('.gw-scrub span').textContent === 'step 23'"
    )
    scrub.focus()
    page.keyboard.press("Home")
    page.wait_for_function(
        "() => document.querySelector('.gw-scrub span').textContent === 'step 0'"
    )
    page.wait_for_function(f"() => {esd_js} === {at0}")
    assert not page.query_selector(".gw-error")
    _shot(page, "explorer.png")
