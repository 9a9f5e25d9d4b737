"""What every notebook of the suite shares: smoke or full mode, a scratch directory, claims.

A notebook runs in *full mode* (the experiment at the scale its claims are checked at, ≤ 10
minutes and ≤ 2 GB on 2 cores) unless ``GROKWIDGETS_SMOKE=1`` asks for *smoke mode* (the same
code paths with small numbers, in seconds: what ``make test`` runs under nbval)::

    import grokwidgets as gw
    from grokwidgets.notebook import scale, scratch, claim

    steps = scale(full=6000, smoke=60)          # one switch, read from the environment
    run_dir = scratch("00_quickstart")          # runs never land in the repository
    ...
    assert claim("test accuracy ≥ 95% long after train accuracy ≥ 99%",
                 passed=grok_step >= 10 * fit_step, ours=f"{fit_step} → {grok_step}",
                 paper="Power et al. (2022): 10²–10³× later")

:func:`claim` records each checked claim (with ours, the paper's number and whether it passed)
in the file named by ``GROKWIDGETS_CLAIMS`` when that is set (``make notebooks`` sets it and
writes ``notebooks/README.md`` from the records), and returns ``passed`` for the ``assert``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TypeVar

__all__ = ["CLAIMS_ENV", "SCRATCH_ENV", "SMOKE_ENV", "claim", "scale", "scratch", "smoke"]

#: Set to 1 (or true/yes) for smoke mode.
SMOKE_ENV = "GROKWIDGETS_SMOKE"
#: Root of the notebooks' run directories (default: ``~/.cache/grokwidgets/notebooks``).
SCRATCH_ENV = "GROKWIDGETS_SCRATCH"
#: A JSON-lines file :func:`claim` appends to (set by ``make notebooks``).
CLAIMS_ENV = "GROKWIDGETS_CLAIMS"

T = TypeVar("T")


def smoke() -> bool:
    """Whether the notebook runs in smoke mode (``GROKWIDGETS_SMOKE`` is 1, true or yes)."""
    return _smoke_mode()


def _smoke_mode() -> bool:
    value = os.environ.get(SMOKE_ENV, "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    msg = f"{SMOKE_ENV} must be 1/true/yes or 0/false/no (or unset), got {value!r}."
    raise ValueError(msg)


def scale(full: T, smoke: T) -> T:
    """``smoke`` in smoke mode, else ``full``: the one switch between the two modes."""
    return smoke if _smoke_mode() else full


def scratch(name: str, *, clean: bool = True, enter: bool = False) -> Path:
    """A run directory ``<root>/<name>`` outside the repository, created (emptied if ``clean``).

    The root is ``$GROKWIDGETS_SCRATCH``, else ``~/.cache/grokwidgets/notebooks``; smoke
    runs go to a ``smoke`` subfolder so they never replace a full run's records.

    With ``enter=True`` the working directory becomes that mode's folder and the path returned
    is relative (``Path(name)``): every path the notebook prints then reads the same on any
    machine (``07_sweeps/weight_decay=0.1``), not this machine's home directory.
    """
    if not name or "/" in name or name in (".", ".."):
        msg = f"A scratch name is one folder name, got {name!r}."
        raise ValueError(msg)
    root = Path(os.environ.get(SCRATCH_ENV) or Path.home() / ".cache" / "grokwidgets" / "notebooks")
    path = root / ("smoke" if _smoke_mode() else "full") / name
    if clean and path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    if enter:
        os.chdir(path.parent)
        return Path(name)
    return path


def claim(
    text: str,
    *,
    passed: bool,
    ours: str,
    paper: str | None = None,
    notebook: str | None = None,
) -> bool:
    """Record a checked claim and return ``passed`` (write ``assert claim(...)``).

    Parameters
    ----------
    text : str
        The claim and its pass criterion, as the prose before the cell states it.
    passed : bool
        Whether our measurement meets the criterion.
    ours : str
        What we measured (numbers, with units).
    paper : str, optional
        The paper's number, or ``None`` where the paper gives none.
    notebook : str, optional
        The notebook's name (default: ``$GROKWIDGETS_NOTEBOOK``, set by ``make notebooks``).
    """
    passed = bool(passed)
    mark = "PASS" if passed else "FAIL"
    print(f"[{mark}] {text}: ours {ours}" + (f"; paper {paper}" if paper else ""))
    where = os.environ.get(CLAIMS_ENV)
    if where:
        entry = {
            "notebook": notebook or os.environ.get("GROKWIDGETS_NOTEBOOK", ""),
            "claim": text,
            "ours": ours,
            "paper": paper,
            "passed": passed,
            "smoke": _smoke_mode(),
        }
        with open(where, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
    return passed
