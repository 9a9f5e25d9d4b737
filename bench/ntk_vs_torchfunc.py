"""Structured empirical NTK vs the torch.func recipe of PyTorch's NTK tutorial, side by side.

Baseline (the "Neural Tangent Kernels" tutorial of torch.func): per-sample Jacobians
``jac = vmap(jacrev(fnet_single), (None, 0))(params, x)`` of every parameter, then
``einsum("Naf,Mbf->NMab")`` (full blocks) or ``einsum("Naf,Maf->NM")`` (trace) per parameter,
summed. The tutorial computes ``jac1`` and ``jac2`` for two batches; here both batches are the
same, so the baseline computes the Jacobians once (which favours the baseline by up to 2x).
Ours: ``grokwidgets.diagnostics.kernel.empirical_ntk``. Both run in float32 in one process on
the same model and inputs; the script asserts that the kernels agree and prints the max abs
difference.

A. MNIST MLP 784-200-200-10, ReLU (``gw.models.MLP(784, 10, width=200, depth=2,
   init_scale=8)``, the Omnigrok model), N = 256 MNIST train images, full 10 x 10 blocks.
B. The ``modular-addition`` preset's MLP (p = 97, embedding 128, width 256, depth 1), trace NTK
   over its 97 outputs. The baseline's Jacobian holds N x 97 x 103k floats (10 GB at N = 256),
   so the comparison runs at N = 64 (``--n-mod``); ours alone is also timed at N = 256.
B'. The same model at N = 256: the closed form of a one-hidden-layer MLP's trace kernels
   (``grokwidgets.diagnostics.kernel.closed_form``, what ``empirical_ntk`` uses for it) against
   the layer-factor engine it replaced there (``NTKEngine(..., closed_form=False)``: one
   batched backward over the 97 outputs), side by side; the kernels must agree.
C. The whole ``ntk`` diagnostic per record (kernel, per-layer statistics, spectrum, label power,
   linearization gap) on the MNIST MLP's probe batch of 256, and its one-time setup (init
   kernel, kernel-regression baseline on 1,000 train / 512 test images); the same for the
   modular MLP and the one-layer transformer (p = 97) for reference.

Timings: ``time.perf_counter``, median of repeats after one warm-up (``--repeats``; the
baseline is slower, so it gets ``--baseline-repeats``).

Usage: ``python bench/ntk_vs_torchfunc.py [--repeats 5] [--baseline-repeats 2] [--n-mod 64]``.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch.func import functional_call, jacrev, vmap

import grokwidgets as gw
from grokwidgets.diagnostics.kernel import NTKEngine, empirical_ntk
from grokwidgets.diagnostics.probe import Probe
from grokwidgets.diagnostics.registry import resolve
from grokwidgets.presets import get_preset

OUT = Path(__file__).with_name("out") / "ntk_results.md"  # bench/out is git-ignored


def tutorial_ntk(model, x, blocks):
    """The tutorial's recipe: vmap(jacrev) Jacobians, one einsum per parameter, summed."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def fnet_single(params, x):
        return functional_call(model, params, (x.unsqueeze(0),)).squeeze(0)

    jac1 = vmap(jacrev(fnet_single), (None, 0))(params, x)
    jac1 = [j.flatten(2) for j in jac1.values()]
    jac2 = jac1  # x2 = x1: computed once
    eq = "Naf,Mbf->NMab" if blocks == "full" else "Naf,Maf->NM"
    return torch.stack([torch.einsum(eq, j1, j2) for j1, j2 in zip(jac1, jac2, strict=True)]).sum(0)


def median_time(fn, repeats):
    fn()  # warm-up (and the result to compare)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def compare(label, model, x, blocks, repeats, baseline_repeats):
    model.eval()
    ours = empirical_ntk(model, x, blocks)
    with torch.no_grad():
        ref = tutorial_ntk(model, x, blocks)
    diff = float((ours - ref).abs().max())
    scale = float(ref.abs().max())
    # float32 on both sides: agreement to float32 rounding of sums over ~1e5 terms
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5 * scale)
    t_ours = median_time(lambda: empirical_ntk(model, x, blocks), repeats)
    with torch.no_grad():
        t_ref = median_time(lambda: tutorial_ntk(model, x, blocks), baseline_repeats)
    row = {
        "case": label,
        "N": len(x),
        "blocks": blocks,
        "torch.func": t_ref,
        "ours": t_ours,
        "ratio": t_ref / t_ours,
        "max_abs_diff": diff,
        "max_abs_K": scale,
    }
    print(
        f"{label:40s} N={len(x):4d} {blocks:5s} torch.func {t_ref:8.3f} s  ours {t_ours:7.4f} s"
        f"  ratio {t_ref / t_ours:7.1f}x  max|diff| {diff:.2e} (max|K| {scale:.2e})",
        flush=True,
    )
    return row


def engine_ntk(model, x, closed_form):
    """The trace NTK through an engine made with or without the closed form."""
    engine = NTKEngine(model, x, closed_form=closed_form)
    assert (engine.rule is not None) == closed_form
    f = engine.factors(x)
    return sum(engine.kernels(f, f).values())


def closed_form_vs_factors(model, x, repeats):
    closed, factors = engine_ntk(model, x, True), engine_ntk(model, x, False)
    scale = float(factors.abs().max())
    torch.testing.assert_close(closed, factors, rtol=1e-4, atol=1e-5 * scale)
    diff = float((closed - factors).abs().max())
    t_closed = median_time(lambda: engine_ntk(model, x, True), repeats)
    t_factors = median_time(lambda: engine_ntk(model, x, False), repeats)
    label = "B'. closed form vs layer factors"
    print(
        f"{label:40s} N={len(x):4d} trace factors "
        f"{t_factors:7.4f} s  closed {t_closed:7.4f} s  ratio {t_factors / t_closed:5.1f}x  "
        f"max|diff| {diff:.2e} (max|K| {scale:.2e})",
        flush=True,
    )
    return {"factors": t_factors, "closed": t_closed, "diff": diff, "scale": scale}


def diagnostic_times(label, model, task, repeats):
    (diag,) = resolve(["ntk"])
    state = {}
    t0 = time.perf_counter()
    diag.setup(Probe(model, task, 0, None, state))
    t_setup = time.perf_counter() - t0
    step = iter(range(1, 10_000))
    t_rec = median_time(lambda: diag.fn(Probe(model, task, next(step), None, state)), repeats)
    print(f"{label:40s} ntk record {t_rec:7.3f} s   setup {t_setup:7.2f} s", flush=True)
    return {"case": label, "record": t_rec, "setup": t_setup}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-repeats", type=int, default=2)
    parser.add_argument("--n-mod", type=int, default=64)
    parser.add_argument("--skip-transformer", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32")

    mnist = gw.tasks.mnist(n_train=1000, n_test=10000)
    mlp = gw.models.MLP.for_task(mnist, width=200, depth=2, init_scale=8.0, seed=0)
    preset = get_preset("modular-addition")
    mod_task = gw.tasks.from_config(preset["task"])
    mcfg = {k: v for k, v in preset["model"].items() if k != "class"}
    mod_mlp = gw.models.MLP.for_task(mod_task, **mcfg)

    rows = [
        compare(
            "A. MNIST MLP 784-200-200-10",
            mlp,
            mnist.x_train[:256],
            "full",
            args.repeats,
            args.baseline_repeats,
        ),
        compare(
            "B. modular-addition MLP (p=97)",
            mod_mlp,
            mod_task.x_train[: args.n_mod],
            "trace",
            args.repeats,
            args.baseline_repeats,
        ),
    ]
    t_mod256 = median_time(lambda: empirical_ntk(mod_mlp, mod_task.x_train[:256]), args.repeats)
    print(f"{'B. modular-addition MLP, ours only':40s} N= 256 trace ours {t_mod256:7.4f} s")
    closed = closed_form_vs_factors(mod_mlp, mod_task.x_train[:256], args.repeats)
    t_mnist_trace = median_time(lambda: empirical_ntk(mlp, mnist.x_train[:256]), args.repeats)
    print(f"{'A. MNIST MLP, ours only':40s} N= 256 trace ours {t_mnist_trace:7.4f} s")

    diags = [diagnostic_times("C. MNIST MLP", mlp, mnist, args.repeats)]
    diags.append(diagnostic_times("C. modular-addition MLP", mod_mlp, mod_task, args.repeats))
    if not args.skip_transformer:
        tf = gw.models.Transformer.for_task(mod_task, seed=0)
        diags.append(diagnostic_times("C. transformer (p=97, d=128)", tf, mod_task, 2))

    lines = [
        "# NTK benchmark (`bench/ntk_vs_torchfunc.py`)",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, "
        f"median of {args.repeats} (ours) / {args.baseline_repeats} (torch.func) after a warm-up.",
        "",
        "| case | N | blocks | torch.func vmap(jacrev)+einsum | ours | ratio | max abs diff "
        "(max abs K) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['N']} | {r['blocks']} | {r['torch.func']:.3f} s | "
            f"{r['ours'] * 1e3:.1f} ms | **{r['ratio']:.0f}x** | {r['max_abs_diff']:.1e} "
            f"({r['max_abs_K']:.1e}) |"
        )
    lines += [
        "",
        f"Ours alone, trace NTK, N = 256: modular-addition MLP {t_mod256 * 1e3:.0f} ms, "
        f"MNIST MLP {t_mnist_trace * 1e3:.0f} ms.",
        "",
        f"B'. modular-addition MLP, N = 256, trace: layer factors "
        f"{closed['factors'] * 1e3:.1f} ms, closed form {closed['closed'] * 1e3:.1f} ms "
        f"(**{closed['factors'] / closed['closed']:.1f}x**), max abs diff "
        f"{closed['diff']:.1e} (max abs K {closed['scale']:.1e}).",
        "",
        "| whole `ntk` diagnostic | per record | one-time setup |",
        "|---|---|---|",
    ]
    for d in diags:
        lines.append(f"| {d['case']} | {d['record'] * 1e3:.0f} ms | {d['setup']:.1f} s |")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
