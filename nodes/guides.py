"""Segmenter guide node: chain segmenters, each with its own weight and class subset."""

from __future__ import annotations

from comfy_api.latest import io

from . import glue
from .types import GUIDES, SEGMENTER


class TCIGSegmenterGuide(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TCIGSegmenterGuide",
            display_name="TCIG Segmenter Guide",
            category="TCIG",
            description="Adds a segmenter to the stage-1 loss: weight × MSE(its class probabilities, the layout masks) "
            "over its class subset.",
            inputs=[
                SEGMENTER.Input("segmenter", tooltip="A loaded segmenter."),
                io.Float.Input("weight", default=1.0, min=0.0, max=100.0, step=0.05, tooltip="Loss weight a_s of this segmenter."),
                io.String.Input(
                    "classes", default="", tooltip="Comma-separated layout labels this segmenter guides; empty = every label it knows."
                ),
                GUIDES.Input("guides", optional=True, tooltip="Guides to add to (chain several segmenters)."),
            ],
            outputs=[GUIDES.Output(display_name="guides")],
        )

    @classmethod
    def execute(cls, segmenter, weight=1.0, classes="", guides=None) -> io.NodeOutput:
        return io.NodeOutput(glue.guides_append(guides, segmenter, weight, classes))
