"""Every preset builds and trains; the paper presets encode the papers' recipes."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import grokwidgets as gw
from grokwidgets.presets import PRESETS, get_preset
from grokwidgets.train.config import apply_overrides, run_config

SHARED_MNIST = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mnist.npz"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_runs_a_few_steps(name, tmp_path, monkeypatch):
    cfg = apply_overrides(get_preset(name), ["train.steps=3", 'train.diagnostics=["basic"]'])
    if cfg["task"]["family"] == "mnist":
        if not SHARED_MNIST.is_file():
            pytest.skip(f"needs the shared MNIST file at {SHARED_MNIST} (../shared is absent)")
        monkeypatch.setenv("GROKWIDGETS_DATA", str(SHARED_MNIST))
        cfg = apply_overrides(cfg, ["task.n_train=200", "task.n_test=50"])
    cfg["train"].pop("cadence", None)
    run = run_config(cfg, tmp_path / "run", progress=False)
    metric = "train_acc" if run.task.kind == "classification" else "train_loss"
    values = run.dataset().metrics.sel(metric=metric, layer="model")
    assert np.isfinite(values.values).all() and values.sizes["step"] == 4


def test_grok_vs_steady_is_the_papers_recipe(tmp_path):
    """Manning-Coe et al. (2025), mod_add/configs: P 113, fraction 0.7, [512] ReLU, Xavier
    normal with zero biases times w0, Adam lr 5e-3 wd 3e-5, batch 64."""
    cfg = get_preset("grok-vs-steady")
    task = gw.tasks.from_config(cfg["task"])
    assert task.n_train == round(0.7 * 113**2) and task.input_dim == 2 * 113
    model = gw.models.MLP.for_task(task, **{k: v for k, v in cfg["model"].items() if k != "class"})
    assert model.encoder[0].weight.shape == (512, 226) and model.readout.weight.shape == (113, 512)
    w = model.encoder[0].weight.detach().double()
    assert w.std().item() == pytest.approx(10 * math.sqrt(2 / (226 + 512)), rel=0.02)
    assert not model.encoder[0].bias.detach().any() and not model.readout.bias.detach().any()
    steady = apply_overrides(cfg, ["model.init_scale=0.1"])
    small = gw.models.MLP.for_task(
        task, **{k: v for k, v in steady["model"].items() if k != "class"}
    )
    torch.testing.assert_close(small.readout.weight * 100, model.readout.weight)
    r = cfg["train"]
    assert (r["optimizer"], r["lr"], r["weight_decay"], r["batch_size"]) == (
        "adam",
        5e-3,
        3e-5,
        64,
    )
    assert r["cadence"]["infogeo"] == {"every": task.n_train // 64}  # once an epoch


def test_htsr_anti_grokking_presets_encode_the_paper_and_its_acceleration():
    """Prakash & Martin (2025), Table 3: 784-200-200-10 ReLU, default init x 8, 1,000 digits,
    batch 200, MSE, AdamW lr 5e-4 default betas, no weight decay, float64, 1e7 steps; the
    accelerated preset departs only in data size, batch, lr, beta2, precision and length."""
    paper, fast = get_preset("htsr-anti-grokking-paper"), get_preset("htsr-anti-grokking")
    for cfg in (paper, fast):
        assert cfg["model"] == {
            "class": "MLP", "width": 200, "depth": 2, "init_scale": 8.0, "seed": 0
        }  # fmt: skip
        assert cfg["task"]["family"] == "mnist" and cfg["task"]["n_test"] == 10000
        assert "seed" not in cfg["task"]  # the first n digits, as the paper
        t = cfg["train"]
        assert (t["optimizer"], t["weight_decay"], t["loss"], t["shuffle"]) == (
            "adamw",
            0.0,
            "mse",
            "once",
        )
        assert {"htsr", "comparative", "phase_detector"} <= set(t["diagnostics"])
    p, f = paper["train"], fast["train"]
    assert paper["task"]["n_train"] == 1000 and (p["batch_size"], p["lr"]) == (200, 5e-4)
    assert p["dtype"] == "float64" and p["steps"] == 10**7 and "optimizer_kwargs" not in p
    assert fast["task"]["n_train"] == 500 and (f["batch_size"], f["lr"]) == (100, 5e-3)
    assert f["optimizer_kwargs"] == {"betas": [0.9, 0.95]} and "dtype" not in f
    # five batches an epoch in both; the paper's control (wd 0.01) at the accelerated pace is
    # the same total decay lr x wd x steps within 30% (37.5 vs 50; 50 at 40k steps)
    assert paper["task"]["n_train"] // p["batch_size"] == fast["task"]["n_train"] // f["batch_size"]
    assert 5e-3 * 0.25 * f["steps"] == pytest.approx(5e-4 * 0.01 * p["steps"], rel=0.3)


def test_lazy_rich_polyreg_is_kumar_et_al_fig1_accelerated(tmp_path):
    """Kumar et al. (2024), Fig. 1: D 100, P 550, N 500, readout fixed at 1/N, W ~ N(0, 1),
    f centred at init, full-batch GD with step c N / alpha^2 (here c = 20, eps = 0.1)."""
    cfg = apply_overrides(get_preset("lazy-rich-polyreg"), ["model.alpha=2", "train.steps=1"])
    run = run_config(cfg, tmp_path / "run", progress=False)
    model, task = run.model, run.task
    assert (task.input_dim, task.n_train, task.meta["epsilon"]) == (100, 550, 0.1)
    assert [n for n, _ in model.named_parameters()] == ["encoder.0.weight"]
    assert model.encoder[1].epsilon == 0.1 and model.alpha == 2.0
    assert run.optimizer.param_groups[0]["lr"] == pytest.approx(20 * 500 / 2**2)
    w0 = model.initial_parameters()["encoder.0.weight"].double()
    assert w0.std().item() == pytest.approx(1.0, rel=0.01)
    fresh = gw.models.from_config(model.config)  # centred: f = 0 at init
    assert not fresh(task.x_test[:5]).detach().any()


def test_lazy_rich_modular_is_kumar_et_al_fig2():
    """Kumar et al. (2024), Fig. 2: p 23, 90% train, bias-free x^2 net, N 100, output 1/(D N)."""
    cfg = get_preset("lazy-rich-modular")
    task = gw.tasks.from_config(cfg["task"])
    assert task.n_train == round(0.9 * 23**2) and task.input_dim == 46
    model = gw.models.MLP.for_task(task, **{k: v for k, v in cfg["model"].items() if k != "class"})
    assert model.encoder[0].weight.shape == (100, 46) and model.readout.weight.shape == (23, 100)
    assert model.encoder[0].bias is None and model.readout.bias is None
    assert model.alpha == pytest.approx(1 / (46 * 100))
    assert not model(task.x_test[:4]).detach().any()  # centred
