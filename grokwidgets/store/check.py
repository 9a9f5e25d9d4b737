"""``grokwidgets check RUN``: find what is intact in a run directory, and repair what can be.

:func:`check_run` reads ``run.json``, ``metrics.zarr/commit.json``, the zarr metadata, decodes
every chunk that holds committed rows, checks the commit against the arrays (shapes, steps in
order) and reads every checkpoint's header. With ``repair=True`` it takes the run's writer lock
and makes ``resume`` work again where the damage allows it:

- damaged chunks are moved aside and the records are truncated to the rows before the first
  of them (a new commit epoch, so readers never mix the old rows with new ones);
- damaged checkpoints, and intact checkpoints *later* than the last intact record (resuming
  from them would leave a gap in the records), are moved aside;
- nothing is deleted: what is moved goes to ``RUN/damaged/`` under its relative path, with
  ``RUN/damaged/repair.json`` saying what was moved and why.

Damage to ``run.json`` (the recipe), ``commit.json`` (the names of the metrics) or the zarr
metadata cannot be repaired from what the run holds; the report says so.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from safetensors import safe_open

from grokwidgets.store.checkpoints import CHECKPOINT_DIR, checkpoint_path, is_leftover
from grokwidgets.store.errors import RunDamagedError, StoreError
from grokwidgets.store.lock import WriterLock
from grokwidgets.store.records import Index, dumps
from grokwidgets.store.run_info import RUN_JSON, read_run_info
from grokwidgets.store.zarr_store import (
    COMMIT_FILE,
    ZarrRecordWriter,
    chunk_file,
    chunk_region,
    chunks_under,
    read_commit,
)

__all__ = ["DAMAGED_DIR", "CheckReport", "Finding", "check_run"]

DAMAGED_DIR = "damaged"
METRICS = "metrics.zarr"


@dataclass(frozen=True)
class Finding:
    """One file of the run and what was found."""

    file: Path
    ok: bool
    detail: str


@dataclass
class CheckReport:
    """What :func:`check_run` found (and, with ``repair=True``, did).

    Attributes
    ----------
    run : Path
    findings : list of Finding
        Every file looked at; ``ok`` is False for a damaged one.
    records : int or None
        Committed rows (``None`` when the commit cannot be read).
    intact_records : int or None
        Leading committed rows whose chunks all decode.
    last_intact_step : int or None
        The step of the last intact record.
    checkpoints : dict of int to bool
        Each checkpoint's step and whether its header reads.
    repaired : list of str
        What the repair did (empty without ``repair=True``).
    unrepairable : list of str
        Damage a repair cannot mend, with what to do instead.
    """

    run: Path
    findings: list[Finding] = field(default_factory=list)
    records: int | None = None
    intact_records: int | None = None
    last_intact_step: int | None = None
    checkpoints: dict[int, bool] = field(default_factory=dict)
    repaired: list[str] = field(default_factory=list)
    unrepairable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every file is intact (after the repair, if one ran)."""
        return all(f.ok for f in self.findings)

    @property
    def damaged(self) -> list[Finding]:
        """The damaged files."""
        return [f for f in self.findings if not f.ok]

    def add(self, file: Path, ok: bool, detail: str) -> None:
        """Record a finding."""
        self.findings.append(Finding(file, ok, detail))

    def __str__(self) -> str:
        lines = [f"run {self.run}: {'intact' if self.ok else 'DAMAGED'}"]
        if self.records is not None:
            lines.append(
                f"  records: {self.intact_records} of {self.records} committed rows intact"
                + (
                    f" (to step {self.last_intact_step})"
                    if self.last_intact_step is not None
                    else ""
                )
            )
        if self.checkpoints:
            good = sorted(s for s, ok in self.checkpoints.items() if ok)
            bad = sorted(s for s, ok in self.checkpoints.items() if not ok)
            lines.append(
                f"  checkpoints intact at steps {good}" + (f", damaged at {bad}" if bad else "")
            )
        for f in self.findings:
            mark = "ok " if f.ok else "BAD"
            where = f.file.relative_to(self.run) if f.file.is_relative_to(self.run) else f.file
            lines.append(f"  {mark} {where}: {f.detail}")
        lines += [f"  repaired: {r}" for r in self.repaired]
        lines += [f"  cannot repair: {u}" for u in self.unrepairable]
        return "\n".join(lines)


def check_run(path: str | os.PathLike[str], *, repair: bool = False) -> CheckReport:
    """Check every file of the run in ``path``; with ``repair=True`` mend what can be.

    Parameters
    ----------
    path : path-like
        The run directory.
    repair : bool
        Take the writer lock, move damaged chunks and checkpoints aside into ``damaged/`` and
        truncate the records to the last intact one, so that ``resume`` works again.

    Returns
    -------
    CheckReport

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a run directory (no ``run.json`` and no ``metrics.zarr``).
    RunLockedError
        With ``repair=True``, if another process is writing the run.
    """
    run = Path(path)
    if not (run / RUN_JSON).exists() and not (run / METRICS).exists():
        msg = f"{run} is not a grokwidgets run: it has neither {RUN_JSON} nor {METRICS}."
        raise FileNotFoundError(msg)
    lock = WriterLock(run).acquire() if repair else None
    try:
        report = _check(run)
        if repair and not report.ok:
            _repair(run, report)
            report = _check(run, repaired=report.repaired, unrepairable=report.unrepairable)
        return report
    finally:
        if lock is not None:
            lock.release()


def _check(
    run: Path, repaired: list[str] | None = None, unrepairable: list[str] | None = None
) -> CheckReport:
    report = CheckReport(run, repaired=list(repaired or []), unrepairable=list(unrepairable or []))
    try:
        read_run_info(run)
        report.add(run / RUN_JSON, True, "reads")
    except (RunDamagedError, FileNotFoundError) as err:
        report.add(run / RUN_JSON, False, _short(err))
    _check_records(run / METRICS, report)
    _check_checkpoints(run, report)
    return report


def _short(err: BaseException) -> str:
    text = str(err)
    cause = err.__cause__
    return f"{type(cause).__name__}: {cause}" if cause is not None else text.split(". ")[0]


def _check_records(store: Path, report: CheckReport) -> None:
    commit_file = store / COMMIT_FILE
    if not commit_file.exists():
        report.add(
            commit_file, not store.exists(), "missing" if store.exists() else "no records yet"
        )
        return
    try:
        commit = read_commit(store)
    except (RunDamagedError, StoreError) as err:
        report.add(commit_file, False, _short(err))
        return
    index = Index.from_json(commit)
    n = int(commit["n"])
    report.records = n
    report.add(
        commit_file, True, f"{n} rows, {len(index.layers)} layers, {len(index.metrics)} metrics"
    )
    try:
        group = zarr.open_group(str(store), mode="r")
    except Exception as err:  # noqa: BLE001 (what the check reports)
        report.add(store / "zarr.json", False, f"{type(err).__name__}: {err}")
        return
    wanted: dict[str, tuple[int, ...]] = {"step": (n,)}
    if index.metrics:
        wanted["metrics"] = (n, len(index.layers), len(index.metrics))
    for var, spec in index.arrays.items():
        wanted[var] = (n, len(index.layers), spec["size"])
    first_bad = n
    for name, shape in wanted.items():
        if n == 0:
            continue
        try:
            arr: Any = group[name]
        except Exception as err:  # noqa: BLE001
            report.add(store / name / "zarr.json", False, f"{type(err).__name__}: {err}")
            first_bad = 0
            continue
        short = [s for s, need in zip(arr.shape, shape, strict=True) if s < need]
        if short:
            report.add(
                store / name / "zarr.json",
                False,
                f"shape {arr.shape} smaller than the commit's {shape}",
            )
            first_bad = 0
            continue
        bad_rows = []
        chunks = chunks_under(arr, tuple(slice(0, s) for s in shape))
        for chunk in chunks:
            file = chunk_file(store, name, chunk)
            first_row = chunk[0] * arr.chunks[0]
            try:
                values = np.asarray(arr[chunk_region(arr, chunk)])
            except Exception as err:  # noqa: BLE001
                report.add(file, False, f"does not decode ({type(err).__name__}: {err})")
                bad_rows.append(first_row)
                continue
            if name == "step" and np.any(np.diff(values[: n - first_row]) < 0):
                report.add(file, False, "steps out of order")
                bad_rows.append(first_row)
        if bad_rows:
            first_bad = min(first_bad, min(bad_rows))
        else:
            report.add(store / name, True, f"every chunk decodes ({len(chunks)})")
    report.intact_records = first_bad
    if first_bad:
        try:
            report.last_intact_step = int(np.asarray(group["step"][first_bad - 1]))  # type: ignore[index]
        except Exception:  # noqa: BLE001 (the step chunk itself is damaged)
            report.last_intact_step = None


def _check_checkpoints(run: Path, report: CheckReport) -> None:
    folder = run / CHECKPOINT_DIR
    if not folder.is_dir():
        return
    for file in sorted(folder.iterdir()):
        if is_leftover(file.name):
            report.add(file, True, "an interrupted write's leftover (ignored)")
            continue
        if not (file.name.startswith("step_") and file.name.endswith(".safetensors")):
            report.add(file, False, "not a checkpoint (resume refuses a folder with it)")
            continue
        step = int(file.name[len("step_") : -len(".safetensors")])
        try:
            with safe_open(str(file), framework="pt") as f:
                keys = list(f.keys())  # noqa: SIM118 (not a dict)
                meta = f.metadata() or {}
            if "grokwidgets" not in meta or not any(k.startswith("model.") for k in keys):
                raise ValueError("no grokwidgets metadata or no model tensors")  # noqa: TRY301
            report.checkpoints[step] = True
            report.add(file, True, f"header reads ({len(keys)} tensors)")
        except Exception as err:  # noqa: BLE001
            report.checkpoints[step] = False
            report.add(file, False, f"header does not read ({type(err).__name__}: {err})")


def _move_aside(
    run: Path, file: Path, why: str, report: CheckReport, moved: list[dict[str, str]]
) -> None:
    rel = file.relative_to(run)
    target = run / DAMAGED_DIR / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target = target.with_name(f"{target.name}.{time.strftime('%Y%m%dT%H%M%S')}")
    shutil.move(str(file), str(target))
    moved.append({"file": str(rel), "moved_to": str(target.relative_to(run)), "why": why})
    report.repaired.append(f"moved {rel} to {target.relative_to(run)} ({why})")


def _repair(run: Path, report: CheckReport) -> None:
    moved: list[dict[str, str]] = []
    store = run / METRICS
    for f in report.damaged:
        name = f.file.name
        if f.file == run / RUN_JSON:
            report.unrepairable.append(f"{RUN_JSON} ({f.detail}): restore it from a copy")
        elif f.file == store / COMMIT_FILE:
            report.unrepairable.append(
                f"{COMMIT_FILE} ({f.detail}): it names the metrics; restore it from a copy"
            )
        elif name == "zarr.json":
            report.unrepairable.append(
                f"{f.file.relative_to(run)} ({f.detail}): restore it from a copy"
            )
    if report.unrepairable:
        return
    damaged_chunks = [
        f.file
        for f in report.damaged
        if f.file.is_relative_to(store) and "c" in f.file.relative_to(store).parts
    ]
    if (
        report.records is not None
        and report.intact_records is not None
        and report.intact_records < report.records
    ):
        for file in damaged_chunks:
            if file.exists():
                _move_aside(run, file, "does not decode", report, moved)
        writer = ZarrRecordWriter(store, mode="a")
        writer.truncate_rows(report.intact_records)
        report.repaired.append(
            f"records truncated to the {report.intact_records} intact rows"
            + (
                f" (to step {report.last_intact_step})"
                if report.last_intact_step is not None
                else ""
            )
        )
    last = report.last_intact_step if report.records else None
    for step, ok in sorted(report.checkpoints.items()):
        file = checkpoint_path(run, step)
        if not ok:
            _move_aside(run, file, "header does not read", report, moved)
        elif (
            last is not None
            and report.intact_records is not None
            and report.records
            and step > last
        ):
            _move_aside(
                run, file, f"later than the last intact record (step {last})", report, moved
            )
    for f in report.damaged:
        if (
            f.file.parent == run / CHECKPOINT_DIR
            and f.file.exists()
            and not f.file.name.startswith("step_")
        ):
            _move_aside(run, f.file, "not a checkpoint", report, moved)
    if moved:
        log = run / DAMAGED_DIR / "repair.json"
        earlier = json.loads(log.read_text()) if log.exists() else []
        earlier.append({"repaired": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "moved": moved})
        log.write_text(dumps(earlier))
    if not any(ok for step, ok in report.checkpoints.items() if last is None or step <= last):
        report.unrepairable.append(
            "no intact checkpoint at or before the last intact record: start the run again"
        )
