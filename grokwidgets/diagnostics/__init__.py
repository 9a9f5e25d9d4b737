"""Diagnostics: one module per family, each a set of functions registered by name."""

from grokwidgets.diagnostics import basic, geometry, htsr, kernel, phases, probes
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
    "geometry",
    "htsr",
    "kernel",
    "phases",
    "probes",
    "register",
    "register_group",
]
