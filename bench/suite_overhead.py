"""Whole-run cost of the mechanism suite on the demo preset: suite / plain wall time.

The ``modular-addition`` preset (what ``make demo`` runs) is trained twice in this process,
side by side: once with ``basic`` only (loss, weights, gradient norm at the default cadence)
and once with the preset's suite (``MECHANISM_SUITE``: ``basic`` plus probes, geometry, ntk,
htsr, li2, comparative and the phase detector, each family at its own default cadence), both
writing a run directory with checkpoints as ``grokwidgets run`` does (no report). The order
alternates over ``--repeats`` pairs, so drift in the machine's speed hits both arms alike.
Target (issue 14): suite / plain ≤ 1.25.

Usage: ``python bench/suite_overhead.py [--repeats 1] [--steps N]``; prints a markdown table
and one JSON line.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from grokwidgets.presets import MECHANISM_SUITE, get_preset
from grokwidgets.train.config import run_config


def one_run(diagnostics: list[str], steps: int | None, where: Path) -> tuple[float, int]:
    cfg = get_preset("modular-addition")
    cfg["train"]["diagnostics"] = diagnostics
    if steps is not None:
        cfg["train"]["steps"] = steps
    t0 = time.perf_counter()
    run = run_config(cfg, where, overwrite=True, progress=False)
    wall = time.perf_counter() - t0
    return wall, run.dataset().sizes["step"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--steps", type=int, default=None, help="default: the preset's")
    args = ap.parse_args()
    plain: list[float] = []
    suite: list[float] = []
    records = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            order = [("plain", ["basic"]), ("suite", list(MECHANISM_SUITE))]
            if i % 2:
                order.reverse()
            for label, names in order:
                wall, n = one_run(names, args.steps, Path(tmp) / label)
                (plain if label == "plain" else suite).append(wall)
                records[label] = n
                print(f"{label}: {wall:.1f} s, {n} records", flush=True)
    p, s = statistics.median(plain), statistics.median(suite)
    print("| arm | wall (s) | records |")
    print("|---|---|---|")
    print(f"| basic only | {p:.1f} | {records['plain']} |")
    print(f"| suite ({', '.join(MECHANISM_SUITE)}) | {s:.1f} | {records['suite']} |")
    print(f"| **ratio** | **{s / p:.3f}** | |")
    print(json.dumps({"plain_s": round(p, 2), "suite_s": round(s, 2), "ratio": round(s / p, 4)}))


if __name__ == "__main__":
    main()
