"""Stage 2 helpers: a mask-aware latent for the core KSampler, and regional conditioning."""

from __future__ import annotations

import node_helpers
from comfy_api.latest import io

from ..tcig_ops.errors import TCIGInputError
from ..tcig_ops.refine import denoise_map
from . import glue
from .device import on_compute_device
from .types import LAYOUT, SEGMENTER


class TCIGMaskAwareRefine(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TCIGMaskAwareRefine",
            display_name="TCIG Mask-Aware Refine",
            category="TCIG/refine",
            description="VAE-encodes the stage-1 image and attaches a per-pixel denoise map as noise_mask. "
            "Use with DifferentialDiffusion + KSampler: a pixel with map value m gets img2img denoise ≈ m × the KSampler's denoise "
            "(set the KSampler to 1.0 to use the map's values directly).",
            inputs=[
                io.Image.Input("image", tooltip="The stage-1 image."),
                io.Vae.Input("vae", tooltip="The VAE of the diffusion model used for stage 2."),
                LAYOUT.Input("layout", tooltip="The layout stage 1 followed."),
                io.Float.Input(
                    "base_denoise",
                    default=0.45,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Denoise inside regions: adds detail, keeps the layout.",
                ),
                io.Float.Input(
                    "border_denoise",
                    default=0.7,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Denoise near region borders, where stage 1 is roughest.",
                ),
                io.Int.Input("border_width", default=16, min=0, max=256, tooltip="Width in px of the border band."),
                io.Float.Input(
                    "disagreement_denoise",
                    default=0.85,
                    min=0.0,
                    max=1.0,
                    step=0.01,
                    tooltip="Denoise where the segmenter sees another class than the layout (needs a segmenter).",
                ),
                io.Int.Input("softness", default=9, min=0, max=128, tooltip="Box-blur size in px so strengths blend smoothly."),
                SEGMENTER.Input("segmenter", optional=True, tooltip="Optional: finds pixels where stage 1 missed the layout."),
            ],
            outputs=[io.Latent.Output(display_name="latent"), io.Mask.Output(display_name="denoise_map")],
        )

    @classmethod
    def execute(
        cls,
        image,
        vae,
        layout,
        base_denoise=0.45,
        border_denoise=0.7,
        border_width=16,
        disagreement_denoise=0.85,
        softness=9,
        segmenter=None,
    ) -> io.NodeOutput:
        x = glue.image_to_bchw(image)
        H, W = x.shape[-2:]
        lay = layout.resized(H, W)
        predicted = None
        if segmenter is not None:
            with on_compute_device(segmenter):
                predicted = glue.predict_in_layout_space(segmenter, x[:1], lay)[0]
        dmap = denoise_map(lay.index_map(), base_denoise, border_denoise, border_width, predicted, disagreement_denoise, softness)
        samples = vae.encode(image[:, :, :, :3])
        mask = dmap[None, None].expand(samples.shape[0], 1, H, W).contiguous()  # ComfyUI resizes it to the latent
        return io.NodeOutput({"samples": samples, "noise_mask": mask}, dmap[None])


class TCIGRegionalConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TCIGRegionalConditioning",
            display_name="TCIG Regional Conditioning",
            category="TCIG/refine",
            description="One masked conditioning per layout label (ConditioningSetMask semantics, mask = the label's region), "
            "prompt from 'label: prompt' lines or the label itself, plus an optional global conditioning. Per-region "
            "negatives ('label: text' lines) come out as the second output: the global negative plus one masked negative "
            "per listed region.",
            inputs=[
                io.Clip.Input("clip", tooltip="The diffusion model's text encoder."),
                LAYOUT.Input("layout", tooltip="Regions to condition."),
                io.String.Input(
                    "region_prompts", multiline=True, default="", tooltip="Lines 'label: prompt'. Labels not listed use the label text."
                ),
                io.String.Input("suffix", default="highly detailed photo", tooltip="Appended to every region prompt."),
                io.Float.Input("strength", default=1.0, min=0.0, max=10.0, step=0.01, tooltip="Mask strength of each region."),
                io.Conditioning.Input("global_conditioning", optional=True, tooltip="Added unmasked, e.g. the whole-image prompt."),
                io.String.Input(
                    "region_negatives",
                    multiline=True,
                    default="",
                    optional=True,
                    tooltip="Lines 'label: text': what to keep out of that region (e.g. 'water: boats, people'). Only listed "
                    "regions get a negative of their own; needs global_negative.",
                ),
                io.Conditioning.Input(
                    "global_negative", optional=True, tooltip="The whole-image negative (e.g. 'blurry, low quality'); regions add theirs."
                ),
            ],
            outputs=[io.Conditioning.Output(display_name="conditioning"), io.Conditioning.Output(display_name="negative")],
        )

    @classmethod
    def execute(
        cls, clip, layout, region_prompts="", suffix="", strength=1.0, global_conditioning=None, region_negatives="", global_negative=None
    ) -> io.NodeOutput:
        prompts = _region_lines(region_prompts, "region prompts", layout)
        negatives = _region_lines(region_negatives, "region negatives", layout)
        if negatives and global_negative is None:
            raise TCIGInputError(
                "region negatives: connect global_negative (the whole-image negative, e.g. a CLIP Text Encode of "
                "'blurry, low quality'): pixels outside the listed regions need a negative too"
            )
        out = list(global_conditioning or [])
        for k, label in enumerate(layout.labels):
            text = ", ".join(t for t in (prompts.get(label, label), suffix.strip()) if t)
            out += _masked(clip, text, layout, k, strength)
        negative = list(global_negative or [])
        for label, text in negatives.items():
            negative += _masked(clip, text, layout, layout.labels.index(label), strength)
        return io.NodeOutput(out, negative)


def _region_lines(text: str, what: str, layout) -> dict[str, str]:
    """'label: text' lines; every label must be one of the layout's."""
    lines = glue.region_prompts(text)
    unknown = [k for k in lines if k not in layout.labels]
    if unknown:
        raise TCIGInputError(f"{what}: labels {unknown} are not in the layout; its labels are {layout.labels}")
    return lines


def _masked(clip, text: str, layout, k: int, strength: float) -> list:
    """``text`` encoded and limited to label ``k``'s region (ConditioningSetMask semantics)."""
    cond = clip.encode_from_tokens_scheduled(clip.tokenize(text))
    mask = layout.planes([k]).cpu()  # (1, H, W)
    return node_helpers.conditioning_set_values(cond, {"mask": mask, "set_area_to_bounds": False, "mask_strength": strength})
