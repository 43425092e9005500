"""The V3 extension: registers model folders and lists every TCIG node."""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io
from typing_extensions import override

from . import model_folders


class TCIGExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        from .evaluate import TCIGIoUEvaluate
        from .guides import TCIGSegmenterGuide
        from .layout_nodes import TCIGLayoutAddMask, TCIGLayoutFromColors, TCIGLayoutFromImage, TCIGLayoutToSegMap
        from .loaders import TCIGCLIPLoader, TCIGSegmenterLoader, TCIGVQGANLoader
        from .painter_node import TCIGLayoutPainter
        from .refine_nodes import TCIGMaskAwareRefine, TCIGRegionalConditioning
        from .stage1_node import TCIGStage1

        return [
            TCIGVQGANLoader,
            TCIGCLIPLoader,
            TCIGSegmenterLoader,
            TCIGLayoutPainter,
            TCIGLayoutFromColors,
            TCIGLayoutAddMask,
            TCIGLayoutToSegMap,
            TCIGLayoutFromImage,
            TCIGSegmenterGuide,
            TCIGStage1,
            TCIGMaskAwareRefine,
            TCIGRegionalConditioning,
            TCIGIoUEvaluate,
        ]


async def make_extension() -> TCIGExtension:
    model_folders.register()
    _register_routes()
    return TCIGExtension()


def _register_routes() -> None:
    """The Layout Painter's read-only label routes, on ComfyUI's own server (when there is one)."""
    try:
        from server import PromptServer
    except ImportError:
        return
    if getattr(PromptServer, "instance", None) is not None:
        from . import routes

        routes.register(PromptServer.instance.routes)
