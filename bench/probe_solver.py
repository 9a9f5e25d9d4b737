"""The probes' solver: the recorded setting against the previous one and scikit-learn.

Issue 14 changed how the ``probes`` diagnostic solves its logistic regression: L-BFGS
iterates in float32 (the model's precision) to a gradient max-norm of ``RECORD_TOL`` instead
of float64 to ``DEFAULT_TOL`` (1e-6). The objective is unchanged. This bench trains the
``modular-addition`` demo model (p = 97, 2,048 fixed train and test rows per probe, 97
classes) through memorization and grokking, captures every layer's features every
``--every`` steps, and fits the probes along that trajectory, warm-started record to record as
the diagnostic does, with

A. the previous setting (float64, tol 1e-6),
B. the recorded setting (float32, ``RECORD_TOL``),
C. scikit-learn's ``LogisticRegression(C = 1 / (λ n))`` on the same standardized features
   (lbfgs, tol 1e-8), an independent reference, on every ``--sklearn-every``-th record,

and the same three on real MNIST digits (``../shared/data/mnist.npz``: 2,000 train and 2,000
test digits, the readout features of an Omnigrok MLP at init and after 300 steps). It prints
the time of A and B and the largest accuracy difference of B from A and from C (target:
within 1.5 points of scikit-learn), as a markdown table and one JSON line.

Usage: ``python bench/probe_solver.py [--steps 4800] [--every 400] [--sklearn-every 3]``.
"""

import argparse
import json
import time
from pathlib import Path

import torch
from sklearn.linear_model import LogisticRegression

import grokwidgets as gw
from grokwidgets.diagnostics._features import RowSubsets, capture
from grokwidgets.diagnostics.probe import Probe
from grokwidgets.diagnostics.probes import DEFAULT_L2, DEFAULT_TOL, RECORD_TOL, linear_probe
from grokwidgets.presets import get_preset
from grokwidgets.tasks.losses import make_loss

MNIST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mnist.npz"


def demo_trajectory(steps: int, every: int) -> list[dict]:
    cfg = get_preset("modular-addition")
    t, m, r = cfg["task"], cfg["model"], cfg["train"]
    task = gw.tasks.modular_arithmetic(
        p=t["p"], op=t["op"], train_fraction=t["train_fraction"], seed=t["seed"]
    )
    model = gw.models.MLP.for_task(
        task, width=m["width"], depth=m["depth"], embed_dim=m["embed_dim"], seed=m["seed"]
    )
    opt = torch.optim.AdamW(model.parameters(), lr=r["lr"], weight_decay=r["weight_decay"])
    loss_fn = make_loss("auto", task)
    out = []
    for s in range(steps + 1):
        if s % every == 0:
            probe = Probe(model, task, s, loss_fn, {})
            tr, te = capture(probe, "train", RowSubsets()), capture(probe, "test", RowSubsets())
            feats = {k: v for k, v in tr.features.items() if k not in tr.aliases}
            test = {k: te.features[k] for k in feats}
            out.append({"step": s, "train": feats, "test": test, "y": (tr.targets, te.targets)})
        loss = loss_fn(model(task.x_train), task.y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return out


def mnist_records() -> list[dict]:
    if not MNIST.is_file():
        return []
    task = gw.tasks.mnist(n_train=2000, n_test=2000, path=str(MNIST), download=False)
    model = gw.models.MLP.for_task(task, width=200, depth=2, init_scale=8.0, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    out = []
    for s in range(301):
        if s in (0, 300):
            probe = Probe(model, task, s, None, {})
            tr, te = capture(probe, "train", RowSubsets()), capture(probe, "test", RowSubsets())
            out.append(
                {
                    "step": s,
                    "train": {"readout": tr.features["readout"]},
                    "test": {"readout": te.features["readout"]},
                    "y": (tr.targets, te.targets),
                }
            )
        idx = torch.randint(0, task.n_train, (200,), generator=torch.Generator().manual_seed(s))
        out_ = model(task.x_train[idx])
        loss = torch.nn.functional.mse_loss(
            out_, torch.nn.functional.one_hot(task.y_train[idx], 10).float()
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return out


def sklearn_acc(xtr, ytr, xte, yte) -> tuple[float, float]:
    xtr, xte = xtr.double().numpy(), xte.double().numpy()
    mu, sd = xtr.mean(0), xtr.std(0)
    sd[sd <= 1e-12 * max(1.0, sd.max())] = 1.0
    ztr, zte = (xtr - mu) / sd, (xte - mu) / sd
    clf = LogisticRegression(C=1.0 / (DEFAULT_L2 * len(ytr)), max_iter=5000, tol=1e-8)
    clf.fit(ztr, ytr.numpy())
    return float(clf.score(ztr, ytr.numpy())), float(clf.score(zte, yte.numpy()))


def run(records: list[dict], k: int, sk_every: int) -> dict:
    times = {"A": 0.0, "B": 0.0}
    state: dict[tuple[str, str], torch.Tensor] = {}
    d_prev = d_sk = 0.0
    n_sk = 0
    for i, rec in enumerate(records):
        ytr, yte = rec["y"]
        for layer, xtr in rec["train"].items():
            xte = rec["test"][layer]
            res = {}
            for arm, dtype, tol in (
                ("A", torch.float64, DEFAULT_TOL),
                ("B", torch.float32, RECORD_TOL),
            ):
                t0 = time.perf_counter()
                res[arm] = linear_probe(
                    xtr,
                    ytr,
                    xte,
                    yte,
                    n_classes=k,
                    init=state.get((arm, layer)),
                    tol=tol,
                    solver_dtype=dtype,
                )
                times[arm] += time.perf_counter() - t0
                state[arm, layer] = res[arm].coef
            a, b = res["A"], res["B"]
            d_prev = max(d_prev, abs(a.train_acc - b.train_acc), abs(a.test_acc - b.test_acc))
            if i % sk_every == 0:
                sk_tr, sk_te = sklearn_acc(xtr, ytr, xte, yte)
                d_sk = max(d_sk, abs(sk_tr - b.train_acc), abs(sk_te - b.test_acc))
                n_sk += 1
    return {
        "A_s": round(times["A"], 2),
        "B_s": round(times["B"], 2),
        "speedup": round(times["A"] / times["B"], 2),
        "max_dacc_vs_previous_points": round(100 * d_prev, 3),
        "max_dacc_vs_sklearn_points": round(100 * d_sk, 3),
        "sklearn_fits": n_sk,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4800)
    ap.add_argument("--every", type=int, default=400)
    ap.add_argument("--sklearn-every", type=int, default=3)
    args = ap.parse_args()
    out = {"demo": run(demo_trajectory(args.steps, args.every), 97, args.sklearn_every)}
    mnist = mnist_records()
    if mnist:
        out["mnist"] = run(mnist, 10, 1)
    print(f"threads: {torch.get_num_threads()}; RECORD_TOL = {RECORD_TOL}")
    print(
        "| data | A: f64, tol 1e-6 (s) | B: f32, RECORD_TOL (s) | A / B | max Δacc B−A | "
        "max Δacc B−sklearn |"
    )
    print("|---|---|---|---|---|---|")
    for name, r in out.items():
        print(
            f"| {name} | {r['A_s']} | {r['B_s']} | **{r['speedup']}** | "
            f"{r['max_dacc_vs_previous_points']} pt | {r['max_dacc_vs_sklearn_points']} pt "
            f"({r['sklearn_fits']} fits) |"
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
