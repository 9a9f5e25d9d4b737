"""Stream 10^5 points in chunks of 100 into a LiveMonitor rendered in Chromium.

Measures, per update: bytes sent (the binary delta frame) and the latency from the frame's
arrival in the page to the Vega view having re-run (median, p95), against re-sending the
whole spec with all rows inlined (what Altair's ``JupyterChart`` does on each change).

The page hosts the widget's real bundled ES module with a minimal stand-in for the anywidget
model (get/set/on/off/send), so the numbers are the front end's, not the websocket's.

Run: ``nice -n 19 .venv/bin/python bench/widget_stream.py [--points 100000] [--chunk 100]``.
Writes ``bench/out/widget_stream.json``.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import time
from pathlib import Path

import numpy as np

from grokwidgets.store.records import Record
from grokwidgets.widgets import LiveMonitor
from grokwidgets.widgets._follow import records_dataset
from grokwidgets.widgets._panels import inline_spec

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

HARNESS = """
async ([src, state]) => {
  class Model {
    constructor(s) { this.s = s; this.h = {}; }
    get(k) { return this.s[k]; }
    set(k, v) { this.s[k] = v; this.emit("change:" + k); }
    on(e, f) { (this.h[e] ??= []).push(f); }
    off(e, f) { this.h[e] = (this.h[e] ?? []).filter((g) => g !== f); }
    emit(e, ...a) { for (const f of this.h[e] ?? []) f(...a); }
    send() {}
    save_changes() {}
  }
  const url = URL.createObjectURL(new Blob([src], { type: "text/javascript" }));
  const mod = (await import(url)).default;
  const model = new Model(state);
  window.gwModel = model;
  mod.initialize({ model });
  const el = document.getElementById("el");
  await mod.render({ model, el });
  return true;
}
"""

DELIVER = """
async ([b64, snapshot, seq]) => {
  const bin = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const dv = new DataView(bin.buffer);
  const el = document.querySelector("#el .gw-root > div:last-child");
  const t0 = performance.now();
  if (snapshot) window.gwModel.set("_snapshot", dv);
  else window.gwModel.emit("msg:custom", { type: "frame" }, [dv]);
  while (el.dataset.seq !== String(seq)) await new Promise((r) => setTimeout(r, 0));
  return performance.now() - t0;
}
"""

RESEND = """
async ([spec]) => {
  const el = document.getElementById("full");
  const t0 = performance.now();
  el.innerHTML = "";
  const res = await vegaEmbedFull(el, JSON.parse(spec), { actions: false, renderer: "canvas" });
  const dt = performance.now() - t0;
  res.finalize();
  return dt;
}
"""


def chunk_dataset(start: int, n: int):
    recs = []
    for s in range(start, start + n):
        r = Record(step=s)
        r.values[("model", "train_loss")] = float(1.0 / np.sqrt(s) + 0.05 * np.sin(s / 50))
        recs.append(r)
    return records_dataset(recs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--resend-samples", type=int, default=8)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    live = LiveMonitor(chunk_dataset(1, args.chunk), min_interval=0.0)
    live.static_fallback = False
    frames: list[tuple[bytes, bool, int]] = []
    live.send = lambda content, buffers=None: frames.append((bytes(buffers[0]), False, 0))
    live.observe(lambda ch: frames.append((bytes(ch["new"]), True, 0)), names="_snapshot")
    src = live._esm if isinstance(live._esm, str) else Path(str(live._esm)).read_text()
    state = {"_uid": "bench", "_specs": live._specs, "status": "", "message": ""}
    first = bytes(live._snapshot)

    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 900, "height": 700})
        page.set_content('<html><body><div id="el"></div><div id="full"></div></body></html>')
        page.evaluate(HARNESS, [src, state])
        page.evaluate(DELIVER, [base64.b64encode(first).decode(), True, live._stream.seq])
        lat, sizes, kinds = [], [], []
        t_start = time.perf_counter()
        for start in range(1 + args.chunk, args.points + 1, args.chunk):
            frames.clear()
            t0 = time.perf_counter()
            live.push(chunk_dataset(start, args.chunk))
            py_ms = (time.perf_counter() - t0) * 1e3
            for data, snap, _ in frames:
                ms = page.evaluate(
                    DELIVER, [base64.b64encode(data).decode(), snap, live._stream.seq]
                )
                lat.append(ms + py_ms)
                sizes.append(len(data))
                kinds.append("snapshot" if snap else "delta")
        wall = time.perf_counter() - t_start
        rows = int(page.evaluate("() => document.querySelector('.gw-panel').dataset.rows"))

        # Baseline: the whole spec with every row inlined, re-embedded on each change.
        page.add_script_tag(
            content=__import__("grokwidgets.report.html", fromlist=["x"]).vega_bundle()
        )
        page.evaluate("() => { window.vegaEmbedFull = window.vegaEmbed; }")
        spec = live._specs[0]
        full = live.tables()
        resend_ms, resend_bytes = [], []
        n_total = len(full["loss"]["step"])
        for k in np.linspace(n_total / args.resend_samples, n_total, args.resend_samples):
            part = {"loss": {c: v[: int(k)] for c, v in full["loss"].items()}}
            text = json.dumps(inline_spec(spec, part))
            resend_bytes.append((int(k), len(text)))
            resend_ms.append((int(k), page.evaluate(RESEND, [text])))
        browser.close()

    deltas = [s for s, k in zip(sizes, kinds, strict=True) if k == "delta"]
    snaps = [s for s, k in zip(sizes, kinds, strict=True) if k == "snapshot"]
    result = {
        "points": args.points,
        "chunk": args.chunk,
        "updates": len(lat),
        "latency_ms_median": statistics.median(lat),
        "latency_ms_p95": float(np.percentile(lat, 95)),
        "delta_bytes_median": statistics.median(deltas) if deltas else None,
        "bytes_per_point_deltas": (statistics.median(deltas) / args.chunk) if deltas else None,
        "snapshots": len(snaps),
        "snapshot_bytes_max": max(snaps) if snaps else 0,
        "total_bytes": sum(sizes),
        "raw_points_bytes_float64": args.points * 20,
        "rows_in_browser_at_end": rows,
        "wall_s": wall,
        "resend_whole_spec": [
            {"rows": n, "bytes": b, "embed_ms": ms}
            for (n, b), (_, ms) in zip(resend_bytes, resend_ms, strict=True)
        ],
    }
    (out / "widget_stream.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
