"""Synthetic runs (no training) for the widget tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from grokwidgets.store import run_dir
from grokwidgets.store.records import Record, records_dataset
from grokwidgets.store.zarr_store import ZarrRecordWriter

LAYERS = ("encoder.0", "readout")


def record(step: int, spectrum: bool = True) -> Record:
    rec = Record(step=step)
    rec.values[("model", "train_loss")] = 2.0 / (1 + step)
    rec.values[("model", "test_loss")] = 2.5 / (1 + 0.5 * step)
    rec.values[("model", "train_acc")] = min(1.0, step / 50)
    rec.values[("model", "test_acc")] = min(1.0, step / 200)
    if spectrum:
        rng = np.random.default_rng(step)
        for i, layer in enumerate(LAYERS):
            rec.values[(layer, "htsr_alpha")] = 3.0 + i + 0.01 * step
            evals = np.sort(rng.pareto(2.0 + i, 64) + 0.1)[::-1] * (1 + step / 100)
            rec.values[(layer, "htsr_xmin")] = float(np.quantile(evals, 0.5))
            rec.values[(layer, "mp_bulk_max")] = float(np.quantile(evals, 0.8))
            rec.values[(layer, "htsr_num_traps")] = float(step % 3)
            rec.arrays.setdefault("spectrum", {})[layer] = evals
    return rec


def records(steps, spectrum: bool = True) -> list[Record]:
    return [record(int(s), spectrum) for s in steps]


def dataset(steps, spectrum: bool = True):
    return records_dataset(records(steps, spectrum))


def write_run(path: Path, steps, *, status: str = "finished", spectrum: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    run_dir.write_run_json(path, {"status": status, "config": {}, "seed": 0})
    writer = ZarrRecordWriter(path / run_dir.METRICS, "w", flush_every=10**9)
    for rec in records(steps, spectrum):
        writer.append(rec)
    writer.flush()
    return path
