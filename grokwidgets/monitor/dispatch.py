"""From a diagnostic's return value to a :class:`~grokwidgets.store.records.Record`.

One path for every record: the :class:`~grokwidgets.monitor.monitor.Monitor` during training
and :func:`~grokwidgets.replay.compute.compute_at` afterwards build records here, so a value
computed later at a checkpoint is stored exactly as a recorded one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from grokwidgets._names import MODEL_LAYER
from grokwidgets.diagnostics.registry import Diagnostic
from grokwidgets.store.records import Record

__all__ = ["readers_last", "record_of"]


def readers_last(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """The diagnostics in order, those that read the record (``fn.reads_record``) last.

    A reader (the phase detector) sees the values the others produced at the same step. The
    sort is stable, so registry order is kept otherwise.
    """
    return sorted(diagnostics, key=lambda d: bool(getattr(d.fn, "reads_record", False)))


def record_of(step: int, diag: Diagnostic, values: Mapping[str, Any]) -> Record:
    """The values ``diag`` returned at ``step`` as a record.

    ``values`` maps a metric to a whole-model number (layer ``"model"``) or to
    ``{layer: number}``, and an array variable ``diag`` declares to ``{layer: 1-D array}``.

    Raises
    ------
    ValueError
        If ``values`` holds a metric ``diag`` does not declare.
    """
    record = Record(step=step)
    declared = {m.name for m in diag.metrics}
    for name, value in values.items():
        if name in diag.arrays:
            record.arrays[name] = {
                str(layer): np.asarray(v, dtype=np.float64) for layer, v in value.items()
            }
            continue
        if name not in declared:
            msg = (
                f"Diagnostic {diag.name!r} returned metric {name!r}, which it does not "
                f"declare (declared: {sorted(declared)}). "
                "Add it to metrics=[...] in register()."
            )
            raise ValueError(msg)
        if isinstance(value, Mapping):
            for layer, v in value.items():
                record.values[(str(layer), name)] = float(v)
        else:
            record.values[(MODEL_LAYER, name)] = float(value)
    return record
