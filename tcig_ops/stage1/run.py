"""``run_stage1``: wires the parts. The start latent (start.py), then for each level of the schedule
(schedule.py) its objective (objective.py) optimised with Adam on z, the stop rules and the record
(stops.py); the result is decoded and judged by the guides at full size."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import torch

from ..clip_guide import ClipGuide
from ..layout import Layout
from ..metrics import mean_iou
from ..precision import choose as choose_precision
from ..vqgan import VQGAN
from .guides import Guide, bind_guides, guided_iou
from .memory import check_memory
from .objective import NORM_EVERY, LevelObjective
from .regions import RegionPrompt, _check_regions
from .schedule import _levels, check_every, hand_over, hand_over_image, lr_schedule
from .settings import Stage1Result, Stage1Settings, StepInfo
from .start import start_latent
from .stops import FiniteGuard, StopRules, _flush


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


def _run(vqgan, layout, guides, settings, clip_guide, init_image, callback, free_memory, region_prompts) -> Stage1Result:
    # tensors made under inference mode cannot be saved for backward: take normal copies
    layout = layout.clone()
    init_image = init_image.clone() if init_image is not None else None
    settings = Stage1Settings(**vars(settings))
    notes = settings.validate(vqgan.factor)
    device, f = vqgan.codebook.device, vqgan.factor
    settings.precision, why = choose_precision(settings.precision, device)
    if why != "asked for":
        notes.append(f"precision {settings.precision} ({why})")
    W, H = settings.width, settings.height
    check_memory(vqgan, W, H, device, free_memory)
    full_layout = layout.resized(H, W)
    notes += full_layout.notes
    bind_guides(guides, full_layout)  # every label error before any work
    regions = _check_regions(region_prompts or [], full_layout)
    if settings.clip_weight == 0:  # checked, but a CLIP term at weight 0 is not worth its forward and backward
        regions = []
    levels = _levels(settings, f)
    if len(levels) > 1:
        notes.append("coarse-to-fine: " + " -> ".join(f"{w}x{h} ({n} steps)" for w, h, n, _ in levels))
    elif len(_levels(Stage1Settings(**{**vars(settings), "level_min_side": 0}), f)) > 1:
        notes.append(f"one level: the coarse levels would be under {settings.level_min_side} px (level_min_side)")
    total = sum(n for _, _, n, _ in levels)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(settings.seed)
        gen = torch.Generator(device=device).manual_seed(settings.seed)
        z, z_init = start_latent(vqgan, full_layout, guides, settings, init_image, levels[0][:2], gen, callback, total, notes)
        run = _Optimiser(vqgan, settings, device, callback, total, len(levels), notes)
        for li, (lw, lh, n_steps, lr_factor) in enumerate(levels):
            z = _hand_over(vqgan, z, lh // f, lw // f, z_init, settings)
            objective = LevelObjective(guides, full_layout, (lw, lh), regions, clip_guide, settings, device, notes)
            z = run.level(li, z, objective, n_steps, lr_factor)
            if run.stopped != "completed":
                break
        final_z = _hand_over(vqgan, run.guard.z_good, H // f, W // f, z_init, settings)  # when stopped at a coarse level
        final = _decode(vqgan, final_z, settings.fast)
        full_dev = full_layout.to(device)
        bound = bind_guides(guides, full_dev)
        with torch.no_grad():
            ious = guided_iou(bound, [b.probabilities(final) for b in bound], full_dev)
    seconds = time.perf_counter() - t0
    return Stage1Result(
        final.cpu(),
        final_z.cpu(),
        run.history,
        mean_iou(ious),
        ious,
        run.steps,
        run.stopped,
        notes,
        seconds,
        run.start_iou,
        settings.precision,
    )


def _hand_over(vqgan: VQGAN, z: torch.Tensor, h: int, w: int, z_init, settings: Stage1Settings) -> torch.Tensor:
    if settings.level_hand_over == "image" and z_init is None:
        return hand_over_image(vqgan, z.detach(), h, w, settings.fast)
    return hand_over(z.detach(), h, w, z_init)


class _Optimiser:
    """Adam on z through the levels: the steps, their record, the non-finite guard and the stop rules."""

    def __init__(self, vqgan: VQGAN, settings: Stage1Settings, device, callback, total: int, n_levels: int, notes: list[str]):
        self.vqgan, self.settings, self.callback, self.total, self.n_levels, self.notes = vqgan, settings, callback, total, n_levels, notes
        self.zmin, self.zmax = vqgan.z_range()
        self.scaler = _grad_scaler(settings.precision, device)
        self.autocast = _autocast(settings.precision, device)
        self.every = check_every(settings, device)
        self.guard = FiniteGuard(device)
        self.history: list[dict] = []
        self.stopped, self.steps, self.step, self.start_iou = "completed", 0, 0, {}
        self.last_loss, self.last_miou, self.last_objective = float("nan"), None, float("nan")

    def level(self, li: int, z: torch.Tensor, objective: LevelObjective, n_steps: int, lr_factor: float) -> torch.Tensor:
        """Optimise one level; returns the latent it hands over (or stopped with)."""
        s, vq = self.settings, self.vqgan
        z = z.detach().clone().requires_grad_(True)
        self.guard.z_good = z.detach().clone()
        opt = torch.optim.Adam([z], lr=s.lr * lr_factor)
        offset, level_end, pending = self.step, self.step + n_steps, []
        sched, rules = lr_schedule(opt, offset, self.total, s.lr_decay), StopRules(s, self.step)
        while self.step < level_end:
            step = self.step
            check = (step - offset) % self.every == 0 or step == level_end - 1
            z_measured = z.detach().clone() if check else None  # a stop rule returns the latent it measured
            with self.autocast:
                image = vq.decode(vq.quantize_st(z), fast=s.fast)
                terms, fulls = objective.forward(image, check)
            loss, weighted = objective.loss(terms, fulls, z, image, (step - offset) % NORM_EVERY == 0)
            ious = objective.ious(fulls) if check else None
            if step == 0:
                self.start_iou = dict(ious)
            ok = _optimiser_step(loss, z, opt, self.scaler)
            sched.step()
            self.guard.update(ok, z, step, self.zmin, self.zmax)
            pending.append((step, {"loss": loss.detach(), "objective": weighted, **{k: v.detach() for k, v in terms.items()}}, ious))
            if check:
                self.history += _flush(pending, li if self.n_levels > 1 else None)
                pending = []
                last = self.history[-1]
                self.last_loss, self.last_miou, self.last_objective = last["loss"], last["miou"], last["objective"]
                k = self.guard.tripped()
                if k is not None:
                    self._non_finite(k)
                    return self.guard.z_good
            self.steps = self.step = step + 1
            if self.callback is not None:
                image_of = functools.partial(_decode, vq, self.guard.z_good, s.fast)
                self.callback(StepInfo(self.step, self.total, self.last_loss, self.last_miou, image_of, objective=self.last_objective))
            reason = rules.check(self.step, self.last_miou) if check and self.last_miou is not None else None
            if reason is not None:
                self.stopped, self.guard.z_good = reason, z_measured
                break
        return self._level_end(li, objective)

    def _level_end(self, li: int, objective: LevelObjective) -> torch.Tensor:
        s = self.settings
        if self.stopped in ("target_miou", "plateau") and li < self.n_levels - 1:  # a coarse level hands over
            h, w = objective.layout.size
            self.notes.append(f"level {li + 1} ({w}x{h}) ended at step {self.step} ({self.stopped.replace('_', ' ')})")
            self.stopped = "completed"
        elif self.stopped == "plateau":
            self.notes.append(f"stopped at step {self.step}: mIoU has not improved by {s.plateau_delta} for {s.plateau_steps} steps")
        return self.guard.z_good

    def _non_finite(self, k: int) -> None:
        self.history = [h for h in self.history if h["step"] < k]
        self.stopped, self.steps = "non_finite", k
        kept = "kept the starting latent" if k == 0 else f"kept the latent of step {k - 1}"
        self.notes.append(f"the loss or its gradient became non-finite at step {k}; {kept}")


def _optimiser_step(loss: torch.Tensor, z: torch.Tensor, opt: torch.optim.Optimizer, scaler) -> torch.Tensor:
    """One Adam step on z; returns whether the loss (and, without a scaler, the gradient) was finite."""
    opt.zero_grad(set_to_none=True)
    if not loss.requires_grad:  # nothing pulls (every weight 0, no CLIP): the latent stays
        return torch.isfinite(loss)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(opt)  # inf/NaN from the fp16 scale make the scaler skip this step
        ok = torch.isfinite(loss)
        scaler.step(opt)
        scaler.update()
        return ok
    loss.backward()
    grad = z.grad if z.grad is not None else torch.zeros_like(z)
    ok = torch.isfinite(loss) & torch.isfinite(grad).all()
    opt.step()
    return ok


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


def _decode(vqgan: VQGAN, z: torch.Tensor, fast: bool) -> torch.Tensor:
    with torch.no_grad():
        return vqgan.decode(vqgan.quantize_st(z), fast=fast)
