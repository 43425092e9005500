"""The stage-1 node: VQGAN + CLIP + segmenter guides + layout + prompt -> IMAGE."""

from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
import torch
from comfy_api.latest import io

from ..tcig_ops.clip_guide import ClipGuide
from ..tcig_ops.errors import TCIGInputError
from ..tcig_ops.prompts import parse_prompts, parse_region_prompts
from ..tcig_ops.report import iou_text
from ..tcig_ops.stage1 import Guide, Stage1Settings, region_prompts_from_text, run_stage1
from . import glue
from .device import on_compute_device
from .types import CLIP, GUIDES, LAYOUT, VQGAN

PREVIEW_EVERY = 10  # decoding a preview costs about a step; every 10th keeps it under 10%


class TCIGStage1(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TCIGStage1",
            display_name="TCIG Stage 1 (layout control)",
            category="TCIG",
            description="Optimises a VQGAN latent so the image follows the prompt (CLIP) and the layout (segmenter guides). "
            "Feed the result to TCIG Mask-Aware Refine and a KSampler for detail.",
            inputs=[
                VQGAN.Input("vqgan", tooltip="From TCIG VQGAN Loader."),
                GUIDES.Input("guides", tooltip="From TCIG Segmenter Guide (chain several)."),
                LAYOUT.Input("layout", tooltip="From a TCIG Layout node; resized (nearest) to width x height."),
                io.String.Input(
                    "prompt",
                    multiline=True,
                    default="a mountain lake under a clear sky",
                    tooltip="'text:weight[:stop]' items separated by '|'; negative weights push away.",
                ),
                CLIP.Input("tcig_clip", optional=True, tooltip="Guidance CLIP; without it only the layout steers."),
                io.Int.Input("width", default=256, min=16, max=2048, step=16, tooltip="Output width in px (rounded to the VQGAN factor)."),
                io.Int.Input(
                    "height", default=256, min=16, max=2048, step=16, tooltip="Output height in px (rounded to the VQGAN factor)."
                ),
                io.Int.Input("iterations", default=300, min=1, max=10000, tooltip="Optimisation steps."),
                io.Float.Input(
                    "lr", default=0.2, min=0.001, max=5.0, step=0.01, tooltip="Adam learning rate on the latent (cosine-decayed to 10%)."
                ),
                io.Float.Input(
                    "clip_weight",
                    default=0.1,
                    min=0.0,
                    max=100.0,
                    step=0.05,
                    tooltip="a_c: the CLIP term's pull relative to a guide of weight 1 (each term is scaled by its gradient size).",
                ),
                io.Int.Input("cutn", default=16, min=1, max=128, tooltip="CLIP cutouts per step (more: steadier, slower)."),
                io.Float.Input("cut_pow", default=1.0, min=0.1, max=10.0, step=0.1, tooltip="Cutout size power; >1 favours small cutouts."),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=0xFFFFFFFF,
                    control_after_generate=True,
                    tooltip="Same seed and inputs give the same image.",
                ),
                io.Float.Input(
                    "target_miou",
                    default=0.0,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Stop early once the guides' mIoU (each label judged by the guide that steers it) reaches this; "
                    "0 = run all iterations.",
                ),
                io.Image.Input("init_image", optional=True, tooltip="Start from this image instead of random codes."),
                io.String.Input(
                    "region_prompts",
                    multiline=True,
                    default="",
                    optional=True,  # inputs added after 0.2.0 are optional: workflows saved with it keep running
                    tooltip="Lines 'label: prompt' (as in TCIG Regional Conditioning): a CLIP term per region, from cutouts "
                    "inside that region, weighted by its share of the image. Needs the guidance CLIP.",
                ),
                io.Boolean.Input(
                    "coarse_to_fine",
                    default=True,
                    optional=True,
                    tooltip="Optimise at half the size first, then at full size (same iterations, less time).",
                ),
                io.Int.Input(
                    "plateau_steps",
                    default=0,
                    optional=True,
                    min=0,
                    max=10000,
                    tooltip="Stop when the guides' mIoU has not improved for this many steps; 0 = off.",
                ),
                io.Boolean.Input(
                    "start_from_layout",
                    default=True,
                    optional=True,
                    tooltip="Without an init image, start from a smooth colour field the segmenters already read as the "
                    "layout (a fraction of a step's time) instead of random codes.",
                ),
                io.Combo.Input(
                    "precision",
                    options=["auto", "fp32", "bf16", "fp16"],
                    default="auto",
                    optional=True,
                    tooltip="Autocast precision of the forward pass (the latent and Adam stay fp32). auto: ComfyUI's own choice "
                    "for the device (bf16 on recent NVIDIA GPUs, fp32 on CPU; --force-fp32 and --force-fp16 apply).",
                ),
            ],
            outputs=[io.Image.Output(display_name="image"), io.String.Output(display_name="report")],
        )

    @classmethod
    def execute(
        cls,
        vqgan,
        guides,
        layout,
        prompt,
        tcig_clip=None,
        width=256,
        height=256,
        iterations=300,
        lr=0.2,
        clip_weight=0.1,
        cutn=16,
        cut_pow=1.0,
        seed=0,
        target_miou=0.0,
        init_image=None,
        region_prompts="",
        coarse_to_fine=True,
        plateau_steps=0,
        start_from_layout=True,
        precision="auto",
    ) -> io.NodeOutput:
        settings = Stage1Settings(
            width=width,
            height=height,
            iterations=iterations,
            lr=lr,
            seed=seed,
            clip_weight=clip_weight if tcig_clip is not None else 0.0,
            target_miou=target_miou or None,
            plateau_steps=plateau_steps or None,
            **({} if start_from_layout else {"layout_start_steps": 0}),
            **({} if coarse_to_fine else {"levels": None, "level_steps": None, "level_lr": None}),
        )
        regions = parse_region_prompts(region_prompts)
        if regions and tcig_clip is None:
            raise TCIGInputError("region_prompts need the guidance CLIP (tcig_clip input); connect one or clear the region prompts")
        prompts = parse_prompts(prompt) if tcig_clip is not None and clip_weight > 0 else []
        init = glue.image_to_bchw(init_image, "init_image")[:1] if init_image is not None else None
        segmenters = [g.segmenter for g in guides]
        pbar = comfy.utils.ProgressBar(iterations)

        def callback(info):
            mm.throw_exception_if_processing_interrupted()  # the Cancel button
            preview = None
            if info.preview_due(PREVIEW_EVERY):
                preview = ("JPEG", _pil(info.image()), 512)
            pbar.update_absolute(info.step, info.total, preview)

        with on_compute_device(vqgan, tcig_clip, *segmenters) as device:
            if precision == "auto":  # follow ComfyUI's choice for this device, as its own models do
                settings.precision = comfy_precision(device)
                notes = [f"precision {settings.precision} (ComfyUI's choice for {device})"]
            else:
                notes = []
            with torch.inference_mode(False):  # its text embeddings take part in the backward pass
                clip_guide = ClipGuide(tcig_clip, prompts, cutn=cutn, cut_pow=cut_pow) if prompts else None
                region_guides = region_prompts_from_text(tcig_clip, regions, cutn, cut_pow)
            bound = [Guide(g.segmenter, g.weight, g.classes) for g in guides]
            result = run_stage1(
                vqgan,
                layout,
                bound,
                settings,
                clip_guide=clip_guide,
                init_image=init,
                callback=callback,
                free_memory=lambda need, device: mm.free_memory(need, device),
                region_prompts=region_guides,
            )
        result.notes[:0] = notes
        report = iou_text(result.miou, result.iou, f"stage 1 ({result.steps} steps, {result.stopped}): ", start=result.start_iou)
        if result.notes:
            report += "\nnotes:\n" + "\n".join(f"  {n}" for n in result.notes)
        return io.NodeOutput(glue.bchw_to_image(result.image), report, ui={"text": [report]})


def comfy_precision(device) -> str:
    """ComfyUI's own precision choice for ``device`` (its model management: --force-fp32 / --force-fp16 apply)."""
    if mm.should_use_bf16(device):
        return "bf16"
    if mm.should_use_fp16(device):
        return "fp16"
    return "fp32"


def _pil(x):
    from PIL import Image

    arr = (glue.bchw_to_image(x)[0].numpy() * 255).round().astype("uint8")
    return Image.fromarray(arr)
