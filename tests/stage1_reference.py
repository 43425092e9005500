"""FROZEN: tcig_ops/stage1.py as it was before it was split into the tcig_ops/stage1/ package (issue 22),
kept verbatim as the oracle of tests/test_stage1_pinned.py: the split code must give the same images and
histories bit for bit. Do not edit; when stage 1 changes behaviour on purpose, the pin test says so.

TCIG stage 1: optimise a VQGAN latent for a prompt (CLIP) and a layout (segmenters).

L = a_c * L_clip + sum_i a_si * L_seg_i, with L_seg_i the MSE between segmenter i's
class probabilities (for its class subset) and the layout's target masks, over the
non-ignored pixels. Adam on the pre-quantization latent z (1, E, h, w); decoding
snaps z to the codebook with a straight-through estimator.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from tcig_ops.clip_guide import ClipGuide
from tcig_ops.errors import TCIGInputError
from tcig_ops.layout import Layout, match_labels, vocabulary_to_layout
from tcig_ops.metrics import iou_counts, iou_table, mean_iou, to_layout_space
from tcig_ops.segmenters import Segmenter
from tcig_ops.vqgan import VQGAN


@dataclass
class Guide:
    """One segmenter steering a subset of the layout's classes with its own weight."""

    segmenter: Segmenter
    weight: float = 1.0
    classes: list[str] | None = None  # None: every layout label this segmenter knows


@dataclass
class BoundGuide:
    """A Guide resolved against one layout: which probability channels meet which targets."""

    guide: Guide
    labels: list[str]  # layout labels this guide steers
    vocab_idx: list[int]  # their channels in the segmenter's output (for ``query``)
    targets: torch.Tensor  # (k, H, W)
    query: list[str] | None = None  # the texts an open-vocabulary segmenter scores (kept here, never on the model)

    @property
    def label_to_vocab(self) -> dict[str, int]:
        return dict(zip(self.labels, self.vocab_idx))

    def probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """The segmenter's probabilities (1, K, H, W) for this guide's query."""
        return self.guide.segmenter(image, labels=self.query)


def bind_guides(guides: list[Guide], layout: Layout) -> list[BoundGuide]:
    """Resolve class subsets against the layout and the segmenters' vocabularies.

    Every layout label must be known by at least one guide; a label no segmenter
    knows is an error that lists close matches. An open-vocabulary segmenter (CLIPSeg)
    scores exactly the guide's own labels, each with its own sigmoid.
    """
    if not guides:
        raise TCIGInputError("guides: no segmenter given; add at least one segmenter guide")
    bound, covered = [], set()
    for n, g in enumerate(guides):
        if not math.isfinite(g.weight) or g.weight < 0:
            raise TCIGInputError(f"guide #{n + 1} ({g.segmenter.name}): weight {g.weight} must be a finite number >= 0")
        seg = g.segmenter
        if g.classes is not None:
            wanted = list(dict.fromkeys(c.strip() for c in g.classes if c.strip()))
            if not wanted:
                raise TCIGInputError(f"guide #{n + 1} ({seg.name}): class subset is empty; list classes or leave it blank for all")
            unknown = [c for c in wanted if c not in layout.labels]
            if unknown:
                raise TCIGInputError(f"guide #{n + 1} ({seg.name}): classes {unknown} are not in the layout {layout.labels}")
        else:
            wanted = list(vocabulary_to_layout(seg.vocabulary(layout.labels), seg.name, layout.labels)[1])
        if not wanted:
            continue
        query = seg.query(wanted)
        vocab_idx = list(range(len(wanted))) if query is not None else match_labels(wanted, seg.labels, seg.name)
        targets, _ = layout.subset(wanted)
        bound.append(BoundGuide(g, wanted, vocab_idx, targets, query))
        covered.update(wanted)
    missing = [lbl for lbl in layout.labels if lbl not in covered]
    if missing:
        # re-run the matcher against the first segmenter for a helpful close-match message
        seg = next((g.segmenter for g in guides if not g.segmenter.open_vocabulary), guides[0].segmenter)
        match_labels(missing, seg.vocabulary(layout.labels), seg.name)
        raise TCIGInputError(f"layout labels {missing} are not covered by any guide's class subset")
    return bound


def segmentation_loss(
    probs: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, weights: torch.Tensor | None = None, kind: str = "mse"
) -> torch.Tensor:
    """Distance between probabilities (1,k,H,W) and targets (k,H,W) over valid pixels (H,W) bool.

    ``kind`` "mse" is the paper's squared error; "bce" the binary cross-entropy of each class
    channel (its gradient does not fade where the segmenter is confidently wrong, as the
    squared error of a saturated softmax does). ``weights`` (H, W), when given, replaces the
    uniform average over pixels (see ``balanced_pixel_weights``); it sums to 1 over the valid pixels.
    """
    if kind == "bce":
        p = probs[0].clamp(1e-6, 1 - 1e-6)
        per_pixel = -(targets * p.log() + (1 - targets) * (1 - p).log())
    else:
        per_pixel = (probs[0] - targets) ** 2
    if weights is None:
        w = valid.to(probs.dtype)
        return (per_pixel * w).sum() / (w.sum() * probs.shape[1]).clamp_min(1)
    return (per_pixel * weights).sum() / probs.shape[1]


def balanced_pixel_weights(targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(H, W) weights that give every class of ``targets`` (k,H,W) the same total weight.

    With the plain average a region of 2 % of the image holds 2 % of the loss, so the
    optimiser can trade it away for the large ones; here each class holds 1/k. Soft
    targets (coarse levels) spread a pixel's weight over its classes.
    """
    t = targets * valid.to(targets.dtype)
    area = t.flatten(1).sum(1)  # (k,)
    present = area > 0
    per_class = torch.where(present, 1.0 / area.clamp_min(1e-6), torch.zeros_like(area)) / present.sum().clamp_min(1)
    return (t * per_class[:, None, None]).sum(0)


@dataclass
class StepInfo:
    """What a per-step callback receives; ``image()`` decodes the current latent lazily.

    ``loss`` and ``miou`` are the values of the latest checked step (``check_every``):
    reading them every step would make a GPU wait for each step to finish.
    """

    step: int
    total: int
    loss: float
    miou: float | None
    image: Callable[[], torch.Tensor]
    phase: str = "optimise"  # "start": a step of the layout start (``step`` is 0 then)
    start_step: int = 0  # during the layout start: its step (1..start_total)
    start_total: int = 0

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
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16": autocast dtype of the forward pass (z and Adam stay fp32)
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
    # without an init image, start from a picture the segmenters already read as the layout: a smooth
    # colour field (one colour per 4x4 pixels, bicubic) optimised for this many steps against the
    # segmentation terms alone (no VQGAN, no CLIP: ~4 ms a step on the tiny models), then VQGAN-encoded.
    # 0: random codes, as VQGAN-CLIP starts
    layout_start_steps: int = 60
    # stop when the guides' mIoU has not risen by plateau_delta for plateau_steps steps (None: off)
    plateau_steps: int | None = None
    plateau_delta: float = 0.005
    # give each guided class the same share of its segmentation loss, whatever its area
    balance_classes: bool = True
    # divide each term by a running estimate of its gradient norm w.r.t. z, so clip_weight and the
    # guide weights are relative pulls whatever the models (gradient sizes differ ~2000x between the
    # tiny models and real-shape ones); measured every NORM_EVERY steps, at the start of each level
    normalize_terms: bool = True

    def validate(self, factor: int) -> list[str]:
        notes = []
        if self.iterations < 1:
            raise TCIGInputError(f"iterations: {self.iterations}; use at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TCIGInputError(f"lr: {self.lr}; use a positive learning rate (0.1 is usual)")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise TCIGInputError(f"precision: {self.precision!r}; use fp32, bf16 or fp16")
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
        if self.layout_start_steps < 0:
            raise TCIGInputError(f"layout_start_steps: {self.layout_start_steps}; use 0 (random start) or more steps")
        if self.plateau_steps is not None and self.plateau_steps < 1:
            raise TCIGInputError(f"plateau_steps: {self.plateau_steps}; use a number of steps >= 1, or None to turn it off")
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


def run_stage1(
    vqgan: VQGAN,
    layout: Layout,
    guides: list[Guide],
    settings: Stage1Settings,
    clip_guide: ClipGuide | None = None,
    init_image: torch.Tensor | None = None,
    callback: Callable[[StepInfo], None] | None = None,
    free_memory: Callable[[int, torch.device], None] | None = None,
    region_prompts: list[RegionPrompt] | None = None,
) -> Stage1Result:
    """Optimise a latent; returns the decoded image, latent and a per-step history.

    ``callback(StepInfo)`` runs after every step and may raise to cancel (the
    exception propagates; no partial result is returned). Runs inside a forked RNG
    so the caller's random state is untouched and the same seed gives the same image.
    Works when called under ``torch.inference_mode``/``no_grad`` (ComfyUI runs nodes so):
    the optimisation needs autograd, so it re-enables it locally. The models' weights
    must be normal tensors, i.e. loaded outside inference mode. ``free_memory(bytes,
    device)`` is asked to make room (e.g. ComfyUI unloading idle models) before a size
    that does not fit is refused. ``region_prompts`` add a CLIP term per layout region
    (cutouts inside the region's bounding box; pixels outside it pass no gradient).
    """
    with torch.inference_mode(False), torch.enable_grad():
        return _run(vqgan, layout, guides, settings, clip_guide, init_image, callback, free_memory, region_prompts)


def guided_iou(bound: list[BoundGuide], fulls: list[torch.Tensor | None], layout: Layout) -> dict[str, float]:
    """Per-label IoU, each label judged by the first guide that steers it and was run.
    One host read for all guides."""
    inters, unions, labels, seen = [], [], [], set()
    target = layout.index_map()
    for b, full in zip(bound, fulls):
        if full is None:
            continue
        pred = to_layout_space(b.guide.segmenter.decide(full.detach())[0], layout, b.label_to_vocab)
        inter, union = iou_counts(pred, target.to(pred.device), len(layout.labels))
        for lbl in b.labels:
            if lbl not in seen:
                seen.add(lbl)
                k = layout.labels.index(lbl)
                labels.append(lbl)
                inters.append(inter[k])
                unions.append(union[k])
    if not labels:
        return {}
    return iou_table(torch.stack(inters), torch.stack(unions), labels)


COARSE_LR = 2.0  # learning-rate factor of the coarse levels when ``level_lr`` is None


def level_sizes(settings: Stage1Settings, factor: int) -> list[tuple[int, int, int]]:
    """[(width, height, steps)] of each coarse-to-fine level; the last is the full size.

    A level's size is the full size times its scale, rounded to the VQGAN factor (at
    least one latent cell); levels that round to the same size are merged.
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
    for scale, n, lr in zip(scales, counts, lrs):
        if n == 0:  # fewer iterations than levels: the coarse ones go first
            continue
        w = max(factor, round(settings.width * scale / factor) * factor)
        h = max(factor, round(settings.height * scale / factor) * factor)
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


def _run(vqgan, layout, guides, settings, clip_guide, init_image, callback, free_memory, region_prompts) -> Stage1Result:
    # tensors made under inference mode cannot be saved for backward: take normal copies
    layout = layout.clone()
    init_image = init_image.clone() if init_image is not None else None
    settings = Stage1Settings(**vars(settings))
    notes = settings.validate(vqgan.factor)
    device = vqgan.codebook.device
    W, H = settings.width, settings.height
    check_memory(vqgan, W, H, device, free_memory)
    full_layout = layout.resized(H, W)
    notes += full_layout.notes
    bind_guides(guides, full_layout)  # every label error before any work
    regions = _check_regions(region_prompts or [], full_layout)
    if settings.clip_weight == 0:  # checked, but a CLIP term at weight 0 is not worth its forward and backward
        regions = []
    levels = _levels(settings, vqgan.factor)
    if len(levels) > 1:
        notes.append("coarse-to-fine: " + " -> ".join(f"{w}x{h} ({n} steps)" for w, h, n, _ in levels))
    every = settings.check_every or (1 if device.type == "cpu" else 10)
    devices = [device] if device.type == "cuda" else []
    total = sum(n for _, _, n, _ in levels)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(settings.seed)
        gen = torch.Generator(device=device).manual_seed(settings.seed)
        w0, h0 = levels[0][:2]
        z_init = None  # an init image's latent at full size: its detail is kept through the coarse levels
        if init_image is not None:
            init = init_image.to(device).float()
            if tuple(init.shape[-2:]) != (H, W):
                init = F.interpolate(init, size=(H, W), mode="bilinear", align_corners=False)
            with torch.no_grad():
                z_init = vqgan.encode(init).detach().clone()
            z = latent_at(z_init, h0 // vqgan.factor, w0 // vqgan.factor)
        elif settings.layout_start_steps > 0:
            start_steps = settings.layout_start_steps
            counter = iter(range(1, start_steps + 1))

            def shown(image, total=total):  # the colour field as the preview; the callback may cancel
                if callback is not None:
                    k = next(counter)
                    callback(StepInfo(0, total, float("nan"), None, lambda: image.cpu(), "start", k, start_steps))

            lay0 = full_layout.downsampled(h0, w0).to(device)
            start = layout_start_image(lay0, guides, settings.layout_start_steps, settings.balance_classes, on_step=shown, generator=gen)
            with torch.no_grad():
                z = vqgan.encode(start).detach().clone()
            notes.append(f"started from the layout ({settings.layout_start_steps} colour-field steps)")
        else:
            z = vqgan.random_latent(h0, w0, gen)
        zmin, zmax = vqgan.z_range()
        scaler = _grad_scaler(settings.precision, device)
        autocast = _autocast(settings.precision, device)
        history: list[dict] = []
        stopped, steps, start_iou = "completed", 0, {}
        last_loss, last_miou = float("nan"), None
        # the last latent whose step was finite, and whether a non-finite step has happened:
        # both stay on the device, so the check costs no host sync per step
        bad = torch.zeros((), dtype=torch.bool, device=device)
        first_bad = torch.full((), -1, dtype=torch.long, device=device)
        step = 0
        for li, (lw, lh, n_steps, lr_factor) in enumerate(levels):
            last_level = li == len(levels) - 1
            z = hand_over(z.detach(), lh // vqgan.factor, lw // vqgan.factor, z_init)
            z = z.detach().clone().requires_grad_(True)
            z_good = z.detach().clone()
            lay = full_layout.downsampled(lh, lw).to(device)
            bound = bind_guides(guides, lay)
            valid = ~lay.ignore
            pixel_weights = [balanced_pixel_weights(b.targets, valid) if settings.balance_classes else None for b in bound]
            grad_norms = TermScales()  # each level has its own image size and so its own gradient sizes
            boxes = [(r, _region_box(lay, r.label)) for r in regions]
            level_regions = [(r, *box) for r, box in boxes if box is not None]
            for r, box in boxes:
                if box is None:
                    notes.append(f"region prompt {r.label!r}: the region has no cell at {lw}x{lh}; its term starts at a finer level")
            base_lr = settings.lr * lr_factor
            opt = torch.optim.Adam([z], lr=base_lr)
            offset = step

            def cosine(i, offset=offset, total=total):  # one cosine over all levels' steps
                g = offset + i
                return settings.lr_decay + (1 - settings.lr_decay) * 0.5 * (1 + math.cos(math.pi * g / max(1, total)))

            sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
            pending: list[tuple[int, dict, dict | None]] = []
            best, best_step = -1.0, step
            level_end = step + n_steps
            while step < level_end:
                check = (step - offset) % every == 0 or step == level_end - 1
                # the latent this step's mIoU is measured on (before its update): a stop rule returns it
                z_measured = z.detach().clone() if check else None
                with autocast:
                    image = vqgan.decode(vqgan.quantize_st(z), fast=settings.fast)
                    terms = {}
                    if clip_guide is not None and settings.clip_weight > 0:
                        terms["clip"] = clip_guide(image, fast=settings.fast)
                    for r, box, mask, _share in level_regions:
                        terms[f"region:{r.label}"] = r.guide.region_loss(image, box, mask, fast=settings.fast)
                    # a guide with weight 0 adds no gradient: it is run (without autograd) only
                    # on checked steps, where the history reports its mIoU
                    fulls = []
                    for b in bound:
                        if b.guide.weight > 0:
                            fulls.append(b.probabilities(image))  # (1, K, H, W)
                        elif check:
                            with torch.no_grad():
                                fulls.append(b.probabilities(image))
                        else:
                            fulls.append(None)
                # the losses themselves in fp32: small MSE differences vanish in bf16
                weighted: dict[str, tuple[float, torch.Tensor]] = {}  # term -> (its weight, its value)
                if "clip" in terms:
                    weighted["clip"] = (settings.clip_weight, terms["clip"].float())
                for r, _, _, share in level_regions:
                    key = f"region:{r.label}"
                    weighted[key] = (settings.clip_weight * (share if r.weight is None else r.weight), terms[key].float())
                for i, (b, full) in enumerate(zip(bound, fulls)):
                    if full is None or b.guide.weight == 0:
                        continue
                    terms[f"seg{i}"] = segmentation_loss(full.float()[:, b.vocab_idx], b.targets, valid, pixel_weights[i])
                    weighted[f"seg{i}"] = (b.guide.weight, terms[f"seg{i}"])
                if settings.normalize_terms and len(weighted) > 1 and (step - offset) % NORM_EVERY == 0:
                    grad_norms.update(weighted, z)
                loss = image.new_zeros((), dtype=torch.float32)
                for key, (weight, value) in weighted.items():
                    loss = loss + weight * value * (grad_norms.scale(key) if settings.normalize_terms else 1.0)
                ious = guided_iou(bound, [f.float() if f is not None else None for f in fulls], lay) if check else None
                if step == 0:
                    start_iou = dict(ious)
                opt.zero_grad(set_to_none=True)
                if not loss.requires_grad:  # nothing pulls (every weight 0, no CLIP): the latent stays
                    ok = torch.isfinite(loss)
                elif scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)  # inf/NaN from the fp16 scale make the scaler skip this step
                    ok = torch.isfinite(loss)
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    grad = z.grad if z.grad is not None else torch.zeros_like(z)
                    ok = torch.isfinite(loss) & torch.isfinite(grad).all()
                    opt.step()
                sched.step()
                with torch.no_grad():
                    z.copy_(torch.maximum(torch.minimum(z, zmax), zmin))
                    ok = ok & torch.isfinite(z).all()
                    first_bad = torch.where(bad | ok, first_bad, torch.full_like(first_bad, step))
                    bad = bad | ~ok
                    z_good = torch.where(bad, z_good, z)
                record = {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}
                pending.append((step, record, ious))
                if check:
                    flushed = _flush(pending, li if len(levels) > 1 else None)
                    history += flushed
                    pending = []
                    last_loss, last_miou = history[-1]["loss"], history[-1]["miou"]
                    if bool(bad):
                        k = int(first_bad)
                        history = [h for h in history if h["step"] < k]
                        stopped, steps = "non_finite", k
                        notes.append(
                            f"the loss or its gradient became non-finite at step {k}; "
                            + ("kept the starting latent" if k == 0 else f"kept the latent of step {k - 1}")
                        )
                        break
                steps = step = step + 1
                if callback is not None:
                    callback(StepInfo(step, total, last_loss, last_miou, functools.partial(_decode, vqgan, z_good, settings.fast)))
                if not check or last_miou is None:
                    continue
                # stop rules end the last level; a coarse level hands over to the next one instead
                if settings.target_miou is not None and last_miou >= settings.target_miou:
                    stopped, z_good = "target_miou", z_measured
                    break
                if last_miou > best + settings.plateau_delta:
                    best, best_step = last_miou, step
                elif settings.plateau_steps and step - best_step >= settings.plateau_steps:
                    stopped, z_good = "plateau", z_measured
                    break
            if stopped == "non_finite":
                break
            if stopped in ("target_miou", "plateau") and not last_level:
                notes.append(f"level {li + 1} ({lw}x{lh}) ended at step {step} ({stopped.replace('_', ' ')})")
                stopped = "completed"
            if stopped != "completed":
                if stopped == "plateau":
                    notes.append(
                        f"stopped at step {step}: mIoU has not improved by {settings.plateau_delta} for {settings.plateau_steps} steps"
                    )
                break
            z = z_good
        final_z = z_good.detach()
        final_z = hand_over(final_z, H // vqgan.factor, W // vqgan.factor, z_init)  # when stopped at a coarse level
        final = _decode(vqgan, final_z, settings.fast)
        full_dev = full_layout.to(device)
        bound = bind_guides(guides, full_dev)
        with torch.no_grad():
            final_fulls = [b.probabilities(final) for b in bound]
        ious = guided_iou(bound, final_fulls, full_dev)
    return Stage1Result(
        final.cpu(), final_z.cpu(), history, mean_iou(ious), ious, steps, stopped, notes, time.perf_counter() - t0, start_iou
    )


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


@dataclass
class RegionPrompt:
    """A CLIP term for one layout region: ``guide`` scores cutouts of the region only.

    ``weight`` None weighs the term by the region's share of the image."""

    label: str
    guide: ClipGuide
    weight: float | None = None


def region_prompts_from_text(clip, texts: dict[str, str], cutn: int, cut_pow: float) -> list[RegionPrompt]:
    """{label: 'text[:weight] | ...'} -> one RegionPrompt (its own CLIP guide) per region."""
    from tcig_ops.prompts import parse_prompts

    return [RegionPrompt(label, ClipGuide(clip, parse_prompts(text), cutn=cutn, cut_pow=cut_pow)) for label, text in texts.items()]


def _check_regions(regions: list[RegionPrompt], layout: Layout) -> list[RegionPrompt]:
    unknown = [r.label for r in regions if r.label not in layout.labels]
    if unknown:
        raise TCIGInputError(f"region prompts: labels {unknown} are not in the layout; its labels are {layout.labels}")
    for r in regions:
        if r.weight is not None and not (math.isfinite(r.weight) and r.weight >= 0):
            raise TCIGInputError(f"region prompt {r.label!r}: weight {r.weight} must be a finite number >= 0")
    return regions


def _region_box(layout: Layout, label: str) -> tuple[tuple[int, int, int, int], torch.Tensor, float] | None:
    """Bounding box (x0, y0, x1, y1) of a label's pixels, its mask inside the box, its share of the image;
    None when no pixel of this level holds any of the region (a thin region beside unpainted pixels,
    whose cells are all ignored on a coarse level). Host work, once per level."""
    target = layout.planes([layout.labels.index(label)])[0]
    mask = target > 0.5
    if not mask.any():  # a small region on a coarse level: every pixel that holds some of it
        mask = target > 0
    if not mask.any():
        return None
    ys, xs = torch.nonzero(mask.cpu(), as_tuple=True)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    share = float(mask.float().mean())
    return box, mask[box[1] : box[3], box[0] : box[2]], share


def _flush(pending: list, level: int | None = None) -> list[dict]:
    """Device values of the steps since the last check -> history records (one host read)."""
    if not pending:
        return []
    keys = list(pending[-1][1])
    values = torch.stack(
        [torch.stack([rec[k].float() if k in rec else rec["loss"].new_full((), float("nan")) for k in keys]) for _, rec, _ in pending]
    ).tolist()
    out = []
    for (step, rec, ious), row in zip(pending, values):
        record = {"step": step, **{k: v for k, v in zip(keys, row) if k in rec}}
        record["miou"] = mean_iou(ious) if ious is not None else None
        if level is not None:
            record["level"] = level
        out.append(record)
    return out


def estimate_memory_bytes(vqgan: VQGAN, width: int, height: int) -> int:
    """Rough peak of one stage-1 step: decoder activations kept for backward dominate.

    Per output pixel the taming decoder keeps about 12 feature maps of its widest
    full-resolution width in fp32 (convolutions, norms and activations of each block);
    measured on the tiny and ImageNet-f16 architectures this is within 2x.
    """
    dd = vqgan.ddconfig
    ch = dd["ch"] * dd["ch_mult"][0]  # channels at full resolution
    return int(width * height * ch * 4 * 12 * (dd["num_res_blocks"] + 1))


def available_memory_bytes(device: torch.device) -> int | None:
    """Memory a new allocation on ``device`` can get, or None if unknown.

    CUDA: the driver's free memory plus what PyTorch's allocator holds reserved but unused.
    CPU: the OS's *available* memory (MemAvailable: free pages plus the page cache and
    other memory it can reclaim), not merely free pages, which a warm page cache keeps low.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(
    vqgan: VQGAN, width: int, height: int, device: torch.device, free_memory: Callable[[int, torch.device], None] | None = None
) -> None:
    """Refuse sizes whose estimated need exceeds the available memory, before allocating anything.
    ``free_memory(bytes, device)``, when given, is asked to make room first."""
    need, free = estimate_memory_bytes(vqgan, width, height), available_memory_bytes(device)
    if free is not None and need > free and free_memory is not None:
        free_memory(need, device)
        free = available_memory_bytes(device)
    if free is not None and need > free:
        raise TCIGInputError(
            f"size {width}x{height}: stage 1 would need about {need / 2**30:.1f} GiB but {free / 2**30:.1f} GiB is available on "
            f"{device.type}; use a smaller size and upscale in stage 2"
        )


def _grad_scaler(precision: str, device: torch.device):
    """fp16 gradients underflow without loss scaling: a GradScaler for fp16 (None otherwise)."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def _autocast(precision: str, device: torch.device):
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def layout_start_image(
    layout: Layout,
    guides: list[Guide],
    steps: int,
    balance_classes: bool = True,
    cell: int = 4,
    on_step: Callable[[torch.Tensor], None] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A smooth image (1, 3, H, W) in 0..1 that the guides' segmenters read as ``layout``.

    A colour field of one RGB value per ``cell`` x ``cell`` pixels, bicubic-upsampled, starts at
    mid grey and is optimised with Adam against the segmentation terms only, as binary
    cross-entropy: from grey, where every class is about equally likely, the squared error of a
    softmax barely moves. Smooth, so it holds colours and no pixel-level pattern. ``generator``
    jitters the grey start (+-0.1) so that seeds find different colourings; None: plain grey.
    A step whose field turns non-finite is dropped (the last finite field is kept).
    ``on_step(image)`` runs after each step (progress, cancelling)."""
    bound = [b for b in bind_guides(guides, layout) if b.guide.weight > 0]
    H, W = layout.size
    if not bound:
        steps = 0  # no guide pulls: nothing to optimise
    valid = ~layout.ignore
    weights = [balanced_pixel_weights(b.targets, valid) if balance_classes else None for b in bound]
    shape = (1, 3, max(1, H // cell), max(1, W // cell))
    field_ = torch.full(shape, 0.5, device=layout.device)
    if generator is not None:
        field_ += 0.2 * (torch.rand(shape, generator=generator, device=field_.device) - 0.5)
    field_.requires_grad_(True)
    good = field_.detach().clone()  # the last finite field (kept on the device: no sync per step)
    opt = torch.optim.Adam([field_], lr=0.05)

    def smooth(f: torch.Tensor) -> torch.Tensor:
        return F.interpolate(f, size=(H, W), mode="bicubic", align_corners=False).clamp(0, 1)

    for _ in range(steps):
        image = smooth(field_)
        loss = sum(
            b.guide.weight * segmentation_loss(b.probabilities(image).float()[:, b.vocab_idx], b.targets, valid, w, kind="bce")
            for b, w in zip(bound, weights)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            field_.clamp_(0, 1)
            good = torch.where(torch.isfinite(field_).all(), field_, good)
        if on_step is not None:
            on_step(smooth(good))
    return smooth(good)


def _decode(vqgan: VQGAN, z: torch.Tensor, fast: bool) -> torch.Tensor:
    with torch.no_grad():
        return vqgan.decode(vqgan.quantize_st(z), fast=fast)
