"""TCIG Layout Painter: a multi-label canvas in the node; the layout travels in the workflow.

The canvas is the frontend widget ``web/tcig_painter.js`` for the input type
``TCIG_PAINTING``; its value (the painted map + label table, see
``tcig_ops/painter.py``) is an ordinary input value, so the UI and API workflow formats
both carry it.
"""

from __future__ import annotations

import functools

from comfy_api.latest import io, ui

from ..tcig_ops.painter import layout_from_painting, preview_image
from . import glue
from .types import LAYOUT, PAINTING


@functools.cache
def default_painting() -> str:
    """The demo layout (sky / mountain / water, 256 px) as a painting: the node's starting value."""
    from ..tcig_ops.demo import demo_painting

    return demo_painting(256, 256)


class TCIGLayoutPainter(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TCIGLayoutPainter",
            display_name="TCIG Layout Painter",
            category="TCIG/layout",
            description="Paint the layout on the node: named labels, each a colour; brush, eraser, rectangle, ellipse, flood fill, "
            "undo/redo. The painting is stored in the workflow, so a shared workflow carries its layout. "
            "Unpainted pixels are ignored by the loss.",
            inputs=[
                PAINTING.Input(
                    "painting",
                    tooltip="The painted layout (edited on the canvas; stored in the workflow JSON).",
                    extra_dict={"default": default_painting()},
                ),
                io.Image.Input(
                    "background",
                    optional=True,
                    tooltip="Optional image shown under the paint once the node has run (trace a photo or the stage-1 result).",
                ),
                LAYOUT.Input(
                    "layout",
                    optional=True,
                    tooltip="Optional layout to import (e.g. from TCIG Layout from Image): after a run, the painter offers "
                    "'Use connected layout', which replaces the painting (undoable). The node outputs the painting.",
                ),
            ],
            outputs=[
                LAYOUT.Output(display_name="layout"),
                io.Image.Output(display_name="preview", tooltip="The layout in the painter's label colours (unpainted: black)."),
                io.Mask.Output(display_name="masks", tooltip="One mask per painted label, in label order."),
            ],
        )

    @classmethod
    def execute(cls, painting, background=None, layout=None) -> io.NodeOutput:
        from ..tcig_ops.painter import painting_from_layout

        out, colors, _ = layout_from_painting(painting)
        preview = glue.bchw_to_image(preview_image(out, colors))
        masks = out.planes(range(len(out.labels)))  # (K, H, W) float, built plane by plane into the output
        shown = {}
        if background is not None:  # saved to the temp folder; the widget draws it under the paint
            shown["tcig_background"] = ui.PreviewImage(background[:1], cls=cls).as_dict()["images"]
        if layout is not None:  # offered to the widget; it replaces the painting only when the user says so
            offer, notes = painting_from_layout(layout)
            shown["tcig_layout"] = [offer]
            shown["tcig_layout_notes"] = notes
        return io.NodeOutput(out, preview, masks, ui=shown or None)
