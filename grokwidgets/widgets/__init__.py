"""Jupyter widgets of a run: :class:`LiveMonitor`, :class:`Explorer`, :class:`Compare`.

Each is an anywidget (a Python class and an ES module in ``static/``) drawing Vega-Lite
panels with the offline Vega bundle of vl-convert. Importing this package registers the
``ds.gw`` accessor; the widget classes (and anywidget) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from grokwidgets.train.loop import set_live_display
from grokwidgets.widgets._notebook import show_live
from grokwidgets.widgets.accessor import GrokAccessor

if TYPE_CHECKING:
    from grokwidgets.widgets.compare import Compare
    from grokwidgets.widgets.explorer import Explorer
    from grokwidgets.widgets.live import LiveMonitor

__all__ = ["Compare", "Explorer", "GrokAccessor", "LiveMonitor"]

_LAZY = {"LiveMonitor": "live", "Explorer": "explorer", "Compare": "compare"}
INSTALL_HINT = "pip install anywidget ipywidgets  (or: pip install grokwidgets)"

set_live_display(show_live)  # gw.train(live=True) shows a LiveMonitor in a notebook


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        msg = f"module 'grokwidgets.widgets' has no attribute {name!r}"
        raise AttributeError(msg)
    try:
        import anywidget  # noqa: F401
    except ImportError as err:
        msg = f"grokwidgets.widgets.{name} needs anywidget, which is not installed: {INSTALL_HINT}"
        raise ImportError(msg) from err
    import importlib

    module = importlib.import_module(f"grokwidgets.widgets.{_LAZY[name]}")
    return getattr(module, name)
