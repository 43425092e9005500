"""The rows of docs/ERRORS.md that earlier test files do not already cover."""

import math

import pytest
import torch

from conftest import region_layout
from tcig_ops.errors import TCIGInputError
from tcig_ops.layout import layout_from_colour_image, layout_from_masks
from tcig_ops.stage1 import Guide, Stage1Settings, bind_guides, run_stage1


def test_all_ignore_layout_is_refused():
    img = torch.zeros(3, 8, 8)  # black: not in the map
    with pytest.raises(TCIGInputError, match="every pixel is ignored"):
        layout_from_colour_image(img, '{"#87ceeb": "sky"}')


def test_soft_masks_are_thresholded():
    m = torch.full((4, 4), 0.3)
    m[:2] = 0.7
    lay = layout_from_masks([(m, "sky")])
    assert lay.ignore[2:].all() and not lay.ignore[:2].any()


def test_empty_or_foreign_class_subset(models):
    lay = region_layout("lake", 16)
    with pytest.raises(TCIGInputError, match="class subset is empty"):
        bind_guides([Guide(models["seg_a"], 1.0, [" "])], lay)
    with pytest.raises(TCIGInputError, match="not in the layout"):
        bind_guides([Guide(models["seg_a"], 1.0, ["road"])], lay)
    with pytest.raises(TCIGInputError, match="not covered"):
        bind_guides([Guide(models["seg_a"], 1.0, ["sky"])], lay)


def test_size_not_multiple_of_factor_is_rounded_and_said(models):
    r = run_stage1(models["vqgan"], region_layout("road", 32), [Guide(models["seg_a"])], Stage1Settings(width=33, height=32, iterations=1))
    assert r.image.shape[-1] in (32, 34) and any("width 33 rounded" in n for n in r.notes)


def test_size_too_large_is_refused_before_allocating(models):
    with pytest.raises(TCIGInputError, match="GiB"):
        run_stage1(
            models["vqgan"], region_layout("road", 32), [Guide(models["seg_a"])], Stage1Settings(width=30000, height=30000, iterations=1)
        )


def test_guide_weight_must_be_finite(models):
    with pytest.raises(TCIGInputError, match="weight"):
        bind_guides([Guide(models["seg_a"], math.nan)], region_layout("road", 16))


def test_model_cache_reuses_loaded_models(tmp_path):
    import importlib

    from pack import load_pack

    load_pack()
    cache = importlib.import_module("tcig_pack.nodes.model_cache")
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"x")
    loads = []
    a = cache.cached("vqgan", str(f), (), lambda: loads.append(1) or object())
    b = cache.cached("vqgan", str(f), (), lambda: loads.append(1) or object())
    assert a is b and len(loads) == 1
    import os
    import time

    os.utime(f, (time.time() + 10, time.time() + 10))  # the file changed on disk: reload
    c = cache.cached("vqgan", str(f), (), lambda: loads.append(1) or object())
    assert c is not a and len(loads) == 2
