// Shared front end of the grokwidgets widgets. Bundled with Vega, Vega-Lite and vega-embed
// (vl-convert's offline bundle; changesets come from `view.changeset()`) by grokwidgets/widgets/_esm.py,
// then each widget's own module is appended. No CDN is ever contacted.

const STYLE = `
.gw-root { font: 12px system-ui, sans-serif; color: #222; }
.gw-status { margin: 2px 0 6px; color: #555; }
.gw-status.gw-bad, .gw-error { color: #b00020; white-space: pre-wrap; }
.gw-panel { margin: 4px 0 10px; }
.gw-panel h4 { margin: 4px 0; font-size: 13px; }
.gw-note { color: #777; font-style: italic; }
.gw-scrub { display: flex; gap: 8px; align-items: center; margin: 4px 0 8px; }
.gw-scrub input { width: 420px; }
`;

function showError(el, err) {
  const pre = document.createElement("pre");
  pre.className = "gw-error";
  pre.textContent = "grokwidgets: this view failed: " + (err && err.stack ? err.stack : err);
  el.appendChild(pre);
}

function decodeFrame(view) {
  const dv = view instanceof DataView ? view : new DataView(view.buffer ?? view, view.byteOffset ?? 0, view.byteLength);
  const magic = String.fromCharCode(dv.getUint8(0), dv.getUint8(1), dv.getUint8(2), dv.getUint8(3));
  if (magic !== "GWF1") throw new Error("not a grokwidgets frame: " + magic);
  const size = dv.getUint32(4, true);
  const bytes = new Uint8Array(dv.buffer, dv.byteOffset + 8, size);
  const header = JSON.parse(new TextDecoder().decode(bytes));
  const start = 8 + size;
  const tables = {};
  for (const [name, spec] of Object.entries(header.tables)) {
    const n = spec.n;
    const rows = new Array(n);
    for (let i = 0; i < n; i++) rows[i] = {};
    for (const col of spec.cols) {
      const off = start + col.offset;
      if (col.kind === "f8") {
        for (let i = 0; i < n; i++) rows[i][col.name] = dv.getFloat64(off + 8 * i, true);
      } else {
        for (let i = 0; i < n; i++) rows[i][col.name] = col.labels[dv.getInt32(off + 4 * i, true)];
      }
    }
    tables[name] = { mode: spec.mode, rows };
  }
  return { header, tables };
}

// Per model (not per view): the latest snapshot and the deltas after it, so a view that
// renders later (or again) starts from the same state without asking the kernel (which may
// be busy running the training loop and could not answer).
// Keyed by the widget's `_uid` trait: anywidget may hand initialize and render different
// model wrappers of the same widget.
const STATES = new Map();

function modelState(model) {
  const uid = model.get("_uid");
  let st = STATES.get(uid);
  if (!st) {
    st = { snapshot: null, deltas: [], listeners: new Set(), cleanup: () => {} };
    STATES.set(uid, st);
  }
  return st;
}

function initializeModel({ model }) {
  const st = modelState(model);
  const loadSnapshot = () => {
    const raw = model.get("_snapshot");
    if (!raw || !raw.byteLength) return;
    st.snapshot = decodeFrame(raw);
    st.deltas = st.deltas.filter((d) => d.header.base === st.snapshot.header.seq);
    for (const fn of st.listeners) fn(st.snapshot, true);
  };
  const onMsg = (msg, buffers) => {
    if (!msg || msg.type !== "frame" || !buffers || !buffers.length) return;
    const frame = decodeFrame(buffers[0]);
    if (st.snapshot && frame.header.base < st.snapshot.header.seq) return; // stale
    const last = st.deltas.length ? st.deltas[st.deltas.length - 1].header.seq : st.snapshot?.header.seq;
    if (last !== undefined && frame.header.seq !== last + 1 && frame.header.base === st.snapshot?.header.seq) {
      model.send({ type: "resync" }); // a frame was missed: ask for a new snapshot
    }
    st.deltas.push(frame);
    for (const fn of st.listeners) fn(frame, false);
  };
  model.on("change:_snapshot", loadSnapshot);
  model.on("msg:custom", onMsg);
  loadSnapshot();
  st.cleanup = () => {
    model.off("change:_snapshot", loadSnapshot);
    model.off("msg:custom", onMsg);
  };
  return () => {
    st.cleanup();
    STATES.delete(model.get("_uid"));
  };
}

function countItems(node) {
  // Items of the line marks (one per row drawn) in a Vega scenegraph.
  let n = 0;
  const walk = (item) => {
    if (!item) return;
    if (item.marktype && item.items && item.marktype !== "group") {
      if (item.marktype === "line") n += item.items.length;
      return;
    }
    for (const child of item.items ?? []) walk(child);
  };
  walk(node);
  return n;
}

class Panels {
  constructor(model, el, { cursor = false } = {}) {
    this.model = model;
    this.el = el;
    this.cursor = cursor;
    this.views = []; // {id, view, datasets, note, wrap}
    this.applied = -1;
  }

  async mount() {
    const specs = this.model.get("_specs") || [];
    for (const spec of specs) {
      const meta = spec.usermeta || {};
      const wrap = document.createElement("div");
      wrap.className = "gw-panel";
      wrap.dataset.panel = meta.panel;
      wrap.dataset.rows = "0";
      const h = document.createElement("h4");
      h.textContent = meta.title || meta.panel;
      const note = document.createElement("div");
      note.className = "gw-note";
      note.textContent = "no records yet";
      const box = document.createElement("div");
      wrap.append(h, note, box);
      this.el.appendChild(wrap);
      try {
        const res = await vegaEmbed(box, spec, { actions: false, renderer: "canvas" });
        wrap.gwView = res.view;
        this.views.push({ id: meta.panel, view: res.view, datasets: meta.datasets || [], note, wrap, finalize: res.finalize });
      } catch (err) {
        showError(wrap, err);
      }
    }
  }

  async apply(frame, replaceAll) {
    const jobs = [];
    for (const v of this.views) {
      let touched = false;
      for (const name of v.datasets) {
        const t = frame.tables[name];
        if (!t && !replaceAll) continue;
        if (name === "cursor") continue;
        const cs = v.view.changeset();
        if (!t || t.mode === "replace") cs.remove(() => true);
        if (t) cs.insert(t.rows);
        v.view.change(name, cs);
        touched = true;
      }
      if (touched) jobs.push(v.view.resize().runAsync().then(() => this.annotate(v)));
    }
    await Promise.all(jobs);
    this.applied = frame.header.seq;
    this.el.dataset.seq = String(frame.header.seq);
    if (globalThis.__gwLatency && frame.header.t) {
      globalThis.__gwLatency.push(performance.timeOrigin + performance.now() - frame.header.t);
    }
  }

  annotate(v) {
    let rows = 0;
    for (const name of v.datasets) {
      if (name !== "cursor") rows += v.view.data(name).length;
    }
    v.wrap.dataset.rows = String(rows);
    v.wrap.dataset.items = String(countItems(v.view.scenegraph().root));
    v.note.textContent = rows ? "" : "no records yet";
  }

  async setCursor(step) {
    const jobs = [];
    for (const v of this.views) {
      if (!v.datasets.includes("cursor")) continue;
      // step 0 has no place on a log axis
      v.view.change("cursor", v.view.changeset().remove(() => true).insert(step > 0 ? [{ step }] : []));
      jobs.push(v.view.runAsync());
    }
    await Promise.all(jobs);
  }

  finalize() {
    for (const v of this.views) v.finalize();
    this.views = [];
  }
}

function statusBar(model, el) {
  const bar = document.createElement("div");
  bar.className = "gw-status";
  const update = () => {
    const msg = model.get("message") || "";
    const status = model.get("status") || "";
    bar.textContent = [status, msg].filter(Boolean).join(" — ");
    bar.classList.toggle("gw-bad", /error|fail|cannot|not /i.test(msg));
  };
  model.on("change:message", update);
  model.on("change:status", update);
  update();
  el.appendChild(bar);
  return () => {
    model.off("change:message", update);
    model.off("change:status", update);
  };
}

// Render the panels of `model` into `el`; `extra(root, panels)` adds widget controls and
// returns its own cleanup. Returns the view's cleanup.
async function renderPanels({ model, el }, extra) {
  const root = document.createElement("div");
  root.className = "gw-root";
  const style = document.createElement("style");
  style.textContent = STYLE;
  root.appendChild(style);
  el.appendChild(root);
  const cleanups = [];
  let panels = null;
  try {
    cleanups.push(statusBar(model, root));
    const host = document.createElement("div");
    const controls = document.createElement("div");
    root.append(controls, host);
    panels = new Panels(model, host);
    el.gwPanels = panels;
    await panels.mount();
    if (extra) cleanups.push(extra(controls, panels));
    const st = modelState(model);
    // Apply in order, one at a time, so a slow update never reorders rows.
    let chain = Promise.resolve();
    const onFrame = (frame, isSnapshot) => {
      chain = chain.then(() => panels.apply(frame, isSnapshot)).catch((err) => showError(root, err));
    };
    if (st.snapshot) onFrame(st.snapshot, true);
    for (const d of st.deltas) onFrame(d, false);
    st.listeners.add(onFrame);
    cleanups.push(() => st.listeners.delete(onFrame));
  } catch (err) {
    showError(root, err);
  }
  return () => {
    for (const fn of cleanups) fn();
    if (panels) panels.finalize();
    root.remove();
  };
}
