"""The schedule: coarse-to-fine levels (sizes, steps that add up exactly to the iterations, a
learning-rate factor each), the cosine learning rate over all levels, which steps are checked,
and how a coarse level's latent is handed over to the next size."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .settings import Stage1Settings

COARSE_LR = 2.0  # learning-rate factor of the coarse levels when ``level_lr`` is None


def level_sizes(settings: Stage1Settings, factor: int) -> list[tuple[int, int, int]]:
    """[(width, height, steps)] of each coarse-to-fine level; the last is the full size.

    A level's size is the full size times its scale, rounded to the VQGAN factor (at
    least one latent cell); levels that round to the same size are merged, and a coarse level
    smaller than ``settings.level_min_side`` on its short side gives its steps to the next.
    """
    return [(w, h, n) for w, h, n, _ in _levels(settings, factor)]


def split_steps(total: int, fractions: list[float]) -> list[int]:
    """``total`` steps shared among levels in proportion to ``fractions``, adding up exactly to
    ``total`` (largest remainders); the last (full-size) level always gets at least one. A level
    may get 0 steps when ``total`` is smaller than the number of levels: it is skipped."""
    share = [total * f / sum(fractions) for f in fractions]
    counts = [math.floor(x) for x in share]
    for i in sorted(range(len(share)), key=lambda i: (counts[i] - share[i], -i))[: total - sum(counts)]:
        counts[i] += 1
    if counts[-1] == 0:
        donor = max(range(len(counts) - 1), key=lambda i: counts[i])
        counts[donor] -= 1
        counts[-1] = 1
    return counts


def _levels(settings: Stage1Settings, factor: int) -> list[tuple[int, int, int, float]]:
    """``level_sizes`` with each level's learning-rate factor (a merged level keeps the finer one's)."""
    scales = list(settings.levels) if settings.levels else [1.0]
    fractions = list(settings.level_steps) if settings.levels and settings.level_steps else [1.0] * len(scales)
    counts = split_steps(settings.iterations, fractions)
    if settings.levels and settings.level_lr:
        lrs = list(settings.level_lr)
    else:
        lrs = [COARSE_LR] * (len(scales) - 1) + [1.0]
    out: list[tuple[int, int, int, float]] = []
    carried = 0  # steps of coarse levels left out for their size
    for i, (scale, n, lr) in enumerate(zip(scales, counts, lrs)):
        w = max(factor, round(settings.width * scale / factor) * factor)
        h = max(factor, round(settings.height * scale / factor) * factor)
        if i < len(scales) - 1 and min(w, h) < settings.level_min_side:
            carried += n
            continue
        n, carried = n + carried, 0
        if n == 0:  # fewer iterations than levels: the coarse ones go first
            continue
        if out and out[-1][:2] == (w, h):
            out[-1] = (w, h, out[-1][2] + n, lr)
        else:
            out.append((w, h, n, lr))
    return out


def latent_at(z: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """A latent (1, E, H', W') area-averaged to (h, w) cells (itself at its own size)."""
    return z if tuple(z.shape[-2:]) == (h, w) else F.interpolate(z, size=(h, w), mode="area")


def hand_over(z: torch.Tensor, h: int, w: int, z_init: torch.Tensor | None = None) -> torch.Tensor:
    """A coarse level's latent carried to (h, w) cells: each cell repeated (nearest). With an init
    image's full-size latent ``z_init``, the detail that the coarse grid could not hold is added
    back (``z_init`` at (h, w) minus its coarse version repeated), so a coarse level that changed
    nothing hands over exactly the init image's latent at (h, w)."""
    if tuple(z.shape[-2:]) == (h, w):
        return z
    up = F.interpolate(z, size=(h, w), mode="nearest")
    if z_init is None:
        return up
    coarse = latent_at(z_init, *z.shape[-2:])
    return up + latent_at(z_init, h, w) - F.interpolate(coarse, size=(h, w), mode="nearest")


def hand_over_image(vqgan, z: torch.Tensor, h: int, w: int, fast: bool = True) -> torch.Tensor:
    """A coarse level's latent carried to (h, w) cells through its image: decoded, enlarged (bicubic) to
    the next size and VQGAN-encoded there, so the next level starts from the picture the guides (and
    any other reader) saw, not from repeated cells that decode to other detail at the finer grid."""
    if tuple(z.shape[-2:]) == (h, w):
        return z
    f = vqgan.factor
    with torch.no_grad(), torch.autocast(z.device.type, enabled=False):
        image = vqgan.decode(vqgan.quantize_st(z.float()), fast=fast)
        image = F.interpolate(image, size=(h * f, w * f), mode="bicubic", align_corners=False).clamp(0, 1)
        return vqgan.encode(image).detach().clone()


def lr_schedule(opt: torch.optim.Optimizer, offset: int, total: int, lr_decay: float) -> torch.optim.lr_scheduler.LambdaLR:
    """One cosine over all levels' steps, from the level's learning rate down to ``lr_decay`` of it."""

    def cosine(i):
        g = offset + i
        return lr_decay + (1 - lr_decay) * 0.5 * (1 + math.cos(math.pi * g / max(1, total)))

    return torch.optim.lr_scheduler.LambdaLR(opt, cosine)


def check_every(settings: Stage1Settings, device: torch.device) -> int:
    """Steps between host reads of losses and mIoU: every step on a CPU (free there), every 10th on a GPU."""
    return settings.check_every or (1 if device.type == "cpu" else 10)
