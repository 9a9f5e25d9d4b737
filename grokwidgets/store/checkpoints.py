"""Checkpoints as safetensors files: ``checkpoints/step_XXXXXXXX.safetensors``.

Nothing is ever unpickled. A checkpoint holds

- ``model.<name>``: the model's ``state_dict`` (parameters and buffers),
- ``optim.<param index>.<key>``: the optimizer's per-parameter state tensors,
- ``monitor.<key>``: state the diagnostics keep between records (e.g. the initial weights),
- in the safetensors metadata (JSON): the step, the optimizer's ``param_groups`` and any
  non-tensor per-parameter state.

Files are written to a temporary name and moved into place with ``os.replace``, so a crash
never leaves a half-written checkpoint under its final name.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"^step_(\d{8,})\.safetensors$")
_META_KEY = "grokwidgets"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns besides what it loads into the model/optimizer."""

    step: int
    path: Path
    monitor_state: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def checkpoint_path(run_dir: str | os.PathLike[str], step: int) -> Path:
    """Path of the checkpoint for ``step`` in ``run_dir``."""
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:08d}.safetensors"


def _tensor(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous().clone()


def save_checkpoint(
    run_dir: str | os.PathLike[str],
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    monitor_state: dict[str, torch.Tensor] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint of ``step`` atomically and return its path."""
    tensors: dict[str, torch.Tensor] = {
        f"model.{k}": _tensor(v) for k, v in model.state_dict().items()
    }
    info: dict[str, Any] = {"step": int(step), "meta": meta or {}}
    if optimizer is not None:
        sd = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for idx, state in sd["state"].items():
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    tensors[f"optim.{idx}.{key}"] = _tensor(value)
                else:
                    scalars.setdefault(str(idx), {})[key] = value
        info["optimizer"] = {
            "class": type(optimizer).__name__,
            "param_groups": sd["param_groups"],
            "scalars": scalars,
        }
    for key, value in (monitor_state or {}).items():
        tensors[f"monitor.{key}"] = _tensor(value)
    path = checkpoint_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(info)})
        os.replace(tmp, path)
    except Exception as err:
        tmp.unlink(missing_ok=True)
        earlier = sorted(s for s in list_checkpoints(run_dir) if s < step)
        msg = (
            f"Could not write the checkpoint {path} ({err}). The earlier checkpoints "
            f"({earlier[-1] if earlier else 'none'} the latest) and the committed records are "
            "intact; the run can be resumed from the latest."
        )
        raise CheckpointError(msg) from err
    return path


def is_leftover(name: str) -> bool:
    """Whether ``name`` in ``checkpoints/`` is the leftover of an interrupted write."""
    return name.endswith(".tmp") or name.startswith(".tmp")


def list_checkpoints(run_dir: str | os.PathLike[str]) -> dict[int, Path]:
    """Checkpoints of a run by step, in step order.

    Leftovers of an interrupted write are ignored: our ``*.tmp`` files and the ``.tmpXXXXXX``
    files safetensors writes before renaming (found after a SIGKILL inside ``save_file``).
    Any other file raises a :class:`CheckpointError` naming it, since a stray file there is
    most likely a mistake.
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return {}
    found: dict[int, Path] = {}
    for path in folder.iterdir():
        if is_leftover(path.name):
            continue
        match = _NAME.match(path.name)
        if not match:
            msg = (
                f"{path} is not a grokwidgets checkpoint (expected "
                "step_XXXXXXXX.safetensors). Move it out of the checkpoints folder."
            )
            raise CheckpointError(msg)
        found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as err:
        msg = (
            f"Checkpoint {path} cannot be read ({err}); it is truncated, corrupt, or not a "
            "safetensors file. Delete it to resume from the previous checkpoint."
        )
        raise CheckpointError(msg) from err
    if _META_KEY not in meta:
        msg = f"{path} is a safetensors file but not a grokwidgets checkpoint (no metadata)."
        raise CheckpointError(msg)
    return tensors, json.loads(meta[_META_KEY])


def load_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> Checkpoint:
    """Load a checkpoint into ``model`` and ``optimizer`` (when given) without unpickling.

    Raises
    ------
    CheckpointError
        If the file is unreadable or does not fit the model or optimizer.
    """
    path = Path(path)
    tensors, info = _read(path)
    if model is not None:
        state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            msg = f"Checkpoint {path} does not fit this model: {err}"
            raise CheckpointError(msg) from err
    if optimizer is not None:
        opt = info.get("optimizer")
        if opt is None:
            msg = f"Checkpoint {path} holds no optimizer state."
            raise CheckpointError(msg)
        if opt["class"] != type(optimizer).__name__:
            msg = (
                f"Checkpoint {path} holds {opt['class']} state, not {type(optimizer).__name__}; "
                "resume with the optimizer the run was started with."
            )
            raise CheckpointError(msg)
        per_param: dict[int, dict[str, Any]] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                idx, name = key[6:].split(".", 1)
                per_param.setdefault(int(idx), {})[name] = value
        for idx, scalars in opt["scalars"].items():
            per_param.setdefault(int(idx), {}).update(scalars)
        try:
            optimizer.load_state_dict({"state": per_param, "param_groups": opt["param_groups"]})
        except (ValueError, KeyError) as err:
            msg = f"Checkpoint {path} does not fit this optimizer: {err}"
            raise CheckpointError(msg) from err
    monitor_state = {k[8:]: v for k, v in tensors.items() if k.startswith("monitor.")}
    return Checkpoint(
        step=int(info["step"]), path=path, monitor_state=monitor_state, meta=info.get("meta", {})
    )
