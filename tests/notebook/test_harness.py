"""The notebooks' shared switch, scratch directory and claim records."""

import json
from pathlib import Path

import pytest

import grokwidgets as gw
from grokwidgets.notebook import CLAIMS_ENV, SCRATCH_ENV, SMOKE_ENV, claim, scale, scratch, smoke


@pytest.mark.parametrize(
    ("value", "expected"), [("", False), ("0", False), ("no", False), ("1", True), ("True", True)]
)
def test_smoke_switch_reads_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv(SMOKE_ENV, value)
    assert smoke() is expected
    assert scale(full=6000, smoke=60) == (60 if expected else 6000)


def test_unreadable_switch_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(SMOKE_ENV, "maybe")
    with pytest.raises(ValueError, match=SMOKE_ENV):
        scale(full=1, smoke=2)


def test_scratch_is_outside_the_repo_separate_per_mode_and_cleaned(monkeypatch, tmp_path):
    monkeypatch.setenv(SCRATCH_ENV, str(tmp_path))
    monkeypatch.setenv(SMOKE_ENV, "1")
    first = scratch("nb")
    (first / "old").write_text("x")
    assert first == tmp_path / "smoke" / "nb"
    assert not (scratch("nb") / "old").exists()  # cleaned
    (first / "kept").write_text("x")
    assert (scratch("nb", clean=False) / "kept").exists()
    monkeypatch.setenv(SMOKE_ENV, "0")
    assert scratch("nb") == tmp_path / "full" / "nb"
    monkeypatch.delenv(SCRATCH_ENV)
    assert ".cache" in str(scratch("nb"))
    for bad in ("", "a/b", ".."):
        with pytest.raises(ValueError, match="one folder name"):
            scratch(bad)


def test_claims_are_recorded_and_returned_for_the_assert(monkeypatch, tmp_path, capsys):
    where = tmp_path / "claims.jsonl"
    monkeypatch.setenv(CLAIMS_ENV, str(where))
    monkeypatch.setenv(SMOKE_ENV, "1")
    assert claim("groks", passed=True, ours="41 → 4,571", paper="10²×", notebook="00")
    assert not claim("collapses", passed=False, ours="no collapse", notebook="00")
    lines = [json.loads(x) for x in where.read_text().splitlines()]
    assert [x["passed"] for x in lines] == [True, False]
    assert lines[0] == {
        "notebook": "00",
        "claim": "groks",
        "ours": "41 → 4,571",
        "paper": "10²×",
        "passed": True,
        "smoke": True,
    }
    assert lines[1]["paper"] is None
    assert "[FAIL] collapses" in capsys.readouterr().out
    assert gw.notebook.scale is scale


def test_scratch_enter_prints_relative_paths(monkeypatch, tmp_path):
    monkeypatch.setenv(SCRATCH_ENV, str(tmp_path))
    monkeypatch.delenv(SMOKE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # restored after the test
    here = scratch("nb", enter=True)
    assert here == Path("nb") and not here.is_absolute()
    assert Path.cwd() == tmp_path / "full" and (Path.cwd() / "nb").is_dir()


SHARED_DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _run_nbval(folder: Path, data_dir: Path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "GROKWIDGETS_DATA": str(data_dir), "GROKWIDGETS_SMOKE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--nbval-lax"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_notebook_needing_mnist_is_skipped_without_it_and_runs_with_it(tmp_path):
    import shutil

    import nbformat

    notebooks = Path(__file__).resolve().parents[2] / "notebooks"
    shutil.copy(notebooks / "conftest.py", tmp_path / "conftest.py")
    needs = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise RuntimeError('ran')")])
    needs.metadata["grokwidgets"] = {"needs": ["mnist"]}
    nbformat.write(needs, tmp_path / "needs.ipynb")
    nbformat.write(
        nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]),
        tmp_path / "plain.ipynb",
    )
    out = _run_nbval(tmp_path, tmp_path / "no-such-dir")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed, 1 skipped" in out.stdout and "MNIST is not on this machine" in out.stdout
    if (SHARED_DATA / "mnist.npz").is_file():  # with the data, the notebook runs (and fails here)
        out = _run_nbval(tmp_path, SHARED_DATA)
        assert out.returncode != 0 and "RuntimeError" in out.stdout, out.stdout


def test_tree_memory_sums_the_resident_memory_of_child_processes():
    """notebooks/run.py's peak memory: two children holding 150 MiB each read as >= 300 MiB."""
    import importlib.util
    import subprocess
    import sys

    path = Path(__file__).resolve().parents[2] / "notebooks" / "run.py"
    spec = importlib.util.spec_from_file_location("notebooks_run", path)
    assert spec is not None and spec.loader is not None
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    hold = (
        "import sys, time\n"
        "b = bytearray(150 * 2**20)\n"
        "b[::4096] = b'x' * len(range(0, len(b), 4096))  # touch every page: resident\n"
        "print('ready', flush=True)\n"
        "time.sleep(2.0)\n"
    )
    sampler = run.TreeMemory(every=0.05)
    sampler.start()
    children = [
        subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for c in children:
        assert c.stdout is not None and c.stdout.readline().strip() == "ready"
    for c in children:
        c.wait(timeout=30)
    sampler.stop()
    mib = sampler.peak / 2**20
    assert 300 <= mib < 300 + 2 * 60, mib  # the two buffers, plus two interpreters' own memory
