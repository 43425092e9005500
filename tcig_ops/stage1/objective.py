"""The objective of one level: L = a_c * L_clip + sum_r a_r * L_region_r + sum_i a_si * L_seg_i at
the level's image size, each term divided by a running estimate of its gradient norm (so the
weights are relative pulls whatever the models). The layout is resized to the level and the
guides bound to it once, here."""

from __future__ import annotations

import torch

from ..clip_guide import ClipGuide
from ..layout import Layout
from .guides import Guide, balanced_pixel_weights, bind_guides, guided_iou, segmentation_loss
from .regions import RegionPrompt, _region_box
from .settings import Stage1Settings


class LevelObjective:
    """``forward(image, check)`` runs the models (inside the caller's autocast), ``loss(...)`` adds
    the terms up in fp32, ``ious(fulls)`` is what the guides read (on checked steps)."""

    def __init__(
        self,
        guides: list[Guide],
        full_layout: Layout,
        size: tuple[int, int],
        regions: list[RegionPrompt],
        clip_guide: ClipGuide | None,
        settings: Stage1Settings,
        device: torch.device,
        notes: list[str],
    ):
        lw, lh = size
        self.settings, self.clip_guide = settings, clip_guide
        self.layout = full_layout.downsampled(lh, lw).to(device)
        self.bound = bind_guides(guides, self.layout)
        self.valid = ~self.layout.ignore
        self.pixel_weights = [balanced_pixel_weights(b.targets, self.valid) if settings.balance_classes else None for b in self.bound]
        self.scales = TermScales()  # each level has its own image size and so its own gradient sizes
        boxes = [(r, _region_box(self.layout, r.label)) for r in regions]
        self.regions = [(r, *box) for r, box in boxes if box is not None]
        for r, box in boxes:
            if box is None:
                notes.append(f"region prompt {r.label!r}: the region has no cell at {lw}x{lh}; its term starts at a finer level")

    def forward(self, image: torch.Tensor, check: bool) -> tuple[dict, list]:
        """The CLIP and region terms, and each guide's probabilities (None for a weight-0 guide on an
        unchecked step: it adds no gradient and is run, without autograd, only where it is reported)."""
        fast, terms = self.settings.fast, {}
        if self.clip_guide is not None and self.settings.clip_weight > 0:
            terms["clip"] = self.clip_guide(image, fast=fast)
        for r, box, mask, _share in self.regions:
            terms[f"region:{r.label}"] = r.guide.region_loss(image, box, mask, fast=fast)
        fulls = []
        for b in self.bound:
            if b.guide.weight > 0:
                fulls.append(self._guided_probabilities(b, image))  # (1, K, H, W)
            elif check:
                with torch.no_grad():
                    fulls.append(b.probabilities(image))
            else:
                fulls.append(None)
        return terms, fulls

    def _guided_probabilities(self, b, image: torch.Tensor) -> torch.Tensor:
        """The guide's probabilities of the image, read at a random shift when ``seg_jitter`` asks for it."""
        j = self.settings.seg_jitter
        H, W = image.shape[-2:]
        dy, dx = (int(torch.randint(-m, m + 1, ())) if m else 0 for m in (round(j * H), round(j * W)))
        if dy == 0 and dx == 0:
            return b.probabilities(image)
        return _shift(b.probabilities(_shift(image, dy, dx)), -dy, -dx)

    def loss(self, terms: dict, fulls: list, z: torch.Tensor, image: torch.Tensor, measure_norms: bool) -> tuple[torch.Tensor, ...]:
        """The weighted sum in fp32 (small MSE differences vanish in bf16) and the same sum without the
        term normalisation (``objective``: comparable across steps, as the normalised loss is not,
        its scales being re-measured every NORM_EVERY steps); adds the segmentation terms to ``terms``.
        ``measure_norms``: update the gradient-norm estimates first."""
        s = self.settings
        weighted: dict[str, tuple[float, torch.Tensor]] = {}  # term -> (its weight, its value)
        if "clip" in terms:
            weighted["clip"] = (s.clip_weight, terms["clip"].float())
        for r, _, _, share in self.regions:
            key = f"region:{r.label}"
            weighted[key] = (s.clip_weight * (share if r.weight is None else r.weight), terms[key].float())
        for i, (b, full) in enumerate(zip(self.bound, fulls)):
            if full is None or b.guide.weight == 0:
                continue
            terms[f"seg{i}"] = segmentation_loss(
                full.float()[:, b.vocab_idx], b.targets, self.valid, self.pixel_weights[i], margin=s.seg_margin
            )
            weighted[f"seg{i}"] = (b.guide.weight, terms[f"seg{i}"])
        if s.normalize_terms and len(weighted) > 1 and measure_norms:
            self.scales.update(weighted, z)
        loss = image.new_zeros((), dtype=torch.float32)
        objective = image.new_zeros((), dtype=torch.float32)
        for key, (weight, value) in weighted.items():
            loss = loss + weight * value * (self.scales.scale(key) if s.normalize_terms else 1.0)
            objective = objective + weight * value.detach()
        return loss, objective

    def ious(self, fulls: list) -> dict[str, float]:
        return guided_iou(self.bound, [f.float() if f is not None else None for f in fulls], self.layout)


NORM_EVERY = 25  # steps between gradient-norm measurements (each costs one extra backward per term: 19% of the
# step time at every 10th step on the tiny models, so every 25th)


class TermScales:
    """Running estimate of each loss term's gradient norm w.r.t. the latent; ``scale(term)`` is
    its inverse (1 until measured). The measurement reads nothing back to the host."""

    def __init__(self):
        self.norms: dict[str, torch.Tensor] = {}

    def update(self, weighted: dict[str, tuple[float, torch.Tensor]], z: torch.Tensor) -> None:
        for k in [k for k, (w, _) in weighted.items() if w > 0]:
            (g,) = torch.autograd.grad(weighted[k][1], z, retain_graph=True, allow_unused=True)
            n = g.norm().detach() if g is not None else torch.zeros((), device=z.device)
            n = torch.where(torch.isfinite(n), n, torch.zeros_like(n))
            self.norms[k] = n if k not in self.norms else 0.5 * self.norms[k] + 0.5 * n

    def scale(self, key: str) -> torch.Tensor | float:
        """1 / the term's gradient norm, the norm floored at 1/1000 of the largest one: a term whose
        gradient was zero when measured (a prompt past its stop distance) must not be blown up."""
        n = self.norms.get(key)
        if n is None:
            return 1.0
        floor = torch.stack(list(self.norms.values())).max() * 1e-3
        return 1.0 / torch.maximum(n, floor).clamp_min(1e-12)


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """(B, C, H, W) moved by (dy, dx) pixels, the uncovered border replicated."""
    H, W = x.shape[-2:]
    p = max(abs(dy), abs(dx))
    padded = torch.nn.functional.pad(x, (p, p, p, p), mode="replicate")
    return padded[..., p - dy : p - dy + H, p - dx : p - dx + W]
