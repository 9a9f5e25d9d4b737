"""Polling a run directory on a thread: what a LiveMonitor following a run uses."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Poller:
    """Call ``tick()`` every ``interval`` seconds on a daemon thread until stopped.

    ``tick`` returns ``False`` to stop (e.g. the run finished and its last rows were read).
    """

    def __init__(self, tick: Callable[[], bool], interval: float) -> None:
        self._tick = tick
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="grokwidgets-follow", daemon=True)

    def start(self) -> None:
        """Start polling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop polling (returns at once)."""
        self._stop.set()

    @property
    def running(self) -> bool:
        """Whether the thread still polls."""
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if not self._tick():
                return
