"""The ``ds.gw`` accessor: ``ds.gw.monitor()``, ``ds.gw.explore()``, ``ds.gw.plot(metric)``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import xarray as xr

if TYPE_CHECKING:
    import altair as alt

    from grokwidgets.widgets.compare import Compare
    from grokwidgets.widgets.explorer import Explorer
    from grokwidgets.widgets.live import LiveMonitor


@xr.register_dataset_accessor("gw")
class GrokAccessor:
    """Views of a run Dataset (``gw.open_run(...)``) from the Dataset itself.

    Examples
    --------
    >>> ds = gw.open_run("runs/modadd")     # doctest: +SKIP
    >>> ds.gw.plot("test_acc")              # doctest: +SKIP
    >>> ds.gw.explore()                     # doctest: +SKIP
    """

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def monitor(self, **kwargs: Any) -> LiveMonitor:
        """A :class:`~grokwidgets.widgets.LiveMonitor` of this run (following it if running)."""
        from grokwidgets.widgets.live import LiveMonitor

        return LiveMonitor(self._ds, **kwargs)

    def explore(self, **kwargs: Any) -> Explorer:
        """An :class:`~grokwidgets.widgets.Explorer` of this run."""
        from grokwidgets.widgets.explorer import Explorer

        return Explorer(self._ds, **kwargs)

    def compare(self, dim: str | None = None, **kwargs: Any) -> Compare:
        """A :class:`~grokwidgets.widgets.Compare` of this sweep along ``dim``."""
        from grokwidgets.widgets.compare import Compare

        return Compare(self._ds, dim=dim, **kwargs)

    def plot(self, metric: str, **kwargs: Any) -> alt.Chart:
        """Line chart of ``metric`` per layer over steps (the report's chart)."""
        from grokwidgets.views.charts import metric_chart

        return metric_chart(self._ds, metric, **kwargs)
