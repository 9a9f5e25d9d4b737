"""The widgets' ES modules: each widget's ``.js`` with the shared core and Vega, no CDN.

``static/_core.js`` (shared) and ``static/<widget>.js`` are bundled with Vega, Vega-Lite and
vega-embed by ``vl_convert.javascript_bundle`` (offline; no Node needed) into one ES module
per widget, cached on disk under a content hash, so the bundle is built once per version.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

STATIC = Path(__file__).parent / "static"


def cache_dir() -> Path:
    """Where bundled modules are kept (``$XDG_CACHE_HOME/grokwidgets/esm`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "grokwidgets" / "esm"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError:
        path = Path(tempfile.gettempdir()) / "grokwidgets-esm"
        path.mkdir(parents=True, exist_ok=True)
    return path


def source(widget_js: str) -> str:
    """The unbundled source of a widget: the shared core then the widget's module."""
    return (STATIC / "_core.js").read_text() + "\n" + (STATIC / widget_js).read_text()


def esm_path(widget_js: str) -> Path:
    """Path of the bundled ES module of ``static/<widget_js>`` (built on first use)."""
    from importlib.metadata import version

    import vl_convert as vlc

    src = source(widget_js)
    key = hashlib.sha256((version("vl-convert-python") + "\0" + src).encode()).hexdigest()[:16]
    target = cache_dir() / f"{Path(widget_js).stem}-{key}.js"
    if not target.exists():
        bundle = str(vlc.javascript_bundle(snippet=src))
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(bundle, encoding="utf-8")
        os.replace(tmp, target)
    return target
