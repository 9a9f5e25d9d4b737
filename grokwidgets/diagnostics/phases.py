r"""Phases of a run read off its recorded curves: time to memorize and time to grok.

Power et al. (2022), arXiv:2201.02177, measure grokking as the gap between the step where
train accuracy reaches (near) 100% and the step where validation accuracy does:

.. math::

    t_\text{mem} = \min\{t : \text{train\_acc}(t) \ge a_\text{train}\}, \qquad
    t_\text{grok} = \min\{t : \text{test\_acc}(t) \ge a_\text{test}\}

"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from grokwidgets.store.records import MODEL_LAYER


def select_metric(ds: xr.Dataset, metric: str, layer: str = MODEL_LAYER) -> xr.DataArray:
    """One metric of one layer over steps, with a clear error for an unknown name."""
    metrics = [str(m) for m in ds["metric"].values]
    if metric not in metrics:
        msg = f"Metric {metric!r} was not recorded in this run. Recorded metrics: {metrics}."
        raise KeyError(msg)
    layers = [str(x) for x in ds["layer"].values]
    if layer not in layers:
        msg = f"Layer {layer!r} is not in this run. Layers: {layers}."
        raise KeyError(msg)
    return ds["metrics"].sel(metric=metric, layer=layer)


def first_step_reaching(
    ds: xr.Dataset, metric: str, threshold: float, layer: str = MODEL_LAYER
) -> int | None:
    """First recorded step where ``metric >= threshold``, or ``None`` if never."""
    da = select_metric(ds, metric, layer)
    hit = np.flatnonzero(da.values >= threshold)
    return int(da["step"].values[hit[0]]) if hit.size else None


@dataclass(frozen=True)
class GrokTimes:
    """Steps at which memorization and generalization were reached."""

    memorized: int | None
    generalized: int | None

    @property
    def delay(self) -> int | None:
        """Steps from memorization to generalization (the grokking delay)."""
        if self.memorized is None or self.generalized is None:
            return None
        return self.generalized - self.memorized


def time_to_grok(
    ds: xr.Dataset, train_threshold: float = 0.99, test_threshold: float = 0.95
) -> GrokTimes:
    """Time to memorize (train accuracy) and to generalize (test accuracy) of a run."""
    return GrokTimes(
        memorized=first_step_reaching(ds, "train_acc", train_threshold),
        generalized=first_step_reaching(ds, "test_acc", test_threshold),
    )
