import numpy as np

from grokwidgets.views.tables import TIME_SERIES, current_tables, series_tables
from tests.widgets._runs import LAYERS, dataset


def test_series_tables():
    ds = dataset(range(0, 20))
    tables = series_tables(ds)
    assert set(tables) == set(TIME_SERIES)
    loss = tables["loss"]
    assert set(loss["series"]) == {"train", "test"}
    assert loss["step"].min() == 1  # step 0 has no place on a log-step axis
    train = loss["series"] == "train"
    np.testing.assert_allclose(loss["value"][train], 2.0 / (1 + loss["step"][train]))
    assert set(tables["alpha"]["series"]) == set(LAYERS)
    assert len(tables["probe_acc"]["step"]) == 19  # only model test_acc: no probes recorded
    assert len(tables["ntk_alignment"]["step"]) == 0


def test_esd_at_a_step_and_fit():
    ds = dataset(range(0, 20))
    cur = current_tables(ds, 7)
    assert set(cur["esd"]["layer"]) == set(LAYERS)
    assert set(cur["esd_marks"]["kind"]) == {"xmin", "MP edge"}
    # the density integrates to one over the histogram
    evals = ds["spectrum"].sel(step=7, layer="readout").values
    assert np.isfinite(evals).sum() == 64
    fit = cur["esd_fit"]
    assert (fit["density"] > 0).all()
    assert not np.array_equal(cur["esd"]["lam"], current_tables(ds, 19)["esd"]["lam"])


def test_current_without_spectra_is_empty():
    ds = dataset(range(0, 5), spectrum=False)
    cur = current_tables(ds)
    assert all(len(next(iter(t.values()))) == 0 for t in cur.values())


def test_trap_series_say_when_a_layer_has_too_few_eigenvalues():
    # A real monitored MLP: encoder 784x200 (200 eigenvalues), a 200x60 layer (60: pooled
    # shuffles) and the 200x10 readout (10: pooled, no power-law fit).
    import torch

    from grokwidgets.monitor import Monitor

    model = torch.nn.Sequential(
        torch.nn.Linear(784, 200), torch.nn.ReLU(), torch.nn.Linear(200, 60), torch.nn.ReLU()
    )
    model.append(torch.nn.Linear(60, 10))
    mon = Monitor(model, diagnostics=["htsr"], cadence=1)
    mon.record(0)
    mon.record(1)
    labels = set(series_tables(mon.dataset())["traps"]["series"])
    assert labels == {"0", "2 (5 shuffles pooled)", "4 (rough: 10 eigenvalues)"}
