"""``Explorer``: scrub through a run's recorded steps and checkpoints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import traitlets
import xarray as xr

from grokwidgets.store.checkpoints import list_checkpoints
from grokwidgets.store.run_dir import open_run
from grokwidgets.widgets._base import PanelWidget
from grokwidgets.widgets._esm import esm_path
from grokwidgets.widgets._tables import current_tables, last_step_with, series_tables


class Explorer(PanelWidget):
    """Every panel of a run with a step scrubber (a range input: arrows, Home and End).

    Moving the scrubber sets :attr:`step`; the step-state panels (the ESD with its power-law
    fit, the kernel spectrum) then show that step, and the curves a cursor at it.

    Parameters
    ----------
    source : path-like or xarray.Dataset
        A run directory (its checkpoints join the scrubber's steps) or a run Dataset.
    step : int, optional
        The step shown first (default: the last recorded one).

    Examples
    --------
    >>> ex = gw.widgets.Explorer("runs/modadd")   # doctest: +SKIP
    >>> ex.step = 1000                            # doctest: +SKIP
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
        self.ds = ds
        where = ds.attrs.get("run_dir")
        ckpts = sorted(list_checkpoints(Path(where))) if where else []
        recorded = [int(s) for s in ds["step"].values]
        self.checkpoint_steps = ckpts
        self.steps = sorted(set(recorded) | set(ckpts))
        self.status = str(ds.attrs.get("status", ""))
        names = {str(m) for m in ds["metric"].values} | {
            str(v) for v in ds.data_vars if v != "metrics"
        }
        self._set_panels(names)
        if not self.steps:
            self.message = "this run has no records yet"
            return
        self._feed(series_tables(ds))
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
        current = current_tables(self.ds, step)
        self._feed({}, current)
        notes = []
        for var, what in (("spectrum", "ESD"), ("kernel_spectrum", "kernel spectrum")):
            if var not in self.ds:
                continue
            at = last_step_with(self.ds, var, step)
            if at is None:
                notes.append(f"no {what} recorded at or before step {step}")
            elif at != step:
                notes.append(f"{what} from step {at} (not recorded at {step})")
        self.message = f"step {step}" + ("; " + "; ".join(notes) if notes else "")
