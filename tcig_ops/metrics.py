"""Control metrics: per-class IoU and mIoU of a segmentation against a layout (ignored pixels excluded)."""

from __future__ import annotations

import torch

from .layout import Layout


def iou_from_index_maps(pred: torch.Tensor, target: torch.Tensor, labels: list[str]) -> dict[str, float]:
    """Per-label IoU of two (H, W) index maps in the layout's label space.

    ``target`` is -1 where ignored (those pixels are skipped); ``pred`` is -1 where the
    segmenter chose a class that is not in the layout (counts as a miss).
    """
    if pred.shape != target.shape:
        raise ValueError(f"iou: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    valid = target >= 0
    p, t = pred[valid], target[valid]
    out = {}
    for i, label in enumerate(labels):
        inter = ((p == i) & (t == i)).sum().item()
        union = ((p == i) | (t == i)).sum().item()
        out[label] = inter / union if union else float("nan")
    return out


def mean_iou(ious: dict[str, float]) -> float:
    vals = [v for v in ious.values() if v == v]  # skip NaN (label absent from both)
    return sum(vals) / len(vals) if vals else 0.0


def layout_iou(vocab_pred: torch.Tensor, layout: Layout, label_to_vocab: dict[str, int]) -> dict[str, float]:
    """IoU per layout label of a segmenter's argmax (H, W) over its own vocabulary.

    ``label_to_vocab`` maps the layout labels this segmenter covers to its class
    indices; only those labels are scored. A pixel whose predicted class is none of
    them counts as a miss for its target label.
    """
    size = max(int(vocab_pred.max()), max(label_to_vocab.values())) + 1
    lut = torch.full((size,), -1, dtype=torch.long, device=vocab_pred.device)
    for label, v in label_to_vocab.items():
        lut[v] = layout.labels.index(label)
    pred = lut[vocab_pred]
    ious = iou_from_index_maps(pred, layout.index_map().to(pred.device), layout.labels)
    return {k: v for k, v in ious.items() if k in label_to_vocab}
