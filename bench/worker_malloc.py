"""A run inside a dask worker the user started, with and without ``steady_malloc`` (issue 19).

dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which freezes glibc's mmap
threshold at 128 KiB; ``gw.sweep``'s own ``LocalCluster`` leaves the variable out, but workers a
user starts (their ``Client``, SLURM) keep it, and every sweep point now calls
``gw.sweeps.runner.steady_malloc()`` first. Three arms, one after the other, each the
``grok-vs-steady`` preset (``basic`` only) for ``--steps`` steps with one torch thread:

- **plain process**: in this process;
- **worker, dask defaults**: in a fresh one-worker ``LocalCluster`` with dask's default
  environment, ``steady_malloc`` not called;
- **worker, steady_malloc**: the same in another fresh cluster, ``steady_malloc`` called first
  (what ``run_point`` does).

Usage: ``python bench/worker_malloc.py [--steps 5000]``; prints a markdown table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def one_run(steps: int, where: str, fix: bool) -> float:
    import torch

    from grokwidgets.presets import get_preset
    from grokwidgets.sweeps.runner import steady_malloc
    from grokwidgets.train.config import run_config

    torch.set_num_threads(1)
    if fix:
        steady_malloc()
    cfg = get_preset("grok-vs-steady")
    cfg["train"].update(steps=steps, diagnostics=["basic"], cadence={})
    t0 = time.perf_counter()
    run_config(cfg, where, overwrite=True, progress=False)
    return time.perf_counter() - t0


def in_worker(steps: int, where: str, fix: bool) -> float:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        return float(client.submit(one_run, steps, where, fix, pure=False).result())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        walls = {
            "plain process": one_run(args.steps, str(Path(tmp) / "a"), fix=False),
            "worker, dask defaults": in_worker(args.steps, str(Path(tmp) / "b"), fix=False),
            "worker, steady_malloc": in_worker(args.steps, str(Path(tmp) / "c"), fix=True),
        }
    base = walls["plain process"]
    print(f"| arm ({args.steps} steps, 1 thread) | wall (s) | / plain |")
    print("|---|---|---|")
    for label, w in walls.items():
        print(f"| {label} | {w:.1f} | **{w / base:.2f}** |")
    print(json.dumps({"steps": args.steps, "walls_s": walls}))


if __name__ == "__main__":
    main()
