"""``gw.train``: a plain, deterministic training loop with a :class:`Monitor` built in."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import xarray as xr
from torch import Tensor, nn
from tqdm.auto import tqdm

from grokwidgets.monitor.cadence import Cadence
from grokwidgets.monitor.monitor import Monitor
from grokwidgets.monitor.watcher import PhaseEvent, PhaseWatcher
from grokwidgets.store.checkpoints import checkpoint_path
from grokwidgets.store.run_info import update_run_info
from grokwidgets.tasks.base import Task
from grokwidgets.tasks.losses import make_loss
from grokwidgets.train.optimizers import make_optimizer

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def cast(model: nn.Module, task: Task, dtype: str, where: str = "dtype") -> Task:
    """Cast ``model`` in place and return ``task`` in ``dtype`` (``"float32"``/``"float64"``)."""
    if dtype not in DTYPES:
        msg = f"{where} must be one of {list(DTYPES)}, got {dtype!r}."
        raise ValueError(msg)
    model.to(DTYPES[dtype])
    return task.to(DTYPES[dtype])


#: How ``train(live=True)`` shows a run: ``show(monitor)`` displays a live view and returns it
#: (or ``None`` where nothing can show). :mod:`grokwidgets.widgets` sets it when imported
#: (``import grokwidgets`` does), so training never imports the widgets above it.
LiveDisplay = Callable[[Monitor], Any]
_live_display: LiveDisplay | None = None


def set_live_display(show: LiveDisplay | None) -> None:
    """Use ``show(monitor)`` for ``train(live=True)``; ``None`` turns live views off."""
    global _live_display  # noqa: PLW0603 (one hook, set once by the widgets package)
    _live_display = show


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass
class Run:
    """What :func:`train` returns."""

    task: Task
    model: nn.Module
    optimizer: torch.optim.Optimizer
    monitor: Monitor
    steps: int
    wall_time: float
    dir: Path | None = None

    def dataset(self) -> xr.Dataset:
        """The run's records as a Dataset (from the run directory when there is one)."""
        return self.monitor.dataset()


class BatchSchedule:
    """Which training samples step ``s`` uses: a pure function of ``(seed, s)``.

    - ``shuffle="epoch"``: each epoch is a fresh seeded permutation cut into
      ``n // batch_size`` batches; the ``n % batch_size`` samples left over are left out of
      that epoch (PyTorch's ``drop_last=True``), a different set each epoch, so every sample
      is still trained on.
    - ``shuffle="once"`` (Omnigrok's cycled batches): one fixed permutation read as an
      endless cycle, batch ``s`` being its entries ``s·B … s·B + B − 1`` modulo ``n``. When
      ``B`` does not divide ``n`` a batch wraps around into the next pass, so every sample
      is used equally often; cutting the one permutation into ``n // B`` batches would never
      train on the same ``n % B`` samples while train accuracy counts them.

    Every batch has ``batch_size`` samples. Being stateless, it resumes exactly from any step.
    """

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: str = "epoch") -> None:
        if shuffle not in ("epoch", "once"):
            msg = f"shuffle must be 'epoch' or 'once', got {shuffle!r}."
            raise ValueError(msg)
        if not 1 <= batch_size <= n:
            msg = f"batch_size must be in [1, {n}] (the train split), got {batch_size}."
            raise ValueError(msg)
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.per_epoch = n // batch_size
        self._epoch = -1
        self._perm = torch.arange(n)

    def _permutation(self, key: int) -> Tensor:
        if key != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + key)
            self._perm = torch.randperm(self.n, generator=g)
            self._epoch = key
        return self._perm

    def indices(self, step: int) -> Tensor:
        """Sample indices of the batch used at ``step``."""
        if self.shuffle == "once":
            start = (step * self.batch_size) % self.n
            perm = self._permutation(0)
            if start + self.batch_size <= self.n:
                return perm[start : start + self.batch_size]
            return perm[(start + torch.arange(self.batch_size)) % self.n]
        epoch, i = divmod(step, self.per_epoch)
        perm = self._permutation(epoch)
        return perm[i * self.batch_size : (i + 1) * self.batch_size]


def _alpha(model: nn.Module) -> float:
    """The model's output scale α, for ``lr_per_alpha2``."""
    alpha = getattr(model, "alpha", None)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not alpha > 0:
        msg = (
            "lr_per_alpha2=True divides the learning rate by model.alpha squared; this model "
            f"has no positive numeric `alpha` attribute (got {alpha!r})."
        )
        raise ValueError(msg)
    return float(alpha)


def _stochastic(model: nn.Module) -> bool:
    bad = (nn.Dropout, nn.modules.batchnorm._BatchNorm)
    return any(isinstance(m, bad) for m in model.modules())


def train(
    task: Task,
    model: nn.Module,
    steps: int,
    *,
    optimizer: str = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int | None = None,
    lr_per_alpha2: bool = False,
    loss: str = "auto",
    dir: str | os.PathLike[str] | None = None,  # noqa: A002 (the design's public name)
    seed: int = 0,
    diagnostics: Iterable[str] = ("basic",),
    cadence: Cadence | int | Mapping[str, Cadence | int | Mapping[str, Any] | None] | None = None,
    checkpoint_cadence: Cadence | int | bool | None = None,
    resume: bool = False,
    overwrite: bool = False,
    shuffle: Literal["epoch", "once"] = "epoch",
    dtype: Literal["float32", "float64"] | None = None,
    optimizer_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    live: bool = False,
    on_event: Callable[[PhaseEvent], Any] | None = None,
    stop_on: Iterable[str] = (),
    extra_config: Mapping[str, Any] | None = None,
) -> Run:
    """Train ``model`` on ``task`` for ``steps`` optimizer steps, recording diagnostics.

    Step ``s`` is the state after ``s`` optimizer updates; records at ``s`` see that state
    (and, for ``grad_norm``, the training-loss gradient at it). Deterministic for a ``seed``
    (which fixes the batch order and the global torch RNG); ``resume=True`` continues from the
    latest checkpoint in ``dir`` and reproduces the uninterrupted run's records exactly.

    Parameters
    ----------
    task, model : the data and the network (build the model with a ``seed`` too).
    steps : int
        Number of optimizer steps.
    optimizer : {"sgd", "adam", "adamw", "muon"}
    lr, weight_decay : float
    lr_per_alpha2 : bool
        Divide ``lr`` by the square of the model's output scale ``model.alpha``: the step
        η = lr / α² keeps the dynamics' time scale fixed as α moves between the rich (small
        α) and lazy (large α) regimes (Chizat, Oyallon & Bach 2019; Kumar et al. 2024 train
        with η = cN / α²), so a sweep over
        ``model.alpha`` needs no matching ``lr``. ``run.json`` records ``lr`` as given and
        this flag.
    batch_size : int, optional
        Minibatch size; ``None`` (default) trains full batch.
    loss : {"auto", "cross_entropy", "mse", "centred_mse"}
        ``auto``: cross-entropy for classification, MSE for regression.
    dir : path-like, optional
        Run directory (``metrics.zarr``, ``checkpoints/``, ``run.json``); in memory without.
    seed : int
    diagnostics, cadence, checkpoint_cadence : see :class:`~grokwidgets.Monitor`.
    resume, overwrite : bool
        Continue the run in ``dir``, or replace it. Without either, a ``dir`` that already
        holds a run is refused.
    shuffle : {"epoch", "once"}
        A new permutation each epoch, or one fixed permutation cycled (Omnigrok); see
        :class:`BatchSchedule` for what happens to the ``n % batch_size`` samples left over.
    dtype : {"float32", "float64"}, optional
        Cast model and data to this precision first.
    optimizer_kwargs : dict, optional
        Extra arguments of the optimizer (``betas``, ``momentum``, ...).
    progress : bool
        Show a tqdm progress bar.
    live : bool
        In a Jupyter notebook, show a :class:`~grokwidgets.widgets.LiveMonitor` that updates
        while the run trains; does nothing elsewhere. With the ``phase_detector``
        diagnostic, the view also shows the detector's events.
    on_event : callable, optional
        Called with each :class:`~grokwidgets.diagnostics.detector.PhaseEvent` of the online
        phase detector (memorization, onset of feature learning, collapse warnings).
    stop_on : iterable of str
        Detector events that end the run early (e.g. ``["collapse_warning"]``); the last
        step is recorded and checkpointed, so the run can be resumed, and ``run.json`` says
        ``stopped_at`` and ``stop_reason``.
    extra_config : mapping, optional
        More entries for the config in ``run.json`` (JSON-able; ``gw.sweep`` records the
        run's grid point under ``"sweep"``). They may not replace what ``run.json`` records
        itself (``seed``, ``train``, ``task``, ``model``, ``diagnostics``, the cadences).

    Returns
    -------
    Run
        The model, optimizer, monitor and wall time; ``run.dataset()`` gives the records.
    """
    if steps < 0:
        msg = f"steps must be >= 0, got {steps}."
        raise ValueError(msg)
    if dtype is not None:
        task = cast(model, task, dtype)
    loss_fn = make_loss(loss, task)
    step_lr = lr / _alpha(model) ** 2 if lr_per_alpha2 else lr
    opt = make_optimizer(
        optimizer, model, lr=step_lr, weight_decay=weight_decay, **(optimizer_kwargs or {})
    )
    n = task.n_train
    full_batch = batch_size is None or batch_size >= n
    schedule = None if full_batch else BatchSchedule(n, int(batch_size or n), seed, shuffle)
    recipe = {
        "steps": steps,
        "optimizer": optimizer,
        "lr": lr,
        "weight_decay": weight_decay,
        "batch_size": batch_size,
        "lr_per_alpha2": lr_per_alpha2,
        "loss": loss,
        "shuffle": shuffle,
        "dtype": dtype,
        "optimizer_kwargs": optimizer_kwargs or {},
    }
    extra = dict(extra_config or {})
    own = {"seed", "train", "task", "model", "diagnostics", "cadence", "checkpoint_cadence"}
    clash = sorted(set(extra) & own)
    if clash:
        msg = f"extra_config may not set {clash}: train() records them itself."
        raise ValueError(msg)
    if not resume:
        torch.manual_seed(seed)
    monitor = Monitor(
        model,
        task,
        dir=dir,
        diagnostics=diagnostics,
        cadence=cadence,
        loss=loss_fn,
        optimizer=opt,
        checkpoint_cadence=checkpoint_cadence,
        resume=resume,
        overwrite=overwrite,
        config={"seed": seed, "train": recipe, **extra},
    )
    view = None
    if live and _live_display is not None:
        view = _live_display(monitor)
    callbacks = [fn for fn in (on_event, getattr(view, "notify", None)) if fn is not None]
    detector_recorded = any(d.name == "phase_detector" for d in monitor.diagnostics)
    if on_event is not None or stop_on or (view is not None and detector_recorded):
        PhaseWatcher(monitor, callbacks, stop_on=stop_on)
    start = monitor.resume_step or 0
    reuse_outputs = full_batch and not _stochastic(model)
    x, y = task.x_train, task.y_train
    t0 = time.perf_counter()
    bar = tqdm(total=steps, initial=start, disable=not progress, desc="train", unit="step")
    last_post = 0.0
    stopped_at: int | None = None
    try:
        model.train()
        for s in range(start, steps + 1):
            if schedule is not None:
                idx = schedule.indices(s)
                xb, yb = x[idx], y[idx]
            else:
                xb, yb = x, y
            out = model(xb)
            step_loss = loss_fn(out, yb)
            loss_value = float(step_loss.detach())
            if not math.isfinite(loss_value):
                monitor.close("failed")
                where = f" Records up to step {s - 1} are saved in {dir}." if dir else ""
                msg = (
                    f"The training loss became {loss_value} at step {s}.{where} "
                    f"Lower the learning rate (lr={lr}) or the init scale, or train in float64."
                )
                raise NonFiniteLossError(msg)
            opt.zero_grad(set_to_none=True)
            step_loss.backward()
            if s > start or monitor.resume_step is None:
                final = s == steps  # the end state is always recorded and checkpointed
                if final or monitor.due(s):
                    pre = {"train": out} if reuse_outputs else None
                    rec = monitor.record(s, outputs=pre, force=final)
                    now = time.perf_counter()
                    if rec is not None and progress and now - last_post > 0.5:
                        last_post = now
                        bar.set_postfix(_postfix(rec.values), refresh=False)
                    # a stop comes from a listener of this record (PhaseWatcher's stop_on)
                    if monitor.stop_requested:  # end here, resumable
                        if monitor.dir is not None and not checkpoint_path(monitor.dir, s).exists():
                            monitor.checkpoint(s)
                        stopped_at = s
                        break
            if s == steps:
                break
            opt.step()
            bar.update(1)
    except KeyboardInterrupt:
        monitor.close("interrupted")
        raise
    except NonFiniteLossError:
        raise
    except BaseException:
        monitor.close("failed")
        raise
    finally:
        bar.close()
        if view is not None:
            view.flush()  # a failed or interrupted run: its status redraws the saved image
    monitor.close("finished")
    if stopped_at is not None and monitor.dir is not None:
        update_run_info(monitor.dir, stopped_at=stopped_at, stop_reason=monitor.stop_reason)
    if view is not None:
        view.status = monitor.status  # an ended run redraws the cell's saved image
    return Run(
        task=task,
        model=model,
        optimizer=opt,
        monitor=monitor,
        steps=steps if stopped_at is None else stopped_at,
        wall_time=time.perf_counter() - t0,
        dir=Path(dir) if dir is not None else None,
    )


def _postfix(values: Mapping[tuple[str, str], float]) -> dict[str, str]:
    keys = ("train_loss", "train_acc", "test_acc")
    return {k: f"{values[('model', k)]:.3g}" for k in keys if ("model", k) in values}
