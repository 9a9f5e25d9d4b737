"""Diagnostics: one module per family, each a set of functions registered by name."""

from grokwidgets.diagnostics import basic, htsr, phases
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
    "htsr",
    "phases",
    "register",
    "register_group",
]
