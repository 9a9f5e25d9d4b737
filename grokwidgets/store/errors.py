"""The store's errors: one family, each message naming the run, the file and the remedy."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["RunDamagedError", "RunLockedError", "StoreError", "repair_hint"]


class StoreError(RuntimeError):
    """A run store that cannot be read or written as asked."""


class RunDamagedError(StoreError):
    """A file of a run is damaged (undecodable, truncated, not what this version wrote).

    Attributes
    ----------
    run : Path
        The run directory.
    file : Path
        The damaged file.
    """

    def __init__(self, msg: str, run: str | os.PathLike[str], file: str | os.PathLike[str]):
        super().__init__(msg)
        self.run = Path(run)
        self.file = Path(file)


class RunLockedError(StoreError):
    """Another process is writing this run directory."""


def repair_hint(run: str | os.PathLike[str]) -> str:
    """What a user can do about a damaged run."""
    return (
        f"`grokwidgets check {run}` says what is intact; `grokwidgets check {run} --repair` "
        "truncates the run to its last intact record and checkpoint (damaged files are moved "
        f"to {Path(run) / 'damaged'}, never deleted), after which `grokwidgets resume` works."
    )
