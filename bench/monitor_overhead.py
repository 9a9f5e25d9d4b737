"""Monitor overhead: the same seeded 5k-step run, bare vs monitored, side by side.

Model: the demo's modular-addition MLP (p = 97, 30% train, width 256, AdamW lr 3e-3, wd 1,
full batch, seed 0). Monitoring: basic diagnostics (loss/accuracy on both splits, weight
norms, distance from init, gradient norm) at the default cadence (every step to 100, then
50 per decade: 185 records in 5k steps), written to a zarr run directory, with the default
checkpoints.

A. Own loop, *interleaved*: two identical models train in lock-step, one bare and one with
   ``mon.step(step)``; each step of each is timed, so machine-load drift hits both alike.
B. ``gw.train`` with monitoring vs ``gw.train(diagnostics=[], dir=None)`` (the same loop with
   nothing due), whole runs alternated, fastest of ``--repeats`` each.

Usage: ``python bench/monitor_overhead.py [--steps 5000] [--repeats 2]``.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch.nn.functional as F

import grokwidgets as gw
from grokwidgets.train import make_optimizer


def setup():
    task = gw.tasks.modular_arithmetic(p=97, op="+", train_fraction=0.3, seed=0)
    model = gw.models.MLP.for_task(task, width=256, depth=1, embed_dim=128, seed=0)
    opt = make_optimizer("adamw", model, lr=3e-3, weight_decay=1.0)
    return task, model, opt


def interleaved(steps, run_dir):
    task, bare, opt_bare = setup()
    _, watched, opt_watched = setup()
    mon = gw.Monitor(watched, task, dir=run_dir, optimizer=opt_watched)
    t_bare = t_watched = 0.0
    for step in range(1, steps + 1):
        for model, opt, is_bare in ((bare, opt_bare, True), (watched, opt_watched, False)):
            t0 = time.perf_counter()
            loss = F.cross_entropy(model(task.x_train), task.y_train)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if is_bare:
                t_bare += time.perf_counter() - t0
            else:
                mon.step(step)
                t_watched += time.perf_counter() - t0
    t0 = time.perf_counter()
    mon.close()
    return t_bare, t_watched + time.perf_counter() - t0


def builtin(steps, run_dir, monitored):
    task, model, _ = setup()
    kw = {"dir": run_dir} if monitored else {"diagnostics": [], "checkpoint_cadence": False}
    t0 = time.perf_counter()
    gw.train(task, model, steps=steps, lr=3e-3, weight_decay=1.0, progress=False, **kw)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        a_bare, a_mon = interleaved(args.steps, Path(tmp) / "a")
    print(f"A own loop interleaved: bare {a_bare:.2f} s, Monitor {a_mon:.2f} s", flush=True)
    best = {"bare": float("inf"), "monitored": float("inf")}
    for r in range(args.repeats):
        order = [False, True] if r % 2 == 0 else [True, False]
        for monitored in order:
            with tempfile.TemporaryDirectory() as tmp:
                t = builtin(args.steps, Path(tmp) / "b", monitored)
            key = "monitored" if monitored else "bare"
            best[key] = min(best[key], t)
            print(f"B repeat {r} gw.train {key}: {t:.2f} s", flush=True)
    result = {
        "steps": args.steps,
        "records": len(gw.Cadence.default().steps(args.steps)),
        "A_own_loop": {"bare_s": a_bare, "monitor_s": a_mon, "ratio": a_mon / a_bare},
        "B_gw_train": {
            **{f"{k}_s": v for k, v in best.items()},
            "ratio": best["monitored"] / best["bare"],
        },
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
