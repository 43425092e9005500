"""Layout nodes: from painted masks (chainable) and from a colour-coded image + class map."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from ..tcig_ops.imageio import colourise, palette
from ..tcig_ops.layout import layout_from_colour_image
from . import glue
from .types import LAYOUT

DEFAULT_CLASS_MAP = '{"#87ceeb": "sky", "#735f54": "mountain", "#1e4ca6": "water"}'


def _preview(layout):
    return glue.bchw_to_image(colourise(layout.index_map(), palette(len(layout.labels))))


class TCIGLayoutFromColors(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TCIGLayoutFromColors",
            display_name="TCIG Layout from Colours",
            category="TCIG/layout",
            description="Turns a colour-coded image into a layout: each listed colour is one class; "
            "unlisted colours are ignored by the loss.",
            inputs=[
                io.Image.Input("image", tooltip="Colour-coded layout (flat colours; small JPEG drift is tolerated)."),
                io.String.Input(
                    "class_map", multiline=True, default=DEFAULT_CLASS_MAP, tooltip='JSON object mapping "#rrggbb" colours to class labels.'
                ),
                io.Int.Input(
                    "tolerance",
                    default=12,
                    min=0,
                    max=128,
                    tooltip="Largest per-channel difference (0-255) for a pixel to count as a listed colour.",
                ),
            ],
            outputs=[LAYOUT.Output(display_name="layout"), io.Image.Output(display_name="preview")],
        )

    @classmethod
    def execute(cls, image, class_map, tolerance=12) -> io.NodeOutput:
        layout = layout_from_colour_image(glue.image_to_bchw(image, "layout image")[0], class_map, tolerance)
        return io.NodeOutput(layout, _preview(layout))


class TCIGLayoutAddMask(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TCIGLayoutAddMask",
            display_name="TCIG Layout Add Mask",
            category="TCIG/layout",
            description="Adds one painted mask with its label to a layout. Chain several; later masks win where they overlap. "
            "Unpainted pixels are ignored.",
            inputs=[
                io.Mask.Input("mask", tooltip="Painted region (mask editor, LoadImage alpha, or any MASK)."),
                io.String.Input(
                    "label", default="sky", tooltip="Class name; must be known by a segmenter guide (CLIPSeg accepts any text)."
                ),
                LAYOUT.Input("layout", optional=True, tooltip="Layout to add to; leave unconnected to start a new one."),
                io.Float.Input(
                    "threshold", default=0.5, min=0.01, max=1.0, step=0.01, tooltip="Mask values at or above this count as painted."
                ),
            ],
            outputs=[LAYOUT.Output(display_name="layout"), io.Image.Output(display_name="preview")],
        )

    @classmethod
    def execute(cls, mask, label, layout=None, threshold=0.5) -> io.NodeOutput:
        out = glue.layout_add_mask(layout, mask, label, threshold)
        return io.NodeOutput(out, _preview(out))


class TCIGLayoutToSegMap(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        from ..tcig_ops.seg_palettes import PALETTES, UNKNOWN_MODES

        return io.Schema(
            node_id="TCIGLayoutToSegMap",
            display_name="TCIG Layout to Seg Map",
            category="TCIG/layout",
            description="Draws a layout in the colour palette segmentation ControlNets were trained on (ADE20K's 150 classes, "
            "as used by control_v11p_sd15_seg and the SDXL seg ControlNets): feed it to ControlNet Apply as the hint image. "
            "Labels are matched to the palette's class names with synonyms (e.g. 'lake', 'sea', 'edifice').",
            inputs=[
                LAYOUT.Input("layout"),
                io.Combo.Input(
                    "palette",
                    options=list(PALETTES),
                    default=next(iter(PALETTES)),
                    optional=True,
                    tooltip="ADE20K: the palette seg ControlNets were trained on. COCO panoptic: the colours of ControlNet 1.1's "
                    "COCO annotator (OneFormer COCO), for models trained on such maps.",
                ),
                io.Combo.Input(
                    "unknown",
                    options=list(UNKNOWN_MODES),
                    default="error",
                    optional=True,
                    tooltip="A label that is not a class of the palette: stop with an error that lists close matches, "
                    "or paint it black (no class for the ControlNet).",
                ),
            ],
            outputs=[io.Image.Output(display_name="seg_map")],
        )

    @classmethod
    def execute(cls, layout, palette="ADE20K (150 classes)", unknown="error") -> io.NodeOutput:
        from ..tcig_ops.seg_palettes import seg_map

        image, notes = seg_map(layout, palette, unknown)
        for note in notes:
            logging.info("TCIG Layout to Seg Map: %s", note)
        return io.NodeOutput(glue.bchw_to_image(image))


class TCIGLayoutFromImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        from .types import SEGMENTER

        return io.Schema(
            node_id="TCIGLayoutFromImage",
            display_name="TCIG Layout from Image",
            category="TCIG/layout",
            description="Reads a layout from any image with a segmenter (at the segmenter's native size; the class map is "
            "resized to the image, nearest): start from a photo's layout and edit it in the Layout Painter (its layout input) "
            "instead of painting from nothing.",
            inputs=[
                io.Image.Input("image", tooltip="Any image; the first of a batch."),
                SEGMENTER.Input("segmenter", tooltip="Reads the image: a SegFormer/UperNet/Mask2Former, or CLIPSeg with text labels."),
                io.String.Input(
                    "keep_labels",
                    default="",
                    optional=True,
                    tooltip="Comma-separated classes to use (every pixel takes the likeliest of them); empty: all the segmenter knows.",
                ),
                io.Float.Input(
                    "min_region_share",
                    default=0.5,
                    min=0.0,
                    max=50.0,
                    step=0.1,
                    optional=True,
                    tooltip="Regions smaller than this percentage of the image merge into their largest neighbour (0: keep all).",
                ),
                io.String.Input(
                    "text_labels",
                    default="",
                    optional=True,
                    tooltip="For CLIPSeg: comma-separated things to look for; every pixel takes the likeliest of them.",
                ),
            ],
            outputs=[LAYOUT.Output(display_name="layout"), io.Image.Output(display_name="preview"), io.Mask.Output(display_name="masks")],
        )

    @classmethod
    def execute(cls, image, segmenter, keep_labels="", min_region_share=0.5, text_labels="") -> io.NodeOutput:
        from ..tcig_ops.layout_from_image import layout_from_image
        from .device import on_compute_device

        x = glue.image_to_bchw(image, "image")[:1]
        with on_compute_device(segmenter) as device:
            layout = layout_from_image(
                segmenter, x.to(device), glue.parse_class_list(keep_labels), float(min_region_share), glue.parse_class_list(text_labels)
            )
        masks = layout.planes(range(len(layout.labels)))
        return io.NodeOutput(layout, _preview(layout), masks)
