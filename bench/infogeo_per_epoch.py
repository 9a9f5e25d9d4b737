"""Information geometry once an epoch, the paper's cadence: what it costs (issue 19).

Manning-Coe et al. (2025) record the Fisher step length and straightness after every epoch.
Two measurements, each arm side by side in this process, on the ``grok-vs-steady`` preset
(P = 113, two-hot inputs, 512 ReLU, batch 64: 139 steps an epoch):

1. **The exact Fisher** (``diagonal_fisher(..., exact=True)``, one backward pass per class,
   C = 113): the paper's Gauss-Newton Fisher and the exact softmax Fisher on 2,048 rows, as
   grokwidgets computes it (the squared cotangents of the C passes summed before one matrix
   product per layer) against the previous way (one matrix product per pass and layer),
   written out below as the baseline; the two are checked equal first.
2. **Whole runs** of ``--epochs`` epochs: ``basic`` only, against ``basic`` plus ``infogeo``
   every epoch (our Fisher: the softmax's, one label drawn per row, 2,048 train rows), plus
   the paper's Fisher every epoch (exact Gauss-Newton on 512 test rows, ``prefix="gn_"``).

Usage: ``python bench/infogeo_per_epoch.py [--epochs 20] [--repeats 3]``; prints markdown
tables and one JSON line.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import grokwidgets as gw
from grokwidgets.diagnostics._fisher import _cotangents, diagonal_fisher
from grokwidgets.diagnostics.infogeo import FisherOptions, InfoGeoOptions, register_infogeo
from grokwidgets.presets import get_preset
from grokwidgets.train.config import run_config


def fisher_per_pass(model: nn.Module, x: torch.Tensor, likelihood: str) -> dict[str, torch.Tensor]:
    """The exact diagonal Fisher the previous way: a matrix product per backward pass."""
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [
        m.register_forward_hook(lambda mod, a, out, n=n: seen.__setitem__(n, (a[0], out)))
        for n, m in linears.items()
    ]
    try:
        z = model(x)
    finally:
        for h in hooks:
            h.remove()
    vs = _cotangents(z, None, "true", likelihood, 1, True, None)  # (C, n, C)
    acc = {f"{n}.{p}": torch.zeros_like(getattr(m, p), dtype=torch.float64)
           for n, m in linears.items() for p in ("weight", "bias")}  # fmt: skip
    outs = [seen[n][1] for n in linears]
    for k in range(vs.shape[0]):
        grads = torch.autograd.grad(z, outs, vs[k], retain_graph=k + 1 < vs.shape[0])
        for n, g in zip(linears, grads, strict=True):
            g2 = g.square()
            acc[f"{n}.weight"] += (g2.T @ seen[n][0].square()).double()
            acc[f"{n}.bias"] += g2.sum(0).double()
    return {k: v / len(x) for k, v in acc.items()}


def timed(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def fisher_arms(repeats: int) -> list[dict]:
    cfg = get_preset("grok-vs-steady")
    task = gw.tasks.from_config(cfg["task"])
    model = gw.models.MLP.for_task(task, **{k: v for k, v in cfg["model"].items() if k != "class"})
    model.eval()
    x = task.x_train[:2048]
    rows = []
    for likelihood in ("gaussian", "categorical"):
        new = diagonal_fisher(model, x, likelihood=likelihood, exact=True, method="structured")
        old = fisher_per_pass(model, x, likelihood)
        for name, value in new.items():
            torch.testing.assert_close(value, old[name], rtol=1e-4, atol=1e-10)
        t_new = timed(lambda lk=likelihood: diagonal_fisher(
            model, x, likelihood=lk, exact=True, method="structured"), repeats)  # fmt: skip
        t_old = timed(lambda lk=likelihood: fisher_per_pass(model, x, lk), repeats)
        rows.append({"likelihood": likelihood, "per_pass_s": t_old, "summed_s": t_new})
    return rows


def run_arm(diagnostics: list[str], cadence: dict, steps: int, where: Path) -> float:
    cfg = get_preset("grok-vs-steady")
    cfg["train"].update(steps=steps, diagnostics=diagnostics, cadence=cadence)
    t0 = time.perf_counter()
    run_config(cfg, where, overwrite=True, progress=False)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    fisher = fisher_arms(args.repeats)
    print(
        "| exact Fisher, 2,048 rows, C = 113 | a product per pass (s) | summed first (s) | ratio |"
    )
    print("|---|---|---|---|")
    for r in fisher:
        ratio = r["per_pass_s"] / r["summed_s"]
        print(
            f"| {r['likelihood']} | {r['per_pass_s']:.3f} | {r['summed_s']:.3f} "
            f"| **{ratio:.2f}×** |"
        )

    gn = FisherOptions(likelihood="gaussian", exact=True, split="test", n_rows=512)
    register_infogeo("infogeo_gn", InfoGeoOptions(fisher=gn), prefix="gn_")
    epoch = gw.tasks.from_config(get_preset("grok-vs-steady")["task"]).n_train // 64
    steps = args.epochs * epoch
    every = {"every": epoch}
    arms = {
        "basic": (["basic"], {}),
        "basic + infogeo every epoch": (["basic", "infogeo"], {"infogeo": every}),
        "basic + infogeo + paper's Fisher every epoch": (
            ["basic", "infogeo", "infogeo_gn"],
            {"infogeo": every, "infogeo_gn": every},
        ),
    }
    walls: dict[str, list[float]] = {k: [] for k in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            order = list(arms) if i % 2 == 0 else list(reversed(arms))
            for label in order:
                names, cadence = arms[label]
                walls[label].append(run_arm(names, cadence, steps, Path(tmp) / str(i)))
    base = statistics.median(walls["basic"])
    print(
        f"\n| {args.epochs} epochs ({steps} steps), median of {args.repeats} | wall (s) | ratio |"
    )
    print("|---|---|---|")
    summary = {}
    for label, ws in walls.items():
        m = statistics.median(ws)
        summary[label] = {"wall_s": round(m, 2), "ratio": round(m / base, 3)}
        print(f"| {label} | {m:.1f} | **{m / base:.2f}** |")
    print(json.dumps({"fisher": fisher, "runs": summary, "epochs": args.epochs}))


if __name__ == "__main__":
    main()
