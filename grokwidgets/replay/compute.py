r"""Diagnostics computed afterwards at a checkpoint step: :func:`compute_at`.

A run records each diagnostic at its own cadence and saves checkpoints at another; at a
checkpoint step :func:`compute_at` rebuilds the run's task and model from ``run.json``, loads
the checkpoint and computes diagnostics that were not recorded there, as the
:class:`~grokwidgets.Monitor` would have recorded them at that step. Results are cached in the
run directory (:mod:`grokwidgets.store.computed`), never in ``metrics.zarr``, so a run that is
still being written is safe, and a later call (or a reopened Explorer) reuses them.

State kept between records
--------------------------
Some diagnostics compare with the start of the run (``rel_change``, ``ntk_cka_init``,
``cka_init``, the initial-kernel baseline, ...) or with their previous record
(``ntk_velocity``, ``cka_prev``; ``probes`` warm-starts from it). At step :math:`s`:

- a diagnostic the run recorded (named in ``run.json`` or with a value at a step
  :math:`\le s`) takes its state from the checkpoint of :math:`s`, saved after the record at
  :math:`s`, so it holds the state of its last record before :math:`s`: the values are exactly
  those the Monitor would have recorded at :math:`s` (``ntk_velocity`` against the previous
  ``ntk`` record);
- a diagnostic the run never recorded is set up on the model of the step-0 checkpoint, as
  the Monitor sets it up at the start of a run, when the run has one. The metrics that compare
  with a previous record (:data:`PREVIOUS_METRICS`) are NaN: there is none. Without a step-0
  checkpoint the setup runs on the model at :math:`s` (so the diagnostic can run) and the
  metrics that compare with the initial state (:data:`INIT_METRICS`) are NaN with that reason;
  a diagnostic of your own whose setup keeps initial state should list its metrics there.
- ``grad_norm`` reads the gradient present when recording. For a ``gw.train`` run it is
  recomputed as ``gw.train`` computed it at :math:`s` (the training loss of the full batch, or
  of the batch :class:`~grokwidgets.train.BatchSchedule` gives step :math:`s`); a run around
  the user's own loop has no known gradient, and ``grad_norm`` is NaN with that reason.
  Models with dropout draw other masks than the run did.
- a diagnostic that reads the record (``fn.reads_record``, the phase detector) runs last and
  sees the step's values: recorded, cached, and computed in the same call.

With several diagnostics asked at once, one :class:`~grokwidgets.diagnostics.probe.Probe` serves
them all (shared forward passes), in registry order, as in a Monitor record.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import xarray as xr
from torch import nn

from grokwidgets._names import MODEL_LAYER
from grokwidgets.diagnostics.probe import RECORD_VALUES, Probe
from grokwidgets.diagnostics.registry import Diagnostic, available, metric_info, resolve
from grokwidgets.monitor.dispatch import readers_last, record_of
from grokwidgets.replay.restore import RestoredRun, restore_run
from grokwidgets.store.checkpoints import checkpoint_path, list_checkpoints
from grokwidgets.store.computed import open_run_with_computed, write_computed
from grokwidgets.store.records import Record
from grokwidgets.store.run_dir import open_run
from grokwidgets.tasks.base import Task
from grokwidgets.train.loop import BatchSchedule

if TYPE_CHECKING:
    import os

__all__ = ["INIT_METRICS", "PREVIOUS_METRICS", "compute_at", "computable_at", "recorded_at"]

#: Metrics that compare with the run's initial state (kept by a diagnostic's setup).
INIT_METRICS: frozenset[str] = frozenset(
    {
        "rel_change",
        "ntk_cka_init",
        "ntk_rel_change",
        "lin_gap",
        "param_rel_change",
        "ntk_init_kernel_test_loss",
        "ntk_init_kernel_test_acc",
        "cka_init",
    }
)
#: Metrics that compare with the diagnostic's previous record.
PREVIOUS_METRICS: frozenset[str] = frozenset(
    {
        "ntk_velocity",
        "cka_prev",
        # infogeo: steps and path lengths need the previous record
        "fisher_step_length",
        "fisher_path_length",
        "fisher_straightness",
        "param_step_length",
        "param_step_cosine",
        "output_fisher_rao_step",
        "output_hellinger_step",
        "output_path_length",
    }
)

#: ``progress(done, total, name)``: called before each diagnostic is computed.
Progress = Callable[[int, int, str], None]


def _all_diagnostics() -> list[Diagnostic]:
    return resolve(available())


def _telling_metrics(diag: Diagnostic) -> list[str]:
    """The metrics that tell ``diag`` was recorded.

    Those no other diagnostic declares too (comparative's ``weight_norm`` is basic's), or all
    of them when it has none of its own.
    """
    declared = Counter(m.name for d in _all_diagnostics() for m in d.metrics)
    own = [m.name for m in diag.metrics if declared[m.name] == 1]
    return own or [m.name for m in diag.metrics]


def _has_values(ds: xr.Dataset, diag: Diagnostic, steps: Any) -> bool:
    """Whether ``diag`` has a finite value (a metric or an array) at any of ``steps``."""
    if ds.sizes.get("step", 0) == 0:
        return False
    known = {str(m) for m in ds["metric"].values}
    names = [n for n in _telling_metrics(diag) if n in known]
    if names and np.isfinite(ds["metrics"].sel(step=steps, metric=names).values).any():
        return True
    return any(
        var in ds and np.isfinite(ds[var].sel(step=steps).values).any() for var in diag.arrays
    )


def recorded_at(ds: xr.Dataset, step: int) -> set[str]:
    """Registered diagnostics with a value at ``step`` in ``ds`` (recorded or computed).

    A diagnostic counts when any metric it declares (and no other diagnostic does, when it
    has such metrics) is finite at some layer, when any array
    it declares holds a value, or when ``ds.attrs["computed"]`` lists it at ``step`` (a
    computation that gave only NaN, with its reasons).
    """
    done = {name for name, steps in dict(ds.attrs.get("computed", {})).items() if step in steps}
    if "step" not in ds.dims or step not in ds["step"].values:
        return done
    return done | {d.name for d in _all_diagnostics() if _has_values(ds, d, [step])}


def computable_at(ds: xr.Dataset, step: int, checkpoint_steps: Iterable[int]) -> list[str]:
    """Registered diagnostics that :func:`compute_at` can add at ``step``.

    Empty when ``step`` has no checkpoint; else every registered diagnostic without a value
    there (see :func:`recorded_at`), in registry order.
    """
    if step not in set(checkpoint_steps):
        return []
    done = recorded_at(ds, step)
    return [d.name for d in _all_diagnostics() if d.name not in done]


def compute_at(
    run_dir: str | os.PathLike[str],
    step: int,
    names: Iterable[str] | None = None,
    *,
    model: nn.Module | None = None,
    task: Task | None = None,
    progress: Progress | None = None,
) -> xr.Dataset:
    """Compute diagnostics at a checkpoint step of a run and cache them in the run directory.

    Diagnostics with values at ``step`` already (recorded, or cached by an earlier call) are
    not computed again. The rest are computed on the checkpoint's model with one
    :class:`~grokwidgets.diagnostics.probe.Probe`, as the Monitor records them; how state kept
    between records is set up is in the module docstring. Each diagnostic is cached as soon
    as it is done.

    Parameters
    ----------
    run_dir : path-like
        The run directory.
    step : int
        A step with a checkpoint.
    names : iterable of str, optional
        Diagnostics or groups to compute (default: every registered diagnostic).
    model, task : optional
        For runs whose model or task cannot be rebuilt from ``run.json`` (custom models,
        ``gw.tasks.from_tensors``); the model is copied, never modified.
    progress : callable, optional
        ``progress(done, total, name)`` before each diagnostic.

    Returns
    -------
    xarray.Dataset
        The run at ``step`` (dims ``layer`` × ``metric``, arrays), recorded and computed
        values together; ``attrs["computed"]`` says which diagnostics were computed where.

    Raises
    ------
    ValueError
        If ``step`` has no checkpoint, a name is unknown, or the task/model cannot be rebuilt.
    CheckpointError
        If the checkpoint is missing, unreadable or does not fit the model (the message names
        the file and the cause).
    RuntimeError
        If a diagnostic fails; the ones computed before it stay cached.
    """
    root = Path(run_dir)
    step = int(step)
    ckpts = sorted(list_checkpoints(root))
    if step not in ckpts:
        near = min(ckpts, key=lambda s: abs(s - step)) if ckpts else None
        msg = (
            f"No checkpoint at step {step}: {checkpoint_path(root, step)} does not exist, so "
            "nothing can be computed there. "
            + (
                f"Checkpoints: {len(ckpts)} steps from {ckpts[0]} to {ckpts[-1]}; the nearest "
                f"is {near}."
                if ckpts
                else "The run has no checkpoints (checkpoint_cadence=False?)."
            )
        )
        raise ValueError(msg)
    wanted = _all_diagnostics() if names is None else resolve(_names(names))
    ds = open_run_with_computed(root)
    done = recorded_at(ds, step)
    todo = [d for d in wanted if d.name not in done]
    if todo:
        known = _values_at(ds, step)
        _compute(root, step, todo, ckpts, known, model=model, task=task, progress=progress)
        ds = open_run_with_computed(root)
    return ds.sel(step=step)


def _names(names: Iterable[str]) -> list[str]:
    if isinstance(names, str):
        return [names]
    out = [str(n) for n in names]
    if not out:
        msg = "names is empty; pass diagnostic names, or None for every registered one."
        raise ValueError(msg)
    return out


def _values_at(ds: xr.Dataset, step: int) -> dict[tuple[str, str], float]:
    """The finite values of ``ds`` at ``step`` by (layer, metric)."""
    if ds.sizes.get("step", 0) == 0 or step not in ds["step"].values:
        return {}
    m = ds["metrics"].sel(step=step).transpose("layer", "metric")
    layers, metrics = [str(x) for x in m["layer"].values], [str(x) for x in m["metric"].values]
    vals = m.values
    rows, cols = np.nonzero(np.isfinite(vals))
    return {(layers[i], metrics[j]): float(vals[i, j]) for i, j in zip(rows, cols, strict=True)}


def _compute(
    root: Path,
    step: int,
    todo: list[Diagnostic],
    ckpts: list[int],
    known: dict[tuple[str, str], float],
    *,
    model: nn.Module | None,
    task: Task | None,
    progress: Progress | None,
) -> None:
    run = restore_run(root, model=model, task=task)
    recorded = open_run(root)
    earlier = recorded["step"].values[recorded["step"].values <= step]
    in_run = set(run.diagnostics) | {d.name for d in todo if _has_values(recorded, d, earlier)}
    fresh = [d for d in todo if d.name not in in_run]
    needs_setup = [d for d in fresh if d.setup is not None]
    init_known = not needs_setup or 0 in ckpts
    setup_state: dict[str, torch.Tensor] = {}
    if needs_setup and init_known:
        run.load(0)  # the Monitor sets diagnostics up on the model at the start of the run
        probe0 = Probe(run.model, run.task, 0, run.loss_fn, setup_state)
        for d in needs_setup:
            assert d.setup is not None
            d.setup(probe0)
    loaded = run.load(step)
    state = {k: v for k, v in loaded.monitor_state.items() if not k.startswith("rng.")}
    state.update(setup_state)
    outputs = _training_gradient(run, step)
    probe = Probe(run.model, run.task, step, run.loss_fn, state, outputs)
    # As the Monitor does: this step's values so far are visible to the diagnostics that read
    # the record (the phase detector), which run after the others.
    probe.cache[RECORD_VALUES] = dict(known)
    todo = readers_last(todo)
    if needs_setup and not init_known:
        for d in needs_setup:
            assert d.setup is not None
            d.setup(probe)
    for i, d in enumerate(todo):
        if progress is not None:
            progress(i, len(todo), d.name)
        t0 = time.perf_counter()
        try:
            values = d.fn(probe)
        except Exception as err:
            msg = f"Diagnostic {d.name!r} failed at step {step} of {root}: {err}"
            raise RuntimeError(msg) from err
        record = record_of(step, d, values)
        declared = {m.name for m in d.metrics}
        reasons = {m: dict(v) for m, v in probe.nan_reasons.items() if m in declared}
        notes = [_state_note(d, in_run, init_known, step)]
        if not values:
            why = "it returned no values at this checkpoint" + (
                " (a run around your own loop: no training gradient is known at this step)"
                if run.recipe is None
                else ""
            )
            for m in d.metrics:
                record.values[(MODEL_LAYER, m.name)] = math.nan
                reasons.setdefault(m.name, {})[MODEL_LAYER] = why
        if d.name not in in_run:
            why = f"computed from a checkpoint: the run has no earlier record of {d.name!r}"
            _override(record, reasons, PREVIOUS_METRICS & declared, why)
        if d in needs_setup and not init_known:
            why = (
                "computed from a checkpoint: the run has no step-0 checkpoint, so its "
                "initial state is unknown"
            )
            _override(record, reasons, INIT_METRICS & declared, why)
        probe.cache[RECORD_VALUES].update(record.values)
        notes.append(f"computed in {time.perf_counter() - t0:.3g} s")
        write_computed(
            root,
            d.name,
            record,
            dims=dict(d.arrays),
            metric_info=metric_info([d]),
            nan_reasons=reasons,
            notes="; ".join(notes),
        )


def _state_note(d: Diagnostic, in_run: set[str], init_known: bool, step: int) -> str:
    if d.name in in_run:
        return f"state from the checkpoint of step {step}"
    if d.setup is None:
        return "no state"
    if init_known:
        return "set up on the step-0 checkpoint"
    return "set up at this step (no step-0 checkpoint): metrics against init are NaN"


def _override(
    record: Record, reasons: dict[str, dict[str, str]], metrics: Iterable[str], why: str
) -> None:
    for layer, metric in list(record.values):
        if metric in metrics:
            record.values[(layer, metric)] = math.nan
            reasons.setdefault(metric, {})[layer] = why


def _training_gradient(run: RestoredRun, step: int) -> dict[str, torch.Tensor] | None:
    """Put the training-loss gradient of ``step`` in ``.grad`` as ``gw.train`` did.

    Returns the train outputs to reuse (what ``gw.train`` hands the Monitor), or ``None``.
    Runs around the user's own loop (no recipe) get no gradient.
    """
    recipe = run.recipe
    if recipe is None:
        return None
    task, model = run.task, run.model
    n = task.n_train
    batch = int(recipe.get("batch_size") or n)
    full = batch >= n
    if full:
        xb, yb = task.x_train, task.y_train
    else:
        schedule = BatchSchedule(n, batch, run.seed, str(recipe.get("shuffle", "epoch")))
        idx = schedule.indices(step)
        xb, yb = task.x_train[idx], task.y_train[idx]
    model.train()
    model.zero_grad(set_to_none=True)
    out = model(xb)
    run.loss_fn(out, yb).backward()
    stochastic = any(
        isinstance(m, nn.Dropout | nn.modules.batchnorm._BatchNorm) for m in model.modules()
    )
    return {"train": out.detach()} if full and not stochastic else None
