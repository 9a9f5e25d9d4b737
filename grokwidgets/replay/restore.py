"""Restore a run from its directory: its task, model and loss, or its training to continue.

:func:`restore_run` rebuilds what ``run.json`` describes (the Explorer's and
:func:`~grokwidgets.replay.compute.compute_at`'s backend); :func:`resume_run` continues a
``gw.train`` run from its latest checkpoint (``grokwidgets resume``).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from grokwidgets import models, tasks
from grokwidgets.monitor.cadence import cadence_from_json
from grokwidgets.store.checkpoints import (
    Checkpoint,
    CheckpointError,
    checkpoint_path,
    list_checkpoints,
    load_checkpoint,
)
from grokwidgets.store.run_info import RunInfo, read_run_info
from grokwidgets.tasks.base import Task
from grokwidgets.tasks.losses import LossFn, make_loss
from grokwidgets.train.loop import Run, cast, train

__all__ = ["RestoredRun", "restore_run", "resume_run"]


def resume_run(dir: str | os.PathLike[str], *, progress: bool = True) -> Run:  # noqa: A002
    """Continue the run in ``dir`` from its latest checkpoint with the recipe in ``run.json``."""
    info = read_run_info(dir)
    cfg = info.config
    spec = info.task_config
    if spec is None or spec.get("family") == "from_tensors":
        msg = (
            f"{dir} was recorded around a custom task; resume it from Python with "
            "Monitor(..., resume=True)."
        )
        raise ValueError(msg)
    if info.recipe is None:
        msg = (
            f"{dir} was not made by gw.train (no training recipe in run.json); "
            "resume it from your own loop."
        )
        raise ValueError(msg)
    task = tasks.from_config(spec)
    model = models.from_config(info.model_config)
    cadence = {k: cadence_from_json(v) for k, v in cfg.get("cadence", {}).items()}
    ckpt = cfg.get("checkpoint_cadence")
    return train(
        task,
        model,
        dir=dir,
        seed=int(info.seed or 0),
        resume=True,
        progress=progress,
        diagnostics=info.diagnostics or ("basic",),
        cadence=cadence or None,
        checkpoint_cadence=cadence_from_json(ckpt) if ckpt else False,
        **info.recipe,
    )


@dataclass
class RestoredRun:
    """A run's task, model and training loss, rebuilt from its directory's ``run.json``.

    :attr:`model` starts at the parameters its config gives (the run's init when the config
    holds the seed); :meth:`load` puts a checkpoint's parameters into it.

    Attributes
    ----------
    dir : Path
        The run directory.
    info : RunInfo
        The run's ``run.json``.
    task, model : Task, nn.Module
        As the run used them (cast to the recipe's ``dtype`` for ``gw.train`` runs).
    loss_fn : callable
        The training loss (the recipe's; ``"auto"`` for runs around the user's own loop,
        whose loss ``run.json`` does not record).
    recipe : dict or None
        ``gw.train``'s recipe (steps, optimizer, batch size, ...); ``None`` for a run recorded
        around the user's own loop.
    """

    dir: Path
    info: RunInfo
    task: Task
    model: nn.Module
    loss_fn: LossFn
    recipe: dict[str, Any] | None

    @property
    def seed(self) -> int:
        """The run's seed (0 when ``run.json`` has none)."""
        return int(self.info.seed or 0)

    @property
    def diagnostics(self) -> list[str]:
        """Names of the diagnostics the run recorded (and whose state its checkpoints hold)."""
        return self.info.diagnostics

    def load(self, step: int) -> Checkpoint:
        """Load the checkpoint of ``step`` into :attr:`model`.

        A run recorded around the user's own loop in another precision is loaded in the
        checkpoint's floating dtype (the task is cast to match), so no value is rounded.

        Raises
        ------
        CheckpointError
            Naming the file and the cause: missing, unreadable (truncated, corrupt), or not
            fitting the model (another architecture).
        """
        path = checkpoint_path(self.dir, step)
        if not path.is_file():
            steps = sorted(list_checkpoints(self.dir))
            msg = (
                f"Checkpoint {path} is missing (deleted or moved?); the checkpoints of "
                f"{self.dir} are at steps {steps or 'none'}."
            )
            raise CheckpointError(msg)
        dtype = _float_dtype(path)
        current = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), None)
        if dtype is not None and current is not None and dtype != current:
            self.model.to(dtype)
            self.task = self.task.to(dtype)
        return load_checkpoint(path, self.model)


def _float_dtype(path: Path) -> torch.dtype | None:
    """Floating dtype of a checkpoint's model tensors, from its header (None if unreadable)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (not a dict)
                if key.startswith("model."):
                    t = f.get_slice(key)
                    name = t.get_dtype()
                    if name in ("F64", "F32", "F16", "BF16"):
                        return {
                            "F64": torch.float64,
                            "F32": torch.float32,
                            "F16": torch.float16,
                            "BF16": torch.bfloat16,
                        }[name]
    except Exception:  # noqa: BLE001 (load_checkpoint reports an unreadable file)
        return None
    return None


def restore_run(
    dir: str | os.PathLike[str],  # noqa: A002 (the design's public name)
    *,
    task: Task | None = None,
    model: nn.Module | None = None,
) -> RestoredRun:
    """Rebuild the task, model and loss of the run in ``dir`` from its ``run.json``.

    Parameters
    ----------
    dir : path-like
        The run directory.
    task : Task, optional
        The run's task, for runs whose task cannot be rebuilt from its config (made with
        ``gw.tasks.from_tensors``).
    model : nn.Module, optional
        A model of the run's architecture, for models that are not ``gw.models`` classes.
        It is copied (``copy.deepcopy``), never modified.

    Returns
    -------
    RestoredRun
        Task, model (call :meth:`RestoredRun.load` to load a checkpoint into it), loss and
        recipe.

    Raises
    ------
    ValueError
        If the task or the model cannot be rebuilt; the message says what to pass.
    """
    p = Path(dir)
    info = read_run_info(p)
    recipe = info.recipe
    if task is None:
        spec = info.task_config
        if not spec or spec.get("family") == "from_tensors":
            msg = (
                f"The task of {p} cannot be rebuilt from run.json (it was made with "
                "gw.tasks.from_tensors, or not recorded); pass task=... (the run's task)."
            )
            raise ValueError(msg)
        try:
            task = tasks.from_config(spec)
        except (ValueError, TypeError) as err:
            msg = f"The task of {p} cannot be rebuilt from run.json: {err}"
            raise ValueError(msg) from err
    if model is None:
        try:
            model = models.from_config(info.model_config)
        except (ValueError, TypeError) as err:
            msg = (
                f"The model of {p} cannot be rebuilt from run.json ({err}); pass model=... "
                "(a model of the run's architecture; its parameters are replaced)."
            )
            raise ValueError(msg) from err
    else:
        model = copy.deepcopy(model)
    dtype = (recipe or {}).get("dtype")
    if dtype is not None:
        task = cast(model, task, dtype, where=f"the dtype in run.json of {p}")
    loss_fn = make_loss(str((recipe or {}).get("loss") or "auto"), task)
    return RestoredRun(dir=p, info=info, task=task, model=model, loss_fn=loss_fn, recipe=recipe)
