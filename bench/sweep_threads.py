"""Two sweep points at once: two one-thread workers, or one worker with two threads.

Notebooks 04 and 05 run their sweeps on ``LocalCluster(n_workers=1, threads_per_worker=2)``:
two runs at a time in one process, which keeps the notebooks under their 2 GB budget. This
bench measures what that costs against two one-thread worker processes, side by side in one
script: the ``htsr-anti-grokking`` preset (MNIST, ``basic`` + ``htsr`` + ``comparative`` +
``phase_detector``), weight decay {0, 0.25}, seed 0, ``--steps`` steps, with ``gw.sweep``. For
each arm: wall time (cluster start and close included) and the peak summed resident memory
of this process and its children, sampled every 0.5 s. It also checks that the two arms'
records are bitwise equal.

Needs MNIST (``../shared/data`` or the user cache). Usage:
``python bench/sweep_threads.py [--steps 5000]``; prints a markdown table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path


def arm(workers: int, threads: int, steps: int, out: Path) -> tuple[float, float]:
    import psutil
    from distributed import Client, LocalCluster

    import grokwidgets as gw

    me, peak, done = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                procs = [me, *me.children(recursive=True)]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                pass
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=threads, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    result = gw.sweep(
        "htsr-anti-grokking",
        grid={"train.weight_decay": [0.0, 0.25]},
        seeds=[0],
        dir=out,
        overrides={"train.steps": steps, "task.seed": None},
        scheduler=client,
        progress=False,
    )
    client.close()
    cluster.close()
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    if not result.ok:
        raise RuntimeError(str(result))
    return wall, peak[0] / 2**20


def main() -> None:
    import numpy as np

    import grokwidgets as gw

    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        two_procs = arm(2, 1, args.steps, Path(tmp) / "procs")
        one_proc = arm(1, 2, args.steps, Path(tmp) / "threads")
        same = all(
            np.array_equal(
                gw.open_run(Path(tmp) / "procs" / name).metrics.values,
                gw.open_run(Path(tmp) / "threads" / name).metrics.values,
                equal_nan=True,
            )
            for name in ("weight_decay=0.0,seed=0", "weight_decay=0.25,seed=0")
        )
    print("| arm | wall (s) | peak memory (MB) |")
    print("|---|---|---|")
    print(f"| 2 workers × 1 thread | {two_procs[0]:.1f} | {two_procs[1]:.0f} |")
    print(f"| 1 worker × 2 threads | {one_proc[0]:.1f} | {one_proc[1]:.0f} |")
    print(
        f"| **threads / processes** | **{one_proc[0] / two_procs[0]:.2f}×** | "
        f"**{one_proc[1] - two_procs[1]:+.0f} MB** |"
    )
    print(f"records bitwise equal: {same}")
    print(json.dumps({"steps": args.steps, "procs": two_procs, "threads": one_proc, "equal": same}))


if __name__ == "__main__":
    main()
