"""``gw.sweep``: one run per grid point, on dask.distributed, resumable point by point.

Every point is a task on a dask cluster (a ``LocalCluster`` of processes by default, any
scheduler by address, or the user's ``Client``); each task writes its own run directory, so
the runs need no coordination beyond the scheduler's. A finished run is skipped on the next
call, an interrupted one (killed worker, killed client, failure) resumes from its last
checkpoint with the run's own ``resume``, so calling ``sweep`` again completes only what is
missing, and its records equal an uninterrupted sweep's.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from grokwidgets.store.checkpoints import list_checkpoints
from grokwidgets.store.errors import RunLockedError
from grokwidgets.store.run_info import RUN_JSON, read_run_info
from grokwidgets.store.sweep import SWEEP_JSON, open_sweep, read_sweep_json, write_sweep_json
from grokwidgets.sweeps.grid import Point, SweepPlan, plan_sweep

if TYPE_CHECKING:
    import xarray as xr
    from distributed import Client

__all__ = ["PointStatus", "SweepError", "SweepResult", "run_point", "steady_malloc", "sweep"]

#: Seconds to wait for a scheduler given by address before giving up (nothing is started).
CONNECT_TIMEOUT = 10.0
#: Seconds a point waits for its run directory's writer lock before it fails.
LOCK_WAIT = 60.0

#: The dask settings of the ``LocalCluster`` a sweep starts.
#:
#: - A point whose worker dies is reported ``lost``, not retried behind the user's back (the
#:   next ``sweep()`` resumes it from its checkpoint).
#: - A worker is handed one point at a time (the others wait at the scheduler), so a dying
#:   worker rarely takes a second point with it; if it does, that point is reported ``lost``
#:   too and the next call runs it.
#: - The worker processes start with one BLAS/OpenMP thread but *without* dask's default
#:   ``MALLOC_TRIM_THRESHOLD_=65536``: glibc then hands freed memory back to the OS at once,
#:   and torch's many short-lived tensors made every run 1.6x slower in a worker than alone
#:   (bench/RESULTS.md, "Sweeps on dask").
CLUSTER_CONFIG = {
    "distributed.scheduler.allowed-failures": 0,
    "distributed.scheduler.worker-saturation": 1.0,
    "distributed.nanny.pre-spawn-environ": {
        "OMP_NUM_THREADS": 1,
        "MKL_NUM_THREADS": 1,
        "OPENBLAS_NUM_THREADS": 1,
    },
}

#: The dask settings inside each worker process of that cluster.
#:
#: - No statistical profiler: it takes the GIL every 10 ms to walk the running task's stack;
#:   a small model's Python-bound training loop ran ~5% slower under it.
#: - The event loop's tick and the system monitor every 1 s and 2 s instead of 20 ms and
#:   0.5 s: fewer wake-ups competing with the task for the GIL (about as much again).
#:
#: Together, a 2-worker sweep of 8 small points took 46.9 s instead of 51.3 s
#: (bench/RESULTS.md, "Sweeps on dask"). They are handed to each nanny as its ``config``,
#: which it gives every worker it starts, a restarted one included; a ``dask.config.set``
#: around the cluster's creation would not outlive the ``with`` block in a restarted worker
#: (the nanny keeps a shallow copy of the global config, whose nested values the block
#: restores on exit).
WORKER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}


class SweepError(RuntimeError):
    """A sweep cannot start: its directory, scheduler or grid says why."""


@dataclass
class PointStatus:
    """Where one point of a sweep stands.

    Attributes
    ----------
    name : str
        The run directory's name (``weight_decay=0.1,seed=0``).
    coords : dict
        The point's value along each sweep dim.
    dir : Path
        Its run directory.
    status : str
        ``done`` (ran to its end in this call), ``skipped`` (finished before this call),
        ``failed`` (raised; :attr:`error` says what), ``lost`` (its worker died: killed, out
        of memory), or ``pending`` (not run: the call was interrupted).
    error : str or None
    resumed_from : int or None
        The checkpoint step it resumed from, when this call continued an interrupted run.
    wall_time : float or None
        Seconds its task took on the worker.
    """

    name: str
    coords: dict[str, Any]
    dir: Path
    status: str = "pending"
    error: str | None = None
    resumed_from: int | None = None
    wall_time: float | None = None


@dataclass
class SweepResult:
    """What :func:`sweep` returns: every point's status, and the runs as one Dataset."""

    dir: Path
    dims: list[str]
    points: list[PointStatus] = field(default_factory=list)

    def __iter__(self) -> Iterator[PointStatus]:
        return iter(self.points)

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, name: str) -> PointStatus:
        for p in self.points:
            if p.name == name:
                return p
        msg = f"No point {name!r} in this sweep; points: {[p.name for p in self.points]}."
        raise KeyError(msg)

    def with_status(self, *status: str) -> list[PointStatus]:
        """The points whose status is one of ``status``."""
        return [p for p in self.points if p.status in status]

    @property
    def counts(self) -> dict[str, int]:
        """Number of points per status."""
        out: dict[str, int] = {}
        for p in self.points:
            out[p.status] = out.get(p.status, 0) + 1
        return out

    @property
    def ok(self) -> bool:
        """Every point is done or skipped."""
        return all(p.status in ("done", "skipped") for p in self.points)

    def dataset(self) -> xr.Dataset:
        """The sweep's runs as one Dataset (:func:`~grokwidgets.open_sweep`)."""
        return open_sweep(self.dir)

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items()))
        lines = [f"Sweep {self.dir} over {self.dims}: {len(self.points)} points ({counts})"]
        for p in self.points:
            extra = f": {p.error}" if p.error else ""
            if p.resumed_from is not None:
                extra += f" (resumed from step {p.resumed_from})"
            lines.append(f"  {p.name:<40} {p.status}{extra}")
        return "\n".join(lines)


# -- on the worker -------------------------------------------------------------------------------


def run_point(
    run_dir: str, config: dict[str, Any], record: dict[str, Any], torch_threads: int = 1
) -> dict[str, Any]:
    """Run (or continue) one point in ``run_dir``; what a sweep's dask task calls.

    Sets torch's thread count first: dask's nanny sets ``OMP_NUM_THREADS`` for new worker
    processes, but torch fixes its pool when imported, so the count is set here, in the task.
    """
    import torch

    torch.set_num_threads(int(torch_threads))
    steady_malloc()
    t0 = time.perf_counter()
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            return _run_or_resume(Path(run_dir), config, record, t0)
        except RunLockedError:
            # The worker of a killed client may still be writing this run for a few seconds
            # (it notices its nanny is gone): wait for the lock rather than fail the point.
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


#: glibc's ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def steady_malloc() -> bool:
    """Undo, in this process, the allocator setting dask's nanny starts its workers with.

    The nanny sets ``MALLOC_TRIM_THRESHOLD_=65536`` so that workers hand freed memory back to
    the OS. With it glibc also stops adapting its mmap threshold, which stays at 128 KiB: every
    buffer above that (a batch's activations, a gradient) is mapped, page-faulted and unmapped
    at each use. Training the ``grok-vs-steady`` MLP took 1.8x as long in a worker as in a
    plain process, a third of it in the kernel. This sets glibc's usual ceilings instead: a
    32 MiB mmap threshold (every buffer of such models comes from the heap again: as fast as a
    plain process) and a 128 MiB trim threshold (freed memory beyond that still goes back).
    Only on Linux with glibc and where the variable is set; returns whether it changed
    anything.
    """
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl has no mallopt)
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 << 20)) and bool(
        mallopt(_M_TRIM_THRESHOLD, 128 << 20)
    )


def _run_or_resume(
    p: Path, config: dict[str, Any], record: dict[str, Any], t0: float
) -> dict[str, Any]:
    from grokwidgets.replay.restore import resume_run
    from grokwidgets.train.config import run_config

    overwrite = False
    if (p / RUN_JSON).is_file():
        info = read_run_info(p)
        if info.status == "finished":
            return {"status": "skipped"}
        if list_checkpoints(p):
            run = resume_run(p, progress=False)
            return {
                "status": "done",
                "resumed_from": run.monitor.resume_step,
                "wall_time": time.perf_counter() - t0,
            }
        overwrite = True  # it died before its first checkpoint: nothing to keep
    run_config(config, p, overwrite=overwrite, progress=False, extra_config={"sweep": record})
    return {"status": "done", "wall_time": time.perf_counter() - t0}


# -- the sweep directory -------------------------------------------------------------------------


def _manifest(plan: SweepPlan, points: list[Point]) -> dict[str, Any]:
    return {
        "source": plan.source,
        "base": plan.base,
        "keys": plan.keys,
        "dims": plan.dims,
        "grid": plan.grid,
        "seeds": plan.seeds,
        "overrides": plan.overrides,
        "points": [{"name": p.name, "coords": p.coords} for p in points],
    }


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _check_dir(root: Path, plan: SweepPlan, extend: bool) -> dict[str, Any]:
    """The manifest to write; refuse a directory that holds something else."""
    new = _manifest(plan, plan.points)
    old = read_sweep_json(root) if root.is_dir() else None
    if old is None:
        if root.is_dir() and any(root.iterdir()):
            msg = (
                f"{root} is not empty and holds no {SWEEP_JSON}: it is not a sweep directory. "
                "Give a new or empty directory (nothing in it was changed)."
            )
            raise SweepError(msg)
        return new
    if not _same(old["base"], new["base"]) or old["keys"] != new["keys"]:
        diff = _differences(old["base"], new["base"])
        if old["keys"] != new["keys"]:
            diff.append(f"sweep dims {old['dims']} vs {new['dims']}")
        msg = (
            f"{root} holds another sweep (it differs in: {'; '.join(diff) or 'its config'}). "
            "Use another directory; nothing was changed."
        )
        raise SweepError(msg)
    old_names = [p["name"] for p in old["points"]]
    added = [p for p in new["points"] if p["name"] not in old_names]
    if added and not extend:
        msg = (
            f"{root} holds this sweep with other points ({len(old_names)} there, {len(added)} "
            "of these are new). Pass extend=True (--extend) to add them; nothing was changed."
        )
        raise SweepError(msg)
    merged = {**new, "points": old["points"] + added, "created": old.get("created")}
    merged["grid"] = {
        k: old["grid"].get(k, []) + [v for v in vals if v not in old["grid"].get(k, [])]
        for k, vals in new["grid"].items()
    }
    if new["seeds"] is not None:
        merged["seeds"] = (old["seeds"] or []) + [
            s for s in new["seeds"] if s not in (old["seeds"] or [])
        ]
    return merged


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key, "(unset)"), b.get(key, "(unset)")
        if isinstance(x, dict) and isinstance(y, dict):
            out += _differences(x, y, f"{prefix}{key}.")
        elif not _same(x, y):
            out.append(f"{prefix}{key} {x!r} there, {y!r} here")
    return out


def _status_on_disk(point: Point, run: Path) -> PointStatus:
    """``skipped`` for a finished run of this point; else ``pending``. Refuses a stranger."""
    status = PointStatus(point.name, point.coords, run)
    if not (run / RUN_JSON).is_file():
        return status
    info = read_run_info(run)
    recorded = (info.config.get("sweep") or {}).get("config")
    if recorded is not None and not _same(recorded, point.config):
        msg = (
            f"The run {run} was made with another config than this point's "
            f"({'; '.join(_differences(recorded, point.config))}). Nothing was changed."
        )
        raise SweepError(msg)
    if info.status == "finished":
        status.status = "skipped"
    return status


# -- the cluster ---------------------------------------------------------------------------------


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _connect(
    scheduler: str | Client | None, n_workers: int | None, timeout: float
) -> tuple[Client, Any]:
    """A client, and what closes what this call started."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler is None:
        with dask.config.set(CLUSTER_CONFIG):
            cluster = LocalCluster(
                n_workers=n_workers or _cpus(),
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                config=WORKER_CONFIG,
            )
        client = Client(cluster)

        def close() -> None:
            client.close()
            cluster.close()

        return client, close
    if isinstance(scheduler, str):
        try:
            client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError, ValueError) as err:
            msg = (
                f"No dask scheduler answered at {scheduler!r} within {timeout:g} s ({err}). "
                "Nothing was started."
            )
            raise SweepError(msg) from err
        return client, client.close
    if isinstance(scheduler, Client):
        return scheduler, lambda: None
    msg = (
        "scheduler must be None (a LocalCluster on this machine), an address such as "
        f"'tcp://host:8786', or a distributed.Client; got {type(scheduler).__name__}."
    )
    raise TypeError(msg)


def sweep(
    preset_or_config: str | os.PathLike[str] | Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]] | None = None,
    seeds: Sequence[int] | None = None,
    *,
    dir: str | os.PathLike[str],  # noqa: A002 (the design's public name)
    overrides: Mapping[str, Any] | Sequence[str] | None = None,
    scheduler: str | Client | None = None,
    extend: bool = False,
    n_workers: int | None = None,
    torch_threads: int = 1,
    timeout: float = CONNECT_TIMEOUT,
    progress: bool = True,
) -> SweepResult:
    """Run a preset or config at every point of ``grid`` × ``seeds``, one run directory each.

    Parameters
    ----------
    preset_or_config : str, path-like or dict
        A preset name (``grokwidgets presets``), a ``.json``/``.toml`` config, or the config.
    grid : dict
        Config field → values: ``{"train.weight_decay": [0.1, 1.0], "task.train_fraction":
        [0.3, 0.5]}``. Keys as ``--set`` writes them, or an unambiguous short name
        (``weight_decay``). The points are the product of the values.
    seeds : list of int, optional
        A ``seed`` dim: each run's seed, and the task's and model's unless ``overrides``
        fixes them (see :func:`~grokwidgets.sweeps.grid.plan_sweep`).
    dir : path-like
        The sweep directory: ``dir/<point>/`` per run, named from the point
        (``weight_decay=0.1,seed=0``), and ``dir/sweep.json``.
    overrides : dict or list of "key=value", optional
        Fields set for every point (``{"train.steps": 2000}``).
    scheduler : None, str or distributed.Client
        ``None``: a ``LocalCluster`` on this machine (one worker process per CPU, one
        thread each, a point whose worker dies reported ``lost``, not retried); an address
        (``"tcp://host:8786"``); or a ``Client``, used as given.
    extend : bool
        Add points to a sweep directory that holds this sweep with other points.
    n_workers : int, optional
        Workers of the ``LocalCluster`` (default: the CPUs this process may use).
    torch_threads : int
        ``torch.set_num_threads`` in each task (1: one run per core).
    timeout : float
        Seconds to wait for a scheduler given by address (default 10).
    progress : bool
        A tqdm bar over points.

    Returns
    -------
    SweepResult
        Each point's status (``done``, ``skipped``, ``failed`` with its error, ``lost``);
        ``.dataset()`` opens the runs as one Dataset. A failing point never stops the others.

    Raises
    ------
    ValueError
        A bad grid: empty, a key that is not a config field (the message lists them), a value
        of the wrong type.
    SweepError
        ``dir`` holds something else (another sweep, other files; ``extend`` adds points to
        the same sweep), a run there was made with another config, or no scheduler answered
        at the address. Raised before anything runs or is written.
    """
    plan = plan_sweep(preset_or_config, grid, seeds, overrides)
    root = Path(dir)
    manifest = _check_dir(root, plan, extend)
    statuses = [_status_on_disk(p, root / p.name) for p in plan.points]
    result = SweepResult(dir=root, dims=plan.dims, points=statuses)
    todo = [(p, s) for p, s in zip(plan.points, statuses, strict=True) if s.status == "pending"]
    if not todo:
        root.mkdir(parents=True, exist_ok=True)
        write_sweep_json(root, manifest)
        return result
    client, close = _connect(scheduler, n_workers, timeout)
    try:
        from distributed import as_completed

        root.mkdir(parents=True, exist_ok=True)
        write_sweep_json(root, manifest)
        futures = {}
        for point, status in todo:
            record = {"name": point.name, "point": point.coords, "config": point.config}
            fut = client.submit(
                run_point,
                str(status.dir.resolve()),
                point.config,
                record,
                torch_threads,
                key=f"grokwidgets-sweep-{point.name}-{time.time_ns()}",
                pure=False,
            )
            futures[fut] = status
        bar = tqdm(total=len(todo), disable=not progress, desc="sweep", unit="point")
        try:
            for fut in as_completed(futures):
                _settle(futures[fut], fut)
                bar.update(1)
                bar.set_postfix(result.counts, refresh=False)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
        finally:
            bar.close()
    finally:
        close()
    return result


def _settle(status: PointStatus, future: Any) -> None:
    from distributed import KilledWorker

    try:
        out = future.result()
    except KilledWorker as err:
        status.status = "lost"
        status.error = (
            f"its worker died ({err}); the run keeps its checkpoints: call sweep() again to "
            "resume it"
        )
        return
    except Exception as err:  # noqa: BLE001 (a failing point never loses the others)
        status.status = "failed"
        status.error = f"{type(err).__name__}: {err}"
        return
    status.status = out["status"]
    status.resumed_from = out.get("resumed_from")
    status.wall_time = out.get("wall_time")


_SECTIONS = ("task", "model", "train")


def _flatten(table: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``[grid]`` / ``[overrides]`` keys as ``--set`` writes them (``train.lr``).

    TOML reads ``train.lr = ...`` as a ``train`` table: a section's table is flattened one
    level; any other table is a value (``optimizer_kwargs``).
    """
    if not isinstance(table, Mapping):
        msg = f"[{what}] must be a table."
        raise ValueError(msg)
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key in _SECTIONS and isinstance(value, Mapping):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def sweep_from_toml(
    path: str | os.PathLike[str],
    *,
    dir: str | os.PathLike[str] | None = None,  # noqa: A002
    scheduler: str | Client | None = None,
    n_workers: int | None = None,
    extend: bool = False,
    progress: bool = True,
) -> SweepResult:
    """Run the sweep a TOML file describes (``grokwidgets sweep``).

    The file: ``preset = "modular-addition"`` or ``config = "exp.toml"`` (relative to the
    file), ``dir = "runs/wd"`` (relative to the working directory; ``dir=`` overrides it),
    ``seeds = [0, 1]``, a ``[grid]`` table and an ``[overrides]`` table, keys as ``--set``
    writes them::

        preset = "modular-addition"
        dir = "runs/wd-fraction"
        seeds = [0, 1]

        [grid]
        "train.weight_decay" = [0.1, 0.3, 1.0]
        "task.train_fraction" = [0.3, 0.5]

        [overrides]
        "train.steps" = 3000
    """
    import tomllib

    p = Path(path)
    if not p.is_file():
        msg = f"No sweep file {p}."
        raise FileNotFoundError(msg)
    spec = tomllib.loads(p.read_text())
    known = {"preset", "config", "dir", "seeds", "grid", "overrides", "description"}
    unknown = sorted(set(spec) - known)
    if unknown:
        msg = f"{p}: unknown key(s) {unknown}; a sweep file has {sorted(known)}."
        raise ValueError(msg)
    if ("preset" in spec) == ("config" in spec):
        msg = f"{p} needs exactly one of preset = NAME or config = FILE."
        raise ValueError(msg)
    source = spec["preset"] if "preset" in spec else str(p.parent / spec["config"])
    target = dir if dir is not None else spec.get("dir")
    if target is None:
        msg = f"{p} gives no dir = ...; pass --dir."
        raise ValueError(msg)
    return sweep(
        source,
        _flatten(spec.get("grid", {}), "grid"),
        spec.get("seeds"),
        dir=target,
        overrides=_flatten(spec.get("overrides", {}), "overrides"),
        scheduler=scheduler,
        extend=extend,
        n_workers=n_workers,
        progress=progress,
    )
