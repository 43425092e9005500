"""Node logic that needs no server: tensor layouts, layout chaining, guides, refine map, workflows."""

import importlib
import json
import os
import subprocess
import sys

import pytest
import torch

from pack import ROOT, load_pack

load_pack()
glue = importlib.import_module("tcig_pack.nodes.glue")
layout_mod = importlib.import_module("tcig_pack.tcig_ops.layout")
refine = importlib.import_module("tcig_pack.tcig_ops.refine")
errors = importlib.import_module("tcig_pack.tcig_ops.errors")


def test_image_roundtrip_and_alpha_dropped():
    img = torch.rand(2, 5, 7, 4)
    x = glue.image_to_bchw(img)
    assert x.shape == (2, 3, 5, 7)
    assert torch.equal(glue.bchw_to_image(x), img[..., :3])
    with pytest.raises(errors.TCIGInputError, match="IMAGE"):
        glue.image_to_bchw(torch.rand(5, 7, 3))


def test_layout_chain_later_mask_wins_and_resizes():
    full = torch.ones(1, 8, 8)
    top = torch.zeros(1, 8, 8)
    top[:, :4] = 1
    lay = glue.layout_add_mask(None, full, "mountain")
    lay = glue.layout_add_mask(lay, top, "sky")
    assert lay.labels == ["mountain", "sky"]
    idx = lay.index_map()
    assert (idx[:4] == 1).all() and (idx[4:] == 0).all()
    small = torch.zeros(1, 4, 4)
    small[:, 3:] = 1  # bottom quarter at half resolution
    lay2 = glue.layout_add_mask(lay, small, "water")
    assert lay2.size == (8, 8) and (lay2.index_map()[6:] == 2).all()
    assert any("resized" in n for n in lay2.notes)
    with pytest.raises(errors.TCIGInputError, match="batch of 2"):
        glue.layout_add_mask(None, torch.ones(2, 4, 4), "sky")


def test_guides_chain_without_mutating_and_class_lists():
    a = glue.guides_append(None, "segA", 1.0, "sky, water")
    b = glue.guides_append(a, "segB", 2.0, "  ")
    assert len(a) == 1 and len(b) == 2
    assert a[0].classes == ["sky", "water"] and b[1].classes is None and b[1].weight == 2.0


def test_region_prompts_parse():
    assert dict(glue.region_prompts("sky: blue sky\n\nwater: a lake: calm")) == {"sky": "blue sky", "water": "a lake: calm"}
    with pytest.raises(errors.TCIGInputError, match="line 2"):
        glue.region_prompts("sky: a\nno colon here")


def test_denoise_map_borders_interior_and_disagreement():
    idx = torch.zeros(32, 32, dtype=torch.long)
    idx[:, 16:] = 1
    m = refine.denoise_map(idx, base=0.4, border=0.7, border_width=4, softness=0)
    assert m[10, 0] == pytest.approx(0.4) and m[10, 31] == pytest.approx(0.4)
    assert m[10, 15] == pytest.approx(0.7) and m[10, 16] == pytest.approx(0.7)
    assert m[10, 10] == pytest.approx(0.4)  # outside the 4-px band
    pred = idx.clone()
    pred[0:5, 0:5] = 1  # the segmenter sees the wrong class here
    m2 = refine.denoise_map(idx, 0.4, 0.7, 4, pred, 0.9, softness=0)
    assert m2[2, 2] == pytest.approx(0.9) and m2[20, 2] == pytest.approx(0.4)
    ignore = idx.clone()
    ignore[20:, :8] = -1  # ignored pixels: never "disagreeing"
    m3 = refine.denoise_map(ignore, 0.4, 0.4, 0, torch.ones_like(idx), 0.9, softness=0)
    assert m3[25, 2] == pytest.approx(0.4)
    soft = refine.denoise_map(idx, 0.4, 0.7, 4, softness=5)
    assert soft.min() >= 0.4 - 1e-6 and soft.max() <= 0.7 + 1e-6 and soft[10, 13] > 0.4
    with pytest.raises(errors.TCIGInputError, match="within 0..1"):
        refine.denoise_map(idx, base=1.5)


def test_workflow_files_are_current_and_twins_match():
    sys.path.insert(0, os.path.join(ROOT, "workflows"))
    try:
        import build_workflows
    finally:
        sys.path.pop(0)
    for rel, text in build_workflows.render().items():
        with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
            assert f.read() == text, f"{rel} is stale: run python workflows/build_workflows.py"
    for name in build_workflows.GRAPHS:
        ui = json.load(open(os.path.join(ROOT, "workflows", f"{name}.json")))
        api = json.load(open(os.path.join(ROOT, "workflows", f"{name}.api.json")))
        assert sorted(str(n["id"]) for n in ui["nodes"]) == sorted(api)
        by_id = {n["id"]: n for n in ui["nodes"]}
        for link_id, src, src_slot, dst, dst_slot, _type in ui["links"]:
            name_in = by_id[dst]["inputs"][dst_slot]["name"]
            assert api[str(dst)]["inputs"][name_in] == [str(src), src_slot], (name, link_id)
        for n in ui["nodes"]:
            a = api[str(n["id"])]
            assert a["class_type"] == n["type"]
            literals = [v for v in a["inputs"].values() if not isinstance(v, list)]
            widgets = [v for v in n["widgets_values"] if v not in ("fixed", "randomize", "image")]
            assert literals == widgets, (name, n["id"])


def test_importing_the_pack_changes_nothing_global():
    code = r"""
import sys, torch, json
before = (list(sys.path), set(sys.modules), torch.get_default_dtype(), torch.are_deterministic_algorithms_enabled(),
          torch.backends.cudnn.benchmark, torch.get_num_threads(), torch.is_grad_enabled())
sys.path.insert(0, 'tests'); from pack import load_pack; sys.path.pop(0)
pack = load_pack()
import importlib
for m in ['tcig_ops.vqgan', 'tcig_ops.clip_guide', 'tcig_ops.segmenters', 'tcig_ops.stage1', 'tcig_ops.refine', 'nodes.glue']:
    importlib.import_module('tcig_pack.' + m)
after = (list(sys.path), set(sys.modules), torch.get_default_dtype(), torch.are_deterministic_algorithms_enabled(),
         torch.backends.cudnn.benchmark, torch.get_num_threads(), torch.is_grad_enabled())
assert after[0] == before[0], 'sys.path changed'
assert after[2:] == before[2:], 'torch flags changed'
new = after[1] - before[1]
stubs = [m for m in new if sys.modules[m] is not None and getattr(sys.modules[m], '__spec__', None) is None
         and not m.startswith(('tcig_pack', '_'))]
print(json.dumps({'stubs': stubs}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["stubs"] == []


def test_painter_workflows_need_no_input_file():
    """The shipped painter workflows carry their layout: no LoadImage, nothing to copy."""
    for name in ("tcig_two_stage", "tcig_stage1_only", "tcig_multi_segmenter"):
        types = {n["class_type"] for n in json.load(open(os.path.join(ROOT, "workflows", f"{name}.api.json"))).values()}
        assert "TCIGLayoutPainter" in types and "LoadImage" not in types, name
