"""Diagnostics: one module per family, each a set of functions registered by name.

A leaf of the package: it knows torch, numpy and scipy, the tasks and models, never the store,
the monitor, training or widgets. ``compute_at`` (recompute at a checkpoint) lives in
:mod:`grokwidgets.replay` and is also reachable here as ``gw.diagnostics.compute_at``.
"""

from grokwidgets.diagnostics import (
    basic,
    comparative,
    compress,
    detector,
    geometry,
    htsr,
    infogeo,
    kernel,
    li2,
    phases,
    probes,
)
from grokwidgets.diagnostics.registry import (
    Diagnostic,
    MetricInfo,
    available,
    register,
    register_group,
)

__all__ = [
    "Diagnostic",
    "MetricInfo",
    "available",
    "basic",
    "comparative",
    "compress",
    "detector",
    "geometry",
    "htsr",
    "infogeo",
    "kernel",
    "li2",
    "phases",
    "probes",
    "register",
    "register_group",
]
