"""The base of the panel widgets: synced state, streaming of frames, static forms."""

from __future__ import annotations

import base64
import html
import json
import os
import uuid
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets
import vl_convert as vlc
import xarray as xr

from grokwidgets.views.frame import Table
from grokwidgets.views.panels import dataset_names, inline_spec, panel_spec, panels_for
from grokwidgets.views.story import empty_story, story
from grokwidgets.views.stream import DEFAULT_BUDGET, Stream, tables_equal
from grokwidgets.views.tables import concat, empty_current
from grokwidgets.views.vega import vega_bundle


class PanelWidget(anywidget.AnyWidget):
    """Panels of a run (Vega-Lite), fed by snapshots (a trait) and row deltas (messages).

    Subclasses set ``_esm`` and feed rows with :meth:`_feed`.
    """

    # public state
    status = traitlets.Unicode("").tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    #: The story's events (:func:`grokwidgets.views.story.timeline`), each a dict with
    #: ``step``, ``kind``, ``text`` and ``label`` (``"step 4,571: test accuracy ≥ 95% ..."``).
    timeline = traitlets.List(traitlets.Dict()).tag(sync=True)
    # private state
    _specs = traitlets.List(traitlets.Dict()).tag(sync=True)
    _snapshot = traitlets.Bytes(b"").tag(sync=True)
    _uid = traitlets.Unicode().tag(sync=True)

    @traitlets.default("_uid")
    def _make_uid(self) -> str:
        return uuid.uuid4().hex

    #: Add a static PNG to the cell's output, shown where no kernel runs (saved notebooks).
    static_fallback: bool = True

    def __init__(self, *, budget: int = DEFAULT_BUDGET, cursor: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self._stream = Stream(budget=budget)
        self._cursor = cursor
        self.bytes_sent: list[int] = []  # size of each frame sent (benchmarks read it)
        self._display_ids: list[str] = []  # outputs showing this widget (display ids)
        self.on_msg(self._on_front_end)

    def _on_front_end(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "resync":
            self._resnapshot()

    # -- panels and rows ---------------------------------------------------------------------
    def _set_panels(self, names: set[str]) -> None:
        """Show the panels that the recorded or declared ``names`` call for."""
        panels = panels_for(names)
        if [p.id for p in panels] == self.panels:
            return  # building the specs (Altair) costs ms per push: only when panels change
        specs = []
        for panel in panels:
            spec = panel_spec(panel, cursor=self._cursor)
            spec["usermeta"]["datasets"] = sorted(dataset_names(spec))
            specs.append(spec)
        self._specs = specs

    def _story(self, ds: xr.Dataset) -> dict[str, Table]:
        """Tell the story of ``ds`` (every record the widget shows): set :attr:`timeline`.

        Returns the story's datasets (phase bands, time-to-grok mark) to send: those that
        differ from what the front end holds.
        """
        told = story(ds)
        self.timeline = [e.to_dict() for e in told.timeline]
        held = self._stream.current
        return {
            name: table
            for name, table in told.tables().items()
            if name not in held or not tables_equal(held[name], table)
        }

    def _feed(self, series: dict[str, Table], current: dict[str, Table] | None = None) -> None:
        """Send new time-series rows (and replaced step state): a delta, or a new snapshot."""
        kind, frame = self._stream.extend(series, current)
        if kind == "empty":  # every row was already shown
            return
        self.bytes_sent.append(len(frame))
        if kind == "snapshot":
            self._snapshot = frame
        else:
            self.send({"type": "frame"}, [frame])

    def _resnapshot(self) -> None:
        frame = self._stream.snapshot()
        self.bytes_sent.append(len(frame))
        self._snapshot = frame

    @property
    def panels(self) -> list[str]:
        """Ids of the panels shown (``loss``, ``accuracy``, ``representation``, ...)."""
        return [str(s["usermeta"]["panel"]) for s in self._specs]

    def tables(self) -> dict[str, Table]:
        """Every dataset as the panels would draw it now (full history, not downsampled)."""
        out: dict[str, Table] = {**empty_current(), **empty_story()}
        for name, chunks in self._stream.history.items():
            out[name] = concat(chunks)
        out.update(self._stream.current)
        step = getattr(self, "step", None)
        out["cursor"] = {"step": np.asarray([step] if step is not None and step > 0 else [], float)}
        return out

    def static_tables(self) -> dict[str, Table]:
        """:meth:`tables` with each time series downsampled as in the browser (for static forms)."""
        out = self.tables()
        for name in self._stream.history:
            out[name] = self._stream.downsampled(name)
        return out

    # -- static forms ----------------------------------------------------------------------
    def static_specs(self) -> list[dict[str, Any]]:
        """The panels' Vega-Lite specs with their data inlined (downsampled as shown)."""
        tables = self.static_tables()
        return [inline_spec(s, tables) for s in self._specs]

    def _static_chart(self) -> dict[str, Any]:
        specs = self.static_specs()
        datasets: dict[str, Any] = {}
        for s in specs:
            s.pop("$schema", None)
            s.pop("config", None)
            datasets.update(s.pop("datasets", {}))
        return {
            "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
            "datasets": datasets,
            "vconcat": specs,
            "resolve": {"scale": {"color": "independent", "strokeDash": "independent"}},
        }

    def to_png(self, path: str | os.PathLike[str] | None = None, scale: float = 1.0) -> bytes:
        """The panels as a PNG (vl-convert); written to ``path`` when given."""
        if not self._specs:
            msg = f"Nothing to draw yet ({self.message or 'no panels'})."
            raise ValueError(msg)
        png = bytes(vlc.vegalite_to_png(self._static_chart(), scale=scale))
        if path is not None:
            Path(path).write_bytes(png)
        return png

    def to_html(self, path: str | os.PathLike[str] | None = None) -> str:
        """A self-contained HTML page of the panels (Vega inlined from vl-convert, no CDN)."""
        specs = json.dumps(self.static_specs()).replace("</", "<\\/")
        note = html.escape(" — ".join(x for x in (self.status, self.message) if x))
        items = "".join(
            f'<li data-step="{e["step"]}">{html.escape(str(e["label"]))}</li>'
            for e in self.timeline
        )
        timeline = f'<ol class="gw-timeline">{items}</ol>' if items else ""
        page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>grokwidgets</title>
<script>{vega_bundle()}</script></head><body>
<p>{note}</p>{timeline}<div id="gw"></div>
<script>
const specs = {specs};
for (const spec of specs) {{
  const el = document.createElement("div");
  document.getElementById("gw").appendChild(el);
  vegaEmbed(el, spec, {{actions: false}}).catch((err) => {{
    el.style.color = "#b00020"; el.textContent = "This panel failed to render: " + err;
  }});
}}
</script></body></html>
"""
        if path is not None:
            Path(path).write_text(page, encoding="utf-8")
        return page

    def _repr_mimebundle_(self, **kwargs: Any) -> tuple[dict, dict] | None:  # type: ignore[override]
        out = super()._repr_mimebundle_(**kwargs)
        if out is None:
            return None
        data, meta = out
        data["text/plain"] = self._text()
        # Without rows there is nothing to draw (and log axes over no data have no size).
        if self.static_fallback and self._specs and self._stream.history:
            try:
                data["image/png"] = base64.b64encode(self.to_png()).decode()
            except Exception as err:  # noqa: BLE001 (the live view must show regardless)
                data["text/plain"] += f"\n(static image failed: {err})"
        return data, meta

    def _ipython_display_(self) -> None:
        """Show the widget under a new display id, so :meth:`update_displays` can redraw it.

        IPython calls this for ``display(widget)`` and for a widget ending a cell. The output
        is the same bundle as :meth:`_repr_mimebundle_` (the live view, its static PNG and
        text), published as ``display_data`` with a ``display_id``.
        """
        from IPython.display import display

        out = self._repr_mimebundle_()
        if out is None:
            display({"text/plain": self._text()}, raw=True)
            return
        data, meta = out
        display_id = uuid.uuid4().hex
        self._display_ids.append(display_id)
        display(data, raw=True, metadata=meta, display_id=display_id)

    def update_displays(self) -> None:
        """Redraw every output of this widget (see :meth:`_ipython_display_`) with its state now.

        Sends ``update_display_data`` with a fresh bundle, so the static PNG a saved notebook
        keeps shows the latest state (e.g. the end of a live run), not the one at display
        time. The live view re-renders from the state it holds. Never raises: a failure is
        shown in :attr:`message`.
        """
        if not self._display_ids:
            return
        try:
            from IPython.display import update_display

            out = self._repr_mimebundle_()
            if out is None:
                return
            data, meta = out
            for display_id in list(self._display_ids):
                update_display(data, raw=True, metadata=meta, display_id=display_id)
        except Exception as err:  # noqa: BLE001 (the run and the live view go on regardless)
            self.message = f"could not update the saved image: {err}"

    def _text(self) -> str:
        rows = {
            k: len(v["step"]) for k, v in self.tables().items() if "step" in v and k != "cursor"
        }
        parts = [f"{type(self).__name__}: panels {self.panels or 'none'}"]
        if self.status or self.message:
            parts.append(" — ".join(x for x in (self.status, self.message) if x))
        parts.append(f"rows: {rows}")
        parts += [str(e["label"]) for e in self.timeline]
        return "\n".join(parts)
