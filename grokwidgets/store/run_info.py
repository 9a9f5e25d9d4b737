"""``run.json`` as a type: :class:`RunInfo`, with its one reader and one writer.

``run.json`` says what a run is (the recipe that re-runs it: task, model, diagnostics,
cadences, the training recipe of ``gw.train``), who made it (versions) and where it stands
(status, resumes, a requested stop). Every part of the package reads it through
:func:`read_run_info` and writes it through :func:`write_run_info` or
:func:`update_run_info`, so the schema lives here only.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grokwidgets.store.errors import RunDamagedError
from grokwidgets.store.jsonfile import read_json_object, write_json_atomic

__all__ = ["FORMAT", "RUN_JSON", "RunInfo", "read_run_info", "update_run_info", "write_run_info"]

RUN_JSON = "run.json"
FORMAT = "grokwidgets-run"


def now() -> str:
    """The local time as ``run.json`` stores it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class RunInfo:
    """What ``run.json`` holds.

    Attributes
    ----------
    config : dict
        The recipe: ``task`` and ``model`` configs (``None``/class name where they cannot be
        rebuilt), ``diagnostics``, ``cadence``, ``checkpoint_cadence`` and, for ``gw.train``
        runs, ``train`` (steps, optimizer, ...) and ``seed``.
    seed : int or None
    status : str
        ``running``, ``finished``, ``interrupted`` or ``failed`` (``unknown`` if unset).
    created, updated : str
        Local times; ``created`` also identifies this run among runs written to the same
        directory (caches of :mod:`grokwidgets.store.computed` check it).
    versions : dict
        Versions of the software that wrote the run.
    resumed_from : list of int
        The checkpoint step of each resume.
    stopped_at, stop_reason : int or None, str or None
        Where and why a requested stop ended the run (the phase watcher's ``stop_on``).
    extra : dict
        Keys this version does not know (a newer writer's), kept when rewritten.
    """

    config: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    status: str = "unknown"
    created: str = ""
    updated: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    resumed_from: list[int] = field(default_factory=list)
    stopped_at: int | None = None
    stop_reason: str | None = None
    format: str = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    # -- the recipe, typed ---------------------------------------------------------------------
    @property
    def task_config(self) -> dict[str, Any] | None:
        """The task's config, or ``None`` when it was not recorded."""
        task = self.config.get("task")
        return task if isinstance(task, dict) else None

    @property
    def model_config(self) -> dict[str, Any]:
        """The model's config (for a model that is not a ``gw.models`` class: its class)."""
        model = self.config.get("model")
        return model if isinstance(model, dict) else {}

    @property
    def recipe(self) -> dict[str, Any] | None:
        """``gw.train``'s recipe (steps, optimizer, ...); ``None`` for a run of the user's loop."""
        train = self.config.get("train")
        return train if isinstance(train, dict) else None

    @property
    def diagnostics(self) -> list[str]:
        """Names of the diagnostics the run records."""
        return [str(n) for n in self.config.get("diagnostics", [])]

    # -- JSON ------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``run.json`` (unknown keys of :attr:`extra` kept)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **out}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RunInfo:
        """Inverse of :meth:`to_json`; a key missing in an older run takes its default."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in obj.items() if k in known and v is not None}
        info = cls(**kwargs, extra={k: v for k, v in obj.items() if k not in known})
        info.seed = obj.get("seed")
        info.resumed_from = [int(s) for s in info.resumed_from]
        info.config = dict(info.config or {})
        return info


def write_run_info(path: str | os.PathLike[str], info: RunInfo) -> None:
    """Write ``run.json`` of the run directory ``path`` atomically (write, then rename)."""
    write_json_atomic(Path(path) / RUN_JSON, info.to_json())


def read_run_info(path: str | os.PathLike[str]) -> RunInfo:
    """Read ``run.json`` of the run directory ``path``.

    Raises
    ------
    FileNotFoundError
        If ``path`` holds no ``run.json``.
    RunDamagedError
        If ``run.json`` is not a JSON object (damaged); the message names the file.
    """
    target = Path(path) / RUN_JSON
    try:
        return RunInfo.from_json(read_json_object(target))
    except FileNotFoundError:
        msg = f"{path} is not a grokwidgets run: {RUN_JSON} is missing."
        raise FileNotFoundError(msg) from None
    except (ValueError, TypeError) as err:
        msg = (
            f"The run {path} is damaged: {target} cannot be read ({err}). It holds the run's "
            "recipe and status, which nothing else records: restore it from a copy (a sibling "
            "run of the same recipe has one to start from); "
            f"`grokwidgets check {path}` says what else is intact."
        )
        raise RunDamagedError(msg, path, target) from err


def update_run_info(path: str | os.PathLike[str], **fields: Any) -> RunInfo:
    """Set fields of ``run.json`` (e.g. ``status="finished"``) and stamp ``updated``.

    A name that is not a :class:`RunInfo` field is kept among :attr:`RunInfo.extra`.
    """
    info = read_run_info(path)
    known = {f.name for f in dataclasses.fields(RunInfo)}
    for name, value in fields.items():
        if name in known:
            setattr(info, name, value)
        else:
            info.extra[name] = value
    info.updated = now()
    write_run_info(path, info)
    return info
