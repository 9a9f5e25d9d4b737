"""The :class:`Monitor`: records diagnostics around any training loop."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch import Tensor, nn

import grokwidgets.diagnostics  # noqa: F401  (registers the built-in diagnostics)
from grokwidgets._names import MODEL_LAYER
from grokwidgets.diagnostics.probe import RECORD_VALUES, Probe
from grokwidgets.diagnostics.registry import Diagnostic, check_names, metric_info, resolve
from grokwidgets.monitor.cadence import Cadence, LogSpaced, as_cadence, cadence_from_json
from grokwidgets.monitor.dispatch import readers_last, record_of
from grokwidgets.store import run_dir
from grokwidgets.store.checkpoints import (
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from grokwidgets.store.lock import WriterLock
from grokwidgets.store.records import Index, Record, dense_block, to_dataset
from grokwidgets.store.run_info import RunInfo, now, read_run_info, update_run_info, write_run_info
from grokwidgets.store.zarr_store import ZarrRecordWriter, read_store
from grokwidgets.tasks.base import Task
from grokwidgets.tasks.losses import LossFn, make_loss

CadenceLike = Cadence | int | Mapping[str, Any] | None
_RNG_KEY = "rng.torch"
Listener = Callable[[Record], None]

#: Default checkpoint cadence: steps 0, 1, 2, 3, 4, 7, 10, 16, ... (5 per decade).
DEFAULT_CHECKPOINTS = LogSpaced(per_decade=5, linear_until=0)


class Monitor:
    """Record diagnostics of ``model`` on ``task`` at a cadence, around any training loop.

    Parameters
    ----------
    model : nn.Module
        The model being trained. Layers are found by module path (``encoder.0``,
        ``readout``); whole-model values go to the layer ``"model"``.
    task : Task, optional
        The data the diagnostics evaluate on (needed by ``loss`` and most families).
    dir : path-like, optional
        Run directory to write (``metrics.zarr``, ``checkpoints/``, ``run.json``). Without
        it, records stay in memory (see :meth:`dataset`).
    diagnostics : iterable of str
        Registered diagnostics or groups (``"basic"`` = ``loss``, ``weights``, ``grad_norm``).
    cadence : Cadence, int or dict, optional
        When to record: one cadence for all, or ``{name: cadence, "default": cadence}`` per
        diagnostic. Default: every step up to 100, then 50 per decade, except for the
        families registered with a cadence of their own (the costly mechanism families:
        ``probes``, ``geometry``, ``ntk``, ``htsr``, ... every step up to 10, then 10 per
        decade, :data:`~grokwidgets.diagnostics.registry.MECHANISM_CADENCE`); a cadence
        given for all, or as ``"default"``, applies to them too.
    loss : str or callable
        The training loss (``"auto"``, ``"cross_entropy"``, ``"mse"``, ``"centred_mse"``, or a
        function ``(outputs, targets) -> scalar``), used for ``train_loss``/``test_loss``.
    optimizer : torch.optim.Optimizer, optional
        Saved in checkpoints with the model, so a run can resume.
    checkpoint_cadence : Cadence, int or False, optional
        When to save checkpoints (only with ``dir``). Default: 5 per decade from step 0.
    resume : bool
        Continue the run in ``dir`` from its latest checkpoint: loads model and optimizer
        state, drops records after it, and sets :attr:`resume_step`.
    overwrite : bool
        Replace a run already in ``dir``.
    config : dict, optional
        Extra JSON-able facts for ``run.json`` (the training recipe).
    flush_every, flush_seconds : int, float
        Records are buffered and written (committed, visible to readers) once
        ``flush_every`` are buffered, or at the first record ``flush_seconds`` after the last
        write; also at each checkpoint, :meth:`flush` and :meth:`close`. A crash loses at most
        the buffered records. ``flush_every=1`` makes every record visible at once.

    Examples
    --------
    >>> mon = gw.Monitor(model, task, dir="runs/mine")      # doctest: +SKIP
    >>> for step in range(n):                               # doctest: +SKIP
    ...     loss = train_step()
    ...     mon.step(step)  # cheap when nothing is due
    >>> mon.close()                                         # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        task: Task | None = None,
        dir: str | os.PathLike[str] | None = None,  # noqa: A002 (the design's public name)
        diagnostics: Iterable[str] = ("basic",),
        cadence: CadenceLike | Mapping[str, CadenceLike] = None,
        *,
        loss: str | LossFn = "auto",
        optimizer: torch.optim.Optimizer | None = None,
        checkpoint_cadence: CadenceLike | bool = None,
        resume: bool = False,
        overwrite: bool = False,
        config: dict[str, Any] | None = None,
        flush_every: int = 64,
        flush_seconds: float = 5.0,
    ) -> None:
        self.model = model
        self.task = task
        self.optimizer = optimizer
        self._flush_every, self._flush_seconds = flush_every, flush_seconds
        self.dir = Path(dir) if dir is not None else None
        self.diagnostics: list[Diagnostic] = readers_last(
            resolve([diagnostics] if isinstance(diagnostics, str) else diagnostics)
        )
        check_names(self.diagnostics)  # two writers of one metric: one value would be lost
        self._cadences = self._resolve_cadences(cadence)
        if callable(loss):
            self.loss_fn: LossFn | None = loss
        else:
            self.loss_fn = make_loss(loss, task) if task is not None else None
        if checkpoint_cadence is False or self.dir is None:
            self._ckpt: Cadence | None = None
        else:
            self._ckpt = as_cadence(
                None if checkpoint_cadence is True else checkpoint_cadence,  # type: ignore[arg-type]
                DEFAULT_CHECKPOINTS,
            )
        self.state: dict[str, Tensor] = {}
        self.resume_step: int | None = None
        self._listeners: list[Listener] = []
        self._stop_reason: str | None = None
        self._memory: list[Record] = []
        self._index = Index()
        self._index.metric_info.update(metric_info(self.diagnostics))
        self._last_step = -1
        self._closed = False
        self._writer: ZarrRecordWriter | None = None
        self._lock: WriterLock | None = None
        try:
            if self.dir is not None:
                self._open_dir(resume=resume, overwrite=overwrite, config=config or {})
            if self.resume_step is None:
                setup_probe = self._probe(step=0)
                for diag in self.diagnostics:
                    if diag.setup is not None:
                        diag.setup(setup_probe)
        except BaseException:
            if self._lock is not None:
                self._lock.release()
            raise
        self._next_due = self._compute_next(max(self._last_step + 1, 0))

    # -- public ----------------------------------------------------------------------------
    def due(self, step: int) -> bool:
        """Whether anything (a diagnostic or a checkpoint) is due at ``step``."""
        if self._last_step < step < self._next_due:
            return False
        return self._compute_next(step) == step

    def step(self, step: int, **scalars: float) -> Record | None:
        """Record whatever is due at ``step``; also log ``scalars`` when given.

        Costs one integer comparison when nothing is due. Returns the record, if any.
        """
        if not scalars and self._last_step < step < self._next_due:
            return None
        return self.record(step, scalars)

    def log(self, step: int, **scalars: float) -> Record:
        """Record the user's own scalars (layer ``"model"``) at ``step``."""
        record = Record(step=step)
        self._add_scalars(record, scalars)
        self._emit(record)
        return record

    def checkpoint(self, step: int) -> Path:
        """Save a checkpoint of model, optimizer and diagnostic state at ``step`` now."""
        if self.dir is None:
            msg = "This monitor has no run directory; pass dir=... to save checkpoints."
            raise ValueError(msg)
        if self._writer is not None:
            self._writer.flush()  # records up to this step are committed before the checkpoint
        # The global torch RNG travels with the checkpoint so that models drawing random
        # numbers (dropout) resume exactly.
        state = {**self.state, _RNG_KEY: torch.get_rng_state()}
        return save_checkpoint(self.dir, step, self.model, self.optimizer, state)

    def add_listener(self, fn: Listener) -> None:
        """Call ``fn(record)`` for every new record (live views use this)."""
        self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        """Stop calling ``fn``."""
        self._listeners.remove(fn)

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask the training loop to stop (a listener's action, e.g. the phase detector's).

        The Monitor itself keeps recording; a loop checks :attr:`stop_requested` after
        ``step``/``record`` and ends the run (records its last step, closes the monitor).
        """
        self._stop_reason = reason

    @property
    def stop_requested(self) -> bool:
        """Whether :meth:`request_stop` was called."""
        return self._stop_reason is not None

    @property
    def stop_reason(self) -> str | None:
        """Why a stop was requested, or ``None``."""
        return self._stop_reason

    def flush(self) -> None:
        """Write buffered records now."""
        if self._writer is not None:
            self._writer.flush()

    def dataset(self) -> xr.Dataset:
        """Everything recorded so far as the run Dataset."""
        if self.dir is not None:
            self.flush()
            return run_dir.open_run(self.dir)
        steps, metrics, arrays = dense_block(self._memory, self._index)
        return to_dataset(steps, metrics, arrays, self._index, {"status": self.status})

    @property
    def status(self) -> str:
        """``"running"`` until closed, then ``"finished"``/``"interrupted"``/``"failed"``."""
        return getattr(self, "_status", "running")

    def close(self, status: str = "finished") -> None:
        """Flush records, mark the run ``status`` in ``run.json`` and release the directory.

        If the last records cannot be written (a full disk), the run is marked ``failed``, the
        error is raised, and the committed records and checkpoints stay as they were: the run
        can be resumed.
        """
        if self._closed:
            return
        self._closed = True
        self._status = status
        try:
            if self._writer is not None:
                try:
                    self._writer.close()
                except BaseException:
                    self._status = "failed"
                    raise
        finally:
            try:
                if self.dir is not None:
                    update_run_info(self.dir, status=self._status)
            finally:
                if self._lock is not None:
                    self._lock.release()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close("finished")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.close("interrupted")
        else:
            self.close("failed")

    # -- internals -------------------------------------------------------------------------
    def _resolve_cadences(
        self, cadence: CadenceLike | Mapping[str, CadenceLike]
    ) -> dict[str, Cadence]:
        def own(d: Diagnostic) -> Cadence:
            # A family's own default (the sparse mechanism grid) or the monitor's.
            return cadence_from_json(dict(d.cadence)) if d.cadence else Cadence.default()

        if isinstance(cadence, Mapping):
            names = {d.name for d in self.diagnostics}
            unknown = sorted(set(cadence) - names - {"default"})
            if unknown:
                msg = f"Cadence given for {unknown}, not among the diagnostics {sorted(names)}."
                raise ValueError(msg)
            out = {}
            for d in self.diagnostics:
                given = cadence.get(d.name, cadence.get("default"))
                out[d.name] = own(d) if given is None else as_cadence(given)
            return out
        if cadence is None:
            return {d.name: own(d) for d in self.diagnostics}
        one = as_cadence(cadence)
        return {d.name: one for d in self.diagnostics}

    def _compute_next(self, step: int) -> int:
        nexts = [c.next_due(step) for c in self._cadences.values()]
        if self._ckpt is not None:
            nexts.append(self._ckpt.next_due(step))
        valid = [n for n in nexts if n is not None]
        return min(valid) if valid else 2**62

    def _probe(self, step: int, precomputed: dict[str, Tensor] | None = None) -> Probe:
        return Probe(self.model, self.task, step, self.loss_fn, self.state, precomputed)

    def record(
        self,
        step: int,
        scalars: Mapping[str, float] | None = None,
        outputs: dict[str, Tensor] | None = None,
        force: bool = False,
    ) -> Record | None:
        """Record what is due at ``step`` (no fast path), reusing ``outputs`` a loop computed.

        ``outputs`` maps a split to the model's outputs on that whole split at this step
        (e.g. ``{"train": out}`` after a full-batch forward), saving a forward pass.
        ``force=True`` records every diagnostic and saves a checkpoint (a run's last step).
        """
        scalars = scalars or {}
        precomputed = outputs
        due = [d for d in self.diagnostics if force or self._cadences[d.name].due(step)]
        record: Record | None = None
        if due or scalars:
            record = Record(step=step)
            probe = self._probe(step, precomputed)
            probe.cache[RECORD_VALUES] = record.values
            for diag in due:
                part = record_of(step, diag, diag.fn(probe))
                for name in part.arrays:
                    self._index.arrays.setdefault(name, {"dim": diag.arrays[name], "size": 0})
                record.merge(part)
            if probe.nan_reasons:
                self._index.add_nan_reasons(probe.nan_reasons)
            self._add_scalars(record, scalars)
            self._emit(record)
        self._last_step = max(self._last_step, step)
        if self._ckpt is not None and (force or self._ckpt.due(step)):
            self.checkpoint(step)
        self._next_due = self._compute_next(step + 1)
        return record

    def _add_scalars(self, record: Record, scalars: Mapping[str, float]) -> None:
        for name, value in scalars.items():
            if isinstance(value, Tensor):
                if value.numel() != 1:
                    shape = tuple(value.shape)
                    msg = f"log({name}=...) needs a single number, got a tensor of shape {shape}."
                    raise ValueError(msg)
                value = value.item()
            if not isinstance(value, int | float | np.number):
                msg = f"log({name}=...) needs a number, got {type(value).__name__}."
                raise TypeError(msg)
            record.values[(MODEL_LAYER, name)] = float(value)
            if name not in self._index.metric_info:
                self._index.metric_info[name] = {
                    "description": "scalar logged by the user",
                    "unit": "",
                    "source": "user",
                }

    def _emit(self, record: Record) -> None:
        if self._writer is not None:
            # self._index is the writer's index, so user metric info is already there.
            self._writer.append(record)
        else:
            if self._memory and self._memory[-1].step == record.step:
                self._memory[-1].merge(record)
            elif self._memory and record.step < self._memory[-1].step:
                msg = (
                    f"Record for step {record.step} comes after step {self._memory[-1].step}; "
                    "steps must not decrease. Create a new Monitor for a new run."
                )
                raise ValueError(msg)
            else:
                self._memory.append(record)
            self._index.add(record)
        for fn in self._listeners:
            fn(record)

    def _open_dir(self, *, resume: bool, overwrite: bool, config: dict[str, Any]) -> None:
        assert self.dir is not None
        metrics_path = self.dir / run_dir.METRICS
        if resume:
            run_dir.prepare(self.dir, resume=True, overwrite=False)
            self._lock = WriterLock(self.dir).acquire()
            ckpts = list_checkpoints(self.dir)
            if not ckpts:
                msg = (
                    f"Cannot resume {self.dir}: it has no checkpoints. "
                    "Start it again with overwrite=True."
                )
                raise FileNotFoundError(msg)
            step, path = next(reversed(ckpts.items()))
            loaded = load_checkpoint(path, self.model, self.optimizer)
            rng = loaded.monitor_state.pop(_RNG_KEY, None)
            if rng is not None:
                torch.set_rng_state(rng)
            self.state.update(loaded.monitor_state)
            self.resume_step = step
            self._writer = ZarrRecordWriter(
                metrics_path,
                mode="a",
                flush_every=self._flush_every,
                flush_seconds=self._flush_seconds,
            )
            self._writer.truncate(step)
            read_store(metrics_path)  # every kept record decodes, or RunDamagedError names it
            self._index = self._writer.index
            self._index.metric_info.update(metric_info(self.diagnostics))
            self._last_step = step
            resumed = [*read_run_info(self.dir).resumed_from, step]
            update_run_info(self.dir, status="running", resumed_from=resumed)
            return
        # The lock comes first: --overwrite must not delete a run another process is writing.
        self._lock = WriterLock(self.dir).acquire()
        run_dir.prepare(self.dir, resume=False, overwrite=overwrite)
        model_cfg = getattr(self.model, "config", None)
        info = RunInfo(
            status="running",
            created=now(),
            seed=config.get("seed"),
            config={
                "task": self.task.config if self.task is not None else None,
                "model": model_cfg
                if isinstance(model_cfg, dict)
                else {"class": type(self.model).__name__},
                "diagnostics": [d.name for d in self.diagnostics],
                "cadence": {k: c.to_json() for k, c in self._cadences.items()},
                "checkpoint_cadence": self._ckpt.to_json() if self._ckpt is not None else None,
                **config,
            },
            versions=run_dir.versions(),
        )
        write_run_info(self.dir, info)
        self._writer = ZarrRecordWriter(
            metrics_path,
            mode="w",
            flush_every=self._flush_every,
            flush_seconds=self._flush_seconds,
        )
        self._writer.set_metric_info(self._index.metric_info)
        self._index = self._writer.index
