"""The offline Vega, Vega-Lite and vega-embed script (vl-convert's bundle, no CDN)."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """Vega + vega-lite + vega-embed as one script (from vl-convert, no network)."""
    import vl_convert as vlc

    return str(vlc.javascript_bundle())  # type: ignore[call-arg]
