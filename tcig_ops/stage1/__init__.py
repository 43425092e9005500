"""TCIG stage 1: optimise a VQGAN latent for a prompt (CLIP) and a layout (segmenters).

L = a_c * L_clip + sum_i a_si * L_seg_i, with L_seg_i the MSE between segmenter i's
class probabilities (for its class subset) and the layout's target masks, over the
non-ignored pixels. Adam on the pre-quantization latent z (1, E, h, w); decoding
snaps z to the codebook with a straight-through estimator.

The parts, each with one job (read them in this order):
- ``settings``: what a run is asked to do, what each step reports, the result;
- ``guides``: segmenter guides bound to a layout, the segmentation loss, the guides' IoU;
- ``schedule``: coarse-to-fine levels, steps per level, the learning-rate curve, the hand-over;
- ``start``: the starting latent (init image, layout start, random codes);
- ``objective``: the loss of one level (CLIP, region and segmentation terms, term scales);
- ``regions``: region prompts; ``memory``: the memory guard;
- ``stops``: the non-finite guard, target and plateau rules, the history records;
- ``run``: ``run_stage1``, which only wires them.
"""

from .guides import BoundGuide, Guide, balanced_pixel_weights, bind_guides, guided_iou, segmentation_loss
from .memory import available_memory_bytes, check_memory, estimate_memory_bytes
from .objective import NORM_EVERY, LevelObjective, TermScales
from .regions import RegionPrompt, _check_regions, _region_box, region_prompts_from_text
from .run import _autocast, _decode, _grad_scaler, run_stage1
from .schedule import COARSE_LR, _levels, hand_over, hand_over_image, latent_at, level_sizes, split_steps
from .settings import Stage1Result, Stage1Settings, StepInfo
from .start import layout_start_image, start_latent
from .stops import FiniteGuard, StopRules, _flush

__all__ = [
    "COARSE_LR",
    "NORM_EVERY",
    "BoundGuide",
    "FiniteGuard",
    "Guide",
    "LevelObjective",
    "RegionPrompt",
    "Stage1Result",
    "Stage1Settings",
    "StepInfo",
    "StopRules",
    "TermScales",
    "_autocast",
    "_check_regions",
    "_decode",
    "_flush",
    "_grad_scaler",
    "_levels",
    "_region_box",
    "available_memory_bytes",
    "balanced_pixel_weights",
    "bind_guides",
    "check_memory",
    "estimate_memory_bytes",
    "guided_iou",
    "hand_over",
    "hand_over_image",
    "latent_at",
    "layout_start_image",
    "level_sizes",
    "region_prompts_from_text",
    "run_stage1",
    "segmentation_loss",
    "split_steps",
    "start_latent",
]
