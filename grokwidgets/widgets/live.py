"""``LiveMonitor``: curves and diagnostic panels that update while a run records."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import traitlets
import xarray as xr

from grokwidgets.monitor.monitor import Monitor
from grokwidgets.store import run_dir
from grokwidgets.store.records import Record, records_dataset
from grokwidgets.store.run_info import read_run_info
from grokwidgets.store.zarr_store import declared_names, read_rows
from grokwidgets.views.frame import Table
from grokwidgets.views.story import merge_story_metrics
from grokwidgets.views.stream import DEFAULT_BUDGET
from grokwidgets.views.tables import STEP_STATE, current_tables, last_step_with, series_tables
from grokwidgets.widgets._base import PanelWidget
from grokwidgets.widgets._esm import esm_path
from grokwidgets.widgets._follow import Poller

_DONE = ("finished", "failed", "interrupted")


class LiveMonitor(PanelWidget):
    """Loss/accuracy on a log-step axis and the representation, kernel and spectral panels.

    The loss and accuracy panels shade the run's phases and mark its time to grok, and
    :attr:`timeline` lists its events in words (:mod:`grokwidgets.views.story`), told again
    from every record received so far as rows arrive.

    Updates while the run records: from a :class:`~grokwidgets.Monitor` in this kernel
    (``gw.train(..., live=True)`` or the user's own loop) through a listener, or from a run
    directory another process writes, by polling its ``commit.json``. Only new rows are
    sent to the browser; above ``budget`` rows a dataset is min/max downsampled.

    Parameters
    ----------
    source : Monitor, path-like or xarray.Dataset
        What to show: a live monitor, a run directory (followed while it is written), or a
        run Dataset (shown as is).
    budget : int
        Rows per dataset kept in the browser before downsampling.
    min_interval : float
        Seconds between two updates sent for a monitor (records in between are batched).
    poll : float
        Seconds between two reads of a followed run directory.

    Examples
    --------
    >>> run = gw.train(task, model, steps=10_000, live=True)   # doctest: +SKIP
    >>> gw.widgets.LiveMonitor("runs/modadd")                  # doctest: +SKIP
    """

    _esm = esm_path("live.js")

    def __init__(
        self,
        source: Monitor | str | os.PathLike[str] | xr.Dataset,
        *,
        budget: int = DEFAULT_BUDGET,
        min_interval: float = 0.25,
        poll: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(budget=budget, **kwargs)
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._pending: list[Record] = []
        self.events: list[Any] = []  # what notify() was given (phase detector events)
        self._event_text = ""
        self._timer: threading.Timer | None = None
        self._last_send = 0.0
        self._monitor: Monitor | None = None
        self._poller: Poller | None = None
        self._dir: Path | None = None
        self._n = 0  # committed rows of the followed directory read so far
        self._last_row: xr.Dataset | None = None  # the newest of them, as read
        self._told: xr.Dataset | None = None  # the story's metrics of every row received
        if isinstance(source, Monitor):
            self._attach(source)
        elif isinstance(source, xr.Dataset):
            self.status = str(source.attrs.get("status", ""))
            self.push(source)
            where = source.attrs.get("run_dir")
            if self.status == "running" and where:
                self._follow(Path(where), poll, start=source.sizes["step"])
        elif isinstance(source, str | os.PathLike):
            self._follow(Path(source), poll, start=0)
        else:
            msg = (
                "LiveMonitor needs a gw.Monitor, a run directory or a run Dataset, "
                f"got {type(source).__name__}."
            )
            raise TypeError(msg)

    # -- feeding ---------------------------------------------------------------------------
    def push(self, ds: xr.Dataset) -> None:
        """Add the records of ``ds`` to the view.

        Rows already shown are not sent again; a shown row (step and series) with a new
        value is replaced, never drawn twice.
        """
        names = {str(m) for m in ds["metric"].values} | {
            str(v) for v in ds.data_vars if v != "metrics"
        }
        names |= set(ds.attrs.get("metric_info", {}))
        self._set_panels(names | self._known())
        if ds.sizes["step"] == 0:
            if not self._specs:
                self.message = "waiting for the first records"
            return
        # Step state (ESD, kernel spectrum) is replaced only for the families these rows hold:
        # a batch of rows without a spectrum keeps the ESD shown.
        families = [v for v in STEP_STATE if last_step_with(ds, v) is not None]
        current: dict[str, Table] = {}
        if families:
            tables = current_tables(ds)
            current = {k: tables[k] for v in families for k in STEP_STATE[v][1]}
        # The story reads every record so far (the phases depend on the whole run), kept as
        # a few numbers per record; its bands and mark are sent only when they change.
        self._told = merge_story_metrics(self._told, ds)
        current.update(self._story(self._told))
        self._feed(series_tables(ds), current or None)
        last = f"last step {int(ds['step'].values[-1])}"
        self.message = f"{last} — {self._event_text}" if self._event_text else last

    def _known(self) -> set[str]:
        if self._monitor is not None:
            index = self._monitor._index
            return set(index.metric_info) | set(index.metrics) | set(index.arrays)
        return set()

    # -- from a Monitor --------------------------------------------------------------------
    def _attach(self, monitor: Monitor) -> None:
        self._monitor = monitor
        self.status = monitor.status
        self._set_panels(self._known())
        history = monitor.dataset()
        if history.sizes["step"]:
            self.push(history)
        else:
            self.message = "waiting for the first records"
        monitor.add_listener(self._on_record)

    def _on_record(self, record: Record) -> None:
        with self._lock:
            self._pending.append(record)
            due = time.monotonic() - self._last_send >= self.min_interval
            if not due and self._timer is None:
                self._timer = threading.Timer(self.min_interval, self.flush)
                self._timer.daemon = True
                self._timer.start()
        if due:
            self.flush()

    def notify(self, event: Any) -> None:
        """Show an event (e.g. the phase detector's :class:`PhaseEvent`) in the status line."""
        self.events.append(event)
        step, text = getattr(event, "step", None), getattr(event, "message", str(event))
        self._event_text = f"step {step}: {text}" if step is not None else str(text)
        self.message = self._event_text

    def flush(self) -> None:
        """Send the records received but not yet shown."""
        with self._lock:
            pending, self._pending = self._pending, []
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._last_send = time.monotonic()
        if pending:
            self.push(records_dataset(pending))
        if self._monitor is not None:
            self.status = self._monitor.status

    # -- from a run directory --------------------------------------------------------------
    def _follow(self, path: Path, poll: float, start: int) -> None:
        self._dir, self._n = path, start
        if not path.exists() or not (path / run_dir.RUN_JSON).exists():
            self.status = "waiting"
            self.message = f"waiting for a run in {path} (no {run_dir.RUN_JSON} yet)"
        self._tick()
        self._poller = Poller(self._tick, poll)
        self._poller.start()

    def _tick(self) -> bool:
        """Read new committed rows of the followed directory; ``False`` once it is done."""
        assert self._dir is not None
        try:
            if not (self._dir / run_dir.RUN_JSON).exists():
                return True
            status = read_run_info(self._dir).status
            if not (self._dir / run_dir.METRICS).exists():
                self.status, self.message = status, "waiting for the first records"
                return status not in _DONE
            self._set_panels(declared_names(self._dir / run_dir.METRICS))
            self._read_rows()
            if not self._n:
                self.message = "waiting for the first records"
            self.status = status  # read before the rows: rows of a finished run are final
            return status not in _DONE
        except Exception as err:  # noqa: BLE001 (shown in the cell; polling goes on)
            self.message = f"cannot read {self._dir}: {err}"
            return True

    def _read_rows(self) -> None:
        """Push the rows committed since the last read, and the last step seen if recorded again.

        A late record at the writer's newest step comes as a new row of that step (readers
        keep the last), so reading starts again at the last row seen; the stream drops the
        points already shown and replaces those whose value changed.
        """
        assert self._dir is not None
        start = max(self._n - 1, 0)
        ds, n = read_rows(self._dir / run_dir.METRICS, start)
        if n < self._n:  # truncated (a run resumed from an earlier checkpoint): start over
            self._stream.reset()
            self._n, self._last_row, self._told, start = 0, None, None, 0
            ds, n = read_rows(self._dir / run_dir.METRICS, 0)
            if not n:
                self._resnapshot()
                return
        if n <= start:
            return
        first = ds.isel(step=slice(0, 1))
        if n == self._n and self._last_row is not None and first.equals(self._last_row):
            return  # nothing new, the last row unchanged
        self.push(ds)
        self._n, self._last_row = n, ds.isel(step=slice(-1, None))

    @traitlets.observe("status")
    def _on_status(self, change: dict[str, Any]) -> None:
        # The run ended: redraw the outputs so a saved notebook's PNG shows its final state.
        if change["new"] in _DONE:
            self.update_displays()

    def close(self) -> None:
        """Stop following (listener or polling) and close the widget."""
        if self._poller is not None:
            self._poller.stop()
        if self._monitor is not None:
            try:
                self._monitor.remove_listener(self._on_record)
            except ValueError:
                pass
            self._monitor = None
        super().close()
