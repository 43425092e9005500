"""Control metrics: per-class IoU and mIoU of a segmentation against a layout (ignored pixels excluded)."""

from __future__ import annotations

import torch

from .layout import Layout


def iou_from_index_maps(pred: torch.Tensor, target: torch.Tensor, labels: list[str]) -> dict[str, float]:
    """Per-label IoU of two (H, W) index maps in the layout's label space.

    ``target`` is -1 where ignored (those pixels are skipped); ``pred`` is -1 where the
    segmenter chose a class that is not in the layout (counts as a miss). One device
    read for the whole table.
    """
    if pred.shape != target.shape:
        raise ValueError(f"iou: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    inter, union = iou_counts(pred, target, len(labels))
    return iou_table(inter, union, labels)


def iou_counts(pred: torch.Tensor, target: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(k,) intersection and union pixel counts per label, on the maps' device (no host sync)."""
    valid = target >= 0
    p = torch.where(valid & (pred >= 0) & (pred < k), pred, torch.full_like(pred, k))  # k = "other"
    t = torch.where(valid, target, torch.full_like(target, k))
    n = k + 1
    hit = torch.where(valid, (p == t).long(), torch.zeros_like(p))
    inter = torch.zeros(n, dtype=torch.long, device=pred.device).index_add_(0, t.flatten(), hit.flatten())[:k]
    in_pred = torch.bincount(torch.where(valid, p, torch.full_like(p, k)).flatten(), minlength=n)[:k]
    in_target = torch.bincount(t.flatten(), minlength=n)[:k]
    return inter, in_pred + in_target - inter


def iou_table(inter: torch.Tensor, union: torch.Tensor, labels: list[str]) -> dict[str, float]:
    pairs = torch.stack([inter, union]).tolist()
    return {label: (i / u if u else float("nan")) for label, i, u in zip(labels, *pairs)}


def mean_iou(ious: dict[str, float]) -> float:
    vals = [v for v in ious.values() if v == v]  # skip NaN (label absent from both)
    return sum(vals) / len(vals) if vals else 0.0


def to_layout_space(vocab_pred: torch.Tensor, layout: Layout, label_to_vocab: dict[str, int]) -> torch.Tensor:
    """A segmenter's class index map (H, W) -> layout label indices, -1 for classes outside
    ``label_to_vocab`` (including an open-vocabulary "none" index). No host sync."""
    size = max(label_to_vocab.values()) + 1
    lut = torch.full((size + 1,), -1, dtype=torch.long, device=vocab_pred.device)
    for label, v in label_to_vocab.items():
        lut[v] = layout.labels.index(label)
    return lut[vocab_pred.clamp(0, size)]


def predict_in_layout_space(segmenter, image: torch.Tensor, layout: Layout) -> tuple[torch.Tensor, dict[str, int]]:
    """The segmenter's decision for image (1,3,H,W) as layout label indices (H,W) on the CPU (-1 = none
    of the layout's labels), and {layout label: class index} for the labels it knows. An
    open-vocabulary segmenter is asked about the layout's labels in this call only."""
    from .layout import vocabulary_to_layout

    vocabulary = segmenter.vocabulary(layout.labels)
    lut, known = vocabulary_to_layout(vocabulary, segmenter.name, layout.labels)
    pred = segmenter.predict(image.to(segmenter.mean.device), labels=segmenter.query(vocabulary))[0].cpu()
    return lut[pred], known


def layout_iou(vocab_pred: torch.Tensor, layout: Layout, label_to_vocab: dict[str, int]) -> dict[str, float]:
    """IoU per layout label of a segmenter's argmax (H, W) over its own vocabulary.

    ``label_to_vocab`` maps the layout labels this segmenter covers to its class
    indices; only those labels are scored. A pixel whose predicted class is none of
    them counts as a miss for its target label.
    """
    pred = to_layout_space(vocab_pred, layout, label_to_vocab)
    ious = iou_from_index_maps(pred, layout.index_map().to(pred.device), layout.labels)
    return {k: v for k, v in ious.items() if k in label_to_vocab}
