"""Wall time of ``import grokwidgets`` against the same import with altair loaded eagerly.

Altair is imported on first use (``grokwidgets/views/lazy_altair.py``): a training loop,
``grokwidgets train`` and a sweep's dask workers never draw a chart. The eager arm imports
altair right after grokwidgets, which is what ``import grokwidgets`` did before the change.
Each arm runs ``--repeats`` times in a fresh interpreter, alternating, and the medians are
compared (the interpreter exits with ``os._exit`` so teardown is not timed).

Usage: ``python bench/import_time.py [--repeats 7]``; prints a markdown table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

ARMS = {
    "import grokwidgets (altair lazy)": "import grokwidgets",
    "import grokwidgets, then altair (eager)": "import grokwidgets, altair.vegalite",
}
TIMER = (
    "import os, time; t = time.perf_counter(); {stmt}; "
    "print(time.perf_counter() - t, flush=True); os._exit(0)"
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    walls: dict[str, list[float]] = {name: [] for name in ARMS}
    for _ in range(args.repeats):
        for name, stmt in ARMS.items():
            out = subprocess.run(
                [sys.executable, "-c", TIMER.format(stmt=stmt)],
                capture_output=True,
                text=True,
                check=True,
            )
            walls[name].append(float(out.stdout.strip()))
    med = {name: statistics.median(v) for name, v in walls.items()}
    lazy, eager = med.values()
    print("| arm | median (s) |")
    print("|---|---|")
    for name, v in med.items():
        print(f"| {name} | {v:.2f} |")
    print(f"| **eager / lazy** | **{eager / lazy:.2f}×** |")
    print(json.dumps({"repeats": args.repeats, "walls": walls, "ratio": eager / lazy}))


if __name__ == "__main__":
    main()
