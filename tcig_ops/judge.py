"""Control as a segmenter that did not steer reads it: the judge, and the oracle.

A guide can be fooled (the optimiser raises its guide's mIoU by whatever that model reacts to),
so control is also reported by a judge: a segmenter that took no part in the optimisation (the
tiny models' ``judge`` is a UperNet-ConvNeXt at 128 px, trained on other samples of the world;
with real models, any segmenter that is not a guide). The oracle is the judge's mIoU on the
synthetic world's own rendering of a layout (its textures painted exactly in the regions): the
best any image can score there, so control is also given as a share of it. It exists only where
every label is a class of the synthetic world (the tiny models); elsewhere it is None.
"""

from __future__ import annotations

import torch

from . import world
from .layout import Layout
from .metrics import iou_from_index_maps, mean_iou, predict_in_layout_space


def oracle_image(layout: Layout, seed: int = 0) -> torch.Tensor | None:
    """(1, 3, H, W) 0..1: each region in its world texture (ignored pixels grey); None when a label
    is not a world class."""
    if any(label not in world.CLASSES for label in layout.labels):
        return None
    h, w = layout.size
    side = max(h, w)
    gen = torch.Generator().manual_seed(seed)
    idx = layout.index_map().cpu()
    image = torch.full((3, h, w), 0.5)
    for k, label in enumerate(layout.labels):
        m = (idx == k).float()
        image = image * (1 - m) + world.texture(label, side, gen)[:, :h, :w] * m
    return image[None]


def judge_ious(judge, image: torch.Tensor, layout: Layout) -> dict[str, float]:
    """IoU per layout label of the judge's reading of ``image`` (1, 3, H, W) (layout resized to it)."""
    H, W = image.shape[-2:]
    lay = layout.resized(H, W)
    pred, _ = predict_in_layout_space(judge, image, lay)
    return iou_from_index_maps(pred, lay.index_map(), lay.labels)


def judge_report(judge, image: torch.Tensor, layout: Layout) -> dict:
    """``judge_miou``, ``judge_iou`` (per label) and, where the world can render the layout,
    ``oracle_miou``/``oracle_iou`` and ``judge_share`` (judge mIoU / oracle mIoU)."""
    with torch.no_grad():
        lay = layout.resized(*image.shape[-2:])  # once, for the image and its oracle
        ious = judge_ious(judge, image, lay)
        miou = mean_iou(ious)
        out = {"judge_miou": miou, "judge_iou": ious, "oracle_miou": None, "oracle_iou": None, "judge_share": None}
        oracle = oracle_image(lay)
        if oracle is not None:
            o = judge_ious(judge, oracle.to(image.device), lay)
            out.update(oracle_miou=mean_iou(o), oracle_iou=o, judge_share=miou / max(mean_iou(o), 1e-6))
    return out
