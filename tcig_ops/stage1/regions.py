"""Region prompts: a CLIP term per layout region, from cutouts inside the region's bounding box."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..clip_guide import ClipGuide
from ..errors import TCIGInputError
from ..layout import Layout


@dataclass
class RegionPrompt:
    """A CLIP term for one layout region: ``guide`` scores cutouts of the region only.

    ``weight`` None weighs the term by the region's share of the image."""

    label: str
    guide: ClipGuide
    weight: float | None = None


def region_prompts_from_text(clip, texts: dict[str, str], cutn: int, cut_pow: float) -> list[RegionPrompt]:
    """{label: 'text[:weight] | ...'} -> one RegionPrompt (its own CLIP guide) per region."""
    from ..prompts import parse_prompts

    return [RegionPrompt(label, ClipGuide(clip, parse_prompts(text), cutn=cutn, cut_pow=cut_pow)) for label, text in texts.items()]


def _check_regions(regions: list[RegionPrompt], layout: Layout) -> list[RegionPrompt]:
    unknown = [r.label for r in regions if r.label not in layout.labels]
    if unknown:
        raise TCIGInputError(f"region prompts: labels {unknown} are not in the layout; its labels are {layout.labels}")
    for r in regions:
        if r.weight is not None and not (math.isfinite(r.weight) and r.weight >= 0):
            raise TCIGInputError(f"region prompt {r.label!r}: weight {r.weight} must be a finite number >= 0")
    return regions


def _region_box(layout: Layout, label: str) -> tuple[tuple[int, int, int, int], torch.Tensor, float] | None:
    """Bounding box (x0, y0, x1, y1) of a label's pixels, its mask inside the box, its share of the image;
    None when no pixel of this level holds any of the region (a thin region beside unpainted pixels,
    whose cells are all ignored on a coarse level). Host work, once per level."""
    target = layout.planes([layout.labels.index(label)])[0]
    mask = target > 0.5
    if not mask.any():  # a small region on a coarse level: every pixel that holds some of it
        mask = target > 0
    if not mask.any():
        return None
    ys, xs = torch.nonzero(mask.cpu(), as_tuple=True)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    share = float(mask.float().mean())
    return box, mask[box[1] : box[3], box[0] : box[2]], share
