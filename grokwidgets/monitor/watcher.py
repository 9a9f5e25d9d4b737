"""The phase watcher: acts on the online phase detector's events during training.

It listens to a :class:`~grokwidgets.monitor.monitor.Monitor`'s records and turns the rising
edges of the detector's flags (:mod:`grokwidgets.diagnostics.detector`) into events: call back,
checkpoint, or request a stop. Also reachable as ``gw.diagnostics.detector.PhaseWatcher``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from grokwidgets._names import MODEL_LAYER
from grokwidgets.diagnostics.detector import EVENTS, MESSAGES, DetectorRules, PhaseDetector
from grokwidgets.diagnostics.phases import PHASES
from grokwidgets.store.records import Record

if TYPE_CHECKING:
    from grokwidgets.monitor.monitor import Monitor

__all__ = ["PhaseEvent", "PhaseWatcher"]


@dataclass(frozen=True)
class PhaseEvent:
    """A flag of the detector turned on at ``step``."""

    step: int
    kind: str
    phase: str
    message: str


class PhaseWatcher:
    """Act on the detector's events during training: call back, checkpoint, or stop.

    Listens to the monitor's records. When the ``phase_detector`` diagnostic is recorded, its
    metrics are read from the record (so what is acted on is what is stored); otherwise the
    watcher runs its own :class:`PhaseDetector` on each record's values (then nothing is
    stored, and the train fit needs ``train_acc``/``train_loss`` among them).

    Parameters
    ----------
    monitor : Monitor
    on_event : callable or iterable of callables, optional
        Called with each :class:`PhaseEvent` (a widget's notify, ``print``, ...).
    checkpoint_on : iterable of str
        Event kinds (:data:`EVENTS`) that save a checkpoint at their step (needs a run dir).
    stop_on : iterable of str
        Event kinds that call ``monitor.request_stop``; the loop checks
        ``monitor.stop_requested``.
    rules : DetectorRules, optional
        Rules of the watcher's own detector (when ``phase_detector`` is not recorded).

    Examples
    --------
    >>> watch = PhaseWatcher(mon, on_event=print, stop_on=["collapse_warning"])  # doctest: +SKIP
    >>> for step in range(n):                                                  # doctest: +SKIP
    ...     train_step()
    ...     mon.step(step)
    ...     if mon.stop_requested:
    ...         break
    """

    def __init__(
        self,
        monitor: Monitor,
        on_event: Callable[[PhaseEvent], Any] | Iterable[Callable[[PhaseEvent], Any]] | None = None,
        *,
        checkpoint_on: Iterable[str] = (),
        stop_on: Iterable[str] = (),
        rules: DetectorRules | None = None,
    ) -> None:
        self.checkpoint_on = frozenset(checkpoint_on)
        self.stop_on = frozenset(stop_on)
        unknown = sorted((self.checkpoint_on | self.stop_on) - set(EVENTS))
        if unknown:
            msg = f"Unknown event kinds {unknown}; valid kinds: {list(EVENTS)}."
            raise ValueError(msg)
        if self.checkpoint_on and monitor.dir is None:
            msg = "checkpoint_on needs a monitor with a run directory (Monitor(..., dir=...))."
            raise ValueError(msg)
        self.monitor = monitor
        if on_event is None:
            self.callbacks: list[Callable[[PhaseEvent], Any]] = []
        elif callable(on_event):
            self.callbacks = [on_event]
        else:
            self.callbacks = list(on_event)
        self.events: list[PhaseEvent] = []
        self._detector = PhaseDetector(rules)
        self._flags: dict[str, float] = {}
        self._phase = PHASES[0]
        monitor.add_listener(self)

    @property
    def phase(self) -> str:
        """The latest online phase label."""
        return self._phase

    def add_callback(self, fn: Callable[[PhaseEvent], Any]) -> None:
        """Also call ``fn`` on every event."""
        self.callbacks.append(fn)

    def detach(self) -> None:
        """Stop listening to the monitor."""
        self.monitor.remove_listener(self)

    def __call__(self, record: Record) -> None:
        """Read one record (the monitor calls this for every record)."""
        values = record.values
        if (MODEL_LAYER, "phase_code") in values:
            flags = {m: float(values.get((MODEL_LAYER, m), math.nan)) for m in EVENTS.values()}
            code = int(values[(MODEL_LAYER, "phase_code")])
        else:
            out = self._detector.update(record.step, values)
            flags = {m: v for m, v in out.metrics().items() if m in EVENTS.values()}
            code = out.phase_code
        self._phase = PHASES[code]
        for kind, metric in EVENTS.items():
            now = flags.get(metric, math.nan)
            before = self._flags.get(metric, 0.0)
            if now == 1.0 and before != 1.0:
                self._fire(PhaseEvent(record.step, kind, self._phase, MESSAGES[kind]))
            if math.isfinite(now):
                self._flags[metric] = now

    def _fire(self, event: PhaseEvent) -> None:
        self.events.append(event)
        for fn in self.callbacks:
            fn(event)
        if event.kind in self.checkpoint_on:
            self.monitor.checkpoint(event.step)
        if event.kind in self.stop_on:
            self.monitor.request_stop(f"step {event.step}: {event.message}")
