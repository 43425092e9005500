// node --test tests/js : the Layout Painter's tools and encoding, without a browser.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  History, PaintMap, crc32, decodePainting, encodePainting, fillEllipse, fillRect, floodFill, nextColor,
  removeLabel, renderRGBA, stampDisc, strokeLine,
} from "../../web/painter_core.js";

const labels = (...names) => names.map((name, i) => ({ name, color: ["#87ceeb", "#735f54", "#1e4ca6", "#5ab43c"][i] }));

function seeded(seed) {
  let s = seed >>> 0;
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
}

test("crc32 matches zlib's", () => {
  assert.equal(crc32(new TextEncoder().encode("123456789")), 0xcbf43926);
  assert.equal(crc32(new Uint8Array(0)), 0);
});

test("encode/decode round-trips random maps of several sizes and label counts", () => {
  const rnd = seeded(1);
  for (const [w, h, k] of [[1, 1, 1], [7, 3, 2], [64, 48, 4], [300, 17, 9]]) {
    const map = new PaintMap(w, h);
    for (let i = 0; i < map.data.length; i++) map.data[i] = Math.floor(rnd() * (k + 1));
    const names = Array.from({ length: k }, (_, i) => ({ name: `l${i}`, color: "#0000" + String(10 + i).padStart(2, "0") }));
    const back = decodePainting(encodePainting(map, names));
    assert.equal(back.map.width, w);
    assert.equal(back.map.height, h);
    assert.deepEqual(back.map.data, map.data);
    assert.deepEqual(back.labels, names);
  }
});

test("a blobby 512x512 four-label layout encodes compactly", () => {
  const map = new PaintMap(512, 512);
  fillRect(map, 0, 0, 511, 199, 1);
  fillRect(map, 0, 200, 511, 511, 2);
  fillEllipse(map, 166, 260, 346, 440, 3);
  fillRect(map, 50, 400, 150, 480, 4);
  const text = encodePainting(map, labels("sky", "mountain", "water", "tree"));
  assert.ok(text.length < 4000, `${text.length} characters`);
});

test("corrupt, truncated and tampered values are refused with a reason", () => {
  const map = new PaintMap(8, 8);
  fillRect(map, 0, 0, 7, 3, 1);
  const good = encodePainting(map, labels("sky"));
  const v = JSON.parse(good);
  const bad = (patch, words) => assert.throws(() => decodePainting(JSON.stringify({ ...v, ...patch })), words);
  bad({ crc32: v.crc32 ^ 1 }, /checksum/);
  bad({ width: 9 }, /covers/);
  bad({ rle: v.rle.slice(0, 2) + "==" }, /covers|corrupt|ends inside/);
  bad({ rle: "!!!" }, /corrupt/);
  bad({ labels: [] }, /1\.\.64 labels/);
  bad({ labels: [{ name: "sky", color: "blue" }] }, /#rrggbb/);
  bad({ width: 4096 }, /1\.\.2048/);
  bad({ version: 2 }, /version/);
  bad({ format: "x" }, /not a TCIG/);
  assert.throws(() => decodePainting(good.slice(0, -5)), /JSON/);
  assert.throws(() => decodePainting(""), /empty/);
  // a run that names a label the table does not have
  const two = new PaintMap(2, 1, new Uint8Array([1, 2]));
  const t = JSON.parse(encodePainting(two, labels("a", "b")));
  t.labels = t.labels.slice(0, 1);
  assert.throws(() => decodePainting(JSON.stringify(t)), /label #2/);
});

test("brush strokes have no gaps and respect the radius", () => {
  const map = new PaintMap(40, 10);
  strokeLine(map, 2.5, 5.5, 37.5, 5.5, 1.5, 1);
  for (let x = 2; x <= 37; x++) assert.equal(map.get(x, 5), 1, `gap at ${x}`);
  assert.equal(map.get(20, 1), 0);
  assert.equal(map.get(20, 8), 0);
  const dot = new PaintMap(9, 9);
  stampDisc(dot, 4.5, 4.5, 2, 3);
  assert.equal(dot.counts(3)[3], 13); // pixel centres within radius 2
});

test("eraser writes 'unpainted' back", () => {
  const map = new PaintMap(10, 10);
  fillRect(map, 0, 0, 9, 9, 2);
  strokeLine(map, 0.5, 5.5, 9.5, 5.5, 1, 0);
  assert.equal(map.get(4, 5), 0);
  assert.equal(map.get(4, 2), 2);
});

test("rectangle and ellipse fill their box", () => {
  const map = new PaintMap(20, 20);
  fillRect(map, 15, 12, 5, 2, 1); // corners in any order, inclusive
  assert.equal(map.counts(1)[1], 11 * 11);
  const e = new PaintMap(21, 21);
  fillEllipse(e, 0, 0, 20, 20, 1);
  const n = e.counts(1)[1];
  assert.ok(Math.abs(n - Math.PI * 10.5 * 10.5) < 25, String(n));
  assert.equal(e.get(10, 10), 1);
  assert.equal(e.get(0, 0), 0);
});

test("flood fill fills one 4-connected region and stops at borders", () => {
  const map = new PaintMap(10, 10);
  fillRect(map, 4, 0, 4, 9, 1); // a wall splits the map
  map.data[5 * 10 + 4] = 0; // ... with a one-pixel hole at (4, 5)
  const changed = floodFill(map, 0, 0, 2);
  assert.equal(map.get(9, 9), 2, "the fill goes through the hole");
  assert.equal(map.get(4, 3), 1, "the wall stays");
  assert.equal(changed, 100 - 9);
  const diag = new PaintMap(3, 3, new Uint8Array([0, 1, 1, 1, 0, 1, 1, 1, 0]));
  floodFill(diag, 0, 0, 2);
  assert.equal(diag.get(1, 1), 0, "diagonal neighbours are not connected");
  assert.equal(floodFill(diag, 0, 0, 2), 0, "same value: nothing to do");
});

test("undo and redo restore maps and label tables", () => {
  const h = new History(3);
  let state = { map: new PaintMap(4, 4), labels: labels("sky") };
  h.push(state);
  fillRect(state.map, 0, 0, 3, 3, 1);
  h.push(state);
  state.labels = [...state.labels, { name: "water", color: "#1e4ca6" }];
  const prev = h.undo(state);
  assert.equal(prev.labels.length, 1);
  assert.equal(prev.map.counts(1)[1], 16);
  const first = h.undo(prev);
  assert.equal(first.map.counts(1)[1], 0);
  assert.equal(h.undo(first), null);
  const again = h.redo(first);
  assert.equal(again.map.counts(1)[1], 16);
  assert.equal(h.redo(again).labels.length, 2);
  for (let i = 0; i < 5; i++) h.push(state);
  assert.equal(h.undoStack.length, 3, "bounded");
});

test("removing a label unpaints it and renumbers the ones after it", () => {
  const map = new PaintMap(3, 1, new Uint8Array([1, 2, 3]));
  removeLabel(map, 2);
  assert.deepEqual([...map.data], [1, 0, 2]);
});

test("rendering uses the label colours, unpainted is transparent", () => {
  const rgba = renderRGBA(new PaintMap(2, 1, new Uint8Array([0, 2])), labels("a", "b"));
  assert.deepEqual([...rgba], [0, 0, 0, 0, 0x73, 0x5f, 0x54, 255]);
});

test("resize is nearest-neighbour and new label colours are distinct", () => {
  const map = new PaintMap(2, 2, new Uint8Array([1, 2, 3, 4]));
  const big = map.resized(4, 4);
  assert.deepEqual([...big.data.slice(0, 4)], [1, 1, 2, 2]);
  const table = [];
  for (let i = 0; i < 40; i++) table.push({ name: `l${i}`, color: nextColor(table) });
  assert.equal(new Set(table.map((l) => l.color)).size, 40);
});

// One table of valid and invalid values, read by this file and by tests/test_painter.py: both
// validators must agree on every case.
import { readFileSync } from "node:fs";
import { loadPainting } from "../../web/painter_core.js";

const table = JSON.parse(readFileSync(new URL("../painting_cases.json", import.meta.url), "utf-8"));

test("the shared table of painting values: the widget agrees with the backend on each case", () => {
  for (const c of table.cases) {
    const text = JSON.stringify({ ...table.base, ...c.patch });
    let ok = true;
    try {
      decodePainting(text);
    } catch {
      ok = false;
    }
    assert.equal(ok, c.valid, c.why);
  }
});

test("a stored value that does not decode is kept as it was (never replaced by another layout)", () => {
  const bad = JSON.stringify({ ...table.base, crc32: table.base.crc32 ^ 1 });
  const got = loadPainting(bad);
  assert.equal(got.raw, bad);
  assert.match(got.error, /checksum/);
  assert.equal(got.map, null);
  const good = loadPainting(JSON.stringify(table.base));
  assert.equal(good.error, null);
  assert.equal(good.raw, null);
  assert.deepEqual(Array.from(good.map.data), [1, 2]);
});
