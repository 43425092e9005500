"""The demo: a three-region layout (sky / mountain / water) run through stage 1.

With no models folder it writes (once) and uses the tiny models cached under ``.cache/``.
A real models folder holds a ``manifest.json`` naming real files, e.g.::

    {"vqgan": "vqgan_imagenet_f16_16384.ckpt", "clip": "open_clip_model.safetensors",
     "clip_arch": "ViT-B-32", "segmenters": ["segformer-b0-ade-512-512"]}

(relative paths are relative to the folder).
"""

from __future__ import annotations

import json
import math
import os

import torch

from .imageio import save_image
from .world import LAYOUT_HEX


def demo_layout(width: int, height: int) -> torch.Tensor:
    """(3, H, W) colour layout: sky above a wavy ridge, mountain, water below a shore line."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    ridge = 0.42 + 0.08 * torch.sin(x * 2 * math.pi * 1.3 + 0.4)
    shore = 0.70 + 0.03 * torch.sin(x * 2 * math.pi * 2.1)

    def rgb(name):
        h = LAYOUT_HEX[name].lstrip("#")
        return torch.tensor([int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)]).view(3, 1, 1)

    image = rgb("mountain").expand(3, height, width).clone()
    image = torch.where(y < ridge, rgb("sky"), image)
    image = torch.where(y > shore, rgb("water"), image)
    return image


DEMO_LABELS = ("sky", "mountain", "water")


def demo_painting(width: int, height: int) -> str:
    """The demo layout as a Layout Painter value (see ``painter.py``), in the world's colours."""
    from .layout import layout_from_colour_image
    from .painter import encode_painting

    classes = {LAYOUT_HEX[k]: k for k in DEMO_LABELS}
    layout = layout_from_colour_image(demo_layout(width, height), classes)
    return encode_painting((layout.index_map() + 1).to(torch.uint8).numpy(), layout.labels, [LAYOUT_HEX[k] for k in layout.labels])


def prepare_demo(models_dir: str | None, out_dir: str, size: tuple[int, int]) -> dict:
    """Make sure models exist, write the layout PNG + class map; return paths for stage 1."""
    from .runner import manifest_models

    if models_dir is None:
        from .tiny import cache_dir

        models_dir = cache_dir()
        if not os.path.isfile(os.path.join(models_dir, "manifest.json")):
            from .tiny import write_tiny_models

            write_tiny_models(models_dir)
    models = manifest_models(models_dir)
    os.makedirs(out_dir, exist_ok=True)
    layout_path = save_image(demo_layout(*size), os.path.join(out_dir, "layout.png"))
    classes_path = os.path.join(out_dir, "classes.json")
    with open(classes_path, "w", encoding="utf-8") as f:
        json.dump({LAYOUT_HEX[k]: k for k in DEMO_LABELS}, f, indent=1)
    return {**models, "layout": layout_path, "classes": classes_path}
