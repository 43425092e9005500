"""The Layout Painter's stored layout (Python side): round trips, errors, one layout path."""

from __future__ import annotations

import base64
import importlib
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import ROOT
from tcig_ops.demo import demo_layout, demo_painting
from tcig_ops.errors import TCIGInputError
from tcig_ops.layout import layout_from_colour_image
from tcig_ops.painter import MAX_SIDE, decode_painting, encode_painting, layout_from_painting, preview_image
from tcig_ops.world import LAYOUT_HEX


@st.composite
def painted_maps(draw):
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    k = draw(st.integers(1, 6))
    kind = draw(st.sampled_from(["noise", "blocks"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "noise":
        m = rng.integers(0, k + 1, (h, w))
    else:  # a few rectangles: the runs a painter makes
        m = np.zeros((h, w), np.int64)
        for _ in range(draw(st.integers(0, 6))):
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            m[y0 : y0 + rng.integers(1, h + 1), x0 : x0 + rng.integers(1, w + 1)] = rng.integers(0, k + 1)
    names = draw(
        st.lists(
            st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12).map(str.strip).filter(bool),
            min_size=k,
            max_size=k,
            unique=True,
        )
    )
    return m.astype(np.uint8), names


@given(painted_maps())
def test_painter_roundtrip_random_maps(case):
    m, names = case
    text = encode_painting(m, names)
    back, back_names, colors = decode_painting(text)
    assert np.array_equal(back, m) and back_names == names and len(colors) == len(names)
    if (m > 0).any():
        layout, _, _ = layout_from_painting(text)
        present = [names[i - 1] for i in sorted(set(m[m > 0].tolist()))]
        assert layout.labels == present
        expected = np.where(m > 0, np.array([-1] + [present.index(n) if n in present else -1 for n in names])[m], -1)
        assert np.array_equal(layout.index_map().numpy(), expected)


def test_painter_layout_is_the_same_layout_the_colour_node_builds():
    """One layout path: the painter's layout equals the colour-image layout of the same picture."""
    from_colours = layout_from_colour_image(demo_layout(96, 64), {LAYOUT_HEX[k]: k for k in ("sky", "mountain", "water")})
    painted, colors, names = layout_from_painting(demo_painting(96, 64))
    assert painted.labels == from_colours.labels and names == ["sky", "mountain", "water"]
    assert torch.equal(painted.targets, from_colours.targets) and torch.equal(painted.ignore, from_colours.ignore)
    assert colors == [LAYOUT_HEX[k] for k in painted.labels]
    img = preview_image(painted, colors)
    assert img.shape == (3, 64, 96) and torch.allclose(img, demo_layout(96, 64), atol=1 / 255)


def _value(**patch):
    v = json.loads(demo_painting(32, 16))
    v.update(patch)
    return json.dumps(v)


@pytest.mark.parametrize(
    "text, words",
    [
        ("", "empty"),
        ("{not json", "not valid JSON"),
        (json.dumps({"format": "x"}), "not a TCIG painter layout"),
        (_value(version=9), "version 9"),
        (_value(width=MAX_SIDE + 1), "1..2048"),
        (_value(width=0), "1..2048"),
        (_value(height="16"), "height"),
        (_value(labels=[]), "1..64 labels"),
        (_value(labels=[{"name": "sky", "color": "#87ceeb"}] * 2), "listed twice"),
        (_value(labels=[{"name": " ", "color": "#87ceeb"}]), "needs a name"),
        (_value(labels=[{"name": "sky", "color": "blue"}]), "#rrggbb"),
        (_value(rle="%%%"), "corrupt"),
        (_value(crc32=1), "checksum"),
        (_value(width=31), "covers"),
        (_value(labels=[{"name": "sky", "color": "#87ceeb"}]), "uses label #3 but the table has 1"),
    ],
)
def test_corrupt_oversize_and_tampered_values_are_named(text, words):
    with pytest.raises(TCIGInputError, match=words):
        layout_from_painting(text)


def test_truncated_and_oversized_runs_are_refused_before_allocating():
    v = json.loads(demo_painting(32, 16))
    raw = base64.b64decode(v["rle"])
    v["rle"] = base64.b64encode(raw[:-1] + bytes([raw[-1] | 0x80])).decode()  # last number cut
    with pytest.raises(TCIGInputError, match="ends inside a number"):
        decode_painting(json.dumps(v))
    v["rle"] = base64.b64encode(bytes([1, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F])).decode()  # a 5-byte run length
    with pytest.raises(TCIGInputError, match="too long"):
        decode_painting(json.dumps(v))
    v["rle"] = base64.b64encode(bytes([1, 0xFF, 0xFF, 0xFF, 0x7F])).decode()  # 268M pixels for a 32x16 map
    with pytest.raises(TCIGInputError, match="covers 268435455 pixels"):
        decode_painting(json.dumps(v))


def test_only_unpainted_pixels_is_a_clear_error():
    with pytest.raises(TCIGInputError, match="paint at least one labelled region"):
        layout_from_painting(encode_painting(np.zeros((8, 8), np.uint8), ["sky"]))


def test_unpainted_labels_are_left_out_with_a_note():
    m = np.zeros((8, 8), np.uint8)
    m[:4] = 2
    layout, colors, names = layout_from_painting(encode_painting(m, ["sky", "water"], ["#87ceeb", "#1e4ca6"]))
    assert layout.labels == ["water"] and names == ["sky", "water"] and colors == ["#1e4ca6"]
    assert any("left out" in n for n in layout.notes) and layout.ignore[4:].all()


def test_label_check_gives_the_backend_suggestions():
    from pack import load_pack

    load_pack()
    glue = importlib.import_module("tcig_pack.nodes.glue")
    segs = [
        {"name": "ade", "labels": ["wall", "building;edifice", "sky"], "open_vocabulary": False},
        {"name": "clipseg", "labels": None, "open_vocabulary": True},
    ]
    out = glue.check_labels(["Sky", "edifice", "skyy", "unicorn"], segs)
    assert out["Sky"]["known_by"] == ["ade"] and out["edifice"]["known_by"] == ["ade"]
    assert out["skyy"]["known_by"] == [] and "sky" in out["skyy"]["suggestions"]
    assert out["unicorn"] == {"known_by": [], "open_vocabulary": ["clipseg"], "suggestions": []}


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js (node) to run the widget's encoder")
def test_python_and_the_widget_write_and_read_the_same_bytes():
    """The widget (web/painter_core.js) and tcig_ops/painter.py agree byte for byte."""
    rng = np.random.default_rng(3)
    m = np.zeros((37, 53), np.uint8)
    m[5:20, 3:40] = 1
    m[25:, :] = 3
    m[rng.random(m.shape) < 0.05] = 2
    names, colors = ["sky", "wåter 水", "road"], ["#87ceeb", "#1e4ca6", "#6b6b70"]
    py_text = encode_painting(m, names, colors)
    script = f"""
import {{ PaintMap, encodePainting, decodePainting }} from {json.dumps((ROOT / "web" / "painter_core.js").as_uri())};
const m = new PaintMap({m.shape[1]}, {m.shape[0]}, Uint8Array.from({json.dumps(m.reshape(-1).tolist())}));
const labels = {json.dumps([{"name": n, "color": c} for n, c in zip(names, colors)])};
const fromPy = decodePainting(process.argv[1]);
console.log(JSON.stringify({{js: encodePainting(m, labels), same: fromPy.map.data.every((v, i) => v === m.data[i])}}));
"""
    out = subprocess.run(["node", "--input-type=module", "-e", script, py_text], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["same"] is True
    assert res["js"] == py_text


def _shared_cases():
    import json

    from conftest import ROOT

    table = json.loads((ROOT / "tests" / "painting_cases.json").read_text(encoding="utf-8"))
    return [pytest.param(json.dumps({**table["base"], **c["patch"]}, ensure_ascii=False), c["valid"], id=c["why"]) for c in table["cases"]]


@pytest.mark.parametrize("text, valid", _shared_cases())
def test_the_shared_table_of_painting_values(text, valid):
    """The same table tests/js/painter_core.test.mjs reads: both validators agree on each case."""
    from tcig_ops.painter import decode_painting

    if valid:
        decode_painting(text)
    else:
        with pytest.raises(TCIGInputError):
            decode_painting(text)


def test_a_layout_becomes_a_painting_resampled_to_the_painters_limit():
    import torch

    from tcig_ops.layout import layout_from_index_map
    from tcig_ops.painter import MAX_SIDE, decode_painting, painting_from_layout

    idx = torch.zeros(30, 50, dtype=torch.long)
    idx[10:, 20:] = 1
    idx[0, 0] = -1
    text, notes = painting_from_layout(layout_from_index_map(idx, ["sky", "water"]))
    got, names, colors = decode_painting(text)
    assert names == ["sky", "water"] and not notes and len(colors) == 2
    assert (got == (idx + 1).numpy()).all()  # unpainted stays unpainted
    big = torch.zeros(MAX_SIDE + 100, 10, dtype=torch.long)
    big[: (MAX_SIDE + 100) // 2] = 1
    text, notes = painting_from_layout(layout_from_index_map(big, ["sky", "water"]))
    got, _, _ = decode_painting(text)
    assert got.shape == (MAX_SIDE, 10) and "resampled" in notes[0]  # 10 * 2048 / 2148 rounds to 10
    many = layout_from_index_map(torch.arange(70).repeat(2, 1), [f"c{i}" for i in range(70)])
    with pytest.raises(TCIGInputError, match="at most 64"):
        painting_from_layout(many)
