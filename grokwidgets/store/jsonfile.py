"""The small JSON files of a run (``run.json``, ``commit.json``): atomic writes, checked reads."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from grokwidgets.store.records import dumps

__all__ = ["read_json_object", "write_json_atomic"]


def write_json_atomic(target: Path, obj: Any) -> None:
    """Write ``obj`` to ``target`` beside it, then rename: a reader sees the old or the new file.

    On failure the temporary file is removed and the ``OSError`` raised; ``target`` is unchanged.
    """
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(dumps(obj))
        os.replace(tmp, target)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def read_json_object(target: Path) -> dict[str, Any]:
    """The JSON object in ``target``.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If it is not JSON, or JSON of something other than an object (a damaged file).
    """
    obj = json.loads(target.read_text())
    if not isinstance(obj, dict):
        msg = f"it holds a JSON {type(obj).__name__}, not an object"
        raise ValueError(msg)  # noqa: TRY004 (the caller reports damage as a ValueError)
    return obj
