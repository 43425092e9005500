"""Loader nodes: VQGAN, guidance CLIP (open_clip), segmenter."""

from __future__ import annotations

from comfy_api.latest import io

from ..tcig_ops.clip_guide import load_open_clip
from ..tcig_ops.segmenters import load_segmenter
from ..tcig_ops.vqgan import load_vqgan
from . import model_cache, model_folders
from .types import CLIP, SEGMENTER, VQGAN


class TCIGVQGANLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TCIGVQGANLoader",
            display_name="TCIG VQGAN Loader",
            category="TCIG/loaders",
            description="Loads a taming-transformers VQGAN (.ckpt/.safetensors with its .yaml beside it) from models/vqgan.",
            inputs=[
                io.Combo.Input(
                    "vqgan_name",
                    options=model_folders.weight_files("vqgan"),
                    tooltip="Checkpoint in models/vqgan; its taming .yaml must sit beside it with the same name.",
                )
            ],
            outputs=[VQGAN.Output(display_name="vqgan")],
        )

    @classmethod
    def execute(cls, vqgan_name) -> io.NodeOutput:
        path = model_folders.resolve_or_download("vqgan", vqgan_name, _progress()) or model_folders.weight_path("vqgan", vqgan_name)
        return io.NodeOutput(model_cache.cached("vqgan", path, (), lambda: load_vqgan(path)))


class TCIGCLIPLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TCIGCLIPLoader",
            display_name="TCIG Guidance CLIP Loader",
            category="TCIG/loaders",
            description="Loads an open_clip model for stage-1 guidance from models/tcig_clip (not ComfyUI's text-encoder CLIP).",
            inputs=[
                io.Combo.Input(
                    "clip_name", options=model_folders.weight_files("tcig_clip"), tooltip="open_clip weights in models/tcig_clip."
                ),
                io.String.Input(
                    "architecture",
                    default="",
                    tooltip="open_clip architecture, e.g. ViT-B-32, or the name of an open_clip config .json in models/tcig_clip. "
                    "Leave empty to use the .json config beside the weights.",
                ),
            ],
            outputs=[CLIP.Output(display_name="tcig_clip")],
        )

    @classmethod
    def execute(cls, clip_name, architecture="") -> io.NodeOutput:
        path = model_folders.resolve_or_download("tcig_clip", clip_name, _progress()) or model_folders.weight_path("tcig_clip", clip_name)
        arch = architecture.strip() or None
        if arch and arch.lower().endswith(".json"):  # a config file: only from the tcig_clip folders
            arch = model_folders.config_path("tcig_clip", arch)
        return io.NodeOutput(model_cache.cached("clip", path, (arch,), lambda: load_open_clip(path, arch)))


class TCIGSegmenterLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TCIGSegmenterLoader",
            display_name="TCIG Segmenter Loader",
            category="TCIG/loaders",
            description="Loads a segmentation model folder (SegFormer, UperNet, Mask2Former or CLIPSeg, transformers "
            "save_pretrained) from models/segmenters.",
            inputs=[
                io.Combo.Input(
                    "segmenter_name",
                    options=model_folders.segmenter_folders(),
                    tooltip="A folder in models/segmenters holding config.json and the weights.",
                )
            ],
            outputs=[SEGMENTER.Output(display_name="segmenter")],
        )

    @classmethod
    def execute(cls, segmenter_name) -> io.NodeOutput:
        path = model_folders.resolve_or_download("segmenters", segmenter_name, _progress()) or model_folders.segmenter_path(segmenter_name)
        return io.NodeOutput(model_cache.cached("segmenter", path, (), lambda: load_segmenter(path)))


def _progress():
    """ComfyUI's progress bar, in bytes, for a first-run download."""
    import comfy.utils

    state = {}

    def update(done: int, total: int | None) -> None:
        if not total:
            return
        if state.get("total") != total:
            state["bar"], state["total"] = comfy.utils.ProgressBar(total), total
        state["bar"].update_absolute(done, total)

    return update
