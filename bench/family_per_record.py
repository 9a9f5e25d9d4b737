"""Time per record of the representation and kernel families (probes, geometry, ntk) on MNIST.

Model: the Omnigrok MNIST MLP 784-200-200-10 (ReLU, init scale 8, AdamW lr 1e-3, wd 0.01,
batch 200, MSE on one-hot). Records are taken every ``--every`` steps of real training, so the
warm-started probes see a representation that moves as it does in a run. Per record we time:
the two hooked forward passes (train and test probe rows), ``probes`` (one L-BFGS logistic
probe per layer: ``encoder.0`` and ``readout``), ``geometry`` (1,024 test rows, RSA on 512)
and ``ntk`` (the empirical NTK on a 256-sample probe batch, its statistics and the
linearization gap; target for the whole family: under 1 s per record on 2 cores).
The first record is cold (no warm start); the median is over the later ones.

Variants: ``--n-train 1000`` (the paper's 1,000 train images, so a 1,000-row train probe set)
and ``--n-train 4096`` (a full 2,048-row train probe set). Test probe rows: 2,048 of 10,000.

Usage: ``python bench/probes_speed.py [--n-train 1000] [--records 8] [--every 100]
[--threads 2] [--tol 3e-5]``; prints one JSON line.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import grokwidgets as gw
from grokwidgets.diagnostics._features import capture
from grokwidgets.diagnostics.probe import Probe
from grokwidgets.diagnostics.probes import RECORD_TOL, register_probes
from grokwidgets.diagnostics.registry import resolve

SHARED_MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist.npz"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--records", type=int, default=8)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    ap.add_argument(
        "--tol",
        type=float,
        default=RECORD_TOL,
        help="L-BFGS gradient tolerance (default: the diagnostic's)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    task = gw.tasks.mnist(n_train=args.n_train, n_test=10_000, path=str(SHARED_MNIST.resolve()))
    model = gw.models.MLP.for_task(task, width=200, depth=2, init_scale=8.0, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    name = "probes"
    if args.tol != RECORD_TOL:
        name = "probes_bench"
        register_probes(name, tol=args.tol)
    probes_diag, geometry_diag, ntk_diag = resolve([name, "geometry", "ntk"])
    state: dict[str, torch.Tensor] = {}
    loss_fn = gw.tasks.losses.make_loss("mse", task)
    t0 = time.perf_counter()
    for diag in (geometry_diag, ntk_diag):
        assert diag.setup is not None
        diag.setup(Probe(model, task, 0, loss_fn, state))
    setup_s = time.perf_counter() - t0
    timings: dict[str, list[float]] = {
        "capture": [],
        "probes": [],
        "geometry": [],
        "ntk": [],
        "total": [],
    }
    last: dict[str, object] = {}
    gen = torch.Generator().manual_seed(0)
    for record in range(args.records):
        probe = Probe(model, task, record * args.every, loss_fn, state)
        t0 = time.perf_counter()
        capture(probe, "train")
        capture(probe, "test")
        t1 = time.perf_counter()
        values = probes_diag.fn(probe)
        t2 = time.perf_counter()
        geometry_diag.fn(probe)
        t3 = time.perf_counter()
        ntk_diag.fn(probe)
        t4 = time.perf_counter()
        timings["capture"].append(t1 - t0)
        timings["probes"].append(t2 - t1)
        timings["geometry"].append(t3 - t2)
        timings["ntk"].append(t4 - t3)
        timings["total"].append(t4 - t0)
        last = {
            "step": probe.step,
            "probe_test_acc_readout": values["probe_test_acc"]["readout"],  # type: ignore[index]
            "readout_misalignment": values["readout_misalignment"],
        }
        for _ in range(args.every):  # train between records (batch 200, MSE on one-hot)
            idx = torch.randint(0, task.n_train, (min(200, task.n_train),), generator=gen)
            out = model(task.x_train[idx])
            loss = F.mse_loss(out, F.one_hot(task.y_train[idx], 10).to(out.dtype))
            opt.zero_grad()
            loss.backward()
            opt.step()
    summary = {
        "n_train": args.n_train,
        "threads": torch.get_num_threads(),
        "tol": args.tol,
        "setup_s": round(setup_s, 3),
        "first_record_s": {k: round(v[0], 4) for k, v in timings.items()},
        "median_later_s": {k: round(statistics.median(v[1:]), 4) for k, v in timings.items()},
        "max_later_s": {k: round(max(v[1:]), 4) for k, v in timings.items()},
        "last": last,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
