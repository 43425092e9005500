"""Glue shared by the CLI and the demo: load models from paths, run stage 1, write outputs."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch

from .clip_guide import ClipGuide, ClipModel, load_open_clip
from .errors import TCIGInputError
from .imageio import colourise, load_image, overlay, palette, save_image, side_by_side
from .layout import Layout, layout_from_colour_image
from .prompts import parse_prompts
from .report import stage1_report, write_json
from .segmenters import Segmenter, load_segmenter
from .stage1 import Guide, Stage1Result, Stage1Settings, run_stage1
from .vqgan import VQGAN, load_vqgan


@dataclass
class SegmenterSpec:
    path: str
    weight: float = 1.0
    classes: list[str] | None = None


def parse_segmenter_spec(spec: str) -> SegmenterSpec:
    """``PATH[:WEIGHT[:class,class]]``; a trailing field is read as a weight only if it is a number."""
    parts = spec.split(":")
    classes = None
    if len(parts) >= 3 and _is_number(parts[-2]):
        classes = [c.strip() for c in parts[-1].split(",") if c.strip()]
        if not classes:
            raise TCIGInputError(f"--segmenter {spec}: class subset after the weight is empty")
        parts = parts[:-1]
    weight = 1.0
    if len(parts) >= 2 and _is_number(parts[-1]):
        weight = float(parts[-1])
        parts = parts[:-1]
    path = ":".join(parts)
    if weight < 0 or weight != weight:
        raise TCIGInputError(f"--segmenter {spec}: weight {weight} must be >= 0")
    return SegmenterSpec(path, weight, classes)


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def read_class_map(text_or_path: str):
    """Class map from inline JSON or a JSON file path."""
    if os.path.isfile(text_or_path):
        with open(text_or_path, encoding="utf-8") as f:
            return f.read()
    if not text_or_path.strip().startswith("{"):
        raise TCIGInputError(f'--classes: {text_or_path!r} is neither a JSON file nor inline JSON like \'{{"#87ceeb": "sky"}}\'')
    return text_or_path


@dataclass
class Models:
    vqgan: VQGAN
    clip: ClipModel | None
    segmenters: list[Segmenter]


def load_models(vqgan: str, clip: str | None, segmenters: list[str], device="cpu", vqgan_config=None, clip_arch=None) -> Models:
    return Models(
        load_vqgan(vqgan, vqgan_config, device=device),
        load_open_clip(clip, clip_arch, device=device) if clip else None,
        [load_segmenter(p, device=device) for p in segmenters],
    )


def region_guides(models: Models, region_prompts: dict[str, str] | None, cutn: int, cut_pow: float) -> list:
    """{label: prompt} -> RegionPrompt list (one CLIP guide per region); needs a CLIP model."""
    from .stage1 import region_prompts_from_text

    if not region_prompts:
        return []
    if models.clip is None:
        raise TCIGInputError("region prompts need a guidance CLIP (--clip); give one or leave the region prompts out")
    return region_prompts_from_text(models.clip, region_prompts, cutn, cut_pow)


def run(
    models: Models,
    specs: list[SegmenterSpec],
    layout: Layout,
    prompt: str,
    settings: Stage1Settings,
    cutn: int = 32,
    cut_pow: float = 1.0,
    init_image=None,
    callback=None,
    region_prompts: dict[str, str] | None = None,
) -> Stage1Result:
    guides = [Guide(seg, s.weight, s.classes) for seg, s in zip(models.segmenters, specs)]
    clip_guide = None
    if models.clip is not None and settings.clip_weight > 0:
        clip_guide = ClipGuide(models.clip, parse_prompts(prompt), cutn=cutn, cut_pow=cut_pow)
    # checked whatever the CLIP weight (no CLIP model: an error; unknown labels: refused in run_stage1,
    # which skips the region terms' work at weight 0)
    regions = region_guides(models, region_prompts, cutn, cut_pow)
    return run_stage1(
        models.vqgan, layout, guides, settings, clip_guide=clip_guide, init_image=init_image, callback=callback, region_prompts=regions
    )


def write_outputs(
    result: Stage1Result,
    layout: Layout,
    models: Models,
    out: str,
    report: str | None,
    side: str | None,
    settings: dict,
    device="cpu",
    judge: Segmenter | None = None,
) -> dict:
    """Write the image (first: it is never lost to a later failure), the report and the side-by-side.
    With a ``judge`` (a segmenter that did not guide), the report adds its reading of the result."""
    save_image(result.image, out)
    data = stage1_report(result, device, settings)
    if judge is not None:
        from .judge import judge_report

        data.update(judge_report(judge, result.image, layout))
    if report:
        write_json(data, report)
    if side:
        save_image(side_by_side_panel(result.image, layout, models.segmenters[0]), side)
    return data


def side_by_side_panel(image: torch.Tensor, layout: Layout, segmenter: Segmenter) -> torch.Tensor:
    """layout | result | the segmenter's view of the result (in layout colours), (3, H, 3W+gaps)."""
    from .metrics import predict_in_layout_space

    H, W = image.shape[-2:]
    lay = layout.resized(H, W)
    colours = palette(len(lay.labels))
    pred, _ = predict_in_layout_space(segmenter, image, lay)
    return side_by_side(colourise(lay.index_map(), colours), image[0].cpu(), overlay(image, pred, colours))


def load_layout(path: str, class_map: str) -> Layout:
    return layout_from_colour_image(load_image(path, "layout"), read_class_map(class_map))


def manifest_models(folder: str) -> dict:
    """The model paths of a models folder's manifest.json (relative ones resolved against the
    folder): vqgan, vqgan_config, clip, clip_arch, the guiding segmenters (the first ``guides`` of
    ``segmenters``, 1 when the manifest does not say) and the judge."""
    m = manifest(folder)

    def resolve(p):
        return p if os.path.isabs(p) else os.path.join(folder, p)

    return {
        "vqgan": resolve(m["vqgan"]),
        "vqgan_config": resolve(m["vqgan_config"]) if m.get("vqgan_config") else None,
        "clip": resolve(m["clip"]) if m.get("clip") else None,
        "clip_arch": m.get("clip_arch"),
        "segmenters": [resolve(p) for p in m["segmenters"][: guide_count(m)]],
        "judge": resolve(m["judge"]) if m.get("judge") else None,
    }


def guide_count(m: dict) -> int:
    """How many of a manifest's ``segmenters`` (the first ones) steer by default: its ``guides``, 1 without it."""
    n = m.get("guides", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= len(m["segmenters"]):
        raise TCIGInputError(
            f"manifest.json: 'guides' is {n!r}; give a whole number from 1 to {len(m['segmenters'])} (the segmenters listed)"
        )
    return n


def manifest(folder: str) -> dict:
    path = os.path.join(folder, "manifest.json")
    if not os.path.isfile(path):
        raise TCIGInputError(f"models folder {folder} has no manifest.json; run 'python -m tcig_ops tiny-models {folder}' or write one")
    with open(path, encoding="utf-8") as f:
        return json.load(f)
