"""torch.func transforms from two threads at once give what one thread gives.

torch.func keeps its transform levels process-wide: without grokwidgets' lock, two threads in
vmap(vjp) return wrong per-sample gradients silently and two in jvp raise. Two runs share a
process in a dask worker with two threads (gw.sweep), or the Explorer's thread and a run."""

import copy
import threading

import torch

from grokwidgets.diagnostics._fisher import diagonal_fisher
from grokwidgets.diagnostics.kernel.stats import linearized_outputs


def _model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))


def test_fisher_by_vmap_and_linearization_by_jvp_concurrently():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 12, generator=g)
    fisher_model, lin_model = _model(1), _model(2)
    params0 = {n: p.detach() + 0.1 for n, p in lin_model.named_parameters()}

    def fisher():
        return diagonal_fisher(fisher_model, x, kind="true", exact=True, method="vmap")

    def linear(model=lin_model):
        return linearized_outputs(model, params0, x)[2]

    want_f, want_l = fisher(), linear()
    got: dict[str, list] = {"f": [], "l": []}
    errors: list[BaseException] = []

    def loop(name, fn):
        try:
            for _ in range(15):
                got[name].append(fn())
        except BaseException as err:  # noqa: BLE001 (reported below)
            errors.append(err)

    # each thread its own model, as each run has (functional_call swaps a module's tensors)
    copies = [copy.deepcopy(lin_model) for _ in range(2)]
    threads = [threading.Thread(target=loop, args=("f", fisher))] + [
        threading.Thread(target=loop, args=("l", lambda m=m: linear(m))) for m in copies
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(got["f"]) == 15 and len(got["l"]) == 30
    for f in got["f"]:
        for name, value in want_f.items():
            torch.testing.assert_close(f[name], value, rtol=0, atol=0)
    for out in got["l"]:
        torch.testing.assert_close(out, want_l, rtol=0, atol=0)
