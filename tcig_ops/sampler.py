"""Seeded random layouts: horizons, blobs, stripes and nested shapes with 2-5 labels.

``sample_layout(seed, size, labels)`` returns a label-index map (H, W) long and the labels
it uses. The same seed gives the same layout on every machine (a private torch Generator,
CPU, float64 geometry). Used by the benchmark (layouts that did not choose the defaults)
and for dataset making.
"""

from __future__ import annotations

import math

import torch

KINDS = ("horizon", "blobs", "stripes", "nested", "objects")


def _rand(gen: torch.Generator, n: int = 1) -> list[float]:
    return torch.rand(n, generator=gen, dtype=torch.float64).tolist()


def sample_layout(
    seed: int, size: tuple[int, int], labels: list[str], kind: str | None = None, n_labels: int | None = None
) -> tuple[torch.Tensor, list[str], str]:
    """(index map (H, W) long over the returned labels, labels used, kind).

    ``labels`` is the pool to draw from (at least 2); 2-5 of them are used (``n_labels``).
    Every used label covers at least 2 % of the image.
    """
    if len(labels) < 2:
        raise ValueError("sample_layout: give at least two labels to draw from")
    w, h = size
    gen = torch.Generator().manual_seed(int(seed))
    kind = kind or KINDS[int(torch.randint(len(KINDS), (1,), generator=gen))]
    k = n_labels or int(torch.randint(2, min(5, len(labels)) + 1, (1,), generator=gen))
    pick = torch.randperm(len(labels), generator=gen)[:k].tolist()
    used = [labels[i] for i in pick]
    y, x = torch.meshgrid(torch.linspace(0, 1, h, dtype=torch.float64), torch.linspace(0, 1, w, dtype=torch.float64), indexing="ij")
    idx = torch.zeros(h, w, dtype=torch.long)
    for _ in range(20):  # redraw until every label has some room
        idx = _draw(kind, k, x, y, gen)
        counts = torch.bincount(idx.flatten(), minlength=k)
        if counts.min() >= 0.02 * h * w:
            break
    return idx, used, kind


def _draw(kind: str, k: int, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    idx = torch.zeros_like(x, dtype=torch.long)
    if kind == "horizon":  # wavy bands from top to bottom
        cuts = sorted(_rand(gen, k - 1))
        for i, c in enumerate(cuts, 1):
            amp, freq, phase = _rand(gen, 3)
            line = 0.1 + 0.8 * c + 0.06 * amp * torch.sin(2 * math.pi * (1 + 2 * freq) * x + 6.28 * phase)
            idx[y > line] = i
    elif kind == "stripes":  # tilted parallel stripes
        angle = (_rand(gen)[0] - 0.5) * math.pi
        t = x * math.cos(angle) + y * math.sin(angle)
        t = (t - t.min()) / (t.max() - t.min())
        n = k + int(torch.randint(0, 3, (1,), generator=gen))
        idx = (t * n).floor().clamp(max=n - 1).long() % k
    elif kind == "nested":  # concentric rectangles or ellipses around a random centre
        cx, cy = (0.3 + 0.4 * v for v in _rand(gen, 2))
        round_ = _rand(gen)[0] < 0.5
        for i in range(1, k):
            r = 0.45 * (1 - (i - 0.3) / k)
            d = ((x - cx) ** 2 + (y - cy) ** 2).sqrt() if round_ else torch.maximum((x - cx).abs(), (y - cy).abs())
            idx[d < r] = i
    else:  # "blobs" and "objects": a background with shapes on it
        for i in range(1, k):
            cx, cy, rx, ry, shape = _rand(gen, 5)
            cx, cy = 0.15 + 0.7 * cx, 0.15 + 0.7 * cy
            rx, ry = 0.08 + 0.17 * rx, 0.08 + 0.17 * ry
            if kind == "objects" and shape < 0.5:
                inside = ((x - cx).abs() < rx) & ((y - cy).abs() < ry)
            else:
                wobble = 1 + 0.25 * torch.sin(5 * torch.atan2(y - cy, x - cx) + 6.28 * shape)
                inside = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < wobble
            idx[inside] = i
    return idx
