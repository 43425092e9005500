"""TCIG stage 1: optimise a VQGAN latent for a prompt (CLIP) and a layout (segmenters).

L = a_c * L_clip + sum_i a_si * L_seg_i, with L_seg_i the MSE between segmenter i's
class probabilities (for its class subset) and the layout's target masks, over the
non-ignored pixels. Adam on the pre-quantization latent z (1, E, h, w); decoding
snaps z to the codebook with a straight-through estimator.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .clip_guide import ClipGuide
from .errors import TCIGInputError
from .layout import Layout, match_labels, vocabulary_to_layout
from .metrics import layout_iou, mean_iou
from .segmenters import Segmenter
from .vqgan import VQGAN


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
    vocab_idx: list[int]  # their class indices in the segmenter's vocabulary
    targets: torch.Tensor  # (k, H, W)

    @property
    def label_to_vocab(self) -> dict[str, int]:
        return dict(zip(self.labels, self.vocab_idx))


def bind_guides(guides: list[Guide], layout: Layout) -> list[BoundGuide]:
    """Resolve class subsets against the layout and the segmenters' vocabularies.

    Every layout label must be known by at least one guide; a label no segmenter
    knows is an error that lists close matches.
    """
    if not guides:
        raise TCIGInputError("guides: no segmenter given; add at least one segmenter guide")
    bound, covered = [], set()
    for n, g in enumerate(guides):
        if not math.isfinite(g.weight) or g.weight < 0:
            raise TCIGInputError(f"guide #{n + 1} ({g.segmenter.name}): weight {g.weight} must be a finite number >= 0")
        seg = g.segmenter
        if g.classes is not None:
            wanted = [c.strip() for c in g.classes if c.strip()]
            if not wanted:
                raise TCIGInputError(f"guide #{n + 1} ({seg.name}): class subset is empty; list classes or leave it blank for all")
            unknown = [c for c in wanted if c not in layout.labels]
            if unknown:
                raise TCIGInputError(f"guide #{n + 1} ({seg.name}): classes {unknown} are not in the layout {layout.labels}")
        elif seg.open_vocabulary:
            wanted = list(layout.labels)
        else:
            wanted = list(vocabulary_to_layout(seg.labels, seg.name, layout.labels)[1])
        if seg.open_vocabulary:
            seg.set_labels(wanted if g.classes is not None else layout.labels)
        if not wanted:
            continue
        vocab_idx = match_labels(wanted, seg.labels, seg.name)
        targets, _ = layout.subset(wanted)
        bound.append(BoundGuide(g, wanted, vocab_idx, targets))
        covered.update(wanted)
    missing = [lbl for lbl in layout.labels if lbl not in covered]
    if missing:
        # re-run the matcher against the first segmenter for a helpful close-match message
        seg = next((g.segmenter for g in guides if not g.segmenter.open_vocabulary), guides[0].segmenter)
        match_labels(missing, seg.labels, seg.name)
        raise TCIGInputError(f"layout labels {missing} are not covered by any guide's class subset")
    return bound


def segmentation_loss(probs: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """MSE between probabilities (1,k,H,W) and targets (k,H,W) over valid pixels (H,W) bool."""
    w = valid.to(probs.dtype)
    return ((probs[0] - targets) ** 2 * w).sum() / (w.sum() * probs.shape[1]).clamp_min(1)


@dataclass
class StepInfo:
    """What a per-step callback receives; ``image()`` decodes the current latent lazily."""

    step: int
    total: int
    loss: float
    miou: float
    image: Callable[[], torch.Tensor]


@dataclass
class Stage1Result:
    image: torch.Tensor  # (1, 3, H, W) in 0..1, on CPU
    latent: torch.Tensor  # (1, E, h, w)
    history: list[dict] = field(default_factory=list)
    miou: float = 0.0
    iou: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    stopped: str = "completed"  # "completed" | "target_miou" | "non_finite_loss"
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Stage1Settings:
    width: int = 256
    height: int = 256
    iterations: int = 300
    lr: float = 0.2
    seed: int = 0
    clip_weight: float = 0.3  # measured on the tiny models: 1.0 lets CLIP pull the layout apart
    target_miou: float | None = None  # stop early once the first guide's mIoU reaches this
    lr_decay: float = 0.1  # cosine decay of the learning rate to lr * lr_decay at the last step
    precision: str = "fp32"  # "fp32" | "bf16" | "fp16": autocast dtype of the forward pass (z and Adam stay fp32)
    fast: bool = True  # leaner decoder and CLIP forwards (fast_decoder, fast_clip); False: the models' own

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
        for name in ("width", "height"):
            v = getattr(self, name)
            if v < factor:
                raise TCIGInputError(f"{name}: {v} px is smaller than the VQGAN's factor {factor}")
            if v % factor:
                r = max(factor, round(v / factor) * factor)
                notes.append(f"{name} {v} rounded to {r} (a multiple of the VQGAN factor {factor})")
                setattr(self, name, r)
        return notes


def run_stage1(vqgan: VQGAN, layout: Layout, guides: list[Guide], settings: Stage1Settings,
               clip_guide: ClipGuide | None = None, init_image: torch.Tensor | None = None,
               callback: Callable[[StepInfo], None] | None = None) -> Stage1Result:
    """Optimise a latent; returns the decoded image, latent and a per-step history.

    ``callback(StepInfo)`` runs after every step and may raise to cancel (the
    exception propagates; no partial result is returned). Runs inside a forked RNG
    so the caller's random state is untouched and the same seed gives the same image.
    Works when called under ``torch.inference_mode``/``no_grad`` (ComfyUI runs nodes so):
    the optimisation needs autograd, so it re-enables it locally. The models' weights
    must be normal tensors, i.e. loaded outside inference mode.
    """
    with torch.inference_mode(False), torch.enable_grad():
        return _run(vqgan, layout, guides, settings, clip_guide, init_image, callback)


def _run(vqgan, layout, guides, settings, clip_guide, init_image, callback) -> Stage1Result:
    # tensors made under inference mode cannot be saved for backward: take normal copies
    layout = Layout(list(layout.labels), layout.targets.clone(), layout.ignore.clone(), list(layout.notes))
    init_image = init_image.clone() if init_image is not None else None
    settings = Stage1Settings(**vars(settings))
    notes = settings.validate(vqgan.factor)
    device = vqgan.codebook.device
    W, H = settings.width, settings.height
    check_memory(vqgan, W, H, device)
    layout = layout.resized(H, W).to(device)
    notes += layout.notes
    bound = bind_guides(guides, layout)
    valid = ~layout.ignore
    devices = [device] if device.type == "cuda" else []
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(settings.seed)
        gen = torch.Generator(device=device).manual_seed(settings.seed)
        if init_image is not None:
            init = torch.nn.functional.interpolate(init_image.to(device).float(), size=(H, W), mode="bilinear", align_corners=False)
            with torch.no_grad():
                z = vqgan.encode(init).detach().clone()
        else:
            z = vqgan.random_latent(H, W, gen)
        z.requires_grad_(True)
        zmin, zmax = vqgan.z_range()
        opt = torch.optim.Adam([z], lr=settings.lr)
        total = settings.iterations
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda i: settings.lr_decay + (1 - settings.lr_decay) * 0.5 * (1 + math.cos(math.pi * i / max(1, total))))
        history: list[dict] = []
        stopped, steps = "completed", 0
        autocast = _autocast(settings.precision, device)
        for step in range(total):
            with autocast:
                image = vqgan.decode(vqgan.quantize_st(z), fast=settings.fast)
                terms = {}
                if clip_guide is not None and settings.clip_weight > 0:
                    terms["clip"] = clip_guide(image, fast=settings.fast)
                # a guide with weight 0 adds no gradient: only the first one is still run
                # (without autograd) because the history reports its mIoU
                fulls = []
                for i, b in enumerate(bound):
                    if b.guide.weight > 0:
                        fulls.append(b.guide.segmenter(image))  # (1, K_vocab, H, W)
                    elif i == 0:
                        with torch.no_grad():
                            fulls.append(b.guide.segmenter(image))
                    else:
                        fulls.append(None)
            # the losses themselves in fp32: small MSE differences vanish in bf16
            loss = image.new_zeros((), dtype=torch.float32)
            if "clip" in terms:
                loss = loss + settings.clip_weight * terms["clip"].float()
            miou = None
            for i, (b, full) in enumerate(zip(bound, fulls)):
                if full is None:
                    continue
                full = full.float()
                terms[f"seg{i}"] = segmentation_loss(full[:, b.vocab_idx], b.targets, valid)
                loss = loss + b.guide.weight * terms[f"seg{i}"]
                if i == 0:  # control is reported against the first (guiding) segmenter's argmax
                    miou = mean_iou(layout_iou(full.detach().argmax(1)[0], layout, b.label_to_vocab))
            if not torch.isfinite(loss):
                stopped = "non_finite_loss"
                notes.append(f"loss became non-finite at step {step}; kept the image from step {step - 1}")
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                z.copy_(torch.maximum(torch.minimum(z, zmax), zmin))
            steps = step + 1
            record = {"step": step, "loss": loss.item(), "miou": miou}
            record.update({k: v.item() for k, v in terms.items()})
            history.append(record)
            if callback is not None:
                callback(StepInfo(step + 1, total, record["loss"], miou, lambda: _decode(vqgan, z, settings.fast)))
            if settings.target_miou is not None and miou is not None and miou >= settings.target_miou:
                stopped = "target_miou"
                break
        # on a non-finite loss z was not updated: it is the last good latent
        final_z = z.detach()
        final = _decode(vqgan, final_z, settings.fast)
        ious = layout_iou(bound[0].guide.segmenter.predict(final.to(device))[0], layout, bound[0].label_to_vocab)
    return Stage1Result(final.cpu(), final_z.cpu(), history, mean_iou(ious), ious, steps, stopped, notes,
                        time.perf_counter() - t0)


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
    """Free memory on ``device`` (CUDA: free VRAM; CPU: available RAM on Linux), or None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        import os

        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(vqgan: VQGAN, width: int, height: int, device: torch.device) -> None:
    """Refuse sizes whose estimated need exceeds the free memory, before allocating anything."""
    need, free = estimate_memory_bytes(vqgan, width, height), available_memory_bytes(device)
    if free is not None and need > free:
        raise TCIGInputError(
            f"size {width}x{height}: stage 1 would need about {need / 2**30:.1f} GiB but {free / 2**30:.1f} GiB is free on "
            f"{device.type}; use a smaller size and upscale in stage 2"
        )


def _autocast(precision: str, device: torch.device):
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _decode(vqgan: VQGAN, z: torch.Tensor, fast: bool) -> torch.Tensor:
    with torch.no_grad():
        return vqgan.decode(vqgan.quantize_st(z), fast=fast)
