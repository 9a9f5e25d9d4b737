"""The experiments by name: a task, a model and a training recipe each.

A preset is a JSON-able dict ``{"description", "task", "model", "train"}``; ``--set key=value``
on the command line changes any field (``task.p=113``, ``train.steps=5000``, ``seed=1``).
"""

from __future__ import annotations

import copy
from typing import Any

#: What the ``modular-addition`` demo records: the loss, weights and gradient norm at every
#: loss record, and the mechanism families on their own sparser grid (their default cadence).
MECHANISM_SUITE: tuple[str, ...] = (
    "basic",
    "probes",
    "geometry",
    "ntk",
    "htsr",
    "li2",
    "comparative",
    "phase_detector",
)

PRESETS: dict[str, dict[str, Any]] = {
    "modular-addition": {
        "description": (
            "Grokking demo: a + b mod 97 from 30% of the pairs, embedding MLP, AdamW with "
            "strong weight decay (Power et al. 2022; Liu et al. 2022). Train accuracy reaches "
            "100% early, test accuracy much later. Records the mechanism suite (probes, "
            "geometry, NTK, HTSR, Li2, comparators, phase detector) on its sparser log grid."
        ),
        "seed": 0,
        "task": {
            "family": "modular_arithmetic",
            "p": 97,
            "op": "+",
            "train_fraction": 0.3,
            "seed": 0,
        },
        "model": {"class": "MLP", "width": 256, "depth": 1, "embed_dim": 128, "seed": 0},
        "train": {
            "steps": 6000,
            "optimizer": "adamw",
            "lr": 3e-3,
            "weight_decay": 1.0,
            "diagnostics": list(MECHANISM_SUITE),
        },
    },
    "mnist-omnigrok": {
        "description": (
            "MNIST grokking (Liu, Michaud & Tegmark 2022, Omnigrok): 1,000 training digits, "
            "MLP 784-200-200-10 with init scale 8, MSE, AdamW lr 1e-3 wd 0.01, batch 200. "
            "Test accuracy rises long after train accuracy (about 5 minutes on 2 cores)."
        ),
        "seed": 0,
        "task": {"family": "mnist", "n_train": 1000, "n_test": 10000},
        "model": {"class": "MLP", "width": 200, "depth": 2, "init_scale": 8.0, "seed": 0},
        "train": {
            "steps": 100000,
            "optimizer": "adamw",
            "lr": 1e-3,
            "weight_decay": 0.01,
            "batch_size": 200,
            "loss": "mse",
            "shuffle": "once",
        },
    },
    "li2-modular": {
        "description": (
            "Li2 (Tian 2025, arXiv:2509.21519): a + b mod 23 from half the pairs, one-hot "
            "inputs concat(onehot(a), onehot(b)), sigma(XW)V with x^2 activation and no biases "
            "(256 hidden nodes), the centred one-hot MSE of the paper's code (summed over "
            "classes), Adam with coupled L2 weight decay 5e-4, lr 1e-3, full batch. The train "
            "fraction 0.5 is above the critical 2.7482 ln M / M = 0.375: train accuracy 100% by "
            "step ~40, test 90% at ~800; at 0.3 it only memorizes. The paper's defaults: "
            "task.p=127 model.width=512 train.weight_decay=1e-4 task.train_fraction=0.3."
        ),
        "seed": 0,
        "task": {
            "family": "modular_arithmetic",
            "p": 23,
            "op": "+",
            "train_fraction": 0.5,
            "seed": 0,
            "encoding": "onehot",
        },
        "model": {
            "class": "MLP",
            "width": 256,
            "depth": 1,
            "activation": "square",
            "bias": False,
            "seed": 0,
        },
        "train": {
            "steps": 3000,
            "optimizer": "adam",
            "lr": 1e-3,
            "weight_decay": 5e-4,
            "loss": "centred_mse",
            "diagnostics": ["basic", "li2"],
        },
    },
    "grok-vs-steady": {
        "description": (
            "Grokking vs steady learning (Manning-Coe et al. 2025, arXiv:2502.01739): a + b "
            "mod 113 from 70% of the pairs, two-hot inputs concat(onehot(a), onehot(b)), one "
            "hidden layer of 512 ReLU, Xavier-normal init with zero biases times the weight "
            "multiplier w0 = 10, cross-entropy, Adam (coupled L2) lr 5e-3, weight decay 3e-5, "
            "batch 64 (139 steps an epoch). w0 = 10 groks: train 99% near step 1,800, test "
            "90% near 8,000; model.init_scale=0.1 learns steadily (test 90% near 1,000). "
            "15,000 steps = 108 epochs (the paper trains 10^4 epochs)."
        ),
        "seed": 0,
        "task": {
            "family": "modular_arithmetic",
            "p": 113,
            "op": "+",
            "train_fraction": 0.7,
            "seed": 0,
            "encoding": "onehot",
        },
        "model": {
            "class": "MLP",
            "width": 512,
            "depth": 1,
            "activation": "relu",
            "init": "xavier_normal",
            "init_scale": 10.0,
            "seed": 0,
        },
        "train": {
            "steps": 15000,
            "optimizer": "adam",
            "lr": 5e-3,
            "weight_decay": 3e-5,
            "batch_size": 64,
            "diagnostics": ["basic", "li2", "compress", "infogeo"],
            "cadence": {"infogeo": {"every": 139}, "compress": {"every": 139}},
        },
    },
}


def get_preset(name: str) -> dict[str, Any]:
    """A deep copy of the preset ``name``."""
    if name not in PRESETS:
        msg = f"Unknown preset {name!r}. Presets: {sorted(PRESETS)} (see `grokwidgets presets`)."
        raise KeyError(msg)
    return copy.deepcopy(PRESETS[name])
