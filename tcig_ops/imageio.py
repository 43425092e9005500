"""PNG in and out, and the pictures we show people: colourised layouts and overlays.

Tensors here are (3, H, W) or (1, 3, H, W) float in 0..1.
"""

from __future__ import annotations

import colorsys
import os

import numpy as np
import torch

from .checkpoints import require_file
from .errors import TCIGInputError


def load_image(path: str, what: str = "image") -> torch.Tensor:
    """Read an image file as (3, H, W) float 0..1 (alpha dropped, palette expanded)."""
    from PIL import Image, UnidentifiedImageError

    require_file(path, what)
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise TCIGInputError(f"{what}: {path} is not a readable image ({exc})") from None
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def save_image(image: torch.Tensor, path: str) -> str:
    """Write (3,H,W) or (1,3,H,W) 0..1 as PNG, creating the folder."""
    from PIL import Image

    if image.dim() == 4:
        image = image[0]
    arr = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def palette(n: int) -> torch.Tensor:
    """(n, 3) distinct colours, evenly spaced hues."""
    return torch.tensor([colorsys.hsv_to_rgb(i / max(n, 1), 0.65, 0.95) for i in range(n)], dtype=torch.float32)


def colourise(index_map: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """(H, W) long (-1 = none, shown black) -> (3, H, W) using (K, 3) colours."""
    lut = torch.cat([colours, torch.zeros(1, 3)])  # index -1 picks the last row
    return lut[index_map.cpu().clamp_min(-1)].permute(2, 0, 1)


def overlay(image: torch.Tensor, index_map: torch.Tensor, colours: torch.Tensor, alpha: float = 0.45) -> torch.Tensor:
    """Blend a colourised index map over an image (3, H, W)."""
    image = image[0] if image.dim() == 4 else image
    seg = colourise(index_map, colours)
    shown = (index_map.cpu() >= 0).float()[None]
    return image.cpu() * (1 - alpha * shown) + seg * alpha * shown


def side_by_side(*panels: torch.Tensor, gap: int = 4) -> torch.Tensor:
    """Concatenate (3, H, W) panels horizontally with a white gap (heights must match)."""
    panels = [p[0] if p.dim() == 4 else p for p in panels]
    h = panels[0].shape[1]
    if any(p.shape[1] != h for p in panels):
        raise ValueError(f"side_by_side: panel heights differ: {[p.shape[1] for p in panels]}")
    spacer = torch.ones(3, h, gap)
    parts = []
    for i, p in enumerate(panels):
        parts += ([spacer] if i else []) + [p.cpu().float()]
    return torch.cat(parts, dim=2)
