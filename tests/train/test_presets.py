"""Every preset builds and trains; the paper presets encode the papers' recipes."""

import math

import numpy as np
import pytest
import torch

import grokwidgets as gw
from grokwidgets.presets import PRESETS, get_preset
from grokwidgets.train.config import apply_overrides, run_config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_runs_a_few_steps(name, tmp_path):
    if name == "mnist-omnigrok":
        pytest.skip("needs MNIST: tested with the MNIST task")
    cfg = apply_overrides(get_preset(name), ["train.steps=3", 'train.diagnostics=["basic"]'])
    cfg["train"].pop("cadence", None)
    run = run_config(cfg, tmp_path / "run", progress=False)
    acc = run.dataset().metrics.sel(metric="train_acc", layer="model")
    assert np.isfinite(acc.values).all() and acc.sizes["step"] == 4


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
