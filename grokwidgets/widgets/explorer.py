"""``Explorer``: scrub through a run's recorded steps and checkpoints; compute at a checkpoint."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import traitlets
import xarray as xr
from torch import nn

from grokwidgets.replay.compute import computable_at, compute_at
from grokwidgets.store.checkpoints import CheckpointError, checkpoint_path, list_checkpoints
from grokwidgets.store.computed import COMPUTED_DIR, merge_computed, read_computed
from grokwidgets.store.run_dir import open_run
from grokwidgets.tasks.base import Task
from grokwidgets.views.tables import STEP_STATE, current_tables, last_step_with, series_tables
from grokwidgets.widgets._base import PanelWidget
from grokwidgets.widgets._esm import esm_path


def _names(ds: xr.Dataset) -> set[str]:
    return {str(m) for m in ds["metric"].values} | {str(v) for v in ds.data_vars if v != "metrics"}


class Explorer(PanelWidget):
    """Every panel of a run with a step scrubber (a range input: arrows, Home and End).

    The loss and accuracy panels shade the run's phases and mark its time to grok, and
    :attr:`timeline` lists its events in words (:mod:`grokwidgets.views.story`, over every
    record of the run, whatever the step shown).

    Moving the scrubber sets :attr:`step`; the step-state panels (the ESD with its power-law
    fit, the kernel spectrum) then show that step, and the curves a cursor at it.

    At a step with a checkpoint, the diagnostics not recorded there (:attr:`computable`) can
    be computed from the checkpoint ("compute here" in the view, or :meth:`compute`): the
    kernel stays free while they run on a background thread, :attr:`message` shows the
    progress, and the values are cached in the run directory (``computed/``), so a reopened
    Explorer shows them. See :func:`grokwidgets.replay.compute.compute_at` for how
    diagnostics that compare with the start of the run or an earlier record are handled.

    Parameters
    ----------
    source : path-like or xarray.Dataset
        A run directory (its checkpoints join the scrubber's steps) or a run Dataset (with
        ``attrs["run_dir"]``, as ``gw.open_run`` gives, its checkpoints too).
    step : int, optional
        The step shown first (default: the last recorded one).
    model, task : optional
        For computing at checkpoints of a run whose model or task cannot be rebuilt from its
        ``run.json`` (your own model class; a task made with ``gw.tasks.from_tensors``). The
        model is copied, never modified.

    Examples
    --------
    >>> ex = gw.widgets.Explorer("runs/modadd")   # doctest: +SKIP
    >>> ex.step = 1000                            # doctest: +SKIP
    >>> ex.compute(["htsr"])                      # doctest: +SKIP
    """

    _esm = esm_path("explorer.js")

    step = traitlets.Int(-1).tag(sync=True)
    steps = traitlets.List(traitlets.Int()).tag(sync=True)
    checkpoint_steps = traitlets.List(traitlets.Int()).tag(sync=True)
    computable = traitlets.List(traitlets.Unicode()).tag(sync=True)

    def __init__(
        self,
        source: str | os.PathLike[str] | xr.Dataset,
        *,
        step: int | None = None,
        model: nn.Module | None = None,
        task: Task | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(cursor=True, **kwargs)
        if isinstance(source, xr.Dataset):
            ds = source
        elif isinstance(source, str | os.PathLike):
            ds = open_run(source)
        else:
            msg = f"Explorer needs a run directory or a run Dataset, got {type(source).__name__}."
            raise TypeError(msg)
        self._lock = threading.RLock()  # the Dataset and the stream, shared with the worker
        self._worker: threading.Thread | None = None
        self._model, self._task = model, task
        where = ds.attrs.get("run_dir")
        self.run_dir: Path | None = Path(where) if where else None
        self._notes: list[str] = []  # why something of the run is not shown
        ckpts: list[int] = []
        if self.run_dir is not None:
            try:
                ckpts = sorted(list_checkpoints(self.run_dir))
            except CheckpointError as err:  # a stray file: the records still show
                self._notes.append(f"checkpoints not listed: {err}")
            try:
                ds = merge_computed(ds, read_computed(self.run_dir))
            except ValueError as err:  # a Dataset of another shape: show it as it is
                self._notes.append(f"values computed at checkpoints not shown: {err}")
        self.ds = ds
        recorded = [int(s) for s in ds["step"].values]
        self.checkpoint_steps = ckpts
        self.steps = sorted(set(recorded) | set(ckpts))
        self.status = str(ds.attrs.get("status", ""))
        self._set_panels(_names(ds))
        if not self.steps:
            self.message = "this run has no records yet"
            return
        self._feed(series_tables(ds), self._story(ds))
        self.step = self.steps[-1] if step is None else step

    @traitlets.validate("step")
    def _check_step(self, proposal: dict[str, Any]) -> int:
        value = int(proposal["value"])
        if value not in self.steps:
            if not self.steps:
                msg = "This run has no recorded steps or checkpoints to show."
                raise traitlets.TraitError(msg)
            lo, hi = self.steps[0], self.steps[-1]
            near = self.steps[int(np.argmin(np.abs(np.asarray(self.steps) - value)))]
            msg = (
                f"Step {value} is not a recorded step or checkpoint of this run "
                f"(steps {lo}..{hi}, {len(self.steps)} of them); the nearest is {near}."
            )
            raise traitlets.TraitError(msg)
        return value

    @traitlets.observe("step")
    def _show_step(self, change: dict[str, Any]) -> None:
        step = int(change["new"])
        with self._lock:
            self._feed({}, current_tables(self.ds, step))
            self.computable = computable_at(self.ds, step, self.checkpoint_steps)
            message = self._step_message(step)
        if not self.computing:  # the worker's progress stays in view
            self.message = message

    def _step_message(self, step: int) -> str:
        notes = []
        for var, (what, _) in STEP_STATE.items():
            if var not in self.ds:
                continue
            at = last_step_with(self.ds, var, step)
            if at is None:
                notes.append(f"no {what} recorded at or before step {step}")
            elif at != step:
                notes.append(f"{what} from step {at} (not recorded at {step})")
        here = sorted(
            name for name, steps in dict(self.ds.attrs.get("computed", {})).items() if step in steps
        )
        if here:
            notes.append("computed from the checkpoint: " + ", ".join(here))
        notes += self._notes
        return f"step {step}" + ("; " + "; ".join(notes) if notes else "")

    # -- computing at a checkpoint ---------------------------------------------------------
    @property
    def computing(self) -> bool:
        """Whether a computation at a checkpoint is running."""
        return self._worker is not None and self._worker.is_alive()

    def compute(
        self,
        names: Iterable[str] | None = None,
        *,
        step: int | None = None,
        wait: bool = True,
    ) -> threading.Thread:
        """Compute diagnostics not recorded at a checkpoint step, from its checkpoint.

        Runs on a background thread (the kernel stays responsive); :attr:`message` shows the
        progress, then what was computed, or why it failed (a checkpoint that cannot be
        loaded: the file and the cause). The new values are cached in the run directory and
        shown: the curves gain a point, the ESD and kernel spectrum show the step.

        Parameters
        ----------
        names : iterable of str, optional
            Diagnostics to compute; default: all of :attr:`computable` at ``step``.
        step : int, optional
            A checkpoint step; default: the one shown (:attr:`step`).
        wait : bool
            Return once the computation is done (the front end's button does not wait).

        Returns
        -------
        threading.Thread
            The worker (already finished when ``wait``).

        Raises
        ------
        ValueError
            If the step has no checkpoint or a name is not computable there.
        RuntimeError
            If a computation is running already.
        """
        step = self.step if step is None else int(step)
        if self.run_dir is None:
            msg = (
                "This Explorer shows a Dataset without a run directory, so it has no "
                "checkpoints to compute from; open it with Explorer(run_dir)."
            )
            raise ValueError(msg)
        if step not in self.checkpoint_steps:
            have = self.checkpoint_steps
            where = f"steps {have[0]}..{have[-1]} ({len(have)})" if have else "none"
            msg = f"Step {step} has no checkpoint to compute from (checkpoints: {where})."
            raise ValueError(msg)
        with self._lock:
            can = computable_at(self.ds, step, self.checkpoint_steps)
        wanted = list(can) if names is None else [str(n) for n in names]
        bad = [n for n in wanted if n not in can]
        if bad:
            msg = (
                f"Cannot compute {bad} at step {step}: already there, or not registered. "
                f"Computable there: {can or 'nothing'}."
            )
            raise ValueError(msg)
        if not wanted:
            msg = f"Nothing to compute at step {step}: every registered diagnostic is there."
            raise ValueError(msg)
        if self.computing:
            msg = "A computation is running already; wait for it to finish."
            raise RuntimeError(msg)
        worker = threading.Thread(
            target=self._compute, args=(step, wanted), name="grokwidgets-compute", daemon=True
        )
        self._worker = worker
        worker.start()
        if wait:
            worker.join()
        return worker

    def _on_front_end(self, widget: Any, content: Any, buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "compute":
            # Never raise into the kernel's message handler: say what went wrong in the cell.
            try:
                step = content.get("step")
                names = content.get("names")
                self.compute(
                    names if isinstance(names, list) and names else None,
                    step=None if step is None else int(step),
                    wait=False,
                )
            except Exception as err:  # noqa: BLE001 (shown in the cell)
                self.message = f"cannot compute: {err}"
            return
        super()._on_front_end(widget, content, buffers)

    def _compute(self, step: int, names: list[str]) -> None:
        """The worker: compute, cache, then show; every failure ends up in :attr:`message`."""
        assert self.run_dir is not None
        status = self.status
        t0 = time.perf_counter()
        done: list[str] = []  # computed and cached so far
        current: list[str] = []

        def progress(i: int, n: int, name: str) -> None:
            done.extend(current)
            current[:] = [name]
            self.message = f"computing {name} at step {step} ({i + 1}/{n})…"

        self.status = "computing"
        self.message = f"loading the checkpoint of step {step}…"
        error: Exception | None = None
        try:
            compute_at(
                self.run_dir, step, names, model=self._model, task=self._task, progress=progress
            )
            done[:] = names
        except Exception as err:  # noqa: BLE001 (shown in the cell; the kernel lives on)
            error = err
        try:
            self._reload()
        except Exception as err:  # noqa: BLE001
            error = error or err
        self.status = status
        cache = self.run_dir / COMPUTED_DIR
        if error is None:
            self.message = (
                f"computed {', '.join(names)} at step {step} from "
                f"{checkpoint_path(self.run_dir, step).name} in "
                f"{time.perf_counter() - t0:.1f} s (cached in {cache})"
            )
        else:
            kept = f" (computed and cached before it: {', '.join(done)})" if done else ""
            self.message = f"cannot compute at step {step}: {error}{kept}"

    def _reload(self) -> None:
        """Merge the cached values and send every panel its data again (one snapshot)."""
        assert self.run_dir is not None
        entries = read_computed(self.run_dir)
        with self._lock:
            self.ds = merge_computed(self.ds, entries)
            self._set_panels(_names(self.ds))
            # Computed rows land between recorded steps: start the browser's copy afresh
            # (one snapshot) so every series stays in step order.
            self._stream.reset()
            current = current_tables(self.ds, self.step)
            self._feed(series_tables(self.ds), {**current, **self._story(self.ds)})
            self.computable = computable_at(self.ds, self.step, self.checkpoint_steps)
