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


# -- runs with a story (views/story.py): phases, a time to grok, detector flags ----------------
#: Steps of the story runs: a record every 1,000 steps, 0..20,000.
STORY_STEPS = tuple(range(0, 20_001, 1000))


def story_record(step: int, kind: str = "grokking") -> Record:
    """One record of a synthetic run whose phases are known by construction.

    ``kind``:

    - ``"grokking"``: train accuracy 0.1, 0.5, then 1 from step 2,000; test accuracy 0.1 up to
      step 10,000, 0.5 at 11,000, 0.97 from 12,000. Labels: memorization 2,000..10,000,
      grokking at 11,000, generalized from 12,000. The detector's flags are recorded every
      other record (NaN between): train fit from 2,000, frozen at 4,000-6,000 and again from
      10,000, onset from 10,000; a readout probe at every record.
    - ``"no_grok"``: the same train curve, test accuracy flat at 0.1 (never generalizes).
    - ``"anti"``: the grokking run whose test accuracy falls to 0.5 from step 15,000 while
      train accuracy stays 1 (anti-grokking from 15,000).
    - ``"regression"``: losses only: train loss 1, 0.5, then 0.005 and below from 2,000; test
      loss 1 up to 10,000, 0.3 at 11,000, 0.02 from 12,000.
    - ``"flat"``: nothing happens (train accuracy 0.2, test accuracy 0.1 throughout).
    """
    rec = Record(step=step)
    v = rec.values
    k = step // 1000
    if kind == "regression":
        v[("model", "train_loss")] = [1.0, 0.5][k] if k < 2 else 0.005 / (1 + 0.01 * k)
        v[("model", "test_loss")] = 1.0 if k <= 10 else (0.3 if k == 11 else 0.02)
        return rec
    v[("model", "train_loss")] = 2.0 / (1 + k)
    v[("model", "test_loss")] = 3.0
    if kind == "flat":
        v[("model", "train_acc")], v[("model", "test_acc")] = 0.2, 0.1
        return rec
    v[("model", "train_acc")] = [0.1, 0.5][k] if k < 2 else 1.0
    if kind == "no_grok":
        v[("model", "test_acc")] = 0.1
        return rec
    test = 0.1 if k <= 10 else (0.5 if k == 11 else 0.97)
    if kind == "anti" and k >= 15:
        test = 0.5
    v[("model", "test_acc")] = test
    v[("readout", "probe_test_acc")] = 0.1 + 0.04 * k
    if k % 2 == 0:  # the detector's cadence: every other record
        v[("model", "phase_train_fit")] = float(k >= 2)
        v[("model", "phase_frozen")] = float(4 <= k <= 6 or k >= 10)
        v[("model", "phase_onset")] = float(k >= 10)
        v[("model", "phase_alpha_low")] = 0.0
    return rec


def story_dataset(kind: str = "grokking", steps=STORY_STEPS):
    """A Dataset of :func:`story_record` at ``steps``."""
    return records_dataset([story_record(int(s), kind) for s in steps])


def write_story_run(path: Path, kind: str = "grokking", steps=STORY_STEPS) -> Path:
    """A finished run directory of :func:`story_record` at ``steps``."""
    path.mkdir(parents=True, exist_ok=True)
    run_dir.write_run_json(path, {"status": "finished", "config": {}, "seed": 0})
    writer = ZarrRecordWriter(path / run_dir.METRICS, "w", flush_every=10**9)
    for s in steps:
        writer.append(story_record(int(s), kind))
    writer.flush()
    return path
