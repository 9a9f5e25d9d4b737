r"""Basic diagnostics: loss and accuracy, weight norms, distance from init, gradient norm.

Registered as ``loss``, ``weights`` and ``grad_norm``; the group ``basic`` holds all three.

Formulas (:math:`W` a layer's weight, :math:`\theta` all parameters, subscript 0 the values
when the run started):

.. math::

    \text{weight\_norm} = \|W\|_F, \qquad
    \text{param\_norm} = \|\theta\|_2, \qquad
    \text{rel\_change} = \frac{\|W - W_0\|_F}{\|W_0\|_F}

The relative change from init is the laziness measure of Kumar et al. (2024),
arXiv:2310.06110 (who use its square); weight norm growth is the grokking signature of
Liu, Michaud & Tegmark (2022), arXiv:2210.01117.
"""

from __future__ import annotations

import math
from typing import cast

import torch

from grokwidgets.diagnostics.probe import Probe
from grokwidgets.diagnostics.registry import MetricInfo, register, register_group

_OMNIGROK = "Liu, Michaud & Tegmark (2022) Omnigrok, arXiv:2210.01117"
_KUMAR = "Kumar, Bordelon, Gershman & Pehlevan (2024), arXiv:2310.06110"
_POWER = "Power et al. (2022) Grokking, arXiv:2201.02177"


@register(
    "loss",
    metrics=[
        MetricInfo("train_loss", "training loss on the whole train split", "loss", _POWER),
        MetricInfo("test_loss", "training loss on the whole test split", "loss", _POWER),
        MetricInfo("train_acc", "accuracy on the train split (classification)", "1", _POWER),
        MetricInfo("test_acc", "accuracy on the test split (classification)", "1", _POWER),
    ],
)
def loss_and_accuracy(probe: Probe) -> dict[str, float]:
    """Loss on both splits, and accuracy for classification tasks."""
    out: dict[str, float] = {}
    for split in ("train", "test"):
        out[f"{split}_loss"] = probe.loss(split)
        if probe.task is not None and probe.task.kind == "classification":
            out[f"{split}_acc"] = probe.accuracy(split)
    return out


def _remember_init(probe: Probe) -> None:
    for name, param in probe.model.named_parameters():
        probe.state[f"init.{name}"] = param.detach().clone()


@register(
    "weights",
    metrics=[
        MetricInfo("weight_norm", "Frobenius norm of the layer's weight", "1", _OMNIGROK),
        MetricInfo("param_norm", "L2 norm of all parameters", "1", _OMNIGROK),
        MetricInfo(
            "rel_change",
            "relative distance from init ||W - W0|| / ||W0|| (all parameters for 'model')",
            "1",
            _KUMAR,
        ),
    ],
    setup=_remember_init,
)
def weights(probe: Probe) -> dict[str, float | dict[str, float]]:
    """Per-layer weight norm and distance from init; the same over all parameters."""
    weight_norm: dict[str, float] = {}
    rel_change: dict[str, float] = {}
    total_sq = 0.0
    diff_sq = 0.0
    init_sq = 0.0
    params = dict(probe.model.named_parameters())
    with torch.no_grad():
        for name, param in params.items():
            sq = float(param.square().sum())
            total_sq += sq
            init = probe.state.get(f"init.{name}")
            if init is not None:
                diff_sq += float((param - init).square().sum())
                init_sq += float(init.square().sum())
        for path, module in probe.layers.items():
            w = cast(torch.Tensor, module.weight)
            weight_norm[path] = float(torch.linalg.vector_norm(w))
            init = probe.state.get(f"init.{path}.weight")
            if init is not None:
                w0 = float(torch.linalg.vector_norm(init))
                rel_change[path] = (
                    float(torch.linalg.vector_norm(w - init)) / w0 if w0 else math.nan
                )
    out: dict[str, float | dict[str, float]] = {
        "weight_norm": weight_norm,
        "param_norm": math.sqrt(total_sq),
    }
    if init_sq:
        rel_change["model"] = math.sqrt(diff_sq / init_sq)
    if rel_change:
        out["rel_change"] = rel_change
    return out


@register(
    "grad_norm",
    metrics=[
        MetricInfo(
            "grad_norm",
            "norm of the gradient held in .grad when recorded (gw.train: the training-loss "
            "gradient at this step; full batch: on the whole train split)",
            "1",
            "",
        )
    ],
)
def grad_norm(probe: Probe) -> dict[str, dict[str, float]]:
    """Per-layer and total norm of the gradients present on the parameters."""
    per_layer: dict[str, float] = {}
    total_sq = 0.0
    seen = False
    with torch.no_grad():
        for param in probe.model.parameters():
            if param.grad is not None:
                seen = True
                total_sq += float(param.grad.square().sum())
        for path, module in probe.layers.items():
            g = cast(torch.Tensor, module.weight).grad
            if g is not None:
                per_layer[path] = float(torch.linalg.vector_norm(g))
    if not seen:
        return {}
    per_layer["model"] = math.sqrt(total_sq)
    return {"grad_norm": per_layer}


register_group("basic", ["loss", "weights", "grad_norm"])
