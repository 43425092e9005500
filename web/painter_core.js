// TCIG Layout Painter, the part without a page: the label map, its tools and its encoding.
// The widget (tcig_painter.js) draws and listens; everything that changes pixels or bytes is
// here, so `node --test tests/js` checks it. The stored format is read in Python by
// tcig_ops/painter.py: keep the two in step (version, limits, run encoding, checksum).

export const FORMAT = "tcig-painting";
export const VERSION = 1;
export const MAX_SIDE = 2048;
export const MAX_LABELS = 64;
export const MAX_NAME = 100;
export const UNPAINTED = 0; // label k is stored as k (1-based); 0 is "not painted"

// Colours for new labels: distinct, readable over a photo.
export const PALETTE = [
  "#87ceeb", "#735f54", "#1e4ca6", "#5ab43c", "#1e5a1e", "#6b6b70", "#9e4c38", "#e6cc8c",
  "#e6194b", "#f58231", "#ffe119", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c", "#008080",
];

export class PaintMap {
  constructor(width, height, data) {
    checkSide("width", width);
    checkSide("height", height);
    this.width = width;
    this.height = height;
    this.data = data ?? new Uint8Array(width * height);
    if (this.data.length !== width * height) throw new Error(`painting: map has ${this.data.length} pixels, expected ${width * height}`);
  }
  clone() {
    return new PaintMap(this.width, this.height, this.data.slice());
  }
  get(x, y) {
    return this.data[y * this.width + x];
  }
  inside(x, y) {
    return x >= 0 && y >= 0 && x < this.width && y < this.height;
  }
  /** Nearest-neighbour resample to a new size (what the canvas size fields do). */
  resized(width, height) {
    const out = new PaintMap(width, height);
    for (let y = 0; y < height; y++) {
      const sy = Math.min(this.height - 1, Math.floor(((y + 0.5) * this.height) / height));
      for (let x = 0; x < width; x++) {
        const sx = Math.min(this.width - 1, Math.floor(((x + 0.5) * this.width) / width));
        out.data[y * width + x] = this.data[sy * this.width + sx];
      }
    }
    return out;
  }
  /** Pixels per label value 0..maxLabel. */
  counts(maxLabel) {
    const c = new Array(maxLabel + 1).fill(0);
    for (const v of this.data) c[v]++;
    return c;
  }
}

function checkSide(name, v) {
  if (!Number.isInteger(v) || v < 1 || v > MAX_SIDE) throw new Error(`painting: ${name} ${v} must be a whole number of pixels in 1..${MAX_SIDE}`);
}

// ---- tools: each writes `value` (a label number, or 0 for the eraser) into the map ----------

/** A filled disc of radius r (pixels whose centre is within r of (cx, cy)). */
export function stampDisc(map, cx, cy, r, value) {
  const r2 = r * r;
  const x0 = Math.max(0, Math.floor(cx - r)), x1 = Math.min(map.width - 1, Math.ceil(cx + r));
  const y0 = Math.max(0, Math.floor(cy - r)), y1 = Math.min(map.height - 1, Math.ceil(cy + r));
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const dx = x + 0.5 - cx, dy = y + 0.5 - cy;
      if (dx * dx + dy * dy <= r2) map.data[y * map.width + x] = value;
    }
  }
}

/** A brush stroke from (x0, y0) to (x1, y1): discs every half radius, so no gaps. */
export function strokeLine(map, x0, y0, x1, y1, r, value) {
  const len = Math.hypot(x1 - x0, y1 - y0);
  const steps = Math.max(1, Math.ceil(len / Math.max(0.5, r / 2)));
  for (let i = 0; i <= steps; i++) {
    const t = i / steps;
    stampDisc(map, x0 + (x1 - x0) * t, y0 + (y1 - y0) * t, r, value);
  }
}

/** Axis-aligned rectangle between two corner pixels (inclusive). */
export function fillRect(map, xa, ya, xb, yb, value) {
  const x0 = clamp(Math.min(xa, xb), 0, map.width - 1), x1 = clamp(Math.max(xa, xb), 0, map.width - 1);
  const y0 = clamp(Math.min(ya, yb), 0, map.height - 1), y1 = clamp(Math.max(ya, yb), 0, map.height - 1);
  for (let y = y0; y <= y1; y++) map.data.fill(value, y * map.width + x0, y * map.width + x1 + 1);
}

/** The ellipse inscribed in the rectangle between two corner pixels. */
export function fillEllipse(map, xa, ya, xb, yb, value) {
  const x0 = Math.min(xa, xb), x1 = Math.max(xa, xb), y0 = Math.min(ya, yb), y1 = Math.max(ya, yb);
  const cx = (x0 + x1 + 1) / 2, cy = (y0 + y1 + 1) / 2, rx = (x1 - x0 + 1) / 2, ry = (y1 - y0 + 1) / 2;
  for (let y = Math.max(0, y0); y <= Math.min(map.height - 1, y1); y++) {
    for (let x = Math.max(0, x0); x <= Math.min(map.width - 1, x1); x++) {
      const dx = (x + 0.5 - cx) / rx, dy = (y + 0.5 - cy) / ry;
      if (dx * dx + dy * dy <= 1) map.data[y * map.width + x] = value;
    }
  }
}

/** Flood fill of the 4-connected region of (x, y)'s label; returns the number of pixels changed. */
export function floodFill(map, x, y, value) {
  if (!map.inside(x, y)) return 0;
  const w = map.width, h = map.height, d = map.data;
  const target = d[y * w + x];
  if (target === value) return 0;
  let changed = 0;
  const stack = [[x, y]];
  while (stack.length) {
    const [sx, sy] = stack.pop();
    let lx = sx;
    const row = sy * w;
    if (d[row + lx] !== target) continue;
    while (lx > 0 && d[row + lx - 1] === target) lx--;
    let rx = sx;
    while (rx < w - 1 && d[row + rx + 1] === target) rx++;
    d.fill(value, row + lx, row + rx + 1);
    changed += rx - lx + 1;
    for (const ny of [sy - 1, sy + 1]) {
      if (ny < 0 || ny >= h) continue;
      const nrow = ny * w;
      let inRun = false;
      for (let nx = lx; nx <= rx; nx++) {
        const hit = d[nrow + nx] === target;
        if (hit && !inRun) stack.push([nx, ny]);
        inRun = hit;
      }
    }
  }
  return changed;
}

/** Remove label k (1-based): its pixels become unpainted, higher labels move down by one. */
export function removeLabel(map, k) {
  const d = map.data;
  for (let i = 0; i < d.length; i++) {
    if (d[i] === k) d[i] = UNPAINTED;
    else if (d[i] > k) d[i] -= 1;
  }
}

function clamp(v, lo, hi) {
  return Math.max(lo, Math.min(hi, v));
}

// ---- undo / redo ----------------------------------------------------------------------------

/** Snapshots of (map, labels) before each edit; `limit` bounds the memory (a 1024^2 map is 1 MB). */
export class History {
  constructor(limit = 40) {
    this.limit = limit;
    this.undoStack = [];
    this.redoStack = [];
  }
  /** Call before an edit with the state as it is now. */
  push(state) {
    this.undoStack.push(snapshot(state));
    if (this.undoStack.length > this.limit) this.undoStack.shift();
    this.redoStack = [];
  }
  undo(current) {
    if (!this.undoStack.length) return null;
    this.redoStack.push(snapshot(current));
    return this.undoStack.pop();
  }
  redo(current) {
    if (!this.redoStack.length) return null;
    this.undoStack.push(snapshot(current));
    return this.redoStack.pop();
  }
}

function snapshot(state) {
  return { map: state.map.clone(), labels: state.labels.map((l) => ({ ...l })) };
}

// ---- the stored value -------------------------------------------------------------------------

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 as zlib computes it. */
export function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function pushVarint(out, v) {
  while (v >= 0x80) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

function toBase64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function fromBase64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** The runs of the map as (value, length) varint pairs. */
export function encodeRuns(map) {
  const d = map.data, out = [];
  let start = 0;
  for (let i = 1; i <= d.length; i++) {
    if (i === d.length || d[i] !== d[start]) {
      pushVarint(out, d[start]);
      pushVarint(out, i - start);
      start = i;
    }
  }
  return new Uint8Array(out);
}

/** Layout -> the painting value stored in the workflow. */
export function encodePainting(map, labels) {
  checkLabels(labels);
  const value = {
    format: FORMAT, version: VERSION, width: map.width, height: map.height,
    labels: labels.map((l) => ({ name: l.name.trim(), color: l.color.toLowerCase() })),
    rle: toBase64(encodeRuns(map)), crc32: crc32(map.data),
  };
  return JSON.stringify(value);
}

/** A label name's length as the backend counts it: code points, not UTF-16 units (an emoji is 1). */
export function nameLength(name) {
  return [...name].length;
}

/**
 * Read a stored value for the widget: { map, labels, error: null } when it decodes, else
 * { error, raw } with the stored text untouched, so the widget neither sends nor saves another
 * layout in its place (the backend then refuses the same value with its own error).
 */
export function loadPainting(text) {
  try {
    return { ...decodePainting(text), error: null, raw: null };
  } catch (e) {
    return { map: null, labels: null, error: String(e.message || e), raw: typeof text === "string" ? text : "" };
  }
}

function checkLabels(labels) {
  if (!Array.isArray(labels) || labels.length < 1 || labels.length > MAX_LABELS) throw new Error(`painting: the label table must list 1..${MAX_LABELS} labels`);
  const seen = new Set();
  labels.forEach((l, i) => {
    const name = typeof l?.name === "string" ? l.name.trim() : "";
    if (!name || nameLength(name) > MAX_NAME) throw new Error(`painting: label #${i + 1} needs a name of 1..${MAX_NAME} characters`);
    if (typeof l.color !== "string" || !/^#[0-9a-fA-F]{6}$/.test(l.color)) throw new Error(`painting: label #${i + 1} (${name}) has colour ${l.color}; write colours as '#rrggbb'`);
    if (seen.has(name)) throw new Error(`painting: label '${name}' is listed twice; give each region one label`);
    seen.add(name);
  });
}

/** The stored value -> { map, labels }; throws an Error naming the problem (as the backend does). */
export function decodePainting(text) {
  if (typeof text !== "string" || !text.trim()) throw new Error("painting: empty");
  let v;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new Error(`painting: not valid JSON (${e.message})`);
  }
  if (!v || v.format !== FORMAT) throw new Error(`painting: not a TCIG painter layout`);
  if (v.version !== VERSION) throw new Error(`painting: version ${v.version} is not supported`);
  checkSide("width", v.width);
  checkSide("height", v.height);
  checkLabels(v.labels);
  let bytes;
  try {
    bytes = fromBase64(v.rle);
  } catch (e) {
    throw new Error("painting: the map data is corrupt");
  }
  const total = v.width * v.height, data = new Uint8Array(total);
  let pos = 0, i = 0;
  const next = () => {
    let value = 0, shift = 1;
    for (let n = 0; n < 4; n++) {
      if (i >= bytes.length) throw new Error("painting: the map data ends inside a number");
      const b = bytes[i++];
      value += (b & 0x7f) * shift;
      if (b < 0x80) return value;
      shift *= 128;
    }
    throw new Error("painting: a run-length number is too long");
  };
  while (i < bytes.length) {
    const value = next(), len = next();
    if (len < 1) throw new Error("painting: the map data is corrupt (a run of length 0)");
    if (value > v.labels.length) throw new Error(`painting: the map uses label #${value} but the table has ${v.labels.length} labels`);
    if (pos + len > total) throw new Error(`painting: the map covers more than ${v.width}x${v.height} pixels`);
    data.fill(value, pos, pos + len);
    pos += len;
  }
  if (pos !== total) throw new Error(`painting: the map covers ${pos} pixels but ${v.width}x${v.height} = ${total}`);
  if (crc32(data) !== v.crc32) throw new Error("painting: the map does not match its checksum (crc32)");
  return { map: new PaintMap(v.width, v.height, data), labels: v.labels.map((l) => ({ name: l.name.trim(), color: l.color.toLowerCase() })) };
}

/** RGBA pixels of the map in the labels' colours (unpainted: transparent), for an ImageData. */
export function renderRGBA(map, labels, out) {
  const rgba = out ?? new Uint8ClampedArray(map.width * map.height * 4);
  const lut = [[0, 0, 0, 0], ...labels.map((l) => [parseInt(l.color.slice(1, 3), 16), parseInt(l.color.slice(3, 5), 16), parseInt(l.color.slice(5, 7), 16), 255])];
  for (let i = 0; i < map.data.length; i++) {
    const c = lut[map.data[i]] ?? lut[0];
    rgba[4 * i] = c[0];
    rgba[4 * i + 1] = c[1];
    rgba[4 * i + 2] = c[2];
    rgba[4 * i + 3] = c[3];
  }
  return rgba;
}

/** A colour for a new label: the first palette colour not in use. */
export function nextColor(labels) {
  const used = new Set(labels.map((l) => l.color.toLowerCase()));
  const free = PALETTE.find((c) => !used.has(c));
  if (free) return free;
  for (let i = 0; ; i++) { // then hues around the wheel, golden-ratio spaced
    const c = hslHex((i * 0.618034) % 1, 0.65, 0.5);
    if (!used.has(c)) return c;
  }
}

function hslHex(h, s, l) {
  const f = (n) => {
    const k = (n + h * 12) % 12;
    const v = l - s * Math.min(l, 1 - l) * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    return Math.round(v * 255).toString(16).padStart(2, "0");
  };
  return `#${f(0)}${f(8)}${f(4)}`;
}
