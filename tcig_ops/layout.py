"""Layouts: the target masks stage 1 steers towards.

A Layout holds ``labels`` (K names), ``targets`` (K, H, W) float 0/1 and ``ignore``
(H, W) bool for pixels no loss looks at. Every non-ignored pixel belongs to exactly
one label. Built from a colour-coded image + class map, or from (mask, label) pairs.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .errors import TCIGInputError

# A layout may be up to this many times larger or smaller than the image it guides
# before we refuse instead of silently resizing (a 4x mismatch is usually a wrong file).
MAX_RESIZE_RATIO = 4.0


@dataclass
class Layout:
    labels: list[str]
    targets: torch.Tensor  # (K, H, W) float32 one-hot over labels, zero in ignored pixels
    ignore: torch.Tensor  # (H, W) bool
    notes: list[str] = field(default_factory=list)

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return tuple(self.ignore.shape)

    def index_map(self) -> torch.Tensor:
        """(H, W) long: label index per pixel, -1 where ignored."""
        idx = self.targets.argmax(0)
        return torch.where(self.ignore, torch.full_like(idx, -1), idx)

    def resized(self, height: int, width: int) -> Layout:
        """Nearest-neighbour resize (labels stay crisp); refuses absurd ratios."""
        h, w = self.size
        if (h, w) == (height, width):
            return self
        ratio = max(height / h, h / height, width / w, w / width)
        if ratio > MAX_RESIZE_RATIO:
            raise TCIGInputError(
                f"layout: size {w}x{h} is too far from the image size {width}x{height} "
                f"(more than {MAX_RESIZE_RATIO:g}x); paint the layout at the image size or an aspect-matched size"
            )
        idx = self.index_map()[None, None].float()
        idx = F.interpolate(idx, size=(height, width), mode="nearest")[0, 0].long()
        note = f"layout resized from {w}x{h} to {width}x{height} (nearest)"
        return layout_from_index_map(idx, self.labels, self.notes + [note])

    def downsampled(self, height: int, width: int) -> Layout:
        """Area-averaged to a smaller size: soft targets (each pixel's share of every label), all
        labels kept even where a small region shrinks below a pixel. Stage 1's coarse levels."""
        if self.size == (height, width):
            return self
        size = (height, width)
        keep = F.interpolate((~self.ignore).float()[None, None], size=size, mode="area")[0, 0]
        targets = F.interpolate(self.targets[None].float(), size=size, mode="area")[0]
        ignore = keep < 0.5
        targets = torch.where(ignore, torch.zeros_like(targets), targets / keep.clamp_min(1e-6))
        return Layout(list(self.labels), targets, ignore, list(self.notes))

    def to(self, device) -> Layout:
        return Layout(self.labels, self.targets.to(device), self.ignore.to(device), list(self.notes))

    def subset(self, labels: list[str]) -> tuple[torch.Tensor, list[int]]:
        """Targets (k, H, W) of ``labels`` (which must be in this layout) and their indices."""
        idx = [self.labels.index(label) for label in labels]
        return self.targets[idx], idx


def layout_from_index_map(idx: torch.Tensor, labels: list[str], notes: list[str] | None = None) -> Layout:
    """Layout from a label index map (H, W) long (-1 = ignored) and its label names.

    Every layout source ends here. Labels with no pixel are left out (with a note).
    """
    notes = list(notes or [])
    ignore = idx < 0
    present = sorted(set(idx[~ignore].unique().tolist()))
    if not present:
        raise TCIGInputError("layout: every pixel is ignored; paint at least one labelled region")
    kept = [labels[i] for i in present]
    remap = torch.full((len(labels),), -1, dtype=torch.long)
    remap[present] = torch.arange(len(present))
    new = torch.where(ignore, idx.new_full(idx.shape, -1), remap[idx.clamp_min(0)])
    targets = F.one_hot(new.clamp_min(0), len(kept)).permute(2, 0, 1).float() * (~ignore).float()
    dropped = [label for i, label in enumerate(labels) if i not in present]
    if dropped:
        notes = notes + [f"labels with no pixels left out: {dropped}"]
    return Layout(kept, targets, ignore, notes)


_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


def parse_class_map(text_or_dict) -> dict[tuple[int, int, int], str]:
    """``{"#rrggbb": "label", ...}`` (JSON text or dict) -> {(r,g,b): label}. Refuses bad hex and duplicates."""
    if isinstance(text_or_dict, str):

        def no_dupes(pairs):
            keys = [k.strip().lower().lstrip("#") for k, _ in pairs]
            dup = {k for k in keys if keys.count(k) > 1}
            if dup:
                raise TCIGInputError(
                    f"class map: colour(s) {sorted('#' + d for d in dup)} listed more than once; give each colour one label"
                )
            return dict(pairs)

        try:
            mapping = json.loads(text_or_dict, object_pairs_hook=no_dupes)
        except ValueError as exc:
            if isinstance(exc, TCIGInputError):
                raise
            raise TCIGInputError(f'class map: not valid JSON ({exc}); write it like {{"#87ceeb": "sky", "#228b22": "grass"}}') from None
    else:
        mapping = text_or_dict
    if not isinstance(mapping, dict) or not mapping:
        raise TCIGInputError('class map: expected a non-empty JSON object like {"#87ceeb": "sky"}')
    out: dict[tuple[int, int, int], str] = {}
    for key, label in mapping.items():
        m = _HEX.match(str(key).strip())
        if not m:
            raise TCIGInputError(f"class map: {key!r} is not a colour; write colours as '#rrggbb'")
        rgb = tuple(int(m.group(1)[i : i + 2], 16) for i in (0, 2, 4))
        if rgb in out:
            raise TCIGInputError(f"class map: colour #{m.group(1).lower()} listed more than once; give each colour one label")
        if not isinstance(label, str) or not label.strip():
            raise TCIGInputError(f"class map: colour {key} has no label; give it a class name")
        out[rgb] = label.strip()
    return out


def layout_from_colour_image(image: torch.Tensor, class_map, tolerance: int = 12) -> Layout:
    """Layout from a colour-coded image (3, H, W) in 0..1 (or uint8 0..255).

    Each pixel takes the label of the nearest listed colour when every channel is
    within ``tolerance`` (of 255; forgives JPEG and antialiasing); other pixels are ignored.
    """
    cmap = parse_class_map(class_map)
    if image.dim() != 3 or image.shape[0] not in (3, 4):
        raise TCIGInputError(f"layout image: expected (3,H,W) RGB, got shape {tuple(image.shape)}")
    rgb = image[:3].float()
    if image.dtype == torch.uint8 or rgb.max() > 1.0:
        rgb = rgb / 255.0
    pix = (rgb * 255).round().permute(1, 2, 0)  # (H, W, 3)
    colours = torch.tensor(list(cmap.keys()), dtype=torch.float32)  # (C, 3)
    labels_per_colour = list(cmap.values())
    labels = list(dict.fromkeys(labels_per_colour))  # unique, in order of first mention
    diff = (pix[:, :, None, :] - colours[None, None]).abs().amax(-1)  # (H, W, C)
    best = diff.argmin(-1)
    ok = diff.gather(-1, best[..., None])[..., 0] <= tolerance
    colour_to_label = torch.tensor([labels.index(lbl) for lbl in labels_per_colour])
    idx = torch.where(ok, colour_to_label[best], torch.full_like(best, -1))
    notes = []
    if (~ok).any():
        notes.append(f"{int((~ok).sum())} pixels of unlisted colours are ignored")
    return layout_from_index_map(idx, labels, notes)


def layout_from_masks(masks: list[tuple[torch.Tensor, str]], threshold: float = 0.5) -> Layout:
    """Layout from (mask (H, W) in 0..1, label) pairs.

    Precedence: where masks overlap, the later pair wins (like painting layers on top).
    Pixels covered by no mask are ignored. Soft masks are thresholded at ``threshold``.
    """
    if not masks:
        raise TCIGInputError("layout: no masks given; add at least one (mask, label)")
    shape = None
    labels: list[str] = []
    idx = None
    for n, (mask, label) in enumerate(masks):
        label = (label or "").strip()
        if not label:
            raise TCIGInputError(f"layout mask #{n + 1}: label is empty; name the class it paints")
        m = mask.float()
        if m.dim() == 3 and m.shape[0] == 1:
            m = m[0]
        if m.dim() != 2:
            raise TCIGInputError(f"layout mask #{n + 1} ({label}): expected (H,W), got shape {tuple(mask.shape)}")
        if not torch.isfinite(m).all():
            raise TCIGInputError(f"layout mask #{n + 1} ({label}): contains NaN or inf values")
        if m.min() < 0 or m.max() > 1:
            raise TCIGInputError(
                f"layout mask #{n + 1} ({label}): values {m.min().item():g}..{m.max().item():g} are outside 0..1; "
                "scale it to 0..1 (divide 8-bit masks by 255)"
            )
        if shape is None:
            shape = m.shape
            idx = torch.full(shape, -1, dtype=torch.long)
        elif m.shape != shape:
            raise TCIGInputError(
                f"layout mask #{n + 1} ({label}): size {m.shape[1]}x{m.shape[0]} differs from the first mask's "
                f"{shape[1]}x{shape[0]}; paint all masks on the same canvas"
            )
        on = m >= threshold
        if not on.any():
            raise TCIGInputError(f"layout mask #{n + 1} ({label}): empty (no pixel >= {threshold}); paint the region or remove the mask")
        if label not in labels:
            labels.append(label)
        idx[on] = labels.index(label)
    return layout_from_index_map(idx, labels, [])


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def match_labels(wanted: list[str], vocabulary: list[str], owner: str) -> list[int]:
    """Index in ``vocabulary`` of each wanted label.

    Matching ignores case and ``_``/``-``/spaces, and accepts any synonym of an
    entry written ``"building;edifice"`` or ``"building, edifice"`` (ADE20K style).
    """
    lookup = _lookup(vocabulary)
    out = []
    for label in wanted:
        key = _normalise(label)
        if key not in lookup:
            close = close_matches(label, vocabulary, lookup)
            hint = f"; close matches: {close}" if close else f"; it knows e.g. {vocabulary[:8]}"
            raise TCIGInputError(f"label {label!r} is not in the vocabulary of segmenter {owner!r}{hint}")
        out.append(lookup[key])
    return out


def _lookup(vocabulary: list[str]) -> dict[str, int]:
    """Normalised name (and each synonym) -> class index."""
    lookup: dict[str, int] = {}
    for i, entry in enumerate(vocabulary):
        for name in [entry] + re.split(r"[;,]", entry):
            lookup.setdefault(_normalise(name), i)
    return lookup


def knows_label(label: str, vocabulary: list[str]) -> bool:
    """Whether ``match_labels`` would accept ``label`` for this vocabulary."""
    return _normalise(label) in _lookup(vocabulary)


def close_matches(label: str, vocabulary: list[str], lookup: dict[str, int] | None = None) -> list[str]:
    """Up to four vocabulary names close to ``label`` (the suggestion every label error gives)."""
    return difflib.get_close_matches(_normalise(label), list(lookup or _lookup(vocabulary)), n=4, cutoff=0.6)


def vocabulary_to_layout(vocabulary: list[str], owner: str, labels: list[str]) -> tuple[torch.Tensor, dict[str, int]]:
    """Map a segmenter's class indices to layout label indices.

    Returns a lookup (len(vocabulary) + 1,) long with -1 for classes outside the layout
    (the extra last entry is an open-vocabulary segmenter's "none of them"), and
    {layout label: class index} for the labels this vocabulary knows (others are left out).
    """
    known = {}
    for label in labels:
        try:
            known[label] = match_labels([label], vocabulary, owner)[0]
        except TCIGInputError:
            continue
    lut = torch.full((len(vocabulary) + 1,), -1, dtype=torch.long)
    for label, v in known.items():
        lut[v] = labels.index(label)
    return lut, known
