"""Altair, imported on first use.

Importing altair costs about 1.4 s (its schema classes and jsonschema's format checkers), and
most processes that import grokwidgets never draw a chart: a training loop, ``grokwidgets
train``, a sweep's dask workers. The chart modules take ``alt`` from here; the real import
happens when a chart is first built.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import TYPE_CHECKING


def _lazy(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        msg = f"{name} is not installed (pip install {name})."
        raise ModuleNotFoundError(msg)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


if TYPE_CHECKING:
    import altair as alt
else:
    alt = _lazy("altair")
