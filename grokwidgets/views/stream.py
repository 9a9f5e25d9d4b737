"""What the front end holds and what to send it next: snapshots and deltas of new rows."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from grokwidgets.views.downsample import downsample_groups
from grokwidgets.views.frame import Mode, Table, encode_frame, table_rows
from grokwidgets.views.panels import WIDTH
from grokwidgets.views.tables import concat

#: Rows a time-series dataset may hold in the browser before it is downsampled again.
DEFAULT_BUDGET = 4000

Kind = Literal["snapshot", "delta", "empty"]


def downsample_table(table: Table, budget: int = DEFAULT_BUDGET, buckets: int = WIDTH) -> Table:
    """A time-series table (columns ``step``, ``series``, ``value``) within ``budget // 2`` rows.

    Up to ``budget // 2`` rows it is returned as is; above, it is min/max downsampled per
    series over ``min(buckets, budget // (8 * n_series))`` buckets of ``log10 step``
    (:func:`~grokwidgets.views.downsample.downsample_groups`). At most 4 rows per bucket
    and series are kept, so the result holds at most ``budget // 2`` rows.
    """
    if budget < 2:
        msg = f"budget must be >= 2 rows, got {budget}."
        raise ValueError(msg)
    if table_rows(table) <= budget // 2:
        return table
    n_series = max(1, len(np.unique(table["series"].astype(str))))
    n_buckets = max(1, min(buckets, budget // (8 * n_series)))
    idx = downsample_groups(table["step"], table["value"], table["series"], n_buckets)
    return {k: v[idx] for k, v in table.items()}


@dataclass
class Stream:
    """Full history on the Python side; a bounded, downsampled copy in the browser.

    New rows go out as deltas (``insert``) while the browser's copy of a dataset stays
    within ``budget`` rows; past it, a new snapshot is made: every dataset min/max
    downsampled per pixel bucket of the log-step axis (``buckets`` per series). Snapshots
    are rare (the history roughly doubles between them at most every ``budget`` rows), so
    the bytes sent stay proportional to the new rows.

    A row given again (same ``step`` and ``series``, e.g. the store's writer rewrote its newest
    step to merge a late record) is not sent twice: with the value already held it is
    dropped; with a new value the history is corrected and that dataset is sent again
    whole (``replace``, downsampled), so the browser never holds two points for one row.

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
    ) -> tuple[Kind, bytes]:
        """Add time-series rows (and replace step-state tables); the frame to send.

        Returns ``("empty", b"")`` when nothing new is left to send (every row given was
        already held with the same value and no step state was given).
        """
        new: dict[str, Table] = {}
        changed: set[str] = set()
        for name, table in series.items():
            if not table_rows(table):
                continue
            fresh, updated = self._merge(name, table)
            if updated:
                changed.add(name)
            if table_rows(fresh):
                self.history.setdefault(name, []).append(fresh)
                new[name] = fresh
        if current is not None:
            self.current.update(current)
        if self.snapshot_seq == 0:  # the first rows go out as a snapshot (a synced trait)
            return "snapshot", self.snapshot()
        over = any(self.sent.get(k, 0) + table_rows(v) > self.budget for k, v in new.items())
        if over:
            return "snapshot", self.snapshot()
        tables: dict[str, tuple[Mode, Table]] = {}
        for name in changed:
            whole = self.downsampled(name)
            tables[name] = ("replace", whole)
            self.sent[name] = table_rows(whole)
        for name, table in new.items():
            if name not in changed:
                tables[name] = ("insert", table)
                self.sent[name] = self.sent.get(name, 0) + table_rows(table)
        for name, table in (current or {}).items():
            tables[name] = ("replace", table)
        if not tables:
            return "empty", b""
        self.seq += 1
        return "delta", encode_frame(
            tables, seq=self.seq, base=self.snapshot_seq, t_ms=time.time() * 1e3
        )

    def _merge(self, name: str, table: Table) -> tuple[Table, bool]:
        """Rows of ``table`` not yet held, and whether held rows got new values.

        Only rows at or before the newest held step can repeat; they are matched on
        (step, series) against the end of the history.
        """
        chunks = self.history.get(name)
        if not chunks or "series" not in table:
            return table, False
        last = float(np.max(chunks[-1]["step"]))
        old = table["step"] <= last
        if not old.any():
            return table, False
        lo = float(np.min(table["step"][old]))
        held: dict[tuple[float, str], tuple[int, int]] = {}
        for ci in range(len(chunks) - 1, -1, -1):
            steps = chunks[ci]["step"]
            for r in np.flatnonzero(steps >= lo):
                held[(float(steps[r]), str(chunks[ci]["series"][r]))] = (ci, int(r))
            if np.min(steps) < lo:  # earlier chunks hold earlier steps only
                break
        keep = ~old
        updated = False
        for i in np.flatnonzero(old):
            hit = held.get((float(table["step"][i]), str(table["series"][i])))
            if hit is None:
                keep[i] = True  # a series the held step did not have yet
                continue
            at_chunk, at_row = hit
            value = table["value"][i]
            if chunks[at_chunk]["value"][at_row] != value:
                fixed = dict(chunks[at_chunk])
                fixed["value"] = fixed["value"].copy()
                fixed["value"][at_row] = value
                chunks[at_chunk] = fixed
                updated = True
        return {k: v[keep] for k, v in table.items()}, updated

    def reset(self) -> None:
        """Forget every row held (the source was truncated); the next frame is a snapshot."""
        self.history.clear()
        self.current.clear()
        self.sent.clear()
        self.snapshot_seq = 0

    def downsampled(self, name: str) -> Table:
        """The history of time-series ``name``, min/max downsampled per bucket."""
        chunks = self.history.get(name, [])
        if not chunks:
            return {}
        full = concat(chunks) if len(chunks) > 1 else chunks[0]
        self.history[name] = [full]
        return downsample_table(full, self.budget, self.buckets)

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
