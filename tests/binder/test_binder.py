"""The Binder configuration (``binder/``): what repo2docker builds, and that it works.

Docker is not needed: ``jupyter-repo2docker --no-build --debug`` prints the Dockerfile it would
build, and the slow test installs exactly what that Dockerfile installs into a fresh virtual
environment and runs the launch notebook there in smoke mode. What stays unproven here: the
Docker build itself, PyTorch's CPU wheel index (this machine cannot reach it, see
``_offline_requirements``), and Binder's memory and time limits.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
BINDER = ROOT / "binder"
REQUIREMENTS = BINDER / "requirements.txt"
POSTBUILD = BINDER / "postBuild"
START = BINDER / "start"
RUNTIME = BINDER / "runtime.txt"
CONSTRAINTS = ROOT / "constraints.txt"
#: The notebook the launch URL opens (urlpath ``lab/tree/<LAUNCH>``).
LAUNCH = "notebooks/00_quickstart.ipynb"
#: PyTorch's CPU wheel index: the one option line binder/requirements.txt may hold.
CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"
#: Extras of pyproject.toml that Binder installs besides [project] dependencies.
EXTRAS = ("notebooks",)


# --- reading the files ----------------------------------------------------------------------


def _lines(path: Path) -> list[str]:
    """Non-empty lines of a pip requirements/constraints file, comments removed."""
    out = []
    for raw in path.read_text().splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if line:
            out.append(line)
    return out


def _requirements(path: Path) -> tuple[list[str], dict[str, Requirement]]:
    options, reqs = [], {}
    for line in _lines(path):
        if line.startswith("-"):
            options.append(" ".join(line.split()))
            continue
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name not in reqs, f"{path.name} names {req.name} twice"
        reqs[name] = req
    return options, reqs


def _pyproject_requirements() -> dict[str, SpecifierSet]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in EXTRAS:
        lines += project["optional-dependencies"][extra]
    out: dict[str, SpecifierSet] = {}
    for line in lines:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        out[name] = out.get(name, SpecifierSet()) & req.specifier
    return out


def _runtime_python() -> str:
    text = RUNTIME.read_text().strip()
    m = re.fullmatch(r"python-(3\.\d+)", text)
    assert m, f"binder/runtime.txt should read python-3.X, got {text!r}"
    return m.group(1)


# --- the configuration itself (fast) ----------------------------------------------------------


def test_requirements_mirror_pyproject_with_the_constraints_pins():
    options, reqs = _requirements(REQUIREMENTS)
    _, pins = _requirements(CONSTRAINTS)
    wanted = _pyproject_requirements()

    # Only the CPU wheel index; no local references (repo2docker installs this file before it
    # copies the repository, so `-e ..` or `.` would fail: postBuild installs grokwidgets).
    assert options == [CPU_INDEX]
    assert "grokwidgets" not in reqs
    assert all(req.url is None for req in reqs.values())

    missing, extra = sorted(wanted.keys() - reqs.keys()), sorted(reqs.keys() - wanted.keys())
    assert not missing and not extra, (
        f"binder/requirements.txt should list pyproject's dependencies and the {EXTRAS} extra: "
        f"missing {missing}, not in pyproject {extra}"
    )
    for name, spec in wanted.items():
        got = reqs[name].specifier
        if name == "torch":
            continue
        expected = pins[name].specifier if name in pins else spec
        assert got == expected, f"{name}: binder has {got}, expected {expected}"

    # torch: exactly the CPU build of constraints.txt's version, which pyproject allows.
    (torch_spec,) = list(reqs["torch"].specifier)
    (pinned,) = list(pins["torch"].specifier)
    assert torch_spec.operator == pinned.operator == "=="
    version = Version(torch_spec.version)
    assert version.local == "cpu", "Binder's torch must be the +cpu build (no CUDA libraries)"
    assert version.public == Version(pinned.version).public
    assert wanted["torch"].contains(version)
    assert pins["torch"].specifier.contains(version)  # what the slow test installs with -c


def test_postbuild_installs_grokwidgets_from_the_repo_root():
    text = POSTBUILD.read_text()
    assert text.startswith("#!/bin/bash\n")  # repo2docker runs it as ./binder/postBuild
    assert "set -euo pipefail" in text
    installs = [ln for ln in text.splitlines() if re.match(r"\s*python -m pip install\b", ln)]
    assert len(installs) == 1, installs
    words = installs[0].split()
    assert "--no-deps" in words and words[-1] == "."  # deps come from requirements.txt


def test_runtime_python_satisfies_requires_python():
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    # With a binder/ directory repo2docker ignores pyproject's requires-python and would pick
    # its default (3.10), so runtime.txt must name a version grokwidgets supports.
    assert SpecifierSet(requires).contains(_runtime_python() + ".0")


def test_no_start_script_is_needed():
    # grokwidgets.notebook.scratch() defaults to ~/.cache/grokwidgets/notebooks, writable on
    # Binder (HOME=/home/jovyan), so there are no environment defaults to set at start.
    # Add binder/start only with a reason, and extend test_repo2docker_dockerfile for it.
    assert not START.exists()


def test_launch_notebook_exists():
    assert (ROOT / LAUNCH).is_file(), f"Binder's launch URL opens {LAUNCH}, which is missing"


def test_readme_binder_badge_opens_the_launch_notebook():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\(https://mybinder\.org/v2/gh/([^)\s]+)\)", readme)
    assert links, "README.md has no Binder launch badge"
    for link in links:
        m = re.fullmatch(r"[^/]+/[^/]+/[^?]+\?urlpath=lab/tree/(\S+)", link)
        assert m, f"Binder link should open JupyterLab (urlpath=lab/tree/...): {link}"
        assert m.group(1) == LAUNCH
    assert "https://mybinder.org/badge_logo.svg" in readme


# --- what repo2docker would build ------------------------------------------------------------


def _repo2docker() -> str | None:
    here = Path(sys.executable).parent / "jupyter-repo2docker"
    return str(here) if here.exists() else shutil.which("jupyter-repo2docker")


def test_repo2docker_dockerfile():
    exe = _repo2docker()
    if exe is None:
        pytest.skip(
            "jupyter-repo2docker is not installed (pip install jupyter-repo2docker): cannot "
            "show the Dockerfile Binder would build from binder/"
        )
    # Binder builds as uid 1000 "jovyan"; without these flags the Dockerfile uses our own uid.
    cmd = [exe, "--no-build", "--debug", "--user-id", "1000", "--user-name", "jovyan", "."]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    dockerfile, log = done.stdout, done.stderr
    assert dockerfile.lstrip().startswith("FROM "), dockerfile[:2000]

    py = _runtime_python()
    assert f"python={py}" in log, log  # runtime.txt was read (the default would be 3.10)

    copy_req = dockerfile.find("src/binder/requirements.txt ${REPO_DIR}/binder/requirements.txt")
    pip_req = dockerfile.find('/bin/pip install --no-cache-dir -r "binder/requirements.txt"')
    copy_repo = dockerfile.find("COPY --chown=1000:1000 src/ ${REPO_DIR}/")
    post = dockerfile.find("RUN ./binder/postBuild")
    assert min(copy_req, pip_req, copy_repo, post) >= 0, dockerfile
    # requirements.txt is installed before the repository is copied (hence no `-e ..` there),
    # postBuild runs after, from the repository root (WORKDIR ${REPO_DIR}).
    assert copy_req < pip_req < copy_repo < post
    assert "RUN chmod +x binder/postBuild" in dockerfile
    assert "${REPO_DIR}/binder/start" not in dockerfile  # no start script (see above)
    # the environment is repo2docker's conda env for runtime.txt's Python, with JupyterLab 4
    # and ipywidgets 8 from its own lock file (already satisfied, so pip keeps them)
    assert "ENV KERNEL_PYTHON_PREFIX=${NB_PYTHON_PREFIX}" in dockerfile


# --- installing and running it, as repo2docker would (slow) ----------------------------------


def _offline_requirements(dest: Path) -> Path:
    """binder/requirements.txt without PyTorch's CPU index line.

    This machine reaches only its configured package registry (``pip config list``: PyPI or a
    local mirror plus a local wheel directory that holds ``torch==2.13.0+cpu``), not
    download.pytorch.org; pip would retry the unreachable index for minutes. Every requirement
    line is kept as is, so the same ``torch==X+cpu`` pin is resolved, here from the local wheel.
    """
    text = REQUIREMENTS.read_text()
    assert CPU_INDEX in text
    out = dest / "requirements-offline.txt"
    out.write_text(text.replace(CPU_INDEX, "# (CPU index dropped for this machine)"))
    return out


def _repo_copy(dest: Path) -> Path:
    """The repository as Binder would see it, without writing anything into the real one.

    ``git ls-files`` names what is tracked; untracked files that are not ignored are copied
    too (a notebook or module written but not yet committed is in the next commit Binder
    builds). Build artifacts, runs and the .venv are ignored, so they stay behind.
    """
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for rel in sorted(set(filter(None, listed.split("\0")))):
        src = ROOT / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the work tree
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel, follow_symlinks=False)
    return dest


def _files(root: Path) -> set[str]:
    skip = ("__pycache__", ".ipynb_checkpoints")
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if not p.is_dir() and not any(part in skip for part in p.parts)
    }


def _clean_env(venv: Path, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "JUPYTER", "GROK"))}
    env.pop("VIRTUAL_ENV", None)
    env.update(
        VIRTUAL_ENV=str(venv),
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        # a kernel spec or config of this machine's user must not pick another Python
        JUPYTER_CONFIG_DIR=str(tmp / "jupyter-config"),
        JUPYTER_DATA_DIR=str(tmp / "jupyter-data"),
        JUPYTER_RUNTIME_DIR=str(tmp / "jupyter-runtime"),
        IPYTHONDIR=str(tmp / "ipython"),
        MPLCONFIGDIR=str(tmp / "mpl"),
    )
    return env


def _tail(done: subprocess.CompletedProcess, n: int = 6000) -> str:
    return ((done.stdout or "") + (done.stderr or ""))[-n:]


def _registry_unreachable(python: Path, tmp: Path, env: dict[str, str]) -> str | None:
    """Why the package registry is unreachable, or None when a small download works."""
    probe = subprocess.run(
        [str(python), "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--retries", "1"]
        + ["--timeout", "20", "-d", str(tmp / "probe"), "tqdm>=4.66"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    return None if probe.returncode == 0 else _tail(probe, 1500)


_RUNNER = textwrap.dedent(
    """
    import json, sys, time
    import nbformat
    from nbclient import NotebookClient

    path, out = sys.argv[1], sys.argv[2]
    nb = nbformat.read(path, as_version=4)
    probe = (
        "import json as _j, sys as _s, grokwidgets as _g\\n"
        "print('BINDER-PROBE ' + _j.dumps({'executable': _s.executable, "
        "'grokwidgets': _g.__file__}))"
    )
    nb.cells.append(nbformat.v4.new_code_cell(probe))
    client = NotebookClient(
        nb, timeout=600, kernel_name="python3",
        resources={"metadata": {"path": str(__import__("pathlib").Path(path).parent)}},
    )
    t0 = time.perf_counter()
    client.execute()
    wall = time.perf_counter() - t0
    nbformat.write(nb, out)
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    line = next(x for x in text.splitlines() if x.startswith("BINDER-PROBE "))
    mimes = sorted({m for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                    for m in o.get("data", {})})
    print("RESULT " + json.dumps({"wall_s": wall, "probe": json.loads(line[13:]),
                                  "mimes": mimes}))
    """
)


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_binder_environment_runs_the_launch_notebook(tmp_path):
    """Fresh venv + binder/requirements.txt + binder/postBuild, then the launch notebook."""
    times: dict[str, float] = {}
    py = _runtime_python()
    if f"{sys.version_info.major}.{sys.version_info.minor}" == py:
        base_python = sys.executable
    else:
        base_python = shutil.which(f"python{py}") or pytest.skip(
            f"binder/runtime.txt asks for Python {py}, which this machine lacks"
        )
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    t0 = time.perf_counter()
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True, timeout=300)
    times["venv"] = time.perf_counter() - t0
    env = _clean_env(venv, tmp_path)
    repo = _repo_copy(tmp_path / "repo")
    assert (repo / LAUNCH).is_file(), f"{LAUNCH} is not in the repository"

    # 1. repo2docker: `pip install --no-cache-dir -r binder/requirements.txt` (plus our pins)
    req = _offline_requirements(tmp_path)
    t0 = time.perf_counter()
    try:
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-r", str(req), "-c", str(CONSTRAINTS)],
            cwd=repo,
            capture_output=True,
            text=True,
            env=env,
            timeout=1200,
        )
        failed = done.returncode != 0
        why = _tail(done)
    except subprocess.TimeoutExpired as err:
        failed, why = True, f"pip install timed out after {err.timeout} s"
    times["pip install -r binder/requirements.txt"] = time.perf_counter() - t0
    if failed:
        unreachable = _registry_unreachable(python, tmp_path, env)
        if unreachable is not None:
            pytest.skip(f"the package registry is unreachable (pip download fails):\n{unreachable}")
        pytest.fail(f"pip install -r binder/requirements.txt failed:\n{why}")

    # 2. repo2docker: `chmod +x binder/postBuild && ./binder/postBuild` from the repo root
    t0 = time.perf_counter()
    post = repo / "binder" / "postBuild"
    post.chmod(post.stat().st_mode | 0o111)
    done = subprocess.run(
        ["./binder/postBuild"], cwd=repo, capture_output=True, text=True, env=env, timeout=600
    )
    times["binder/postBuild"] = time.perf_counter() - t0
    if done.returncode != 0:
        if _registry_unreachable(python, tmp_path, env) is not None:
            pytest.skip(f"the package registry is unreachable (postBuild's pip):\n{_tail(done)}")
        pytest.fail(f"binder/postBuild failed:\n{_tail(done)}")
    assert re.search(r"^grokwidgets \S+$", done.stdout, re.M), done.stdout

    # grokwidgets is the installed copy, with torch's CPU build
    site = subprocess.run(
        [str(python), "-c", "import grokwidgets, torch; print(grokwidgets.__file__);"
         " print(torch.__version__); print(torch.version.cuda)"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300, check=True,
    ).stdout.split()  # fmt: skip
    assert Path(site[0]).is_relative_to(venv), site
    assert site[1].endswith("+cpu") and site[2] == "None", site

    # The widgets' front ends are prebuilt lab extensions in the wheels: nothing to install.
    labext = subprocess.run(
        [str(venv / "bin" / "jupyter"), "labextension", "list"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    listing = re.sub(r"\x1b\[[0-9;]*m", "", labext.stdout + labext.stderr)  # colours
    for ext in ("@jupyter-widgets/jupyterlab-manager", "anywidget"):
        m = re.search(rf"^\s*{re.escape(ext)} v\S+ (\w+) (\w+)", listing, re.M)
        assert m and m.groups() == ("enabled", "OK"), listing

    # 3. The launch notebook, in smoke mode, by nbclient inside the Binder venv.
    scratch = tmp_path / "scratch"
    env_nb = dict(env, GROKWIDGETS_SMOKE="1", GROKWIDGETS_SCRATCH=str(scratch))
    before = _files(repo)
    runner = tmp_path / "run_notebook.py"
    runner.write_text(_RUNNER)
    t0 = time.perf_counter()
    done = subprocess.run(
        [str(python), str(runner), str(repo / LAUNCH), str(tmp_path / "executed.ipynb")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env_nb,
        timeout=900,
    )
    times["notebook (smoke)"] = time.perf_counter() - t0
    assert done.returncode == 0, f"{LAUNCH} failed in the Binder environment:\n{_tail(done)}"
    result = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))[7:])
    assert Path(result["probe"]["executable"]).is_relative_to(venv), result
    assert Path(result["probe"]["grokwidgets"]).is_relative_to(venv), result
    assert scratch.exists(), "the notebook's runs should go to GROKWIDGETS_SCRATCH"
    written = sorted(_files(repo) - before)
    assert not written, f"the notebook wrote into the repository: {written[:20]}"
    print("binder timings (s):", {k: round(v, 1) for k, v in times.items()}, result["mimes"])
