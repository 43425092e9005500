"""Pure helpers the node classes use: ComfyUI tensor layouts <-> tcig_ops, chaining, parsing.

No ComfyUI imports, so the tests run these without a server. ComfyUI's IMAGE is
(B, H, W, C) float 0..1 and MASK is (B, H, W) or (H, W).
"""

from __future__ import annotations

import os
import re

import torch

from ..tcig_ops import metrics
from ..tcig_ops.errors import TCIGInputError
from ..tcig_ops.layout import Layout, close_matches, knows_label, layout_from_masks
from ..tcig_ops.metrics import iou_from_index_maps, mean_iou
from ..tcig_ops.prompts import parse_region_prompts
from ..tcig_ops.stage1 import Guide


def image_to_bchw(image: torch.Tensor, name: str = "image") -> torch.Tensor:
    """IMAGE (B,H,W,C) -> (B,3,H,W) float; alpha dropped, grey expanded."""
    if image.dim() != 4:
        raise TCIGInputError(f"{name}: expected an IMAGE (B,H,W,C), got shape {tuple(image.shape)}")
    x = image[..., :3].permute(0, 3, 1, 2).float()
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def bchw_to_image(x: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) or (3,H,W) -> IMAGE (B,H,W,3) on CPU."""
    if x.dim() == 3:
        x = x[None]
    return x.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().contiguous()


def mask_2d(mask: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """MASK (1,H,W) or (H,W) -> (H,W); a batch of several masks is refused (use one per label)."""
    if mask.dim() == 3:
        if mask.shape[0] != 1:
            raise TCIGInputError(f"{name}: a batch of {mask.shape[0]} masks; give one mask per label node")
        mask = mask[0]
    if mask.dim() != 2:
        raise TCIGInputError(f"{name}: expected a MASK (H,W), got shape {tuple(mask.shape)}")
    return mask.float().cpu()


def layout_add_mask(layout: Layout | None, mask: torch.Tensor, label: str, threshold: float = 0.5) -> Layout:
    """Chain one painted mask onto a layout; the new mask wins where it overlaps earlier ones.

    A mask of another size than the layout is resized (nearest) to the layout's size.
    """
    m = mask_2d(mask, f"mask for '{label}'")
    pairs: list[tuple[torch.Tensor, str]] = []
    notes: list[str] = []
    if layout is not None:
        pairs = [(layout.planes([k])[0].cpu(), lbl) for k, lbl in enumerate(layout.labels)]
        notes = list(layout.notes)
        if tuple(m.shape) != layout.size:
            h, w = layout.size
            notes.append(f"mask for '{label}' resized from {m.shape[1]}x{m.shape[0]} to {w}x{h} (nearest)")
            m = torch.nn.functional.interpolate(m[None, None], size=(h, w), mode="nearest")[0, 0]
    out = layout_from_masks(pairs + [(m, label)], threshold=threshold)
    out.notes = notes + out.notes
    return out


def parse_class_list(text: str) -> list[str] | None:
    """'sky, water' -> ['sky', 'water']; blank -> None (all classes)."""
    items = [c.strip() for c in re.split(r"[,\n]", text or "") if c.strip()]
    return items or None


def guides_append(guides: list[Guide] | None, segmenter, weight: float, classes: str) -> list[Guide]:
    """A new guide list (never mutates the input: ComfyUI caches node outputs)."""
    return list(guides or []) + [Guide(segmenter, float(weight), parse_class_list(classes))]


def region_prompts(text: str) -> dict[str, str]:
    """Lines 'label: prompt' -> {label: prompt}; see tcig_ops.prompts.parse_region_prompts."""
    return parse_region_prompts(text)


def predict_in_layout_space(segmenter, image_bchw: torch.Tensor, layout: Layout) -> tuple[torch.Tensor, dict[str, int]]:
    """tcig_ops.metrics.predict_in_layout_space, refusing a segmenter that knows none of the labels."""
    pred, known = metrics.predict_in_layout_space(segmenter, image_bchw, layout)
    if not known:
        raise TCIGInputError(f"segmenter {segmenter.name!r} knows none of the layout labels {layout.labels}")
    return pred, known


def evaluate(segmenter, image_bchw: torch.Tensor, layout: Layout) -> tuple[float, dict[str, float], torch.Tensor]:
    """mIoU, per-class IoU and the layout-space prediction (H,W) for one image (1,3,H,W)."""
    H, W = image_bchw.shape[-2:]
    lay = layout.resized(H, W)
    pred_layout, known = predict_in_layout_space(segmenter, image_bchw, lay)
    ious = {k: v for k, v in iou_from_index_maps(pred_layout, lay.index_map(), lay.labels).items() if k in known}
    return mean_iou(ious), ious, pred_layout


def refuse_escape(name: str) -> None:
    """Refuse a model name that is absolute or climbs with '..' (any separator)."""
    parts = name.replace("\\", "/").split("/")
    if not name or os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name):
        raise TCIGInputError(f"model name {name!r} points outside the model folders; use a name from the list")


def resolve_inside(roots: list[str], name: str, what: str) -> str:
    """The file ``name`` (relative, from a text input) inside one of ``roots``.

    The name is checked lexically and the file's real path (symbolic links followed) must
    lie inside the real path of the root it was found under, so a link planted in a model
    folder cannot hand out a file from elsewhere. Raises TCIGInputError naming the folders.
    """
    refuse_escape(name)
    for root in roots:
        real_root = os.path.realpath(root)
        path = os.path.realpath(os.path.join(root, name))
        if os.path.isfile(path):
            if os.path.commonpath([path, real_root]) != real_root:
                raise TCIGInputError(f"{what} {name!r} resolves outside the model folder {root}; put the file itself in the folder")
            return path
    raise TCIGInputError(f"{what} {name!r} not found in {roots}; put it in one of these folders and use its name")


def check_labels(labels: list[str], segmenters: list[dict]) -> dict:
    """For the painter's label table: {label: {"known_by", "open_vocabulary", "suggestions"}}.

    ``segmenters`` are ``{"name", "labels", "open_vocabulary"}`` (see segmenters.describe_folder).
    A label is known by a fixed-vocabulary segmenter when stage 1 would accept it there; the
    suggestions are the close matches the backend's own label error lists.
    """
    fixed = [s for s in segmenters if not s["open_vocabulary"]]
    open_names = [s["name"] for s in segmenters if s["open_vocabulary"]]
    answer = {}
    for label in labels:
        known = [s["name"] for s in fixed if knows_label(label, s["labels"])]
        suggestions: list[str] = []
        if not known:
            for s in fixed:
                suggestions += [m for m in close_matches(label, s["labels"]) if m not in suggestions]
        answer[label] = {"known_by": known, "open_vocabulary": open_names, "suggestions": suggestions[:4]}
    return answer
