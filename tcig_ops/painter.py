"""The Layout Painter's stored layout: a label-index map plus a label table, as one string.

The painter widget (``web/painter_core.js``) keeps its layout in the workflow as the value
of the node's ``painting`` input, so a workflow file (UI or API format) carries it. The
value is JSON text::

    {"format": "tcig-painting", "version": 1, "width": W, "height": H,
     "labels": [{"name": "sky", "color": "#87ceeb"}, ...],
     "rle": "<base64>", "crc32": N}

``rle`` is the row-major label map (0 = not painted, k = ``labels[k-1]``) as runs: pairs
of unsigned LEB128 varints (value, run length), base64-encoded. ``crc32`` is the CRC-32
(zlib's) of the W*H map bytes, so a truncated, corrupted or hand-edited map is refused
instead of silently guiding stage 1 to another layout. A 512x512 layout of a few painted
regions takes a few kilobytes.

Limits: each side 1..``MAX_SIDE`` px, up to ``MAX_LABELS`` labels, label names up to
``MAX_NAME`` characters. Anything else is a TCIGInputError that names the problem.
Decoding builds the Layout through ``layout.layout_from_index_map``, the path every other
layout source takes.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib

import numpy as np
import torch

from .errors import TCIGInputError
from .layout import Layout, layout_from_index_map

FORMAT = "tcig-painting"
VERSION = 1
MAX_SIDE = 2048
MAX_LABELS = 64
MAX_NAME = 100
MAX_TEXT = 32 * 2**20  # characters of the whole value
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


def _varints(values: np.ndarray) -> bytes:
    """Unsigned LEB128 of each value (< 2**28), concatenated."""
    values = values.astype(np.int64)
    out = []
    for v in values.tolist():
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def _read_varints(data: bytes, max_count: int | None = None) -> np.ndarray:
    """Inverse of ``_varints`` (vectorised, int32); refuses a cut-off last varint, one over 4 bytes,
    or more than ``max_count`` numbers before allocating anything per number."""
    b = np.frombuffer(data, dtype=np.uint8)
    if not len(b):
        return np.zeros(0, dtype=np.int32)
    ends = b < 0x80
    if not ends[-1]:
        raise ValueError("the run data ends inside a number")
    count = int(np.count_nonzero(ends))
    if max_count is not None and count > max_count:
        raise ValueError(f"{count} run values is more than a map of this size can hold")
    last = np.flatnonzero(ends)
    first = np.empty_like(last)
    first[0], first[1:] = 0, last[:-1] + 1
    length = last - first + 1
    if length.max() > 4:
        raise ValueError("a run-length number is too long")
    values = (b[first] & 0x7F).astype(np.int32)
    for k in range(1, 4):  # LEB128: the first byte holds the lowest 7 bits
        more = np.flatnonzero(length > k)
        values[more] |= (b[first[more] + k] & 0x7F).astype(np.int32) << (7 * k)
    return values


def max_run_bytes(width: int, height: int) -> int:
    """The most bytes the runs of a width x height map can take: one byte per value plus a length
    of 1 byte (runs < 128 px), 2 (< 16384) or more; every run covers at least one pixel."""
    n = width * height
    return 2 * n + 3 * (n // 128) + 16


def encode_runs(index_map: np.ndarray) -> tuple[str, int]:
    """Label map (H, W) uint8 (0 = unpainted) -> (base64 runs, crc32)."""
    flat = np.ascontiguousarray(index_map, dtype=np.uint8).reshape(-1)
    if not len(flat):
        raise TCIGInputError("painting: the map is empty")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [len(flat)]]))
    pairs = np.stack([flat[starts].astype(np.int64), lengths], 1).reshape(-1)
    return base64.b64encode(_varints(pairs)).decode("ascii"), zlib.crc32(flat.tobytes())


def encode_painting(index_map, labels: list[str], colors: list[str] | None = None) -> str:
    """A painting value from a label map (H, W) (0 = unpainted, k = labels[k-1]) and its labels."""
    from .imageio import palette

    index_map = np.asarray(index_map.cpu() if isinstance(index_map, torch.Tensor) else index_map)
    if colors is None:
        pal = (palette(len(labels)).clamp(0, 1) * 255).round().to(torch.uint8).tolist()
        colors = ["#{:02x}{:02x}{:02x}".format(*c) for c in pal]
    h, w = index_map.shape
    rle, crc = encode_runs(index_map)
    value = {
        "format": FORMAT,
        "version": VERSION,
        "width": int(w),
        "height": int(h),
        "labels": [{"name": n, "color": c} for n, c in zip(labels, colors)],
        "rle": rle,
        "crc32": crc,
    }
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)  # as JSON.stringify writes it
    decode_painting(text)  # what we write must read back: refuse bad labels or sizes here too
    return text


def decode_painting(text: str) -> tuple[np.ndarray, list[str], list[str]]:
    """Painting value -> (label map (H, W) uint8, label names, colours "#rrggbb").

    Every check names what is wrong; nothing in the value is trusted for sizes before it
    is checked (the map is never allocated beyond MAX_SIDE x MAX_SIDE).
    """
    if not isinstance(text, str) or not text.strip():
        raise TCIGInputError("painting: empty; paint a layout in the TCIG Layout Painter node")
    if len(text) > MAX_TEXT:
        raise TCIGInputError(f"painting: {len(text)} characters is over the limit of {MAX_TEXT}; the value is not a painter layout")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise TCIGInputError(f"painting: not valid JSON ({exc}); the value was cut or edited, repaint or reload the workflow") from None
    if not isinstance(value, dict) or value.get("format") != FORMAT:
        raise TCIGInputError(f'painting: not a TCIG painter layout (expected "format": "{FORMAT}")')
    if value.get("version") != VERSION:
        raise TCIGInputError(
            f"painting: version {value.get('version')!r} is not supported (this pack reads version {VERSION}); update the pack"
        )
    w, h = value.get("width"), value.get("height")
    for name, v in (("width", w), ("height", h)):
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_SIDE:
            raise TCIGInputError(f"painting: {name} {v!r} must be a whole number of pixels in 1..{MAX_SIDE}")
    labels = value.get("labels")
    if not isinstance(labels, list) or not 1 <= len(labels) <= MAX_LABELS:
        raise TCIGInputError(f"painting: the label table must list 1..{MAX_LABELS} labels")
    names, colors = [], []
    for n, entry in enumerate(labels, 1):
        name = entry.get("name") if isinstance(entry, dict) else None
        color = entry.get("color") if isinstance(entry, dict) else None
        # the name is trimmed, then counted in code points (the widget counts the same way)
        if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_NAME:
            raise TCIGInputError(f"painting: label #{n} needs a name of 1..{MAX_NAME} characters")
        if not isinstance(color, str) or not _HEX.fullmatch(color):
            raise TCIGInputError(f"painting: label #{n} ({name.strip()}) has colour {color!r}; write colours as '#rrggbb'")
        if name.strip() in names:
            raise TCIGInputError(f"painting: label {name.strip()!r} is listed twice; give each region one label")
        names.append(name.strip())
        colors.append(color.lower())
    rle, crc = value.get("rle"), value.get("crc32")
    if not isinstance(rle, str) or not isinstance(crc, int):
        raise TCIGInputError("painting: the map (rle, crc32) is missing")
    if len(rle) > 4 * (max_run_bytes(w, h) // 3 + 1):  # before decoding anything
        raise TCIGInputError(f"painting: the map data ({len(rle)} characters) is longer than any {w}x{h} map; it is corrupt")
    try:
        runs = _read_varints(base64.b64decode(rle.encode("ascii"), validate=True), max_count=2 * w * h)
    except (ValueError, binascii.Error, UnicodeEncodeError) as exc:
        raise TCIGInputError(f"painting: the map data is corrupt ({exc}); repaint or reload the workflow") from None
    if len(runs) % 2:
        raise TCIGInputError("painting: the map data is corrupt (an odd number of run values)")
    vals, lengths = runs[0::2], runs[1::2]
    if len(lengths) and (lengths.min() < 1):
        raise TCIGInputError("painting: the map data is corrupt (a run of length 0)")
    total = int(lengths.sum())
    if total != w * h:
        raise TCIGInputError(f"painting: the map covers {total} pixels but {w}x{h} = {w * h}; it was cut or edited")
    if len(vals) and vals.max() > len(names):
        raise TCIGInputError(f"painting: the map uses label #{int(vals.max())} but the table has {len(names)} labels")
    flat = np.repeat(vals.astype(np.uint8), lengths)
    if zlib.crc32(flat.tobytes()) != crc:
        raise TCIGInputError("painting: the map does not match its checksum (crc32); it was edited or damaged, repaint it")
    return flat.reshape(h, w), names, colors


def layout_from_painting(text: str) -> tuple[Layout, list[str], list[str]]:
    """Painting value -> (Layout, the layout's labels' colours, all painter labels).

    Labels with no painted pixel are left out of the Layout (with a note), as for the
    other layout sources.
    """
    index_map, names, colors = decode_painting(text)
    idx = torch.from_numpy(index_map.astype(np.int16)) - 1  # -1 = not painted = ignored (2 bytes a pixel)
    layout = layout_from_index_map(idx, names)
    return layout, [colors[names.index(label)] for label in layout.labels], names


def painting_from_layout(layout: Layout, colors: list[str] | None = None) -> tuple[str, list[str]]:
    """A painter value holding ``layout`` (e.g. one read from a photo), to edit on the canvas, and notes.
    A side above MAX_SIDE is resampled (nearest) to fit; more than MAX_LABELS labels is an error;
    names are cut to MAX_NAME characters. ``colors``: one "#rrggbb" per label (default: the palette)."""
    notes = []
    h, w = layout.size
    if max(h, w) > MAX_SIDE:
        scale = MAX_SIDE / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        layout = layout.resized(nh, nw)
        notes.append(f"the layout is {w}x{h}; resampled to {nw}x{nh} (nearest) for the painter (at most {MAX_SIDE} px a side)")
    if len(layout.labels) > MAX_LABELS:
        raise TCIGInputError(
            f"layout: {len(layout.labels)} labels; the painter holds at most {MAX_LABELS}. Keep fewer labels (e.g. Layout from "
            "Image's keep_labels or min_region_share)"
        )
    names = [label[:MAX_NAME] for label in layout.labels]
    if len(set(names)) != len(names):
        raise TCIGInputError(f"layout: labels {layout.labels} are not distinct in their first {MAX_NAME} characters")
    index_map = (layout.index_map().cpu() + 1).to(torch.uint8).numpy()  # at most MAX_LABELS (64) labels
    return encode_painting(index_map, names, colors), notes


def preview_image(layout: Layout, colors: list[str]) -> torch.Tensor:
    """(3, H, W) 0..1: each labelled pixel in its painter colour, ignored pixels black."""
    from .imageio import colourise

    rgb = torch.tensor([[int(c[i : i + 2], 16) / 255 for i in (1, 3, 5)] for c in colors])
    return colourise(layout.index_map(), rgb)
