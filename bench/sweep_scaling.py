"""Speed-up of ``gw.sweep`` on a 2-worker ``LocalCluster`` over the same grid run serially.

The grid: the ``modular-addition`` preset (``basic`` only) over weight decay × train fraction
× seed, 2 × 2 × 2 = 8 points of ``--steps`` steps each. Three arms, in this process, one after
the other:

- **serial, default threads**: each point's run in turn, in this process, with torch's default
  thread count (all cores) — what a user without a cluster does;
- **serial, 1 thread**: the same with ``torch.set_num_threads(1)`` (what each worker does);
- **sweep**: ``gw.sweep(..., n_workers=2)``, timed from the call to its return, so starting
  and closing the cluster (worker processes importing torch) are included.

Each arm writes its run directories as ``gw.sweep`` does (``run_point``). Target (issue 16):
sweep ≥ 1.8× faster than the better serial arm.

Two sizes tell different stories (both in bench/RESULTS.md): at the preset's size (the
default) one run's matmuls already use both cores with two torch threads, so no split of the
points over processes can gain much over the two-thread serial arm; at a small size
(``--p 31 --width 64 --steps 60000``), where a run is bound by Python and a second thread
does not help it, two workers run two points at once.

Usage: ``python bench/sweep_scaling.py [--steps 1500] [--p 59 --width 128]``; prints a markdown
table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

import grokwidgets as gw
from grokwidgets.sweeps.grid import plan_sweep
from grokwidgets.sweeps.runner import run_point

GRID = {"train.weight_decay": [0.3, 1.0], "task.train_fraction": [0.3, 0.5]}
SEEDS = [0, 1]


def serial(overrides: dict, root: Path, threads: int | None) -> float:
    plan = plan_sweep("modular-addition", GRID, SEEDS, overrides)
    before = torch.get_num_threads()
    t0 = time.perf_counter()
    for point in plan.points:
        record = {"name": point.name, "point": point.coords, "config": point.config}
        run_point(str(root / point.name), point.config, record, threads or before)
    wall = time.perf_counter() - t0
    torch.set_num_threads(before)
    return wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--p", type=int, default=None, help="task.p (default: the preset's, 97)")
    ap.add_argument("--width", type=int, default=None, help="model.width (preset: 256)")
    args = ap.parse_args()
    overrides = {"train.steps": args.steps, "train.diagnostics": ["basic"]}
    if args.p is not None:
        overrides["task.p"] = args.p
    if args.width is not None:
        overrides["model.width"] = args.width
        overrides["model.embed_dim"] = args.width // 2
    default_threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        walls = {}
        walls["serial, default threads"] = serial(overrides, Path(tmp) / "a", None)
        print(f"serial ({default_threads} threads): {walls['serial, default threads']:.1f} s")
        walls["serial, 1 thread"] = serial(overrides, Path(tmp) / "b", 1)
        print(f"serial (1 thread): {walls['serial, 1 thread']:.1f} s")
        t0 = time.perf_counter()
        result = gw.sweep(
            "modular-addition",
            GRID,
            SEEDS,
            dir=Path(tmp) / "c",
            overrides=overrides,
            n_workers=2,
            progress=False,
        )
        walls["sweep, 2-worker LocalCluster"] = time.perf_counter() - t0
        assert result.ok, result
        print(f"sweep: {walls['sweep, 2-worker LocalCluster']:.1f} s")
    best_serial = min(walls["serial, default threads"], walls["serial, 1 thread"])
    speedup = best_serial / walls["sweep, 2-worker LocalCluster"]
    size = f"p={args.p or 97}, width {args.width or 256}"
    print(f"\n8 points of {args.steps} steps (modular-addition, {size}, basic)\n")
    print("| arm | wall (s) |")
    print("|---|---|")
    for k, v in walls.items():
        print(f"| {k} | {v:.1f} |")
    same = walls["serial, 1 thread"] / walls["sweep, 2-worker LocalCluster"]
    print(f"| **speed-up over the better serial arm** | **{speedup:.2f}×** |")
    print(f"| speed-up over serial at 1 thread (same threads per run) | {same:.2f}× |")
    print(
        json.dumps(
            {
                "steps": args.steps,
                "overrides": overrides,
                "walls": walls,
                "speedup": speedup,
                "speedup_same_threads": same,
            }
        )
    )


if __name__ == "__main__":
    main()
