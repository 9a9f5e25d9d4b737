"""HTSR diagnostics against WeightWatcher 0.7.7, torch.linalg and planted structure."""

import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

import grokwidgets as gw
from grokwidgets.diagnostics import htsr

# WeightWatcher columns and our metric names, compared to 1e-6 (deterministic quantities).
SAME = {
    "alpha": "htsr_alpha",
    "xmin": "htsr_xmin",
    "D": "htsr_ks",
    "num_pl_spikes": "htsr_tail_size",
    "alpha_weighted": "htsr_alpha_weighted",
    "log_alpha_norm": "htsr_log_alpha_norm",
    "log_norm": "log_norm",
    "log_spectral_norm": "log_spectral_norm",
    "stable_rank": "stable_rank",
    "entropy": "matrix_entropy",
    "sigma_mp": "mp_sigma",
    "bulk_max": "mp_bulk_max",
    "num_spikes": "mp_num_spikes",
    "mp_softrank": "mp_softrank",
}


def weightwatcher_details(model):
    ww = pytest.importorskip("weightwatcher")
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    watcher = ww.WeightWatcher(model=model)
    return watcher, watcher.analyze(randomize=False, mp_fit=True)


def assert_matches_weightwatcher(model, min_evals=20):
    ours = htsr.analyze(model, randomize=False)
    _, details = weightwatcher_details(model)
    compared = 0
    for _, row in details.iterrows():
        layer = row["longname"]
        if row["num_evals"] < min_evals:
            continue
        for col, metric in SAME.items():
            mine = float(ours[metric].sel(layer=layer))
            assert mine == pytest.approx(float(row[col]), rel=1e-6, abs=1e-9), (layer, col)
        compared += 1
    assert compared == len(details[details["num_evals"] >= min_evals])
    return ours, details


def test_gaussian_matrices_match_weightwatcher():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(300, 120), nn.ReLU(), nn.Linear(120, 500), nn.Linear(64, 64))
    assert_matches_weightwatcher(model)


@pytest.mark.parametrize("kind", ["student_t", "pareto"])
def test_heavy_tailed_matrices_match_weightwatcher(kind):
    g = torch.Generator().manual_seed(1)
    if kind == "student_t":
        w = torch.distributions.StudentT(torch.tensor(1.5)).sample((400, 200))
    else:
        u = torch.rand(400, 200, generator=g)
        sign = torch.where(torch.rand(400, 200, generator=g) < 0.5, -1.0, 1.0)
        w = sign * u.pow(-1 / 1.5)  # Pareto tail exponent mu = 1.5
    lin = nn.Linear(200, 400, bias=False)
    with torch.no_grad():
        lin.weight.copy_(w * 0.01)
    ours, _ = assert_matches_weightwatcher(nn.Sequential(lin))
    # Entries with tail exponent mu < 2 give an ESD tail alpha = 1 + mu/2 (Martin & Mahoney
    # 2021, Table 1); finite size blurs it, but it is far heavier than the Gaussian's.
    assert 1.4 < float(ours["htsr_alpha"].sel(layer="0")) < 2.6


@pytest.fixture(scope="module")
def trained_mlp():
    task = gw.tasks.modular_arithmetic(p=31, op="+", train_fraction=0.5, seed=0)
    model = gw.models.MLP.for_task(task, width=128, depth=1, embed_dim=64, seed=0)
    gw.train(task, model, 300, lr=3e-3, weight_decay=1.0, diagnostics=(), progress=False)
    return model


def test_trained_mlp_matches_weightwatcher(trained_mlp):
    ours, details = assert_matches_weightwatcher(trained_mlp)
    assert {"embed", "encoder.0", "readout"} <= set(details["longname"])
    assert len(details[details["num_evals"] >= 50]) >= 1


def test_summary_matches_weightwatcher_when_every_layer_fits(trained_mlp):
    watcher, _ = weightwatcher_details(trained_mlp)
    ours = htsr.analyze(trained_mlp, randomize=False)
    ref = watcher.get_summary()
    for col, metric in {"alpha": "htsr_alpha", "log_norm": "log_norm",
                        "stable_rank": "stable_rank", "mp_softrank": "mp_softrank",
                        "alpha_weighted": "htsr_alpha_weighted"}.items():  # fmt: skip
        assert float(ours[metric].sel(layer="model")) == pytest.approx(ref[col], rel=1e-6)


def test_small_layer_is_nan_where_weightwatcher_switches_estimator():
    """Our choice, pinned: below 20 non-zero eigenvalues no power-law fit, with the reason."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 12))
    ours = htsr.analyze(model)
    assert math.isnan(float(ours["htsr_alpha"].sel(layer="0")))
    assert "too few eigenvalues" in ours.attrs["nan_reasons"]["htsr_alpha"]["0"]
    # The rest of the spectral family is still there.
    assert float(ours["stable_rank"].sel(layer="0")) > 1
    _, details = weightwatcher_details(model)
    assert details["alpha"].iloc[0] > 0  # WeightWatcher reports its small-N estimate


@pytest.mark.parametrize(
    "module",
    [nn.Linear(40, 90), nn.Embedding(70, 30), nn.Conv2d(6, 24, 3), nn.Conv1d(5, 30, 4)],
    ids=["linear", "embedding", "conv2d", "conv1d"],
)
def test_esd_is_squared_singular_values(module):
    w = module.weight.detach().double()
    if w.ndim == 2:
        ref = torch.linalg.svdvals(w) ** 2
    elif w.ndim == 3:
        ref = torch.cat([torch.linalg.svdvals(w[:, :, k]) ** 2 for k in range(w.shape[2])])
    else:  # WeightWatcher scales each Conv2d slice by 1/sqrt(2)
        ref = torch.cat(
            [torch.linalg.svdvals(w[:, :, i, j]) ** 2 / 2 for i in range(3) for j in range(3)]
        )
    ds = htsr.analyze({"layer": module.weight}, randomize=False)
    spec = ds["spectrum"].sel(layer="layer").values
    spec = spec[np.isfinite(spec)]
    np.testing.assert_allclose(
        spec, np.sort(ref.numpy())[::-1], rtol=1e-10, atol=1e-12 * ref.max().item()
    )


def test_conv2d_matches_weightwatcher():
    torch.manual_seed(0)
    assert_matches_weightwatcher(nn.Sequential(nn.Conv2d(16, 48, 3)))


def planted(seed, n=400, m=200, spikes=4, size=40.0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, m, generator=g, dtype=torch.float64)
    idx = torch.randperm(n * m, generator=g)[:spikes]
    w.view(-1)[idx] = size * torch.sign(torch.randn(spikes, generator=g, dtype=torch.float64))
    return w


@pytest.mark.parametrize("seed", range(3))
def test_planted_large_elements_are_traps_gaussian_is_not(seed):
    traps = htsr.analyze({"W": planted(seed)}, seed=seed)
    assert float(traps["htsr_num_traps"].sel(layer="W")) >= 1
    g = torch.Generator().manual_seed(100 + seed)
    clean = htsr.analyze({"W": torch.randn(400, 200, generator=g, dtype=torch.float64)}, seed=seed)
    assert float(clean["htsr_num_traps"].sel(layer="W")) == 0
    # shuffling leaves i.i.d. entries' ESD unchanged but not a correlated one
    assert float(clean["htsr_rand_distance"].sel(layer="W")) < 0.02


def test_trap_count_matches_weightwatcher_on_planted_matrix():
    ww = pytest.importorskip("weightwatcher")
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    lin = nn.Linear(200, 400, bias=False)
    with torch.no_grad():
        lin.weight.copy_(planted(0).float())
    np.random.seed(0)
    details = ww.WeightWatcher(model=nn.Sequential(lin)).analyze(randomize=True, mp_fit=True)
    ours = htsr.analyze(nn.Sequential(lin))
    # Shuffles differ, so compare the outcome, not the draw: both find the planted traps.
    assert details["num_traps"].iloc[0] >= 1
    assert float(ours["htsr_num_traps"].sel(layer="0")) >= 1
    assert float(ours["htsr_rand_bulk_max"].sel(layer="0")) == pytest.approx(
        details["rand_bulk_max"].iloc[0], rel=0.1
    )


def test_analyze_dataset_layout(trained_mlp):
    ds = htsr.analyze(trained_mlp)
    assert list(ds["layer"].values) == ["embed", "encoder.0", "readout", "model"]
    for info in htsr.METRICS:
        assert info.name in ds and ds[info.name].dims == ("layer",)
        assert ds.attrs["metric_info"][info.name]["description"]
    assert ds["spectrum"].dims == ("layer", "eig")
    # descending, NaN-padded; the model row has no spectrum
    emb = ds["spectrum"].sel(layer="embed").values
    assert np.all(np.diff(emb[np.isfinite(emb)]) <= 0)
    assert np.all(np.isnan(ds["spectrum"].sel(layer="model").values))
    assert float(ds["htsr_num_traps"].sel(layer="model")) == float(
        ds["htsr_num_traps"].sel(layer=["embed", "encoder.0", "readout"]).sum()
    )
    # a fixed seed fixes the shuffles
    again = htsr.analyze(trained_mlp)
    assert float(again["htsr_rand_distance"].sel(layer="embed")) == float(
        ds["htsr_rand_distance"].sel(layer="embed")
    )


def test_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        htsr.analyze(torch.ones(10))
    with pytest.raises(TypeError, match="floating-point"):
        htsr.analyze(torch.ones(30, 30, dtype=torch.int64))
    with pytest.raises(TypeError, match="floating-point"):
        htsr.analyze(torch.ones(30, 30, dtype=torch.complex64))
    with pytest.raises(ValueError, match="No weight"):
        htsr.analyze(nn.ReLU())
    ds = htsr.analyze({"zero": torch.zeros(60, 40), "inf": torch.full((60, 40), math.inf)})
    reasons = ds.attrs["nan_reasons"]
    assert math.isnan(float(ds["htsr_alpha"].sel(layer="zero")))
    assert "zero" in reasons["htsr_alpha"]["zero"]
    assert "non-finite" in reasons["htsr_alpha"]["inf"]
    tiny = htsr.analyze({"tiny": torch.randn(5, 3)})
    assert "min_evals" in tiny.attrs["nan_reasons"]["mp_softrank"]["tiny"]
    # every NaN has its reason
    for name in (m.name for m in htsr.METRICS):
        for layer in ("zero", "inf"):
            if math.isnan(float(ds[name].sel(layer=layer))):
                assert layer in reasons.get(name, {}), (name, layer)


def test_registered_diagnostic_records_per_layer_and_spectrum(mod_task, tmp_path):
    model = gw.models.MLP.for_task(mod_task, width=32, depth=1, embed_dim=24, seed=0)
    run = gw.train(mod_task, model, 20, diagnostics=["loss", "htsr"], cadence=10,
                   dir=tmp_path / "run", progress=False)  # fmt: skip
    ds = gw.open_run(tmp_path / "run")
    alpha = ds["metrics"].sel(metric="htsr_alpha")
    assert list(ds["step"].values) == [0, 10, 20]
    assert set(ds["layer"].values) >= {"embed", "encoder.0", "readout", "model"}
    assert np.isfinite(alpha.sel(layer="encoder.0").values).all()
    # The readout (11 outputs) has too few eigenvalues to fit: NaN, with the reason stored.
    assert np.isnan(alpha.sel(layer="readout").values).all()
    assert "too few" in ds.attrs["nan_reasons"]["htsr_alpha"]["readout"]
    # The stored spectrum is the layer's ESD at that step.
    w = dict(run.model.named_parameters())["encoder.0.weight"].detach().double()
    ref = np.sort((torch.linalg.svdvals(w) ** 2).numpy())[::-1]
    got = ds["spectrum"].sel(step=20, layer="encoder.0").values
    np.testing.assert_allclose(got[: ref.size], ref, rtol=1e-9)
    assert ds.attrs["metric_info"]["htsr_num_traps"]["source"].startswith("Prakash")
    # Stored metrics equal the function API on the final weights.
    direct = htsr.analyze(run.model, randomize=False)
    assert float(
        ds["metrics"].sel(step=20, layer="encoder.0", metric="mp_softrank")
    ) == pytest.approx(float(direct["mp_softrank"].sel(layer="encoder.0")), rel=1e-12)
