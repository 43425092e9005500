"""A layout read from any image by a segmenter, to edit rather than paint from nothing.

The segmenter reads the image at its native size; the class map is cleaned there (regions below a
share of the image merge into their largest neighbour) and resized to the image's size, nearest,
so a 4000 px photo costs one segmenter pass at e.g. 512 px. Everything ends in
``layout_from_index_map``, the one path every layout takes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import TCIGInputError
from .layout import Layout, close_matches, layout_from_index_map, lookup_labels

IGNORED = -1


def _display_name(entry: str) -> str:
    """A vocabulary entry's first name: 'building;edifice' -> 'building'."""
    return entry.replace(";", ",").split(",")[0].strip()


def components(classes: torch.Tensor) -> torch.Tensor:
    """(H, W) class map -> (H, W) long component ids (4-connected regions of one class), each the
    smallest flat index in its region: min-propagation with pointer jumping, vectorised."""
    h, w = classes.shape
    ids = torch.arange(h * w).view(h, w)
    same_right = classes[:, 1:] == classes[:, :-1]
    same_down = classes[1:, :] == classes[:-1, :]
    while True:
        new = ids.clone()
        new[:, 1:] = torch.where(same_right, torch.minimum(new[:, 1:], ids[:, :-1]), new[:, 1:])
        new[:, :-1] = torch.where(same_right, torch.minimum(new[:, :-1], ids[:, 1:]), new[:, :-1])
        new[1:, :] = torch.where(same_down, torch.minimum(new[1:, :], ids[:-1, :]), new[1:, :])
        new[:-1, :] = torch.where(same_down, torch.minimum(new[:-1, :], ids[1:, :]), new[:-1, :])
        new = new.flatten()[new.flatten()].view(h, w)  # jump: take the id that the current id points at
        if torch.equal(new, ids):
            return ids
        ids = new


def merge_small_regions(classes: torch.Tensor, min_share: float) -> torch.Tensor:
    """Every 4-connected region smaller than ``min_share`` of the image takes the class of its largest
    neighbouring region. Vectorised in rounds (a noisy map has thousands of specks): in each round a
    small region merges when its largest neighbour is larger than itself (ties by id), so two small
    neighbours never swap, the smallest region can always merge, and the rounds end. Returns a new map."""
    classes = classes.clone()
    if min_share <= 0:
        return classes
    h, w = classes.shape
    n, limit = h * w, min_share * h * w
    for _ in range(n):
        ids = components(classes)
        flat, cls = ids.flatten(), classes.flatten()
        area = torch.bincount(flat, minlength=n)
        pairs = [(ids[:, :-1], ids[:, 1:]), (ids[:, 1:], ids[:, :-1]), (ids[:-1, :], ids[1:, :]), (ids[1:, :], ids[:-1, :])]
        src = torch.cat([a.flatten() for a, _ in pairs])
        nb = torch.cat([b.flatten() for _, b in pairs])
        keep = (src != nb) & (area[src] < limit)
        src, nb = src[keep], nb[keep]
        if src.numel() == 0:
            return classes  # no small region touches another region
        best = torch.full((n,), -1, dtype=torch.long).scatter_reduce(0, src, area[nb] * n + nb, reduce="amax")
        roots = torch.unique(src)
        target = best[roots] % n
        ok = (area[target] > area[roots]) | ((area[target] == area[roots]) & (target > roots))
        roots, target = roots[ok], target[ok]
        new_root = torch.arange(n)
        new_root[roots] = target
        classes = cls[new_root[flat]].view(h, w)
    return classes


def layout_from_image(
    segmenter,
    image: torch.Tensor,
    keep: list[str] | None = None,
    min_share_percent: float = 0.0,
    text_labels: list[str] | None = None,
) -> Layout:
    """A layout of ``image`` (1, 3, H, W) 0..1 as ``segmenter`` reads it.

    ``keep``: the labels to use (others are not candidates: every pixel takes the likeliest kept
    label); ``text_labels``: what an open-vocabulary segmenter (CLIPSeg) looks for (required for it;
    every pixel takes the likeliest of them). ``min_share_percent``: regions below that share
    of the image merge into their largest neighbour."""
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise TCIGInputError(f"image: expected one RGB image (1, 3, H, W), got shape {tuple(image.shape)}")
    H, W = image.shape[-2:]
    if H < 1 or W < 1:
        raise TCIGInputError("image: it is empty (0 pixels); give an image to read the layout from")
    if not 0 <= min_share_percent < 100:
        raise TCIGInputError(f"min_region_share: {min_share_percent} %; use 0 (keep every region) up to below 100")
    work = tuple(segmenter.native_size) if segmenter.native_size else (min(H, 512), min(W, 512))
    if segmenter.open_vocabulary:
        labels = list(dict.fromkeys(t.strip() for t in (text_labels or []) if t.strip()))
        if not labels:
            raise TCIGInputError(
                f"text_labels: {segmenter.name} is open-vocabulary (CLIPSeg); list what to look for, e.g. 'sky, water, tree'"
            )
        with torch.no_grad():  # the likeliest listed label per pixel (CLIPSeg's sigmoids, each against its text)
            classes = segmenter.scores(image, work, labels=labels)[0, : len(labels)].argmax(0).cpu()
    else:
        vocab = segmenter.labels
        channels = list(range(len(vocab)))
        if keep:
            found = lookup_labels(keep, vocab)
            missing = [k for k, c in zip(keep, found) if c is None]
            if missing:
                hints = {k: close_matches(k, vocab) for k in missing}
                raise TCIGInputError(f"keep_labels: {missing} are not classes of {segmenter.name} (close: {hints})")
            channels = list(dict.fromkeys(found))
        with torch.no_grad():
            scores = segmenter.scores(image, work)[0, channels]
        classes = torch.tensor(channels)[scores.argmax(0).cpu()]
        labels = [_display_name(v) for v in vocab]
    classes = merge_small_regions(classes.cpu(), min_share_percent / 100)
    present = [c for c in classes.unique().tolist() if c != IGNORED]  # a 150-class vocabulary: only what is there
    remap = torch.full((len(labels) + 1,), IGNORED, dtype=torch.long)
    remap[torch.tensor(present, dtype=torch.long) + 1] = torch.arange(len(present))
    classes, labels = remap[classes + 1], [labels[c] for c in present]
    idx = F.interpolate(classes[None, None].float(), size=(H, W), mode="nearest")[0, 0].long()
    notes = [f"read by {segmenter.name} at {work[1]}x{work[0]}" + (f", resized to {W}x{H} (nearest)" if (H, W) != work else "")]
    return layout_from_index_map(idx, labels, notes)
