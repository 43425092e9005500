"""Layouts: the target masks stage 1 steers towards.

A Layout holds ``labels`` (K names) and which label each pixel is: a label-index map for
painted layouts (``index_map()``; ``targets`` (K, H, W) float 0/1 is built when asked for),
soft ``targets`` for downsampled ones, and ``ignore`` (H, W) bool for pixels no loss looks
at. Every non-ignored pixel belongs to exactly one label. Built from a colour-coded image +
class map, from (mask, label) pairs, or from a painting; all end in ``layout_from_index_map``.
"""

from __future__ import annotations

import difflib
import json
import re

import torch
import torch.nn.functional as F

from .errors import TCIGInputError

# A layout may be up to this many times larger or smaller than the image it guides
# before we refuse instead of silently resizing (a 4x mismatch is usually a wrong file).
MAX_RESIZE_RATIO = 4.0


class Layout:
    """A layout: K label names and, per pixel, which label it is (or ignored).

    Painted layouts (every source: painter, masks, colour image) are kept as their label-index
    map (H, W) int16, -1 where ignored: 2 bytes a pixel whatever the number of labels. The float
    target planes (K, H, W) one-hot are built on each use of ``targets``, at the size they are
    used (stage 1 resizes first), and never kept on the layout. A downsampled layout (stage 1's
    coarse levels) has soft targets, each pixel's share of every label; it keeps its planes,
    which are small by then.
    """

    def __init__(
        self,
        labels: list[str],
        targets: torch.Tensor | None = None,
        ignore: torch.Tensor | None = None,
        notes: list[str] | None = None,
        index: torch.Tensor | None = None,
    ):
        self.labels = list(labels)
        self.notes = list(notes or [])
        if index is not None:
            self._index, self._targets, self._ignore = index.to(torch.int16), None, None
        else:
            if targets is None or ignore is None:
                raise ValueError("Layout needs an index map, or targets and ignore")
            self._index, self._targets, self._ignore = None, targets, ignore

    def __repr__(self) -> str:
        h, w = self.size
        return f"Layout({self.labels}, {w}x{h}, {'soft' if self.soft else 'index map'})"

    @property
    def soft(self) -> bool:
        """True for downsampled layouts (targets are shares); False for painted ones."""
        return self._index is None

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return tuple((self._index if self._index is not None else self._ignore).shape)

    @property
    def device(self) -> torch.device:
        return (self._index if self._index is not None else self._ignore).device

    @property
    def ignore(self) -> torch.Tensor:
        """(H, W) bool: pixels no loss looks at."""
        return self._index < 0 if self._index is not None else self._ignore

    @property
    def targets(self) -> torch.Tensor:
        """(K, H, W) float32: one-hot over labels (painted), or each label's share (downsampled);
        zero in ignored pixels. Built on each use for painted layouts: keep it only where needed."""
        if self._targets is not None:
            return self._targets
        return self.planes(range(len(self.labels)))

    def planes(self, indices) -> torch.Tensor:
        """Target planes (k, H, W) float32 of the labels at ``indices`` only."""
        indices = list(indices)
        if self._targets is not None:
            return self._targets[indices]
        out = torch.empty((len(indices), *self.size), dtype=torch.float32, device=self.device)
        for n, k in enumerate(indices):  # one plane at a time: no (K, H, W) bool or int64 temporary
            torch.eq(self._index, k, out=out[n])
        return out

    def index_map(self) -> torch.Tensor:
        """(H, W) long: label index per pixel, -1 where ignored."""
        if self._index is not None:
            return self._index.long()
        idx = self._targets.argmax(0)
        return torch.where(self._ignore, torch.full_like(idx, -1), idx)

    def clone(self) -> Layout:
        """A copy with tensors of its own (e.g. normal tensors of a layout made under inference mode)."""
        if self._index is not None:
            return Layout(self.labels, notes=self.notes, index=self._index.clone())
        return Layout(self.labels, self._targets.clone(), self._ignore.clone(), self.notes)

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
        src = self._index if self._index is not None else self.index_map().to(torch.int16)
        # nearest: each output pixel takes the input pixel under its centre (as F.interpolate "nearest")
        ys = (torch.arange(height, device=src.device) * h // height).clamp(max=h - 1)
        xs = (torch.arange(width, device=src.device) * w // width).clamp(max=w - 1)
        idx = src[ys][:, xs]
        note = f"layout resized from {w}x{h} to {width}x{height} (nearest)"
        return layout_from_index_map(idx, self.labels, self.notes + [note])

    def downsampled(self, height: int, width: int) -> Layout:
        """Area-averaged to a smaller size: soft targets (each pixel's share of every label), all
        labels kept even where a small region shrinks below a pixel. Stage 1's coarse levels."""
        if self.size == (height, width):
            return self
        size = (height, width)

        def area(plane):
            return F.interpolate(plane[None, None], size=size, mode="area")[0, 0]

        keep = area((~self.ignore).float())
        if self._index is not None:  # one full-size plane at a time
            targets = torch.stack([area(self.planes([k])[0]) for k in range(len(self.labels))])
        else:
            targets = F.interpolate(self._targets[None].float(), size=size, mode="area")[0]
        ignore = keep < 0.5
        targets = torch.where(ignore, torch.zeros_like(targets), targets / keep.clamp_min(1e-6))
        return Layout(self.labels, targets, ignore, self.notes)

    def to(self, device) -> Layout:
        if self._index is not None:
            return Layout(self.labels, notes=self.notes, index=self._index.to(device))
        return Layout(self.labels, self._targets.to(device), self._ignore.to(device), self.notes)

    def subset(self, labels: list[str]) -> tuple[torch.Tensor, list[int]]:
        """Targets (k, H, W) of ``labels`` (which must be in this layout) and their indices."""
        idx = [self.labels.index(label) for label in labels]
        return self.planes(idx), idx


def layout_from_index_map(idx: torch.Tensor, labels: list[str], notes: list[str] | None = None) -> Layout:
    """Layout from a label index map (H, W) of integers (-1 = ignored) and its label names.

    Every layout source ends here. Labels with no pixel are left out (with a note).
    """
    notes = list(notes or [])
    if len(labels) > 32767:
        raise TCIGInputError(f"layout: {len(labels)} labels; at most 32767")
    idx = idx.to(torch.int16)
    counts = torch.bincount(idx.flatten().long().clamp_min(-1) + 1, minlength=len(labels) + 1)[1:]
    present = torch.nonzero(counts).flatten().tolist()
    if not present:
        raise TCIGInputError("layout: every pixel is ignored; paint at least one labelled region")
    kept = [labels[i] for i in present]
    if len(present) != len(labels):  # renumber the labels that have pixels
        remap = torch.full((len(labels) + 1,), -1, dtype=torch.int16)
        remap[torch.tensor(present) + 1] = torch.arange(len(present), dtype=torch.int16)
        idx = remap.to(idx.device)[idx.long() + 1]
        dropped = [label for i, label in enumerate(labels) if i not in present]
        notes = notes + [f"labels with no pixels left out: {dropped}"]
    return Layout(kept, notes=notes, index=idx)


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


def lookup_labels(wanted: list[str], vocabulary: list[str]) -> list[int | None]:
    """Index in ``vocabulary`` of each wanted label, or None where it has none.

    Matching ignores case and ``_``/``-``/spaces, and accepts any synonym of an
    entry written ``"building;edifice"`` or ``"building, edifice"`` (ADE20K style).
    Every place that matches labels to class names (segmenters, palettes, kept labels) uses it.
    """
    lookup = _lookup(vocabulary)
    return [lookup.get(_normalise(label)) for label in wanted]


def match_labels(wanted: list[str], vocabulary: list[str], owner: str) -> list[int]:
    """Index in ``vocabulary`` of each wanted label (``lookup_labels``); an unknown one is an
    error naming the segmenter and close matches."""
    found = lookup_labels(wanted, vocabulary)
    for label, k in zip(wanted, found):
        if k is None:
            close = close_matches(label, vocabulary)
            hint = f"; close matches: {close}" if close else f"; it knows e.g. {vocabulary[:8]}"
            raise TCIGInputError(f"label {label!r} is not in the vocabulary of segmenter {owner!r}{hint}")
    return found


def _lookup(vocabulary: list[str]) -> dict[str, int]:
    """Normalised name (and each synonym) -> class index."""
    lookup: dict[str, int] = {}
    for i, entry in enumerate(vocabulary):
        for name in [entry] + re.split(r"[;,]", entry):
            lookup.setdefault(_normalise(name), i)
    return lookup


def knows_label(label: str, vocabulary: list[str]) -> bool:
    """Whether ``match_labels`` would accept ``label`` for this vocabulary."""
    return lookup_labels([label], vocabulary)[0] is not None


def close_matches(label: str, vocabulary: list[str]) -> list[str]:
    """Up to four vocabulary names close to ``label`` (the suggestion every label error gives)."""
    return difflib.get_close_matches(_normalise(label), list(_lookup(vocabulary)), n=4, cutoff=0.6)


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
