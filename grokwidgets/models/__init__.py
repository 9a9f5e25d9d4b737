"""Models: an MLP (encoder/readout, output scale α), a one-layer transformer, linearizations."""

from __future__ import annotations

from typing import Any

from torch import nn

from grokwidgets.models.linearized import LINEARIZABLE, Linearized
from grokwidgets.models.mlp import MLP
from grokwidgets.models.transformer import Transformer
from grokwidgets.tasks.base import check_kwargs

__all__ = ["MLP", "Linearized", "Transformer", "from_config"]

_CLASSES: dict[str, type[nn.Module]] = {**LINEARIZABLE, "Linearized": Linearized}


def from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild a model from its ``model.config`` (``{"class": name, **kwargs}``).

    The same config (which includes the seed) gives the same parameters.

    Raises
    ------
    ValueError
        If the class is unknown or a parameter is not one the class takes.
    """
    cfg = dict(config)
    name = cfg.pop("class", None)
    if name not in _CLASSES:
        msg = f"Unknown model class {name!r}. Known classes: {sorted(_CLASSES)}."
        raise ValueError(msg)
    cls = _CLASSES[name]
    check_kwargs(cls, cfg, what=f"model {name!r}")
    return cls(**cfg)
