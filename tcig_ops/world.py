"""A small synthetic world for the tiny models: class-coloured, textured regions.

Eight everyday classes, each with a base colour and a texture, laid out as random
warped Voronoi regions. ``sample(n, size, gen)`` returns images (n, 3, S, S) in 0..1
and label maps (n, S, S). Used to train the tiny VQGAN and segmenters briefly so a
test can show real control; nothing here is used at run time with real models.
"""

from __future__ import annotations

import math

import torch

CLASSES = ["sky", "tree", "grass", "water", "road", "building", "sand", "mountain"]
# Base colours are far apart (every pair differs by >= 0.25 in some channel) so a tiny
# VQGAN that renders colour better than texture still keeps the classes apart.
BASE_RGB = {
    "sky": (0.55, 0.80, 0.98),
    "tree": (0.05, 0.30, 0.08),
    "grass": (0.50, 0.85, 0.25),
    "water": (0.05, 0.18, 0.60),
    "road": (0.25, 0.25, 0.25),
    "building": (0.85, 0.22, 0.18),
    "sand": (0.95, 0.85, 0.55),
    "mountain": (0.55, 0.45, 0.68),
}
# Colours used in layout PNGs (the class map of the demo and the tests).
LAYOUT_HEX = {
    "sky": "#87ceeb",
    "tree": "#1e5a1e",
    "grass": "#5ab43c",
    "water": "#1e4ca6",
    "road": "#6b6b70",
    "building": "#9e4c38",
    "sand": "#e6cc8c",
    "mountain": "#735f54",
}


def texture(name: str, size: int, gen: torch.Generator) -> torch.Tensor:
    """(3, S, S) texture of one class in 0..1."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = torch.tensor(BASE_RGB[name]).view(3, 1, 1)
    # smoothed noise: per-pixel noise is costly for a tiny autoencoder and says little about the class
    noise = torch.nn.functional.avg_pool2d(torch.rand(1, 1, size, size, generator=gen), 3, 1, 1)[0]
    phase = torch.rand(1, generator=gen).item() * 6.28
    if name == "sky":
        pattern = 0.15 * (0.5 - y)
    elif name == "tree":
        blob = torch.nn.functional.avg_pool2d(torch.rand(1, 1, size, size, generator=gen), 5, 1, 2)[0]
        pattern = 0.6 * (blob - 0.5)
    elif name == "grass":
        pattern = 0.15 * (noise - 0.5)
    elif name == "water":
        pattern = 0.06 * torch.sin(y * 30 + phase)
    elif name == "road":
        pattern = 0.06 * (noise - 0.5)
    elif name == "building":
        grid = ((x * 8 + phase).frac() < 0.2) | ((y * 8).frac() < 0.2)
        pattern = -0.10 * grid.float()
    elif name == "sand":
        pattern = 0.2 * (noise - 0.5) - 0.05 * y
    else:  # mountain
        pattern = 0.06 * torch.sin((x + y) * 20 + phase)
    return (base + 0.5 * pattern).clamp(0, 1)  # mild textures: colour carries the class


def random_label_map(size: int, n_regions: int, classes: list[int], gen: torch.Generator) -> torch.Tensor:
    """(S, S) long map of warped Voronoi regions, each given one of ``classes``."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    amp = 0.08 * torch.rand(2, generator=gen)
    freq = 2 + 4 * torch.rand(2, generator=gen)
    xw = x + amp[0] * torch.sin(y * freq[0] * math.pi)
    yw = y + amp[1] * torch.sin(x * freq[1] * math.pi)
    centres = torch.rand(n_regions, 2, generator=gen)
    d = (xw[None] - centres[:, 0, None, None]) ** 2 + (yw[None] - centres[:, 1, None, None]) ** 2
    owner = d.argmin(0)
    return torch.tensor(classes)[owner]


def render(label_map: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(S, S) label map -> (3, S, S) image."""
    size = label_map.shape[-1]
    image = torch.zeros(3, size, size)
    for c in label_map.unique().tolist():
        m = (label_map == c).float()
        image = image * (1 - m) + texture(CLASSES[c], size, gen) * m
    return image


def sample(n: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n random scenes of 2-4 regions: images (n, 3, S, S) and label maps (n, S, S)."""
    images, labels = [], []
    for _ in range(n):
        k = int(torch.randint(2, 5, (1,), generator=gen))
        classes = torch.randperm(len(CLASSES), generator=gen)[:k].tolist()
        lm = random_label_map(size, k, classes, gen)
        images.append(render(lm, gen))
        labels.append(lm)
    return torch.stack(images), torch.stack(labels)
