// Shared front end of the grokwidgets widgets. Bundled with Vega, Vega-Lite and vega-embed
// (vl-convert's offline bundle; changesets come from `view.changeset()`) by grokwidgets/widgets/_esm.py,
// then each widget's own module is appended. No CDN is ever contacted.

const STYLE = `
.gw-root { font: 12px system-ui, sans-serif; color: #222; }
.gw-status { margin: 2px 0 6px; color: #555; }
.gw-status.gw-bad { color: #b00020; white-space: pre-wrap; }
.gw-error { color: #b00020; background: #fdecee; border-left: 3px solid #b00020; padding: 4px 8px;
  margin: 4px 0; white-space: pre-wrap; font-size: 13px; }
.gw-error details { color: #555; font-size: 11px; }
.gw-panel { margin: 4px 0 10px; }
.gw-panel h4 { margin: 4px 0; font-size: 13px; }
.gw-note { color: #777; font-style: italic; }
.gw-scrub { display: flex; gap: 8px; align-items: center; margin: 4px 0 8px; }
.gw-scrub input { width: 420px; }
.gw-timeline { margin: 2px 0 8px; padding-left: 1.6em; color: #333; }
.gw-timeline li { margin: 1px 0; }
`;

// An error shown in the cell, readable: what failed and why first; the stack on demand.
function showError(el, err, what = "this view failed") {
  const box = document.createElement("div");
  box.className = "gw-error";
  box.setAttribute("role", "alert");
  const msg = err && err.message ? err.message : String(err);
  box.textContent = `grokwidgets: ${what}: ${msg}`;
  if (err && err.stack) {
    const more = document.createElement("details");
    const sum = document.createElement("summary");
    sum.textContent = "details";
    const pre = document.createElement("pre");
    pre.textContent = err.stack;
    more.append(sum, pre);
    box.appendChild(more);
  }
  el.appendChild(box);
  return box;
}

function decodeFrame(view) {
  const dv = view instanceof DataView ? view : new DataView(view.buffer ?? view, view.byteOffset ?? 0, view.byteLength);
  const head = new Uint8Array(dv.buffer, dv.byteOffset, Math.min(4, dv.byteLength));
  const magic = String.fromCharCode(...head);
  if (magic !== "GWF1" || dv.byteLength < 8) {
    throw new Error(`not a grokwidgets frame (${dv.byteLength} bytes starting with ${JSON.stringify(magic)}, expected "GWF1")`);
  }
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
    // listeners: {frame(frame, isSnapshot), error(err, what)}; errors are kept so a view
    // rendered later shows them too.
    st = { snapshot: null, deltas: [], errors: [], listeners: new Set(), cleanup: () => {} };
    STATES.set(uid, st);
  }
  return st;
}

function initializeModel({ model }) {
  const st = modelState(model);
  const fail = (err, what) => {
    st.errors.push({ err, what });
    for (const l of st.listeners) l.error(err, what);
  };
  const loadSnapshot = () => {
    const raw = model.get("_snapshot");
    if (!raw || !raw.byteLength) return;
    try {
      st.snapshot = decodeFrame(raw);
    } catch (err) {
      fail(err, "could not read the data sent by the kernel");
      return;
    }
    st.deltas = st.deltas.filter((d) => d.header.base === st.snapshot.header.seq);
    for (const l of st.listeners) l.frame(st.snapshot, true);
  };
  const onMsg = (msg, buffers) => {
    if (!msg || msg.type !== "frame") return;
    let frame;
    try {
      if (!buffers || !buffers.length) throw new Error("a frame message came without its data");
      frame = decodeFrame(buffers[0]);
    } catch (err) {
      fail(err, "could not read an update sent by the kernel");
      model.send({ type: "resync" }); // rows may be missing now: ask for a new snapshot
      return;
    }
    if (st.snapshot && frame.header.base < st.snapshot.header.seq) return; // stale
    const last = st.deltas.length ? st.deltas[st.deltas.length - 1].header.seq : st.snapshot?.header.seq;
    if (last !== undefined && frame.header.seq !== last + 1 && frame.header.base === st.snapshot?.header.seq) {
      model.send({ type: "resync" }); // a frame was missed: ask for a new snapshot
    }
    st.deltas.push(frame);
    for (const l of st.listeners) l.frame(frame, false);
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

// One frame with the state of a snapshot and the deltas after it (a view rendered again, or
// remounted, draws it in one pass instead of replaying every update).
function combine(snapshot, deltas) {
  const tables = {};
  for (const [name, t] of Object.entries(snapshot.tables)) tables[name] = { mode: "replace", rows: t.rows };
  for (const d of deltas) {
    for (const [name, t] of Object.entries(d.tables)) {
      const held = tables[name];
      tables[name] = { mode: "replace", rows: t.mode === "replace" || !held ? t.rows : held.rows.concat(t.rows) };
    }
  }
  const last = deltas.length ? deltas[deltas.length - 1] : snapshot;
  return { header: { ...last.header, t: 0 }, tables }; // t: 0, not an update to time
}

// `spec` with no colour/dash legend on the charts that read one of the `empty` datasets.
function dropLegends(spec, empty) {
  if (Array.isArray(spec)) return spec.map((x) => dropLegends(x, empty));
  if (!spec || typeof spec !== "object") return spec;
  const out = {};
  for (const [k, x] of Object.entries(spec)) out[k] = k === "datasets" ? x : dropLegends(x, empty);
  const enc = out.encoding;
  if (out.data && empty.has(out.data.name) && enc) {
    for (const ch of ["color", "strokeDash"]) if (enc[ch]) enc[ch] = { ...enc[ch], legend: null };
  }
  return out;
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

// Forwards to Vega's logger and shows errors (a dataflow that throws on the rows sent, say)
// in the panel: Vega itself only logs them to the console.
function panelLogger(base, onError) {
  const logger = {
    level(...a) {
      if (!a.length) return base.level();
      base.level(...a);
      return logger;
    },
    error(...a) {
      base.error(...a);
      onError(a.find((x) => x instanceof Error) ?? a.map(String).join(" "));
      return logger;
    },
  };
  for (const m of ["warn", "info", "debug"]) {
    logger[m] = (...a) => {
      base[m](...a);
      return logger;
    };
  }
  return logger;
}

class Panels {
  constructor(model, el) {
    this.model = model;
    this.el = el;
    this.views = []; // {id, view, datasets, note, wrap, finalize}
    this.applied = -1;
    this.cursorStep = null;
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
      // Overlays (the step cursor, the phase bands, the time-to-grok mark) annotate the
      // panel: they are not its rows.
      const overlays = new Set(meta.overlays || ["cursor"]);
      const v = { id: meta.panel, spec, datasets: meta.datasets || [], overlays, note, wrap, box, relaidFor: null };
      try {
        await this.embed(v, spec);
        this.views.push(v);
      } catch (err) {
        showError(wrap, err, `the panel "${meta.title || meta.panel}" cannot be drawn`);
      }
    }
  }

  async embed(v, spec) {
    const meta = v.spec.usermeta || {};
    const res = await vegaEmbed(v.box, spec, { actions: false, renderer: "canvas" });
    const shown = new Set(); // each distinct error once, not on every update
    const onError = (err) => {
      const key = String(err && err.message ? err.message : err);
      if (shown.has(key)) return;
      shown.add(key);
      showError(v.wrap, err, `the panel "${meta.title || meta.panel}" failed to draw`);
    };
    res.view.logger(panelLogger(res.view.logger(), onError));
    v.view = res.view;
    v.finalize = res.finalize;
    v.wrap.gwView = res.view;
  }

  // A chart whose dataset stays empty has an empty colour legend, and Vega then lays the
  // panel's side-by-side charts out at NaN. Such a panel is embedded again with its rows
  // inlined and the empty datasets' legends dropped (as the static forms do), once per set
  // of empty datasets.
  async relayout(v) {
    const groups = (v.view.scenegraph().root.items?.[0]?.items ?? []).filter((m) => m.marktype === "group");
    const broken = groups.some((m) => (m.items ?? []).some((g) => !Number.isFinite(g.x)));
    const names = v.datasets.filter((n) => !v.overlays.has(n));
    const empty = new Set(names.filter((n) => !v.view.data(n).length));
    const key = [...empty].sort().join(",");
    // Re-embed when broken, or when a dataset whose legend was dropped now has rows (its
    // legend back); never before any rows, nor twice for the same empty datasets.
    const stale = v.relaidFor !== null && key !== v.relaidFor;
    if ((!broken && !stale) || empty.size === names.length || key === v.relaidFor) return;
    v.relaidFor = key;
    const datasets = {};
    for (const name of v.datasets) datasets[name] = JSON.parse(JSON.stringify(v.view.data(name)));
    const spec = dropLegends({ ...v.spec, datasets: { ...(v.spec.datasets || {}), ...datasets } }, empty);
    v.finalize();
    v.box.replaceChildren();
    await this.embed(v, spec);
    await v.view.runAsync();
  }

  // The panels again from the current `_specs` (the kernel found new metrics, say).
  async remount() {
    this.finalize();
    this.el.replaceChildren();
    this.applied = -1;
    await this.mount();
    if (this.cursorStep !== null) await this.setCursor(this.cursorStep);
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
      if (touched) {
        jobs.push(v.view.resize().runAsync().then(() => this.relayout(v)).then(() => this.annotate(v)));
      }
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
      if (!v.overlays.has(name)) rows += v.view.data(name).length;
    }
    v.wrap.dataset.rows = String(rows);
    if (v.datasets.includes("phase_spans")) v.wrap.dataset.bands = String(v.view.data("phase_spans").length);
    v.wrap.dataset.items = String(countItems(v.view.scenegraph().root));
    v.note.textContent = rows ? "" : "no records yet";
  }

  async setCursor(step) {
    this.cursorStep = step;
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

// The run's events in words (the `timeline` trait: the story the kernel derived from the
// records, each with its `label`), as a short list above the panels; hidden when empty.
function timelineList(model, el) {
  const list = document.createElement("ol");
  list.className = "gw-timeline";
  list.setAttribute("aria-label", "timeline of the run");
  const update = () => {
    const events = model.get("timeline") || [];
    list.replaceChildren(...events.map((e) => {
      const li = document.createElement("li");
      li.dataset.step = String(e.step);
      li.dataset.kind = e.kind;
      li.textContent = e.label;
      return li;
    }));
    list.hidden = !events.length;
  };
  model.on("change:timeline", update);
  update();
  el.appendChild(list);
  return () => model.off("change:timeline", update);
}

// Render the panels of `model` into `el`; `extra(root, panels)` adds widget controls and
// returns its own cleanup. Returns the view's cleanup. Errors (a panel Vega cannot draw, a
// frame that cannot be read) show in the cell, never a blank output.
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
    cleanups.push(timelineList(model, root));
    const errors = document.createElement("div");
    const controls = document.createElement("div");
    const host = document.createElement("div");
    root.append(errors, controls, host);
    panels = new Panels(model, host);
    el.gwPanels = panels;
    await panels.mount();
    if (extra) cleanups.push(extra(controls, panels));
    const st = modelState(model);
    // Apply in order, one at a time, so a slow update never reorders rows.
    let chain = Promise.resolve();
    const enqueue = (job, what) => {
      chain = chain.then(job).catch((err) => showError(errors, err, what));
    };
    const listener = {
      frame: (frame, isSnapshot) => enqueue(() => panels.apply(frame, isSnapshot), "an update failed"),
      error: (err, what) => showError(errors, err, what),
    };
    // The state received so far, taken now: frames arriving later are queued after it.
    const replay = () => {
      const [snapshot, deltas] = [st.snapshot, [...st.deltas]];
      return async () => {
        if (snapshot) await panels.apply(combine(snapshot, deltas), true);
        else for (const d of deltas) await panels.apply(d, false);
      };
    };
    for (const e of st.errors) listener.error(e.err, e.what);
    enqueue(replay(), "an update failed");
    st.listeners.add(listener);
    cleanups.push(() => st.listeners.delete(listener));
    const onSpecs = () => {
      const again = replay();
      enqueue(async () => {
        await panels.remount();
        await again();
      }, "the panels failed to redraw");
    };
    model.on("change:_specs", onSpecs);
    cleanups.push(() => model.off("change:_specs", onSpecs));
  } catch (err) {
    showError(root, err);
  }
  return () => {
    for (const fn of cleanups) fn();
    if (panels) panels.finalize();
    root.remove();
  };
}
