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

#: The loss records' log grid (``Cadence.default()``) and the mechanism families' sparser one,
#: in their JSON form: presets that also need a linear grid take the union with it.
LOG_GRID: dict[str, int] = {"log_per_decade": 50, "linear_until": 100}
MECHANISM_LOG_GRID: dict[str, int] = {"log_per_decade": 10, "linear_until": 10}

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
    "htsr-anti-grokking": {
        "description": (
            "Anti-grokking, accelerated (Prakash & Martin 2025, arXiv:2506.04434): MLP "
            "784-200-200-10 ReLU, PyTorch default init then every parameter x 8, the first "
            "500 MNIST digits, MSE on one-hot, AdamW lr 5e-3 with betas (0.9, 0.95) and no "
            "weight decay, batches of 100 cycled from one permutation, float32, 30,000 steps "
            "(under 2 minutes on 2 cores). Train accuracy 100% within ~500 steps, test peaks "
            "near 0.7 at ~4k, then falls by about 0.2 while train stays fitted; the first "
            "layer's HTSR alpha falls towards 2 and its correlation traps grow through the "
            "fall. Departs from the paper's recipe (htsr-anti-grokking-paper) in beta2 (0.95, "
            "not 0.999), lr (10x), samples (500, not 1,000), batch (100, not 200), precision "
            "(float32) and length (3e4, not 1e7 steps). The paper's weight-decay control at "
            "this pace is train.weight_decay=0.25 (lr x wd x steps 37.5, the paper's 50)."
        ),
        "seed": 0,
        "task": {"family": "mnist", "n_train": 500, "n_test": 10000},
        "model": {"class": "MLP", "width": 200, "depth": 2, "init_scale": 8.0, "seed": 0},
        "train": {
            "steps": 30000,
            "optimizer": "adamw",
            "lr": 5e-3,
            "weight_decay": 0.0,
            "optimizer_kwargs": {"betas": [0.9, 0.95]},
            "batch_size": 100,
            "loss": "mse",
            "shuffle": "once",
            "diagnostics": ["basic", "htsr", "comparative", "phase_detector"],
            "cadence": {
                "default": {"union": [LOG_GRID, {"every": 250}]},
                "htsr": {"union": [MECHANISM_LOG_GRID, {"every": 500}]},
                "comparative": {"union": [MECHANISM_LOG_GRID, {"every": 500}]},
                "phase_detector": {"union": [MECHANISM_LOG_GRID, {"every": 500}]},
            },
            "checkpoint_cadence": {"union": [MECHANISM_LOG_GRID, {"every": 2000}]},
        },
    },
    "htsr-anti-grokking-paper": {
        "description": (
            "Anti-grokking, the paper's recipe (Prakash & Martin 2025, arXiv:2506.04434, "
            "Table 3): MLP 784-200-200-10 ReLU, PyTorch default init then every parameter "
            "x 8, the first 1,000 MNIST digits, the 10k test set, batch 200 cycled from one "
            "permutation, MSE on one-hot, AdamW lr 5e-4 with default betas, weight decay 0 "
            "(train.weight_decay=0.01 is the paper's control), float64, 10^7 steps: about "
            "8-10 hours on 2 cores. Checkpoints every 250,000 steps; `grokwidgets resume "
            "DIR` continues an interrupted run. The paper: train fit by 10^4-10^5 steps, test "
            "peak near 10^6, collapse to ~0.5 by 10^7; first-layer alpha 5.0 -> 3.6 -> 0.9."
        ),
        "seed": 0,
        "task": {"family": "mnist", "n_train": 1000, "n_test": 10000},
        "model": {"class": "MLP", "width": 200, "depth": 2, "init_scale": 8.0, "seed": 0},
        "train": {
            "steps": 10_000_000,
            "optimizer": "adamw",
            "lr": 5e-4,
            "weight_decay": 0.0,
            "batch_size": 200,
            "loss": "mse",
            "shuffle": "once",
            "dtype": "float64",
            "diagnostics": ["basic", "htsr", "comparative", "phase_detector"],
            "cadence": {
                "default": {"log_per_decade": 20, "linear_until": 10},
                "htsr": {"log_per_decade": 10, "linear_until": 10},
                "comparative": {"log_per_decade": 10, "linear_until": 10},
                "phase_detector": {"log_per_decade": 10, "linear_until": 10},
            },
            "checkpoint_cadence": {"every": 250000},
        },
    },
    "lazy-rich-polyreg": {
        "description": (
            "Lazy to rich (Kumar, Bordelon, Gershman & Pehlevan 2024, arXiv:2310.06110, Fig. 1): "
            "y = (beta.x)^2 / 2 on D = 100, P = 550 train and 1,000 test points; "
            "f(x) = alpha (1/N) sum_i phi(w_i.x) - f0(x), N = 500 hidden units, readout fixed "
            "at 1/N, W ~ N(0, 1), phi(z) = z + (eps/2) z^2; MSE, full-batch gradient descent "
            "with step 20 N / alpha^2 (train.lr_per_alpha2), 8,000 steps. alpha = 1, eps = "
            "0.1: train loss falls first while test loss rises, then test falls as the "
            "features align (about a minute on 2 cores). model.alpha (laziness) and "
            "task.epsilon (alignment) are the paper's two knobs; its Fig. 1 uses eps = 0.02 "
            "and step N / alpha^2, which need ~10^5 steps."
        ),
        "seed": 0,
        "task": {
            "family": "polynomial_regression",
            "d": 100,
            "n_train": 550,
            "n_test": 1000,
            "epsilon": 0.1,
            "variant": "fig1",
            "seed": 0,
        },
        "model": {
            "class": "MLP",
            "width": 500,
            "depth": 1,
            "alpha": 1.0,
            "centred": True,
            "init": "normal",
            "readout": "fixed",
            "bias": False,
            "seed": 0,
        },
        "train": {
            "steps": 8000,
            "optimizer": "sgd",
            "lr": 10000.0,
            "lr_per_alpha2": True,
            "loss": "mse",
            "diagnostics": ["basic", "ntk"],
        },
    },
    "lazy-rich-modular": {
        "description": (
            "Lazy to rich on modular addition (Kumar, Bordelon, Gershman & Pehlevan 2024, "
            "arXiv:2310.06110, Fig. 2): a + b mod 23 from 90% of the pairs, one-hot inputs "
            "concat(onehot(a), onehot(b)) (D = 46), one hidden layer of N = 100 units with "
            "phi(z) = z^2 and no biases, W ~ N(0, 1), output scaled by 1/(D N) and centred at "
            "init, MSE on one-hot targets, full-batch gradient descent lr 1e4, 3,000 steps "
            "(under a minute with ntk). Train accuracy reaches 99% near step 200, test "
            "accuracy 99% near step 280: at this output scale the delay is short. model.alpha "
            "is the output scale (1/(D N) = 1/4600)."
        ),
        "seed": 0,
        "task": {
            "family": "modular_arithmetic",
            "p": 23,
            "op": "+",
            "train_fraction": 0.9,
            "seed": 0,
            "encoding": "onehot",
        },
        "model": {
            "class": "MLP",
            "width": 100,
            "depth": 1,
            "activation": "square",
            "bias": False,
            "alpha": 1 / 4600,
            "centred": True,
            "init": "normal",
            "seed": 0,
        },
        "train": {
            "steps": 3000,
            "optimizer": "sgd",
            "lr": 10000.0,
            "loss": "mse",
            "diagnostics": ["basic", "ntk"],
        },
    },
}


def get_preset(name: str) -> dict[str, Any]:
    """A deep copy of the preset ``name``."""
    if name not in PRESETS:
        msg = f"Unknown preset {name!r}. Presets: {sorted(PRESETS)} (see `grokwidgets presets`)."
        raise KeyError(msg)
    return copy.deepcopy(PRESETS[name])
