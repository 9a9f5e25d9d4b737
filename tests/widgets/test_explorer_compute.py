"""The Explorer's "compute here": picker, button, the panels it feeds, errors in the cell."""

import json
import re
import threading
import time

import numpy as np
import pytest

import grokwidgets as gw
from grokwidgets.diagnostics.registry import available, resolve
from grokwidgets.store.checkpoints import checkpoint_path
from grokwidgets.store.computed import read_computed
from grokwidgets.views.frame import decode_frame
from grokwidgets.views.tables import esd_tables
from grokwidgets.widgets import Explorer
from grokwidgets.widgets import explorer as explorer_module

from ._runs import write_run

pytestmark = pytest.mark.usefixtures("one_thread")


def snapshot(widget):
    return decode_frame(bytes(widget._snapshot))[1]


def wait(ex, timeout=60.0):
    deadline = time.monotonic() + timeout
    while ex.computing and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not ex.computing


def test_compute_button_feeds_the_panels_and_caches(runs, sparse):
    ref = runs["ref"].sel(step=10)
    ex = Explorer(sparse, step=10)
    assert "spectral" not in ex.panels
    messages = []
    ex.observe(lambda change: messages.append(change["new"]), "message")
    ex._on_front_end(ex, {"type": "compute", "step": 10, "names": ["htsr"]}, [])
    wait(ex)
    assert "computing htsr at step 10 (1/1)…" in messages
    assert ex.message.startswith("computed htsr at step 10 from step_00000010.safetensors")
    assert ex.status == "finished"
    assert "spectral" in ex.panels and "htsr" not in ex.computable
    tables = snapshot(ex)
    want = esd_tables(ref)
    for name in ("esd", "esd_fit", "esd_marks"):
        mode, table = tables[name]
        assert mode == "replace" and len(table["layer"]) > 0
        for col, values in want[name].items():
            np.testing.assert_array_equal(np.asarray(table[col]), values, err_msg=name)
    alpha = tables["alpha"][1]
    at10 = (alpha["step"] == 10) & (alpha["series"] == "encoder.0")
    np.testing.assert_allclose(
        alpha["value"][at10],
        [ref["metrics"].sel(layer="encoder.0", metric="htsr_alpha").item()],
        rtol=1e-12,
    )
    # series stay in step order after the new point
    assert np.all(np.diff(tables["loss"][1]["step"][tables["loss"][1]["series"] == "train"]) > 0)
    # a reopened Explorer shows the cached values and does not offer them again
    again = Explorer(sparse, step=10)
    assert "htsr" not in again.computable and "spectral" in again.panels
    assert "computed from the checkpoint: htsr" in again.message
    np.testing.assert_array_equal(again.tables()["esd"]["lam"], want["esd"]["lam"])


def test_the_handler_returns_at_once(sparse, monkeypatch):
    release = threading.Event()
    real = explorer_module.compute_at

    def slow(*args, **kwargs):
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(explorer_module, "compute_at", slow)
    ex = Explorer(sparse, step=10)
    t0 = time.perf_counter()
    ex._on_front_end(ex, {"type": "compute", "step": 10, "names": ["htsr"]}, [])
    assert time.perf_counter() - t0 < 1.0
    assert ex.computing and ex.status == "computing"
    assert ex.message == "loading the checkpoint of step 10…"
    ex._on_front_end(ex, {"type": "compute", "step": 10, "names": ["htsr"]}, [])
    assert ex.message == "cannot compute: A computation is running already; wait for it to finish."
    ex.step = 0  # scrubbing goes on meanwhile
    release.set()
    wait(ex)
    assert ex.message.startswith("computed htsr at step 10")
    assert ex.step == 0 and ex.status == "finished"


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("corrupt", r"step_00000010\.safetensors cannot be read .*corrupt"),
        ("missing", r"No checkpoint at step 10: .*step_00000010\.safetensors does not exist"),
        ("architecture", r"step_00000010\.safetensors does not fit this model: .*size mismatch"),
    ],
)
def test_a_checkpoint_that_fails_to_load_is_told_in_the_cell(sparse, damage, expected):
    ex = Explorer(sparse, step=10)
    before = list(ex.computable)
    path = checkpoint_path(sparse, 10)
    if damage == "corrupt":
        path.write_bytes(b"\x00" * 8 + b"not a safetensors file")
    elif damage == "missing":
        path.unlink()
    else:
        info = json.loads((sparse / "run.json").read_text())
        info["config"]["model"]["width"] = 8
        (sparse / "run.json").write_text(json.dumps(info))
    ex._on_front_end(ex, {"type": "compute", "step": 10, "names": ["htsr"]}, [])
    wait(ex)
    assert ex.message.startswith("cannot compute at step 10: ")
    assert str(path) in ex.message
    assert re.search(expected, ex.message, flags=re.DOTALL)
    assert ex.status == "finished" and ex.computable == before
    assert read_computed(sparse) == []


def test_bad_requests_are_told_in_the_cell(sparse):
    ex = Explorer(sparse, step=10)
    ex._on_front_end(ex, {"type": "compute", "step": 5}, [])
    assert ex.message.startswith("cannot compute: Step 5 has no checkpoint")
    ex._on_front_end(ex, {"type": "compute", "step": 20, "names": ["ntk"]}, [])
    assert "Cannot compute ['ntk'] at step 20: already there" in ex.message
    ex._on_front_end(ex, {"type": "compute", "step": "ten"}, [])
    assert ex.message.startswith("cannot compute: invalid literal")
    assert not ex.computing


# the diagnostics known when this module was imported (tests register more)
KNOWN_AT_IMPORT = frozenset(available())


def test_computable_lists_what_is_missing_at_checkpoints(sparse, tmp_path):
    # the diagnostics known when this module was imported (tests register more, e.g. ntk copies)
    every = [d.name for d in resolve(available()) if d.name in KNOWN_AT_IMPORT]

    def own(names):
        return [n for n in names if n in every]

    ex = Explorer(sparse)
    assert ex.checkpoint_steps == [0, 10, 20] and ex.step == 20
    assert own(ex.computable) == [
        n for n in every if n not in ("loss", "weights", "grad_norm", "ntk")
    ]
    ex.step = 10
    assert own(ex.computable) == every
    # recorded steps without checkpoints: nothing to compute
    plain = Explorer(write_run(tmp_path / "plain", range(0, 5)))
    assert plain.computable == []
    with pytest.raises(ValueError, match="no checkpoint to compute from"):
        plain.compute(["htsr"])
    assert Explorer(gw.open_run(sparse).drop_attrs()).computable == []
    # a stray file among the checkpoints: the records still show, and the cell says why
    (sparse / "checkpoints" / "notes.txt").write_text("mine")
    stray = Explorer(sparse)
    assert stray.checkpoint_steps == [] and stray.computable == []
    assert "checkpoints not listed: " in stray.message and "notes.txt" in stray.message
