"""Stream 10^5 points in chunks of 100 into a LiveMonitor and time each update.

Two arms, in headless Debian Chromium (never ``playwright install``):

``lab``
    JupyterLab on localhost, one notebook, one kernel. A LiveMonitor shown in a cell gets
    ``push(chunk)`` calls run in the kernel one at a time (each request waits for the view
    to have applied the previous frame, so updates never queue). Per update: latency from
    the kernel sending the frame (and from the ``push()`` call) to the view updated (the
    panel's ``data-seq`` set once the Vega views re-ran and drew), the frame's bytes and the
    bytes of widget messages (``comm_msg``) that crossed JupyterLab's websocket. The peer,
    in the same kernel and page: Altair's ``JupyterChart`` (offline bundle) given the chart
    with every row so far, which re-sends the whole spec; its view is updated when its
    canvas has stopped drawing after the change (the canvas's last ``restore()``).
``bare``
    The widget's bundled ES module in a blank page with a stand-in for the anywidget model:
    from the frame's arrival in the page to the view updated (the front end alone, no
    websocket), plus the Python ``push()``.

Kernel and browser clocks are the same machine's wall clock (``time.time()`` and
``performance.timeOrigin + performance.now()``); their offset is printed.

Run: ``nice -n 19 .venv/bin/python bench/widget_stream.py [--points 100000] [--chunk 100]
[--arms lab,bare]``. Prints a markdown table; writes ``bench/out/widget_stream.json``.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # tests._chromium: Chromium's path and flags, JupyterLab

from grokwidgets.store.records import Record, records_dataset  # noqa: E402
from grokwidgets.views.panels import inline_spec  # noqa: E402


def chunk_dataset(start: int, n: int):
    """Records of steps ``start .. start + n - 1`` holding a train loss (one point each)."""
    recs = []
    for s in range(start, start + n):
        r = Record(step=s)
        r.values[("model", "train_loss")] = float(1.0 / np.sqrt(s) + 0.05 * np.sin(s / 50))
        recs.append(r)
    return records_dataset(recs)


def _stats(xs: Sequence[float]) -> dict[str, float]:
    return {
        "median": float(statistics.median(xs)),
        "p95": float(np.percentile(xs, 95)),
        "n": len(xs),
    }


# -- the lab arm ---------------------------------------------------------------------------

# Before any page script: count the bytes of widget messages received on websockets, and
# stamp the last drawing of any canvas inside an element marked data-bench.
INIT_SCRIPT = """
(() => {
  const dec = new TextDecoder();
  window.__gwWs = { commBytes: 0, bytes: 0 };
  const WS = window.WebSocket;
  window.WebSocket = class extends WS {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (ev) => {
        const d = ev.data;
        let size = 0, head = "";
        if (typeof d === "string") { size = new Blob([d]).size; head = d.slice(0, 2000); }
        else if (d instanceof ArrayBuffer) {
          size = d.byteLength; head = dec.decode(new Uint8Array(d, 0, Math.min(2000, size)));
        }
        window.__gwWs.bytes += size;
        if (/"msg_type":\\s*"comm_msg"/.test(head)) window.__gwWs.commBytes += size;
      });
    }
  };
  const P = CanvasRenderingContext2D.prototype, restore = P.restore;
  P.restore = function () {
    const out = restore.call(this);
    const host = this.canvas && this.canvas.closest && this.canvas.closest("[data-bench]");
    if (host) host.__lastPaint = performance.now();
    return out;
  };
})();
"""

KERNEL_SETUP = """
import json, sys, time
sys.path.insert(0, {bench!r}); sys.path.insert(0, {root!r})
from widget_stream import chunk_dataset
from grokwidgets.widgets import LiveMonitor
CHUNK = {chunk}
live = LiveMonitor(chunk_dataset(1, CHUNK), min_interval=0.0)
live.static_fallback = False
SENT, LOG, JC = [], [], []
_send = live.send
def _send_stamped(*args, **kwargs):
    out = _send(*args, **kwargs)
    SENT.append(time.time() * 1e3)
    return out
live.send = _send_stamped
live.observe(lambda change: SENT.append(time.time() * 1e3), names="_snapshot")
def push_next(start):
    ds = chunk_dataset(start, CHUNK)
    n0, t0 = len(SENT), time.time() * 1e3
    live.push(ds)
    st = live._stream
    LOG.append({{"seq": st.seq, "t_push": t0, "t_sent": SENT[n0], "bytes": live.bytes_sent[-1],
                "snapshot": st.snapshot_seq == st.seq}})
live
"""

JC_SETUP = """
import altair as alt, pandas as pd
from grokwidgets.views.panels import loss_chart
alt.data_transformers.disable_max_rows()
alt.JupyterChart.enable_offline()
def full_chart(k):
    t = live.tables()["loss"]
    return loss_chart().properties(data=pd.DataFrame({{c: v[:k] for c, v in t.items()}}))
def jc_update(k):
    chart = full_chart(k)
    t0 = time.time() * 1e3
    jc.chart = chart  # what a JupyterChart user does on new data: the whole spec goes again
    JC.append({{"rows": k, "t_assign": t0, "t_sent": time.time() * 1e3,
               "spec_bytes": len(json.dumps(jc.spec))}})
jc = alt.JupyterChart(full_chart({chunk}), embed_options={{"actions": False, "renderer": "canvas"}})
jc
"""

RUN_CELL = """async (i) => {
  const app = window.jupyterapp;
  const panel = app.shell.currentWidget;
  await panel.sessionContext.ready;
  panel.content.activeCellIndex = i;
  await app.commands.execute('notebook:run-cell');
  return panel.content.widgets[i].model.outputs.toJSON();
}"""

EXECUTE = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  await kernel.requestExecute({ code, store_history: false }).done;
}"""

# Either one execute request per update (`starts`: the next update is sent once the view
# applied the previous one, so updates never queue), or one cell that pushes every update
# while it runs (`code`), as gw.train(live=True) does: then JupyterLab's handling of an
# execute request per update is not timed.
LIVE_ARM = """async ([starts, code]) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const host = document.querySelector("[data-bench=live] .gw-root > div:last-child");
  const done = {};
  const obs = new MutationObserver(() => {
    done[host.dataset.seq] = performance.timeOrigin + performance.now();
  });
  obs.observe(host, { attributes: true, attributeFilter: ["data-seq"] });
  const wire = [];
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const b0 = window.__gwWs.commBytes;
  if (code) {
    await kernel.requestExecute({ code, store_history: false }).done;
    await sleep(300);
  }
  for (const start of starts) {
    const seq0 = Number(host.dataset.seq), w0 = window.__gwWs.commBytes;
    await kernel.requestExecute({ code: `push_next(${start})`, store_history: false }).done;
    while (Number(host.dataset.seq) <= seq0) await sleep(1);
    wire.push(window.__gwWs.commBytes - w0);
  }
  obs.disconnect();
  const rows = Number(host.closest(".gw-root").querySelector(".gw-panel").dataset.rows);
  return { done, wire, wire_total: window.__gwWs.commBytes - b0, rows };
}"""

JC_ARM = """async ([sizes]) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const host = document.querySelector("[data-bench=jc]");
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const out = [];
  for (const k of sizes) {
    const before = host.__lastPaint ?? 0, b0 = window.__gwWs.commBytes;
    await kernel.requestExecute({ code: `jc_update(${k})`, store_history: false }).done;
    while (!((host.__lastPaint ?? 0) > before)) await sleep(2);
    let last = host.__lastPaint;
    for (;;) {  // drawn when the canvas has been quiet for 400 ms
      await sleep(400);
      if (host.__lastPaint === last) break;
      last = host.__lastPaint;
    }
    const painted = performance.timeOrigin + last;
    out.push({ rows: k, painted, wire: window.__gwWs.commBytes - b0 });
  }
  return out;
}"""


def _notebook(path: Path, chunk: int) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    setup = KERNEL_SETUP.format(bench=str(ROOT / "bench"), root=str(ROOT), chunk=chunk)
    nb.cells = [
        nbformat.v4.new_code_cell(setup.strip()),
        nbformat.v4.new_code_cell(JC_SETUP.format(chunk=chunk).strip()),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


def lab_arm(
    points: int, chunk: int, resend_samples: int, paced: int = 300, pace: float = 0.1
) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from tests._chromium import CHROMIUM, CHROMIUM_FLAGS, jupyter_lab

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _notebook(root / "bench.ipynb", chunk)
        with jupyter_lab(root) as (url, token), sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True
            )
            page = browser.new_page(viewport={"width": 1200, "height": 1600})
            page.add_init_script(INIT_SCRIPT)
            page.goto(f"{url}/lab/tree/bench.ipynb?reset&token={token}")
            page.wait_for_function(
                "() => window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell')",
                timeout=120_000,
            )
            for i in range(2):
                for out in page.evaluate(RUN_CELL, i):
                    if out.get("output_type") == "error":
                        raise RuntimeError(f"setup cell {i}: {out['ename']}: {out['evalue']}")
            cells = page.locator(".jp-Notebook .jp-Cell")
            cells.nth(0).locator(".gw-panel[data-panel=loss][data-rows]").wait_for(timeout=120_000)
            cells.nth(0).locator(".jp-OutputArea-output").first.evaluate(
                "el => el.dataset.bench = 'live'"
            )
            cells.nth(1).locator(".jp-OutputArea-output").first.evaluate(
                "el => el.dataset.bench = 'jc'"
            )
            cells.nth(1).locator("canvas").first.wait_for(timeout=120_000)
            skew = page.evaluate("() => Date.now() - (performance.timeOrigin + performance.now())")

            starts = list(range(1 + chunk, points + 1, chunk))
            t0 = time.perf_counter()
            live = page.evaluate(LIVE_ARM, [starts, None])
            wall = time.perf_counter() - t0
            # the history now holds every point; the peer is timed at a few history sizes
            sizes = [int(k) for k in np.linspace(points / resend_samples, points, resend_samples)]
            jc = page.evaluate(JC_ARM, [sizes])
            # paced: one cell pushes `paced` more updates, one every `pace` seconds
            more = list(range(points + 1, points + 1 + paced * chunk, chunk))
            code = f"import time\nfor s in {more!r}:\n    push_next(s)\n    time.sleep({pace})"
            paced_out = page.evaluate(LIVE_ARM, [[], code])
            page.evaluate(EXECUTE, "json.dump({'log': LOG, 'jc': JC}, open('bench_log.json', 'w'))")
            skew_end = page.evaluate(
                "() => Date.now() - (performance.timeOrigin + performance.now())"
            )
            browser.close()
        log = json.loads((root / "bench_log.json").read_text())

    paced_log = log["log"][len(log["log"]) - paced :]
    log["log"] = log["log"][: len(log["log"]) - paced]
    paced_lat = [
        paced_out["done"][str(e["seq"])] - e["t_sent"]
        for e in paced_log
        if not e["snapshot"] and str(e["seq"]) in paced_out["done"]
    ]
    lat_sent, lat_push, frame_bytes, wire_bytes, snaps, lat_snap = [], [], [], [], [], []
    for entry, wire in zip(log["log"], live["wire"], strict=True):
        done = live["done"].get(str(entry["seq"]))
        if done is None:
            continue  # applied together with a later frame (never seen so far)
        if entry["snapshot"]:  # a new downsampled snapshot: timed apart
            snaps.append(entry["bytes"])
            lat_snap.append(done - entry["t_sent"])
            continue
        lat_sent.append(done - entry["t_sent"])
        lat_push.append(done - entry["t_push"])
        frame_bytes.append(entry["bytes"])
        wire_bytes.append(wire)
    resend = [
        {
            "rows": k["rows"],
            "spec_bytes": k["spec_bytes"],
            "wire_bytes": b["wire"],
            "assign_to_drawn_ms": b["painted"] - k["t_assign"],
            "sent_to_drawn_ms": b["painted"] - k["t_sent"],
            "python_ms": k["t_sent"] - k["t_assign"],
        }
        for k, b in zip(log["jc"], jc, strict=True)
    ]
    return {
        "updates": len(log["log"]),
        "deltas": len(lat_sent),
        "snapshots": len(snaps),
        "snapshot_bytes_max": max(snaps) if snaps else 0,
        "latency_sent_to_view_ms": _stats(lat_sent),
        "latency_push_to_view_ms": _stats(lat_push),
        "paced": {
            "updates": paced,
            "pace_s": pace,
            "latency_sent_to_view_ms": _stats(paced_lat),
            "websocket_bytes_per_update": paced_out["wire_total"] / paced,
        },
        "latency_snapshot_sent_to_view_ms": _stats(lat_snap) if lat_snap else None,
        "frame_bytes": _stats(frame_bytes),
        "websocket_comm_bytes": _stats(wire_bytes),
        "rows_in_browser_at_end": live["rows"],
        "wall_s": wall,
        "clock_skew_ms": [skew, skew_end],
        "resend_whole_spec": resend,
    }


# -- the bare-page arm ---------------------------------------------------------------------

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


def bare_arm(points: int, chunk: int, resend_samples: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from grokwidgets.views.vega import vega_bundle
    from grokwidgets.widgets import LiveMonitor
    from tests._chromium import CHROMIUM, CHROMIUM_FLAGS

    live = LiveMonitor(chunk_dataset(1, chunk), min_interval=0.0)
    live.static_fallback = False
    frames: list[tuple[bytes, bool]] = []
    live.send = lambda content, buffers=None: frames.append((bytes(buffers[0]), False))  # type: ignore[method-assign,assignment]
    live.observe(lambda ch: frames.append((bytes(ch["new"]), True)), names="_snapshot")
    esm = live._esm  # the bundled module: its path, or its text
    is_path = isinstance(esm, Path) or (len(str(esm)) < 4096 and Path(str(esm)).is_file())
    src = Path(esm).read_text() if is_path else str(esm)
    state = {"_uid": "bench", "_specs": live._specs, "status": "", "message": ""}
    first = bytes(live._snapshot)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 900, "height": 700})
        page.set_content('<html><body><div id="el"></div><div id="full"></div></body></html>')
        page.evaluate(HARNESS, [src, state])
        page.evaluate(DELIVER, [base64.b64encode(first).decode(), True, live._stream.seq])
        lat, sizes, kinds = [], [], []
        for start in range(1 + chunk, points + 1, chunk):
            frames.clear()
            t0 = time.perf_counter()
            live.push(chunk_dataset(start, chunk))
            py_ms = (time.perf_counter() - t0) * 1e3
            for data, snap in frames:
                ms = page.evaluate(
                    DELIVER, [base64.b64encode(data).decode(), snap, live._stream.seq]
                )
                lat.append(ms + py_ms)
                sizes.append(len(data))
                kinds.append("snapshot" if snap else "delta")
        rows = int(page.evaluate("() => document.querySelector('.gw-panel').dataset.rows"))

        # The peer: the whole spec with every row inlined, re-embedded on each change.
        page.add_script_tag(content=vega_bundle())
        page.evaluate("() => { window.vegaEmbedFull = window.vegaEmbed; }")
        spec = live._specs[0]
        full = live.tables()
        n_total = len(full["loss"]["step"])
        resend = []
        page.evaluate(RESEND, [json.dumps(inline_spec(spec, {"loss": full["loss"]}))])  # warm-up
        for k in np.linspace(n_total / resend_samples, n_total, resend_samples):
            part = {"loss": {c: v[: int(k)] for c, v in full["loss"].items()}}
            text = json.dumps(inline_spec(spec, part))
            resend.append(
                {"rows": int(k), "bytes": len(text), "embed_ms": page.evaluate(RESEND, [text])}
            )
        browser.close()

    deltas = [s for s, k in zip(sizes, kinds, strict=True) if k == "delta"]
    snaps = [s for s, k in zip(sizes, kinds, strict=True) if k == "snapshot"]
    return {
        "updates": len(lat),
        "latency_ms": _stats(lat),
        "delta_bytes": _stats(deltas),
        "snapshots": len(snaps),
        "snapshot_bytes_max": max(snaps) if snaps else 0,
        "total_bytes": sum(sizes),
        "rows_in_browser_at_end": rows,
        "resend_whole_spec": resend,
    }


# -- report --------------------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    """The results as a markdown table."""
    chunk = result["chunk"]
    lines = [
        "| arm | update | latency median | p95 | bytes per update |",
        "|---|---|---|---|---|",
    ]
    lab = result.get("lab")
    if lab:
        s, p = lab["latency_sent_to_view_ms"], lab["latency_push_to_view_ms"]
        fb, wb = lab["frame_bytes"], lab["websocket_comm_bytes"]
        lines += [
            f"| LiveMonitor in JupyterLab | kernel sends frame → view updated | "
            f"**{s['median']:.1f} ms** | {s['p95']:.1f} ms | **{fb['median']:,.0f} B** frame "
            f"({fb['median'] / chunk:.1f} B/point); {wb['median']:,.0f} B on the websocket |",
            f"| LiveMonitor in JupyterLab | `push()` called → view updated | "
            f"{p['median']:.1f} ms | {p['p95']:.1f} ms | (same) |",
        ]
        pc = lab["paced"]
        q = pc["latency_sent_to_view_ms"]
        lines.append(
            f"| LiveMonitor in JupyterLab, one cell pushing every {pc['pace_s'] * 1e3:.0f} ms "
            f"(as `gw.train(live=True)`) | kernel sends frame → view updated | "
            f"**{q['median']:.1f} ms** | {q['p95']:.1f} ms | "
            f"{pc['websocket_bytes_per_update']:,.0f} B on the websocket |"
        )
        snap = lab["latency_snapshot_sent_to_view_ms"]
        if snap:
            lines.append(
                f"| LiveMonitor in JupyterLab | {snap['n']} re-snapshots (downsampled) | "
                f"{snap['median']:.1f} ms | {snap['p95']:.1f} ms | "
                f"≤ {lab['snapshot_bytes_max']:,} B |"
            )
        for r in lab["resend_whole_spec"]:
            lines.append(
                f"| JupyterChart, whole spec again | {r['rows']:,} rows: `jc.chart =` → drawn | "
                f"{r['assign_to_drawn_ms']:.0f} ms (Python {r['python_ms']:.0f} ms) | – | "
                f"{r['spec_bytes']:,} B spec; {r['wire_bytes']:,} B on the websocket |"
            )
    bare = result.get("bare")
    if bare:
        b, d = bare["latency_ms"], bare["delta_bytes"]
        lines.append(
            f"| LiveMonitor, bare page | `push()` + frame in page → view updated | "
            f"{b['median']:.1f} ms | {b['p95']:.1f} ms | {d['median']:,.0f} B frame |"
        )
        for r in bare["resend_whole_spec"][:: max(1, len(bare["resend_whole_spec"]) // 4)]:
            lines.append(
                f"| whole spec re-embedded, bare page | {r['rows']:,} rows | "
                f"{r['embed_ms']:.0f} ms | – | {r['bytes']:,} B |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--resend-samples", type=int, default=4)
    ap.add_argument("--arms", default="lab,bare", help="comma-separated: lab, bare")
    args = ap.parse_args()
    arms = {a.strip() for a in args.arms.split(",") if a.strip()}
    unknown = arms - {"lab", "bare"}
    if unknown:
        ap.error(f"unknown arms {sorted(unknown)}; choose from lab, bare")
    result: dict[str, Any] = {"points": args.points, "chunk": args.chunk}
    if "lab" in arms:
        result["lab"] = lab_arm(args.points, args.chunk, args.resend_samples)
    if "bare" in arms:
        result["bare"] = bare_arm(args.points, args.chunk, args.resend_samples)
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "widget_stream.json").write_text(json.dumps(result, indent=1))
    print(table(result))


if __name__ == "__main__":
    main()
