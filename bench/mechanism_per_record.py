"""Time per record of the mechanism families (issue 7) on the modular-addition MLP.

Model and recipe: the ``modular-addition`` preset (a + b mod 97, 30% of the pairs for
training, embedding MLP 128 → 256 → 97, AdamW lr 3e-3, weight decay 1, full batch, cross
entropy). Records are taken every ``--every`` steps of real training, so families that keep
state between records (``infogeo``'s previous step, warm starts) see a moving model. Each
family is timed on its own (``diag.fn(probe)`` after ``diag.setup``); the first record is
cold, the median is over the later ones. Target: each family under 0.5 s per record on
2 cores.

Issue 14's suite: ``--families htsr probes geometry ntk li2 comparative phase_detector``
(target: all together ≤ 0.15 s median per record; the last row sums the medians).

``--probe-rows N`` and ``--ntk-batch M`` time the probes on ``N`` rows per split and the NTK
on ``M`` samples instead of the defaults (2,048 and 256): what smaller sizes would cost.

Usage: ``python bench/mechanism_per_record.py [--records 8] [--every 50] [--threads 0]
[--families li2 compress infogeo comparative] [--probe-rows N] [--ntk-batch M]``; prints a
markdown table and one JSON line.
"""

import argparse
import json
import statistics
import time

import torch

import grokwidgets as gw
from grokwidgets.diagnostics._features import RowSubsets
from grokwidgets.diagnostics.kernel import NTKOptions, register_ntk
from grokwidgets.diagnostics.probe import Probe
from grokwidgets.diagnostics.probes import register_probes
from grokwidgets.diagnostics.registry import resolve
from grokwidgets.presets import get_preset
from grokwidgets.tasks.losses import make_loss

FAMILIES = ("li2", "compress", "infogeo", "comparative")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=8)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    ap.add_argument(
        "--probe-rows", type=int, default=0, help="probes on this many rows per split (0: default)"
    )
    ap.add_argument(
        "--ntk-batch", type=int, default=0, help="NTK probe batch size (0: the default 256)"
    )
    args = ap.parse_args()
    # Size variants (a measurement of what smaller sizes would cost, not the defaults).
    families = list(args.families)
    if args.probe_rows and "probes" in families:
        rows = RowSubsets(n_train=args.probe_rows, n_test=args.probe_rows)
        register_probes("probes_rows", sets=rows, replace=True)
        families[families.index("probes")] = "probes_rows"
    if args.ntk_batch and "ntk" in families:
        register_ntk("ntk_batch", NTKOptions(n_probe=args.ntk_batch), replace=True)
        families[families.index("ntk")] = "ntk_batch"
    args.families = families
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = get_preset("modular-addition")
    t = preset["task"]
    task = gw.tasks.modular_arithmetic(
        p=t["p"], op=t["op"], train_fraction=t["train_fraction"], seed=t["seed"]
    )
    m = preset["model"]
    model = gw.models.MLP.for_task(
        task, width=m["width"], depth=m["depth"], embed_dim=m["embed_dim"], seed=m["seed"]
    )
    r = preset["train"]
    opt = torch.optim.AdamW(model.parameters(), lr=r["lr"], weight_decay=r["weight_decay"])
    loss_fn = make_loss("auto", task)
    diags = resolve(args.families)
    state: dict[str, torch.Tensor] = {}
    setup_s: dict[str, float] = {}
    for diag in diags:
        t0 = time.perf_counter()
        if diag.setup is not None:
            diag.setup(Probe(model, task, 0, loss_fn, state))
        setup_s[diag.name] = time.perf_counter() - t0
    timings: dict[str, list[float]] = {d.name: [] for d in diags}
    for record in range(args.records):
        probe = Probe(model, task, record * args.every, loss_fn, state)
        for diag in diags:
            t0 = time.perf_counter()
            diag.fn(probe)
            timings[diag.name].append(time.perf_counter() - t0)
        for _ in range(args.every):
            loss = loss_fn(model(task.x_train), task.y_train)
            opt.zero_grad()
            loss.backward()
            opt.step()
    print(f"threads: {torch.get_num_threads()}, records: {args.records}, every {args.every}")
    print("| family | setup (s) | first record (s) | median later (s) | max later (s) |")
    print("|---|---|---|---|---|")
    summary = {}
    for name, ts in timings.items():
        later = ts[1:] or ts
        row = {
            "setup_s": round(setup_s[name], 4),
            "first_s": round(ts[0], 4),
            "median_s": round(statistics.median(later), 4),
            "max_s": round(max(later), 4),
        }
        summary[name] = row
        print(
            f"| {name} | {row['setup_s']} | {row['first_s']} | **{row['median_s']}** "
            f"| {row['max_s']} |"
        )
    total = sum(row["median_s"] for row in summary.values())
    print(f"| **all together** | | | **{total:.4f}** | |")
    print(json.dumps({"threads": torch.get_num_threads(), "families": summary, "total_s": total}))


if __name__ == "__main__":
    main()
