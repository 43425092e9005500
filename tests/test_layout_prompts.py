"""Layout and prompt parsing: properties (hypothesis) and the documented error cases."""

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tcig_ops.errors import TCIGInputError
from tcig_ops.layout import layout_from_colour_image, layout_from_masks, match_labels, parse_class_map
from tcig_ops.metrics import iou_from_index_maps, mean_iou
from tcig_ops.prompts import parse_prompt, parse_prompts

words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz ", min_size=1, max_size=20).filter(lambda s: s.strip())


@given(words, st.floats(-10, 10, allow_nan=False).filter(lambda w: w != 0), st.floats(-5, 5, allow_nan=False))
def test_prompt_roundtrip(text, weight, stop):
    p = parse_prompt(f"{text}:{weight!r}:{stop!r}")
    assert p.text == text.strip() and p.weight == weight and p.stop == stop


@given(st.lists(words, min_size=1, max_size=5))
def test_prompts_split_on_bar_default_weight_one(texts):
    ps = parse_prompts(" | ".join(texts))
    assert [p.text for p in ps] == [t.strip() for t in texts]
    assert all(p.weight == 1.0 and p.stop == -math.inf for p in ps)


def test_prompt_with_colon_text_kept():
    assert parse_prompt("ratio 16:9 poster").text == "ratio 16:9 poster"
    assert parse_prompt("ratio 16:9 poster:2").weight == 2.0


@pytest.mark.parametrize(
    "text, words", [("", ["empty"]), ("  |  ", ["empty"]), ("fog:-1", ["negative"]), ("a lake:nan", ["weight"]), (":2", ["no text"])]
)
def test_bad_prompts(text, words):
    with pytest.raises(TCIGInputError) as e:
        parse_prompts(text)
    assert all(w in str(e.value) for w in words)


@settings(max_examples=30, deadline=None)
@given(st.integers(8, 24), st.integers(8, 24), st.lists(st.integers(0, 3), min_size=1, max_size=4), st.data())
def test_masks_later_wins_and_every_pixel_once(h, w, label_ids, data):
    masks = []
    for lid in label_ids:
        m = torch.tensor(data.draw(st.lists(st.lists(st.booleans(), min_size=w, max_size=w), min_size=h, max_size=h))).float()
        if m.sum() == 0:
            m[0, 0] = 1
        masks.append((m, f"c{lid}"))
    lay = layout_from_masks(masks)
    assert lay.targets.shape == (len(lay.labels), h, w)
    covered = torch.stack([m for m, _ in masks]).amax(0) > 0
    assert torch.equal(~lay.ignore, covered)
    assert torch.equal(lay.targets.sum(0), covered.float())  # one label per pixel
    last = masks[-1]
    assert (lay.index_map()[last[0] > 0] == lay.labels.index(last[1])).all()


@given(st.dictionaries(st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)), words, min_size=1, max_size=6))
def test_class_map_parses_hex(mapping):
    text = json.dumps({"#{:02x}{:02x}{:02x}".format(*k): v for k, v in mapping.items()})
    parsed = parse_class_map(text)
    assert parsed == {k: v.strip() for k, v in mapping.items()}


@pytest.mark.parametrize(
    "text, words",
    [
        ('{"#12345": "sky"}', ["#12345", "#rrggbb"]),
        ('{"#87ceeb": "sky", "#87CEEB": "water"}', ["more than once"]),
        ("not json", ["JSON"]),
        ("{}", ["non-empty"]),
        ('{"#87ceeb": ""}', ["no label"]),
    ],
)
def test_bad_class_maps(text, words):
    with pytest.raises(TCIGInputError) as e:
        parse_class_map(text)
    assert all(w in str(e.value) for w in words)


def test_colour_layout_unlisted_colours_are_ignored_and_tolerance():
    img = torch.zeros(3, 4, 4)
    img[:, :2] = torch.tensor([135, 206, 235]).view(3, 1, 1) / 255
    img[:, 2:] = torch.tensor([30, 76, 166]).view(3, 1, 1) / 255
    img[:, 3, 3] = torch.tensor([1.0, 0.0, 1.0])  # magenta: not listed
    img[:, 0, 0] += 3 / 255  # JPEG-like drift stays within tolerance
    lay = layout_from_colour_image(img, '{"#87ceeb": "sky", "#1e4ca6": "water"}')
    assert lay.labels == ["sky", "water"]
    assert lay.ignore.sum() == 1 and lay.ignore[3, 3]
    assert lay.index_map()[0, 0] == 0 and lay.index_map()[3, 0] == 1
    assert any("unlisted" in n for n in lay.notes)


@pytest.mark.parametrize(
    "mask, words",
    [
        (torch.zeros(4, 4), ["empty"]),
        (torch.full((4, 4), 255.0), ["outside 0..1", "255"]),
        (torch.full((4, 4), float("nan")), ["NaN"]),
    ],
)
def test_bad_masks(mask, words):
    with pytest.raises(TCIGInputError) as e:
        layout_from_masks([(mask, "sky")])
    assert all(w in str(e.value) for w in words)


def test_mask_size_mismatch_and_resize_limits():
    with pytest.raises(TCIGInputError, match="differs"):
        layout_from_masks([(torch.ones(4, 4), "a"), (torch.ones(5, 4), "b")])
    lay = layout_from_masks([(torch.ones(16, 16), "a")])
    assert lay.resized(32, 32).size == (32, 32) and "resized" in lay.resized(32, 32).notes[-1]
    with pytest.raises(TCIGInputError, match="too far"):
        lay.resized(256, 256)


def test_label_matching_synonyms_and_close_matches():
    vocab = ["wall", "building;edifice", "sky", "tree", "mountain, mount"]
    assert match_labels(["Edifice", "mount", "SKY"], vocab, "ade") == [1, 4, 2]
    with pytest.raises(TCIGInputError) as e:
        match_labels(["skye"], vocab, "ade")
    assert "sky" in str(e.value) and "ade" in str(e.value)


def test_iou_values():
    t = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [-1, -1, -1, -1]])
    p = torch.tensor([[0, 0, 0, 1], [0, 0, 1, 1], [1, 1, 1, 1]])
    ious = iou_from_index_maps(p, t, ["a", "b"])
    assert ious == {"a": 4 / 5, "b": 3 / 4}
    assert mean_iou(ious) == pytest.approx((0.8 + 0.75) / 2)
