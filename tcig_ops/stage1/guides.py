"""The segmentation side of the objective: guides (a segmenter, a weight, a class subset), bound
to a layout; the segmentation loss and its class balance; the guides' own IoU."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import TCIGInputError
from ..layout import Layout, match_labels, vocabulary_to_layout
from ..metrics import iou_counts, iou_table, to_layout_space
from ..segmenters import Segmenter


@dataclass
class Guide:
    """One segmenter steering a subset of the layout's classes with its own weight."""

    segmenter: Segmenter
    weight: float = 1.0
    classes: list[str] | None = None  # None: every layout label this segmenter knows


@dataclass
class BoundGuide:
    """A Guide resolved against one layout: which probability channels meet which targets."""

    guide: Guide
    labels: list[str]  # layout labels this guide steers
    vocab_idx: list[int]  # their channels in the segmenter's output (for ``query``)
    targets: torch.Tensor  # (k, H, W)
    query: list[str] | None = None  # the texts an open-vocabulary segmenter scores (kept here, never on the model)

    @property
    def label_to_vocab(self) -> dict[str, int]:
        return dict(zip(self.labels, self.vocab_idx))

    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """The segmenter's probabilities (1, K, H, W) for this guide's query."""
        return self.guide.segmenter(image, labels=self.query)


def bind_guides(guides: list[Guide], layout: Layout) -> list[BoundGuide]:
    """Resolve class subsets against the layout and the segmenters' vocabularies.

    Every layout label must be known by at least one guide; a label no segmenter
    knows is an error that lists close matches. An open-vocabulary segmenter (CLIPSeg)
    scores exactly the guide's own labels, each with its own sigmoid.
    """
    if not guides:
        raise TCIGInputError("guides: no segmenter given; add at least one segmenter guide")
    bound, covered = [], set()
    for n, g in enumerate(guides):
        if not math.isfinite(g.weight) or g.weight < 0:
            raise TCIGInputError(f"guide #{n + 1} ({g.segmenter.name}): weight {g.weight} must be a finite number >= 0")
        seg = g.segmenter
        if g.classes is not None:
            wanted = list(dict.fromkeys(c.strip() for c in g.classes if c.strip()))
            if not wanted:
                raise TCIGInputError(f"guide #{n + 1} ({seg.name}): class subset is empty; list classes or leave it blank for all")
            unknown = [c for c in wanted if c not in layout.labels]
            if unknown:
                raise TCIGInputError(f"guide #{n + 1} ({seg.name}): classes {unknown} are not in the layout {layout.labels}")
        else:
            wanted = list(vocabulary_to_layout(seg.vocabulary(layout.labels), seg.name, layout.labels)[1])
        if not wanted:
            continue
        query = seg.query(wanted)
        vocab_idx = list(range(len(wanted))) if query is not None else match_labels(wanted, seg.labels, seg.name)
        targets, _ = layout.subset(wanted)
        bound.append(BoundGuide(g, wanted, vocab_idx, targets, query))
        covered.update(wanted)
    missing = [lbl for lbl in layout.labels if lbl not in covered]
    if missing:
        # re-run the matcher against the first segmenter for a helpful close-match message
        seg = next((g.segmenter for g in guides if not g.segmenter.open_vocabulary), guides[0].segmenter)
        match_labels(missing, seg.vocabulary(layout.labels), seg.name)
        raise TCIGInputError(f"layout labels {missing} are not covered by any guide's class subset")
    return bound


def segmentation_loss(
    probs: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor,
    weights: torch.Tensor | None = None,
    kind: str = "mse",
    margin: float = 0.0,
) -> torch.Tensor:
    """Distance between probabilities (1,k,H,W) and targets (k,H,W) over valid pixels (H,W) bool.

    ``kind`` "mse" is the paper's squared error; "bce" the binary cross-entropy of each class
    channel (its gradient does not fade where the segmenter is confidently wrong, as the
    squared error of a saturated softmax does). ``weights`` (H, W), when given, replaces the
    uniform average over pixels (see ``balanced_pixel_weights``); it sums to 1 over the valid pixels.
    ``margin`` (squared error only): a probability within ``margin`` of its target costs nothing, so a
    pixel the segmenter already reads right stops pulling and the gradient goes to those it does not.
    """
    if kind == "bce":
        p = probs[0].clamp(1e-6, 1 - 1e-6)
        per_pixel = -(targets * p.log() + (1 - targets) * (1 - p).log())
    elif margin > 0:
        per_pixel = ((probs[0] - targets).abs() - margin).clamp_min(0) ** 2
    else:
        per_pixel = (probs[0] - targets) ** 2
    if weights is None:
        w = valid.to(probs.dtype)
        return (per_pixel * w).sum() / (w.sum() * probs.shape[1]).clamp_min(1)
    return (per_pixel * weights).sum() / probs.shape[1]


def balanced_pixel_weights(targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(H, W) weights that give every class of ``targets`` (k,H,W) the same total weight.

    With the plain average a region of 2 % of the image holds 2 % of the loss, so the
    optimiser can trade it away for the large ones; here each class holds 1/k. Soft
    targets (coarse levels) spread a pixel's weight over its classes.
    """
    t = targets * valid.to(targets.dtype)
    area = t.flatten(1).sum(1)  # (k,)
    present = area > 0
    per_class = torch.where(present, 1.0 / area.clamp_min(1e-6), torch.zeros_like(area)) / present.sum().clamp_min(1)
    return (t * per_class[:, None, None]).sum(0)


def guided_iou(bound: list[BoundGuide], fulls: list[torch.Tensor | None], layout: Layout) -> dict[str, float]:
    """Per-label IoU, each label judged by the first guide that steers it and was run.
    One host read for all guides."""
    inters, unions, labels, seen = [], [], [], set()
    target = layout.index_map()
    for b, full in zip(bound, fulls):
        if full is None:
            continue
        pred = to_layout_space(b.guide.segmenter.decide(full.detach())[0], layout, b.label_to_vocab)
        inter, union = iou_counts(pred, target.to(pred.device), len(layout.labels))
        for lbl in b.labels:
            if lbl not in seen:
                seen.add(lbl)
                k = layout.labels.index(lbl)
                labels.append(lbl)
                inters.append(inter[k])
                unions.append(union[k])
    if not labels:
        return {}
    return iou_table(torch.stack(inters), torch.stack(unions), labels)
