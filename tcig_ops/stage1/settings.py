"""What a stage-1 run is asked to do (Stage1Settings), what it reports per step (StepInfo) and at
the end (Stage1Result)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..errors import TCIGInputError
from ..metrics import mean_iou


@dataclass
class StepInfo:
    """What a per-step callback receives; ``image()`` decodes the current latent lazily.

    ``loss``, ``objective`` and ``miou`` are the values of the latest checked step (``check_every``):
    reading them every step would make a GPU wait for each step to finish. ``loss`` is what Adam
    minimises (terms divided by their measured gradient norms, re-measured every 25 steps, so it can
    rise over a good run); ``objective`` is the weighted sum of the raw terms, the figure to watch.
    """

    step: int
    total: int
    loss: float
    miou: float | None
    image: Callable[[], torch.Tensor]
    phase: str = "optimise"  # "start": a step of the layout start (``step`` is 0 then)
    start_step: int = 0  # during the layout start: its step (1..start_total)
    start_total: int = 0
    objective: float = float("nan")

    def preview_due(self, every: int) -> bool:
        """Whether a preview of this step is worth its decode: every ``every``-th optimisation step
        and the last, and the layout start once (its last step), not at each of its steps."""
        if self.phase == "start":
            return self.start_step == self.start_total
        return self.step % every == 0 or self.step == self.total


@dataclass
class Stage1Result:
    image: torch.Tensor  # (1, 3, H, W) in 0..1, on CPU
    latent: torch.Tensor  # (1, E, h, w)
    history: list[dict] = field(default_factory=list)
    miou: float = 0.0
    iou: dict[str, float] = field(default_factory=dict)  # per guided label, judged by the guide that steers it
    steps: int = 0
    stopped: str = "completed"  # "completed" | "target_miou" | "plateau" | "non_finite"
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    start_iou: dict[str, float] = field(default_factory=dict)  # the same table for the starting latent
    precision: str = "fp32"  # the autocast precision that ran ("auto" resolved)

    @property
    def start_miou(self) -> float:
        return mean_iou(self.start_iou)


@dataclass
class Stage1Settings:
    width: int = 256
    height: int = 256
    iterations: int = 300
    lr: float = 0.2
    seed: int = 0
    # a_c, the CLIP term's pull relative to a guide of weight 1 (terms are gradient-normalised, below);
    # measured on sampled 2-5 label layouts: 0.1 keeps the layout, 0.3 already lets CLIP pull small regions apart
    clip_weight: float = 0.1
    target_miou: float | None = None  # stop early once the guides' mIoU reaches this
    lr_decay: float = 0.1  # cosine decay of the learning rate to lr * lr_decay at the last step
    # autocast dtype of the forward pass (z, Adam's state, the losses and the IoU stay fp32): "fp32" | "bf16" |
    # "fp16" (with the gradient scaler) | "auto" (what the device runs fastest: see tcig_ops.precision; the
    # run's notes say what ran and why). The node and the CLI default to "auto"; the library to "fp32"
    precision: str = "fp32"
    fast: bool = True  # leaner decoder and CLIP forwards (fast_decoder, fast_clip); False: the models' own
    # read losses, mIoU and the finite-check back to the host every N steps (and at the last);
    # None: every step on CPU (free there), every 10th on a GPU (each read waits for the device)
    check_every: int | None = None
    # coarse-to-fine: scales of the latent grid, optimised in turn (the last is the full size),
    # the share of the iterations each gets and a learning-rate factor per level; None: one level
    levels: tuple[float, ...] | None = (0.5, 1.0)
    level_steps: tuple[float, ...] | None = (0.5, 0.5)
    # None: COARSE_LR on every coarse level, 1 on the last (measured on sampled layouts, seeds 100-107:
    # a coarse level reaches the layout sooner with it)
    level_lr: tuple[float, ...] | None = None
    # a coarse level whose image would be smaller than this on its short side is left out, its steps
    # going to the next level: the segmenters read the layout too poorly there for the steps to help
    # (64 px layouts, tiny models, seeds 102 and 7402: 0.9 x the judge's oracle after 10 and 40 steps
    # with one level, 80 and 210 with a 32 px level first). 0: every level runs
    level_min_side: int = 64
    # how a coarse level's result reaches the next size: "image" (the coarse image, enlarged bicubic,
    # VQGAN-encoded at the next size) or "latent" (each latent cell repeated, which decodes to other detail
    # at the finer grid: on 8 tuning layouts at 128 px the judge's worst share of its oracle was 0.884
    # with it, 0.950 with "image"). With an init image the hand-over is always "latent"
    level_hand_over: str = "image"
    # without an init image, start from a picture the segmenters already read as the layout: a smooth
    # colour field (one colour per 4x4 pixels, bicubic) optimised for this many steps against the
    # segmentation terms alone (no VQGAN, no CLIP: ~4 ms a step on the tiny models), then VQGAN-encoded.
    # 0: random codes, as VQGAN-CLIP starts
    layout_start_steps: int = 60
    # "field": one colour field over the whole image; "regions": one per label, each cut to its region
    # (the start then has exactly the layout's shapes; the guides pick only each region's colours)
    layout_start: str = "field"
    # stop when the guides' mIoU has not risen by plateau_delta for plateau_steps steps (None: off)
    plateau_steps: int | None = None
    plateau_delta: float = 0.005
    # give each guided class the same share of its segmentation loss, whatever its area
    balance_classes: bool = True
    # divide each term by a running estimate of its gradient norm w.r.t. z, so clip_weight and the
    # guide weights are relative pulls whatever the models (gradient sizes differ ~2000x between the
    # tiny models and real-shape ones); measured every NORM_EVERY steps, at the start of each level
    normalize_terms: bool = True
    # show each guide the image shifted by a random offset of up to this share of its side (replicate
    # border; the probabilities shifted back), a new offset every step, as CLIP sees random cutouts:
    # a pattern that fools a segmenter at one alignment of its logit grid rarely survives the next.
    # Off: on 6 tuning layouts (sampler seeds 100-105) 0.03 and 0.06 moved the judge's mIoU by -0.37 to
    # +0.06 (one 128 px objects layout fell from 0.879 to 0.509), no better on the mean than without
    seg_jitter: float = 0.0
    # a guide probability within this distance of its target costs nothing (0: the paper's plain squared error)
    seg_margin: float = 0.0

    def validate(self, factor: int) -> list[str]:
        notes = []
        if self.iterations < 1:
            raise TCIGInputError(f"iterations: {self.iterations}; use at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TCIGInputError(f"lr: {self.lr}; use a positive learning rate (0.1 is usual)")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise TCIGInputError(f"precision: {self.precision!r}; use auto, fp32, bf16 or fp16")
        if self.clip_weight < 0 or not math.isfinite(self.clip_weight):
            raise TCIGInputError(f"clip_weight: {self.clip_weight}; use a finite number >= 0")
        if self.levels is not None:
            lv = tuple(float(v) for v in self.levels)
            if not lv or any(not (0 < v <= 1) for v in lv) or list(lv) != sorted(lv) or lv[-1] != 1.0:
                raise TCIGInputError(f"levels: {self.levels}; give increasing scales in (0, 1] ending at 1, e.g. (0.5, 1)")
            for name in ("level_steps", "level_lr"):
                v = getattr(self, name)
                if v is not None and (len(v) != len(lv) or any(not (math.isfinite(x) and x > 0) for x in v)):
                    raise TCIGInputError(f"{name}: {v}; give one positive number per level ({len(lv)} levels)")
        if self.level_hand_over not in ("latent", "image"):
            raise TCIGInputError(f"level_hand_over: {self.level_hand_over!r}; use 'latent' or 'image'")
        if self.level_min_side < 0:
            raise TCIGInputError(f"level_min_side: {self.level_min_side} px; use 0 (every level runs) or a side in pixels, e.g. 64")
        if self.layout_start_steps < 0:
            raise TCIGInputError(f"layout_start_steps: {self.layout_start_steps}; use 0 (random start) or more steps")
        if self.layout_start not in ("field", "regions"):
            raise TCIGInputError(f"layout_start: {self.layout_start!r}; use field or regions")
        if self.plateau_steps is not None and self.plateau_steps < 1:
            raise TCIGInputError(f"plateau_steps: {self.plateau_steps}; use a number of steps >= 1, or None to turn it off")
        if not (0 <= self.seg_jitter < 0.5):
            raise TCIGInputError(f"seg_jitter: {self.seg_jitter}; use a share of the side in [0, 0.5), e.g. 0.03")
        if not (0 <= self.seg_margin < 1):
            raise TCIGInputError(f"seg_margin: {self.seg_margin}; use a probability distance in [0, 1), e.g. 0.2")
        if self.check_every is not None and self.check_every < 1:
            raise TCIGInputError(f"check_every: {self.check_every}; use a number of steps >= 1")
        for name in ("width", "height"):
            v = getattr(self, name)
            if v < 1:
                raise TCIGInputError(f"{name}: {v} px; the size must be positive")
            if v < factor:
                raise TCIGInputError(f"{name}: {v} px is smaller than the VQGAN's factor {factor}")
            if v % factor:
                r = max(factor, round(v / factor) * factor)
                notes.append(f"{name} {v} rounded to {r} (a multiple of the VQGAN factor {factor})")
                setattr(self, name, r)
        return notes
