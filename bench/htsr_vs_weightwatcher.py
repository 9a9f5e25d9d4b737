"""HTSR speed: our spectral family vs WeightWatcher 0.7.7 vs bare svdvals, side by side.

Each case is timed in one process, the three arms alternated in every repeat:

- WeightWatcher: ``WeightWatcher(model).analyze(randomize=True, mp_fit=True)``;
- ours: ``gw.diagnostics.htsr.analyze(model)`` (the same metrics: ESD, power-law fit,
  norms, MP fit, correlation traps, rand_distance);
- floor: ``torch.linalg.svdvals`` on the same weight matrices (float32, as stored).

Cases: (1) the 784-200-200-10 MLP of seed 003, (2) a 1024-1024-1024-10 MLP, (3) one
4096×1024 layer, each at PyTorch's default init (the cost does not depend on the values).
Before the timing, the deterministic metrics (α, xmin, MP σ, ...) are checked equal to
WeightWatcher's on every case, so the speed is for the same numbers.

Usage: ``python bench/htsr_vs_weightwatcher.py [--repeats 3]``.
"""

import argparse
import contextlib
import io
import logging
import statistics
import time
import warnings

import torch
from torch import nn

from grokwidgets.diagnostics import htsr


def mlp(*sizes: int) -> nn.Module:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


CASES = {
    "(1) MLP 784-200-200-10 (seed 003)": lambda: mlp(784, 200, 200, 10),
    "(2) MLP 1024-1024-1024-10": lambda: mlp(1024, 1024, 1024, 10),
    "(3) one 4096x1024 layer": lambda: nn.Sequential(nn.Linear(1024, 4096)),
}
TARGETS = {  # case prefix -> (min speed-up over WW, max ratio to floor)
    "(1)": (20.0, None),
    "(2)": (5.0, 3.0),
    "(3)": (None, 3.0),
}


def run_ww(model: nn.Module):
    import weightwatcher as ww

    with contextlib.redirect_stdout(io.StringIO()):
        return ww.WeightWatcher(model=model).analyze(randomize=True, mp_fit=True)


def run_floor(model: nn.Module) -> None:
    with torch.no_grad():
        for w in htsr.analyzable_layers(model).values():
            torch.linalg.svdvals(w)


def check_same(model: nn.Module, details) -> float:
    ours = htsr.analyze(model, randomize=False)
    worst = 0.0
    for _, row in details.iterrows():
        for col, metric in (("alpha", "htsr_alpha"), ("xmin", "htsr_xmin"),
                            ("sigma_mp", "mp_sigma"), ("stable_rank", "stable_rank")):  # fmt: skip
            mine = float(ours[metric].sel(layer=row["longname"]))
            if row["num_evals"] >= 20:
                worst = max(worst, abs(mine - row[col]) / abs(row[col]))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    for name, make in CASES.items():
        model = make()
        run_ww(model), htsr.analyze(model), run_floor(model)  # warm up
        times: dict[str, list[float]] = {"ww": [], "ours": [], "floor": []}
        details = None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            details = run_ww(model)
            times["ww"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            htsr.analyze(model)
            times["ours"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            run_floor(model)
            times["floor"].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        diff = check_same(model, details)
        rows.append((name, med, diff))
        speedup = med["ww"] / med["ours"]
        floor_ratio = med["ours"] / med["floor"]
        print(f"{name}: WeightWatcher {med['ww']:.3f} s, ours {med['ours']:.4f} s, "
              f"svdvals {med['floor']:.4f} s -> {speedup:.1f}x faster than WW, "
              f"{floor_ratio:.2f}x the floor; max rel. diff of alpha/xmin/sigma_mp "
              f"{diff:.1e}")  # fmt: skip
    print("\n| case | WeightWatcher | ours | svdvals (floor) | speed-up vs WW | ours / floor |")
    print("|---|---|---|---|---|---|")
    for name, med, _ in rows:
        speedup, floor = med["ww"] / med["ours"], med["ours"] / med["floor"]
        print(f"| {name} | {med['ww']:.3f} s | {med['ours']:.4f} s | {med['floor']:.4f} s | "
              f"**{speedup:.1f}×** | **{floor:.2f}×** |")  # fmt: skip
    ok = True
    for name, med, diff in rows:
        min_speedup, max_floor = TARGETS[name[:3]]
        if min_speedup and med["ww"] / med["ours"] < min_speedup:
            ok = False
        if max_floor and med["ours"] / med["floor"] > max_floor:
            ok = False
        if diff > 1e-3:
            ok = False
    print("targets met" if ok else "TARGETS MISSED")


if __name__ == "__main__":
    main()
