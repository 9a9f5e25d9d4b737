"""What the front end holds and what to send it next: snapshots and deltas of new rows."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from grokwidgets.widgets._downsample import downsample_groups
from grokwidgets.widgets._frame import Mode, Table, encode_frame, table_rows
from grokwidgets.widgets._panels import WIDTH
from grokwidgets.widgets._tables import concat

#: Rows a time-series dataset may hold in the browser before it is downsampled again.
DEFAULT_BUDGET = 4000


@dataclass
class Stream:
    """Full history on the Python side; a bounded, downsampled copy in the browser.

    New rows go out as deltas (``insert``) while the browser's copy of a dataset stays
    within ``budget`` rows; past it, a new snapshot is made: every dataset min/max
    downsampled per pixel bucket of the log-step axis (``buckets`` per series). Snapshots
    are rare (the history roughly doubles between them at most every ``budget`` rows), so
    the bytes sent stay proportional to the new rows.

    Parameters
    ----------
    budget : int
        Rows per dataset the browser may hold.
    buckets : int
        Downsampling buckets (about the plot width in pixels).
    """

    budget: int = DEFAULT_BUDGET
    buckets: int = WIDTH
    seq: int = 0
    snapshot_seq: int = 0
    history: dict[str, list[Table]] = field(default_factory=dict)
    current: dict[str, Table] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)

    def extend(
        self, series: dict[str, Table], current: dict[str, Table] | None = None
    ) -> tuple[Literal["snapshot", "delta"], bytes]:
        """Add new time-series rows (and replace step-state tables); the frame to send."""
        new = {k: v for k, v in series.items() if table_rows(v)}
        for name, table in new.items():
            self.history.setdefault(name, []).append(table)
        if current is not None:
            self.current.update(current)
        if self.snapshot_seq == 0:  # the first rows go out as a snapshot (a synced trait)
            return "snapshot", self.snapshot()
        over = any(self.sent.get(k, 0) + table_rows(v) > self.budget for k, v in new.items())
        if over:
            return "snapshot", self.snapshot()
        tables: dict[str, tuple[Mode, Table]] = {k: ("insert", v) for k, v in new.items()}
        for name, table in (current or {}).items():
            tables[name] = ("replace", table)
        for name, table in new.items():
            self.sent[name] = self.sent.get(name, 0) + table_rows(table)
        self.seq += 1
        return "delta", encode_frame(
            tables, seq=self.seq, base=self.snapshot_seq, t_ms=time.time() * 1e3
        )

    def downsampled(self, name: str) -> Table:
        """The history of time-series ``name``, min/max downsampled per bucket."""
        chunks = self.history.get(name, [])
        if not chunks:
            return {}
        full = concat(chunks) if len(chunks) > 1 else chunks[0]
        self.history[name] = [full]
        if table_rows(full) <= self.budget // 2:
            return full
        # At most 4 rows per bucket and series: keep the result within half the budget.
        n_series = max(1, len(np.unique(full["series"])))
        buckets = max(1, min(self.buckets, self.budget // (8 * n_series)))
        idx = downsample_groups(full["step"], full["value"], full["series"], buckets)
        return {k: v[idx] for k, v in full.items()}

    def snapshot(self) -> bytes:
        """A frame replacing every dataset: downsampled histories and step state."""
        tables: dict[str, tuple[Mode, Table]] = {}
        for name in self.history:
            table = self.downsampled(name)
            tables[name] = ("replace", table)
            self.sent[name] = table_rows(table)
        for name, table in self.current.items():
            tables[name] = ("replace", table)
        self.seq += 1
        self.snapshot_seq = self.seq
        return encode_frame(tables, seq=self.seq, base=self.seq, t_ms=time.time() * 1e3)

    def total_rows(self, name: str) -> int:
        """Rows of time-series ``name`` received so far (not downsampled)."""
        return sum(table_rows(t) for t in self.history.get(name, []))


def tables_equal(a: Table, b: Table) -> bool:
    """Whether two tables hold the same columns and rows (for tests)."""
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
