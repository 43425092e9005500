"""IoU evaluation node: how well an image follows the layout, as the segmenter sees it."""

from __future__ import annotations

import json
import os

import folder_paths
from comfy_api.latest import io

from ..tcig_ops.imageio import overlay, palette
from ..tcig_ops.report import iou_text
from . import glue
from .device import on_compute_device
from .types import LAYOUT, SEGMENTER


class TCIGIoUEvaluate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TCIGIoUEvaluate",
            display_name="TCIG IoU Evaluate",
            category="TCIG",
            description="Segments the image and compares it with the layout: mIoU, a per-class report and an overlay "
            "(the paper's control metric).",
            inputs=[
                io.Image.Input("image", tooltip="Image to score (stage 1 or stage 2 output); the first of a batch."),
                SEGMENTER.Input("segmenter", tooltip="Segmenter that judges the image."),
                LAYOUT.Input("layout", tooltip="Target layout; resized (nearest) to the image."),
                io.String.Input("title", default="", tooltip="Prefix for the report, e.g. 'stage 2'."),
                io.String.Input(
                    "filename_prefix",
                    default="TCIG/iou",
                    tooltip="The report is also saved as JSON in the output folder under this prefix; empty = do not save.",
                ),
            ],
            outputs=[
                io.Float.Output(display_name="miou"),
                io.String.Output(display_name="report"),
                io.Image.Output(display_name="overlay"),
            ],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, image, segmenter, layout, title="", filename_prefix="TCIG/iou") -> io.NodeOutput:
        x = glue.image_to_bchw(image)[:1]
        with on_compute_device(segmenter):
            miou, ious, pred = glue.evaluate(segmenter, x, layout)
        report = iou_text(miou, ious, f"{title.strip()}: " if title.strip() else "")
        ov = overlay(x, pred, palette(len(layout.labels)))
        if filename_prefix.strip():
            _save_json(
                filename_prefix.strip(),
                {
                    "title": title,
                    "miou": miou,
                    "iou": {k: (None if v != v else v) for k, v in ious.items()},
                    "size": [int(x.shape[-1]), int(x.shape[-2])],
                },
            )
        return io.NodeOutput(float(miou), report, glue.bchw_to_image(ov), ui={"text": [report]})


def _save_json(prefix: str, data: dict) -> str:
    """Write ``data`` next to the saved images, numbered like SaveImage does."""
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, folder_paths.get_output_directory())
    path = os.path.join(folder, f"{name}_{counter:05}_.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({k: (None if isinstance(v, float) and v != v else v) for k, v in data.items()}, f, indent=1)
    return path
