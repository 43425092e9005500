"""Stage-2 denoise map: how strongly each pixel may change in the diffusion refine.

The map (H, W) in 0..1 is used as a latent ``noise_mask``; with ComfyUI's
DifferentialDiffusion a pixel with value m is re-generated for the last m fraction of
the sampler's steps, i.e. it gets img2img denoise ≈ m × (KSampler denoise).

    map = max(base,
              border        · near_border,      # region edges: the VQGAN's weakest detail
              disagreement  · wrong_class)      # segmenter says another class than the layout
          (then softened with a box blur of ``softness`` px so strengths blend)

Ignored layout pixels get ``base``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import TCIGInputError


def region_borders(index_map: torch.Tensor, width: int) -> torch.Tensor:
    """(H, W) long label map -> (H, W) float 1 within ``width`` px of a label change, else 0."""
    if index_map.dim() != 2:
        raise ValueError(f"region_borders: expected (H, W), got {tuple(index_map.shape)}")
    m = index_map.float()[None, None]
    # a pixel is on a border if a 3x3 neighbourhood holds another label
    hi = F.max_pool2d(m, 3, 1, 1)
    lo = -F.max_pool2d(-m, 3, 1, 1)
    edge = (hi != lo).float()
    if width > 1:
        edge = F.max_pool2d(edge, 2 * (width // 2) + 1, 1, width // 2)
    return edge[0, 0]


def denoise_map(
    index_map: torch.Tensor,
    base: float = 0.45,
    border: float = 0.7,
    border_width: int = 8,
    predicted: torch.Tensor | None = None,
    disagreement: float = 0.8,
    softness: int = 5,
) -> torch.Tensor:
    """Per-pixel denoise strengths (H, W) in 0..1.

    ``index_map``: layout labels (H, W), -1 where ignored. ``predicted``: the segmenter's
    labels for the stage-1 image in the same label space (-1 = a class outside the
    layout), or None to skip the disagreement term.
    """
    for name, v in (("base", base), ("border", border), ("disagreement", disagreement)):
        if not 0.0 <= v <= 1.0:
            raise TCIGInputError(f"refine: {name} strength {v} must be within 0..1")
    if border_width < 0 or softness < 0:
        raise TCIGInputError(f"refine: border_width {border_width} and softness {softness} must be >= 0")
    out = torch.full(index_map.shape, float(base))
    if border_width > 0 and border > base:
        out = torch.maximum(out, border * region_borders(index_map.cpu(), border_width))
    if predicted is not None:
        if predicted.shape != index_map.shape:
            raise TCIGInputError(f"refine: segmentation {tuple(predicted.shape)} and layout {tuple(index_map.shape)} differ in size")
        wrong = ((predicted.cpu() != index_map.cpu()) & (index_map.cpu() >= 0)).float()
        out = torch.maximum(out, disagreement * wrong)
    if softness > 1:
        k = 2 * (softness // 2) + 1
        out = F.avg_pool2d(out[None, None], k, 1, k // 2, count_include_pad=False)[0, 0]
    return out.clamp(0, 1)
