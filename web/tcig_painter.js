// TCIG Layout Painter: the canvas widget of the TCIGLayoutPainter node.
// The widget's value is the painting (painter_core.js encodes it; tcig_ops/painter.py reads it),
// so it is saved in the workflow and sent with the prompt like any widget value.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import {
  History, PaintMap, MAX_LABELS, MAX_NAME, MAX_SIDE, encodePainting, loadPainting, nameLength, fillEllipse, fillRect, floodFill,
  nextColor, removeLabel, renderRGBA, strokeLine,
} from "./painter_core.js";

const TYPE = "TCIG_PAINTING";
// [id, label, shortcut key]; the keys work while the canvas has focus (click it), as do [ ] (brush size)
// and Ctrl+Z / Ctrl+Shift+Z (undo / redo of the painting, not of the graph)
const TOOLS = [["brush", "Brush", "b"], ["eraser", "Eraser", "e"], ["rect", "Rect", "r"], ["ellipse", "Ellipse", "o"], ["fill", "Fill", "f"]];
// the frontend's theme variables (light and dark palettes set them), with dark fallbacks
const STYLE = `
.tcig-painter { display:flex; flex-direction:column; gap:4px; font:12px sans-serif; color:var(--input-text,#ddd); width:100%; box-sizing:border-box; }
.tcig-painter .row { display:flex; flex-wrap:wrap; gap:3px; align-items:center; }
.tcig-painter button { font:inherit; padding:2px 7px; background:var(--comfy-input-bg,#222); color:var(--input-text,#ddd); border:1px solid var(--border-color,#4e4e4e); border-radius:4px; cursor:pointer; }
.tcig-painter button:hover { background:var(--comfy-menu-bg,#353535); }
.tcig-painter button.on { border-color:var(--p-primary-color,#4a9eff); box-shadow:inset 0 0 0 1px var(--p-primary-color,#4a9eff); }
.tcig-painter button kbd { font:inherit; font-size:10px; opacity:0.6; margin-left:3px; }
.tcig-painter input[type=number], .tcig-painter input[type=text] { font:inherit; background:var(--comfy-input-bg,#222); color:var(--input-text,#ddd); border:1px solid var(--border-color,#4e4e4e); border-radius:4px; padding:1px 3px; }
.tcig-painter input[type=number] { width:52px; }
.tcig-painter input[type=text] { width:110px; }
.tcig-painter input[type=color] { width:24px; height:18px; padding:0; border:none; background:none; }
.tcig-painter .label-row.active input[type=text] { border-color:var(--p-primary-color,#4a9eff); }
.tcig-painter .warn { color:var(--error-text,#ff6b6b); font-size:11px; }
.tcig-painter .note { color:var(--descrip-text,#999); font-size:11px; }
.tcig-painter .stage { position:relative; align-self:center; overflow:hidden; background:repeating-conic-gradient(var(--comfy-menu-bg,#353535) 0% 25%, var(--comfy-input-bg,#222) 0% 50%) 50% / 16px 16px; }
.tcig-painter .stage img, .tcig-painter .stage canvas { position:absolute; left:0; top:0; width:100%; height:100%; image-rendering:pixelated; }
.tcig-painter .stage canvas.paint { cursor:crosshair; touch-action:none; }
.tcig-painter .stage:focus-within { box-shadow:0 0 0 1px var(--p-primary-color,#4a9eff); }
.tcig-painter .stage input.key-sink { position:absolute; left:0; top:0; width:1px; height:1px; opacity:0; pointer-events:none; border:0; padding:0; }
.tcig-painter .stage .brush-outline { position:absolute; border:1px solid #fff; outline:1px solid #000; border-radius:50%; pointer-events:none; display:none; }
`;

let knownLabels = null; // {segmenters: [...]} from the server, fetched once per page

async function segmenterLabels() {
  if (!knownLabels) {
    knownLabels = api.fetchApi("/tcig/segmenter_labels").then((r) => (r.ok ? r.json() : { segmenters: [] })).catch(() => ({ segmenters: [] }));
  }
  return knownLabels;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

class Painter {
  constructor(node, initial) {
    this.node = node;
    this.history = new History();
    this.tool = "brush";
    this.brush = 12;
    this.active = 1;
    this.opacity = 0.5;
    this.encoded = null; // cache of the stored value, cleared by every edit
    this.raw = null; // a stored value that did not decode, kept as it was until the user paints
    this.root = el("div", { class: "tcig-painter" });
    this.build();
    this.load(initial);
  }

  // ---- value ----
  get value() {
    if (this.raw !== null) return this.raw; // a stored value that did not decode is sent and saved as it was
    if (this.encoded === null) this.encoded = encodePainting(this.map, this.labels);
    return this.encoded;
  }
  load(text) {
    const got = loadPainting(text);
    if (got.error === null) {
      this.map = got.map;
      this.labels = got.labels;
      this.raw = null;
      this.error.textContent = "";
    } else {
      // never put another layout in its place: Queue sends the stored text (the backend's node error
      // names the problem) and saving keeps it; the canvas shows a blank one until the user paints
      this.raw = got.raw;
      this.error.textContent = `${got.error} (the stored value is kept unchanged; painting replaces it)`;
      this.map = new PaintMap(this.map?.width || 256, this.map?.height || 256);
      this.labels = [{ name: "sky", color: nextColor([]) }];
    }
    this.active = Math.min(Math.max(1, this.active), this.labels.length);
    this.encoded = null;
    this.refresh();
  }
  changed() {
    this.raw = null; // an edit is the user's new painting
    this.encoded = null;
    this.node.setDirtyCanvas?.(true, true);
    this.node.graph?.change?.();
  }

  // ---- editing ----
  edit(fn) {
    this.history.push({ map: this.map, labels: this.labels });
    fn();
    this.changed();
    this.refresh();
  }
  undo() {
    const s = this.history.undo({ map: this.map, labels: this.labels });
    if (s) this.restore(s);
  }
  redo() {
    const s = this.history.redo({ map: this.map, labels: this.labels });
    if (s) this.restore(s);
  }
  restore(s) {
    this.map = s.map;
    this.labels = s.labels;
    this.active = Math.min(this.active, this.labels.length);
    this.changed();
    this.refresh();
  }

  // ---- UI ----
  build() {
    const style = el("style");
    style.textContent = STYLE;
    this.toolButtons = TOOLS.map(([id, text, key]) =>
      el("button", { "data-tool": id, title: `${text} (${key.toUpperCase()})`, onclick: () => this.setTool(id) }, text, el("kbd", {}, key.toUpperCase())));
    this.brushInput = el("input", { type: "number", min: 1, max: 512, value: this.brush, title: "Brush size (px)",
      onchange: (e) => this.setBrush(+e.target.value || 1) });
    const tools = el("div", { class: "row" }, ...this.toolButtons, "size", this.brushInput);
    const actions = el("div", { class: "row" },
      el("button", { "data-action": "undo", title: "Undo (Ctrl+Z on the canvas)", onclick: () => this.undo() }, "Undo"),
      el("button", { "data-action": "redo", title: "Redo (Ctrl+Shift+Z on the canvas)", onclick: () => this.redo() }, "Redo"),
      el("button", { "data-action": "clear", onclick: () => this.edit(() => this.map.data.fill(0)) }, "Clear"),
      el("button", { "data-action": "fit", title: "Zoom to fit the node", onclick: () => this.fit() }, "Fit"));
    this.wInput = el("input", { type: "number", min: 1, max: MAX_SIDE, title: "Width (px)" });
    this.hInput = el("input", { type: "number", min: 1, max: MAX_SIDE, title: "Height (px)" });
    const size = el("div", { class: "row" }, "size", this.wInput, "x", this.hInput,
      el("button", { "data-action": "resize", onclick: () => this.resize() }, "Set"));
    this.opacityInput = el("input", { type: "range", min: 0, max: 100, value: 50, title: "Paint opacity over the background image",
      oninput: (e) => { this.opacity = +e.target.value / 100; this.paint.style.opacity = this.bg.src ? this.opacity : 1; } });
    this.bgRow = el("div", { class: "row note" }, "paint over background", this.opacityInput);
    this.bgRow.style.display = "none";
    // a layout connected to the node's input arrives after a run; it replaces the painting only on request
    this.offerNote = el("span", { class: "note" });
    this.offerRow = el("div", { class: "row" },
      el("button", { "data-action": "use-layout", title: "Replace the painting with the layout connected to this node (undoable)",
        onclick: () => this.useOffered() }, "Use connected layout"), this.offerNote);
    this.offerRow.style.display = "none";
    this.offered = null;
    this.table = el("div", { class: "labels" });
    this.datalist = el("datalist", { id: `tcig-labels-${this.node.id}-${Math.random().toString(36).slice(2)}` });
    const add = el("button", { "data-action": "add-label", onclick: () => this.addLabel() }, "+ label");
    this.error = el("div", { class: "warn" });
    this.bg = el("img", { alt: "" });
    this.bg.style.display = "none";
    this.paint = el("canvas", { class: "paint", title: "Click to focus: B E R O F tools, [ ] brush size, Ctrl+Z / Ctrl+Shift+Z" });
    this.outline = el("div", { class: "brush-outline" });
    // the keys go to a hidden read-only input that a click on the canvas focuses: ComfyUI's own undo
    // (a capture listener on the window) leaves key presses in inputs alone, so Ctrl+Z undoes the painting
    this.keySink = el("input", { class: "key-sink", readonly: "", tabindex: "-1", "aria-label": "Layout Painter shortcuts" });
    this.stage = el("div", { class: "stage" }, this.bg, this.paint, this.outline, this.keySink);
    this.hoverNote = el("span", { class: "note", "data-hover": "" });
    this.root.append(style, tools, actions, size, this.offerRow, this.bgRow, this.table, el("div", { class: "row" }, add, this.hoverNote),
      this.datalist, this.error, this.stage);
    this.listen();
    this.setTool("brush");
    segmenterLabels().then((info) => this.fillCompletions(info));
  }

  setTool(id) {
    this.tool = id;
    for (const b of this.toolButtons) b.classList.toggle("on", b.dataset.tool === id);
  }

  fillCompletions(info) {
    const names = new Set();
    for (const s of info.segmenters || []) for (const l of s.labels || []) for (const n of l.split(/[;,]/)) if (n.trim()) names.add(n.trim());
    this.datalist.replaceChildren(...[...names].sort().map((n) => el("option", { value: n })));
    this.openVocabulary = (info.segmenters || []).filter((s) => s.open_vocabulary).map((s) => s.name);
    this.checkLabels();
  }

  refresh() {
    this.wInput.value = this.map.width;
    this.hInput.value = this.map.height;
    this.renderTable();
    this.render();
    this.fit();
  }

  renderTable() {
    const rows = this.labels.map((l, i) => {
      const k = i + 1;
      const name = el("input", { type: "text", value: l.name, list: this.datalist.id, title: "Label (class name the segmenters know)",
        onchange: (e) => this.rename(k, e.target.value) });
      const color = el("input", { type: "color", value: l.color, title: "Colour", onchange: (e) => this.edit(() => (this.labels[i].color = e.target.value.toLowerCase())) });
      const pick = el("input", { type: "radio", name: `tcig-active-${this.node.id}`, title: "Paint with this label", onchange: () => this.select(k) });
      pick.checked = k === this.active;
      const remove = el("button", { title: "Remove this label (its pixels become unpainted)", onclick: () => this.remove(k) }, "x");
      const warn = el("span", { class: "warn", "data-warn": l.name });
      const row = el("div", { class: "row label-row" + (k === this.active ? " active" : ""), "data-label": l.name }, pick, color, name, remove, warn);
      row.addEventListener("pointerdown", () => this.select(k));
      return row;
    });
    this.table.replaceChildren(...rows);
    this.checkLabels();
  }

  select(k) {
    this.active = k;
    this.table.querySelectorAll(".label-row").forEach((r, i) => {
      r.classList.toggle("active", i + 1 === k);
      r.querySelector("input[type=radio]").checked = i + 1 === k;
    });
  }

  rename(k, text) {
    const name = text.trim();
    if (nameLength(name) > MAX_NAME) {
      this.error.textContent = `a label name has at most ${MAX_NAME} characters`;
      this.renderTable();
      return;
    }
    if (!name || this.labels.some((l, i) => i !== k - 1 && l.name === name)) {
      this.error.textContent = name ? `label '${name}' is already in the table` : "a label needs a name";
      this.renderTable();
      return;
    }
    this.error.textContent = "";
    this.edit(() => (this.labels[k - 1].name = name));
  }

  addLabel(name) {
    if (this.labels.length >= MAX_LABELS) return;
    let n = this.labels.length + 1;
    let candidate = name || `label ${n}`;
    while (this.labels.some((l) => l.name === candidate)) candidate = `label ${++n}`;
    this.edit(() => this.labels.push({ name: candidate, color: nextColor(this.labels) }));
    this.select(this.labels.length);
  }

  remove(k) {
    if (this.labels.length <= 1) {
      this.error.textContent = "a painting keeps at least one label";
      return;
    }
    this.edit(() => {
      removeLabel(this.map, k);
      this.labels.splice(k - 1, 1);
      this.active = Math.min(this.active, this.labels.length);
    });
  }

  resize() {
    const w = Math.round(+this.wInput.value), h = Math.round(+this.hInput.value);
    if (!(w >= 1 && h >= 1 && w <= MAX_SIDE && h <= MAX_SIDE)) {
      this.error.textContent = `size: width and height must be 1..${MAX_SIDE} px`;
      return;
    }
    this.error.textContent = "";
    this.edit(() => (this.map = this.map.resized(w, h)));
  }

  async checkLabels() {
    const names = this.labels.map((l) => l.name);
    let answer;
    try {
      const r = await api.fetchApi("/tcig/check_labels", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ labels: names }) });
      if (!r.ok) return;
      answer = (await r.json()).labels;
    } catch {
      return;
    }
    for (const span of this.table.querySelectorAll("[data-warn]")) {
      const a = answer[span.dataset.warn];
      if (!a) continue;
      const close = a.suggestions.length ? `; close: ${a.suggestions.join(", ")}` : "";
      if (a.known_by.length) span.textContent = "";
      else if (a.open_vocabulary.length) span.textContent = `only ${a.open_vocabulary.join(", ")} (open vocabulary) knows it${close}`;
      else span.textContent = `no installed segmenter knows it${close}`;
      span.classList.toggle("warn", !a.known_by.length && !a.open_vocabulary.length);
      span.classList.toggle("note", !a.known_by.length && !!a.open_vocabulary.length);
    }
  }

  // ---- drawing ----
  render() {
    const { width, height } = this.map;
    if (this.paint.width !== width || this.paint.height !== height) {
      this.paint.width = width;
      this.paint.height = height;
    }
    const ctx = this.paint.getContext("2d");
    ctx.putImageData(new ImageData(renderRGBA(this.map, this.labels), width, height), 0, 0);
  }

  fit() {
    const avail = Math.max(64, (this.node.size?.[0] ?? 320) - 20);
    const scale = avail / this.map.width;
    this.stage.style.width = `${Math.round(this.map.width * scale)}px`;
    this.stage.style.height = `${Math.round(this.map.height * scale)}px`;
  }

  height() {
    const avail = Math.max(64, (this.node.size?.[0] ?? 320) - 20);
    return 150 + 26 * this.labels.length + Math.round((this.map.height * avail) / this.map.width);
  }

  offerLayout(text, notes) {
    this.offered = text;
    const got = loadPainting(text);
    const desc = got.error === null ? `${got.map.width}x${got.map.height}, ${got.labels.length} labels` : got.error;
    this.offerNote.textContent = [desc, ...(notes || [])].join("; ");
    this.offerRow.style.display = "";
  }
  useOffered() {
    if (this.offered === null) return;
    const got = loadPainting(this.offered);
    if (got.error !== null) {
      this.error.textContent = `connected layout: ${got.error}`;
      return;
    }
    this.edit(() => {
      this.map = got.map;
      this.labels = got.labels;
      this.active = Math.min(Math.max(1, this.active), this.labels.length);
    });
  }

  // the brush's outline and the label under the pointer
  hover(ev) {
    const [x, y] = this.toMap(ev);
    const r = this.paint.getBoundingClientRect();
    const scale = r.width / this.map.width;
    const round = this.tool === "brush" || this.tool === "eraser";
    if (round) {
      const d = this.brush * scale;
      Object.assign(this.outline.style, { display: "block", width: `${d}px`, height: `${d}px`,
        left: `${ev.clientX - r.left - d / 2}px`, top: `${ev.clientY - r.top - d / 2}px` });
    } else this.outline.style.display = "none";
    const px = Math.floor(x), py = Math.floor(y);
    if (px < 0 || py < 0 || px >= this.map.width || py >= this.map.height) return;
    const k = this.map.data[py * this.map.width + px];
    this.hoverNote.textContent = `${px},${py}: ${k ? this.labels[k - 1].name : "unpainted"}`;
  }

  key(ev) {
    const k = ev.key.toLowerCase();
    let done = true;
    if ((ev.ctrlKey || ev.metaKey) && k === "z") ev.shiftKey ? this.redo() : this.undo();
    else if ((ev.ctrlKey || ev.metaKey) && k === "y") this.redo();
    else if (ev.ctrlKey || ev.metaKey || ev.altKey) done = false;
    else if (TOOLS.some((t) => t[2] === k)) this.setTool(TOOLS.find((t) => t[2] === k)[0]);
    else if (k === "[" || k === "]") this.setBrush(this.brush + (k === "]" ? 1 : -1) * Math.max(1, Math.round(this.brush / 8)));
    else done = false;
    if (done) {
      ev.preventDefault();
      ev.stopPropagation(); // the graph's own shortcuts (its undo, node search) stay out of the painting
    }
  }

  setBrush(size) {
    this.brush = Math.max(1, Math.min(512, Math.round(size)));
    this.brushInput.value = this.brush;
  }

  showBackground(url) {
    this.bg.src = url;
    this.bg.style.display = "";
    this.bgRow.style.display = "";
    this.paint.style.opacity = this.opacity;
  }

  toMap(ev) {
    const r = this.paint.getBoundingClientRect();
    return [((ev.clientX - r.left) / r.width) * this.map.width, ((ev.clientY - r.top) / r.height) * this.map.height];
  }

  listen() {
    let start = null, last = null, before = null;
    const value = () => (this.tool === "eraser" ? 0 : this.active);
    this.paint.addEventListener("pointerdown", (ev) => {
      if (ev.button !== 0) return;
      ev.preventDefault();
      ev.stopPropagation();
      this.keySink.focus({ preventScroll: true });
      this.paint.setPointerCapture(ev.pointerId);
      const [x, y] = this.toMap(ev);
      if (this.tool === "fill") {
        this.edit(() => floodFill(this.map, Math.floor(x), Math.floor(y), value()));
        return;
      }
      this.history.push({ map: this.map, labels: this.labels });
      before = this.map.clone();
      start = last = [x, y];
      if (this.tool === "brush" || this.tool === "eraser") {
        strokeLine(this.map, x, y, x, y, this.brush / 2, value());
        this.render();
      }
    });
    this.paint.addEventListener("pointermove", (ev) => {
      this.hover(ev);
      if (!start) return;
      ev.preventDefault();
      ev.stopPropagation();
      const [x, y] = this.toMap(ev);
      if (this.tool === "brush" || this.tool === "eraser") {
        strokeLine(this.map, last[0], last[1], x, y, this.brush / 2, value());
      } else {
        this.map.data.set(before.data); // preview the shape from the state before the drag
        const shape = this.tool === "rect" ? fillRect : fillEllipse;
        shape(this.map, Math.floor(start[0]), Math.floor(start[1]), Math.floor(x), Math.floor(y), value());
      }
      last = [x, y];
      this.render();
    });
    const end = (ev) => {
      if (!start) return;
      ev.stopPropagation();
      start = last = before = null;
      this.changed();
      this.render();
    };
    this.paint.addEventListener("pointerup", end);
    this.paint.addEventListener("pointercancel", end);
    this.paint.addEventListener("pointerleave", () => {
      this.outline.style.display = "none";
      this.hoverNote.textContent = "";
    });
    this.keySink.addEventListener("keydown", (ev) => this.key(ev));
    // keep the canvas's gestures away from the graph (no node drag or canvas pan while painting)
    for (const type of ["mousedown", "wheel", "contextmenu"]) this.stage.addEventListener(type, (ev) => ev.stopPropagation());
  }
}

app.registerExtension({
  name: "tcig.LayoutPainter",
  getCustomWidgets() {
    return {
      [TYPE](node, inputName, inputData) {
        const painter = new Painter(node, inputData?.[1]?.default ?? "");
        const widget = node.addDOMWidget(inputName, TYPE, painter.root, {
          getValue: () => painter.value,
          setValue: (v) => painter.load(v),
          getMinHeight: () => painter.height(),
          hideOnZoom: false,
        });
        widget.painter = painter;
        node.tcigPainter = painter;
        const onResize = node.onResize;
        node.onResize = function (size) {
          onResize?.apply(this, arguments);
          painter.fit();
        };
        return { widget };
      },
    };
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== "TCIGLayoutPainter") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (output) {
      onExecuted?.apply(this, arguments);
      const offered = output?.tcig_layout?.[0];
      if (offered && this.tcigPainter) this.tcigPainter.offerLayout(offered, output?.tcig_layout_notes);
      const image = output?.tcig_background?.[0];
      if (image && this.tcigPainter) {
        const q = new URLSearchParams({ filename: image.filename, subfolder: image.subfolder ?? "", type: image.type ?? "temp" });
        this.tcigPainter.showBackground(api.apiURL(`/view?${q}`));
      }
    };
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      this.setSize?.([Math.max(this.size?.[0] ?? 0, 360), Math.max(this.size?.[1] ?? 0, 640)]);
      return r;
    };
  },
});
