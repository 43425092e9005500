"""Writes the shipped workflows from one description per graph, in both formats.

    python workflows/build_workflows.py

- ``workflows/<name>.json``: UI format (drag into ComfyUI), also copied to
  ``example_workflows/`` for ComfyUI's template browser;
- ``workflows/<name>.api.json``: API format (what /prompt takes; the tests run these).
A test checks both files are current and say the same thing.
"""

from __future__ import annotations

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Per node type: its widget names in the order the UI stores them ("+control" = the extra
# control_after_generate value after a seed), and its outputs (name, type).
NODE_TYPES = {
    "TCIGVQGANLoader": (["vqgan_name"], [("vqgan", "TCIG_VQGAN")]),
    "TCIGCLIPLoader": (["clip_name", "architecture"], [("tcig_clip", "TCIG_CLIP")]),
    "TCIGSegmenterLoader": (["segmenter_name"], [("segmenter", "TCIG_SEGMENTER")]),
    "LoadImage": (["image", "+upload"], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "TCIGLayoutPainter": (["painting"], [("layout", "TCIG_LAYOUT"), ("preview", "IMAGE"), ("masks", "MASK")]),
    "TCIGLayoutFromColors": (["class_map", "tolerance"], [("layout", "TCIG_LAYOUT"), ("preview", "IMAGE")]),
    "TCIGLayoutAddMask": (["label", "threshold"], [("layout", "TCIG_LAYOUT"), ("preview", "IMAGE")]),
    "TCIGSegmenterGuide": (["weight", "classes"], [("guides", "TCIG_GUIDES")]),
    "TCIGStage1": (
        [
            "prompt",
            "width",
            "height",
            "iterations",
            "lr",
            "clip_weight",
            "cutn",
            "cut_pow",
            "seed",
            "+control",
            "target_miou",
            "region_prompts",
            "coarse_to_fine",
            "plateau_steps",
            "start_from_layout",
            "precision",
        ],
        [("image", "IMAGE"), ("report", "STRING")],
    ),
    "CheckpointLoaderSimple": (["ckpt_name"], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    "CLIPTextEncode": (["text"], [("CONDITIONING", "CONDITIONING")]),
    "TCIGRegionalConditioning": (
        ["region_prompts", "suffix", "strength", "region_negatives"],
        [("conditioning", "CONDITIONING"), ("negative", "CONDITIONING")],
    ),
    "TCIGMaskAwareRefine": (
        ["base_denoise", "border_denoise", "border_width", "disagreement_denoise", "softness"],
        [("latent", "LATENT"), ("denoise_map", "MASK")],
    ),
    "DifferentialDiffusion": (["strength"], [("MODEL", "MODEL")]),
    "KSampler": (["seed", "+control", "steps", "cfg", "sampler_name", "scheduler", "denoise"], [("LATENT", "LATENT")]),
    "VAEDecode": ([], [("IMAGE", "IMAGE")]),
    "TCIGLayoutToSegMap": (["palette", "unknown"], [("seg_map", "IMAGE")]),
    "ControlNetLoader": (["control_net_name"], [("CONTROL_NET", "CONTROL_NET")]),
    "ControlNetApplyAdvanced": (
        ["strength", "start_percent", "end_percent"],
        [("positive", "CONDITIONING"), ("negative", "CONDITIONING")],
    ),
    "TCIGIoUEvaluate": (["title", "filename_prefix"], [("miou", "FLOAT"), ("report", "STRING"), ("overlay", "IMAGE")]),
    "SaveImage": (
        ["filename_prefix"],
        [],
    ),
}
TALL = {
    "TCIGLayoutPainter": 680,
    "TCIGStage1": 460,
    "TCIGMaskAwareRefine": 300,
    "KSampler": 300,
    "TCIGRegionalConditioning": 300,
}  # UI heights
CLASS_MAP = '{"#87ceeb": "sky", "#735f54": "mountain", "#1e4ca6": "water"}'
PROMPT = "a mountain lake under a clear sky, morning light"


def L(node: int, slot: int = 0):
    """A link from output ``slot`` of ``node``."""
    return ("link", node, slot)


JUDGE = "mask2former-swin-tiny-ade-semantic (download)"


def _common(seg_name="segformer-b0-finetuned-ade-512-512 (download)", layout="painter"):
    """Loaders, the layout and two guides (node 32 holds both). The layout is painted in the workflow
    itself (no input file to copy), or, for the colour-image variant, a LoadImage + class map."""
    g = {
        1: ("TCIGVQGANLoader", {"vqgan_name": "vqgan_imagenet_f16_16384 (download)"}),
        2: ("TCIGCLIPLoader", {"clip_name": "open_clip_vit_b32 (download)", "architecture": ""}),
        3: ("TCIGSegmenterLoader", {"segmenter_name": seg_name}),
        6: ("TCIGSegmenterGuide", {"segmenter": L(3), "weight": 1.0, "classes": ""}),
        # a second guide of the same family, other weights: a pattern that fools one rarely fools both,
        # so the image must show what both read as each class (README, "Two guides")
        31: ("TCIGSegmenterLoader", {"segmenter_name": "segformer-b2-finetuned-ade-512-512 (download)"}),
        32: ("TCIGSegmenterGuide", {"segmenter": L(31), "guides": L(6), "weight": 1.0, "classes": ""}),
        # the judge: IoU Evaluate reads the result with a segmenter that did not guide (another family,
        # Mask2Former), since a guide can be fooled by an image that only satisfies it
        26: ("TCIGSegmenterLoader", {"segmenter_name": JUDGE}),
    }
    if layout == "painter":
        g[5] = ("TCIGLayoutPainter", {"painting": painting()})
    else:
        g[4] = ("LoadImage", {"image": "tcig_layout.png", "+upload": "image"})
        g[5] = ("TCIGLayoutFromColors", {"image": L(4), "class_map": CLASS_MAP, "tolerance": 12})
    return g


def painting() -> str:
    """The demo layout (sky / mountain / water) at 256 px, as the painter stores it."""
    import sys

    sys.path.insert(0, ROOT)  # a build script, not the pack: reuse the demo layout
    try:
        from tcig_ops.demo import demo_painting
    finally:
        sys.path.pop(0)
    return demo_painting(256, 256)


def _stage1(node_guides=32, node_layout=5, iterations=300):
    return (
        "TCIGStage1",
        {
            "vqgan": L(1),
            "guides": L(node_guides),
            "layout": L(node_layout),
            "tcig_clip": L(2),
            "prompt": PROMPT,
            "width": 256,
            "height": 256,
            "iterations": iterations,
            "lr": 0.2,
            "clip_weight": 0.1,
            "cutn": 16,
            "cut_pow": 1.0,
            "seed": 0,
            "+control": "fixed",
            "target_miou": 0.0,
            "region_prompts": "",
            "coarse_to_fine": True,
            "plateau_steps": 0,
            "start_from_layout": True,
            "precision": "auto",
        },
    )


def two_stage(layout="painter"):
    g = _common(layout=layout)
    g[7] = _stage1()
    g[8] = ("CheckpointLoaderSimple", {"ckpt_name": "v1-5-pruned-emaonly.safetensors"})
    g[9] = ("CLIPTextEncode", {"clip": L(8, 1), "text": PROMPT + ", highly detailed photo"})
    g[10] = ("CLIPTextEncode", {"clip": L(8, 1), "text": "blurry, low quality"})
    g[11] = (
        "TCIGRegionalConditioning",
        {
            "clip": L(8, 1),
            "layout": L(5),
            "global_conditioning": L(9),
            "region_prompts": "sky: clear blue sky\nmountain: rocky mountain\nwater: calm lake",
            "suffix": "highly detailed photo",
            "strength": 1.0,
            # per-region negatives, added to the global negative (node 10) as masked conditioning
            "region_negatives": "sky: clouds, birds\nwater: boats, people",
            "global_negative": L(10),
        },
    )
    g[12] = (
        "TCIGMaskAwareRefine",
        {
            "image": L(7),
            "vae": L(8, 2),
            "layout": L(5),
            "segmenter": L(3),
            "base_denoise": 0.45,
            "border_denoise": 0.7,
            "border_width": 16,
            "disagreement_denoise": 0.85,
            "softness": 9,
        },
    )
    g[13] = ("DifferentialDiffusion", {"model": L(8), "strength": 1.0})
    g[14] = (
        "KSampler",
        {
            "model": L(13),
            "positive": L(11),
            "negative": L(11, 1),
            "latent_image": L(12),
            "seed": 0,
            "+control": "fixed",
            "steps": 20,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
        },
    )
    g[15] = ("VAEDecode", {"samples": L(14), "vae": L(8, 2)})
    g[16] = (
        "TCIGIoUEvaluate",
        {"image": L(7), "segmenter": L(26), "layout": L(5), "title": "stage 1 judged", "filename_prefix": "TCIG/iou_stage1"},
    )
    g[17] = (
        "TCIGIoUEvaluate",
        {"image": L(15), "segmenter": L(26), "layout": L(5), "title": "stage 2 judged", "filename_prefix": "TCIG/iou_stage2"},
    )
    g[18] = ("SaveImage", {"images": L(7), "filename_prefix": "TCIG/stage1"})
    g[19] = ("SaveImage", {"images": L(15), "filename_prefix": "TCIG/stage2"})
    return g


def controlnet_seg():
    """The two-stage graph with a segmentation ControlNet in stage 2, its hint the layout drawn in the
    ADE20K palette (TCIG Layout to Seg Map): the layout steers stage 1 and the sampler both."""
    g = two_stage()
    g[27] = ("TCIGLayoutToSegMap", {"layout": L(5), "palette": "ADE20K (150 classes)", "unknown": "error"})
    g[28] = ("ControlNetLoader", {"control_net_name": "control_v11p_sd15_seg.pth"})
    g[29] = (
        "ControlNetApplyAdvanced",
        {
            "positive": L(11),
            "negative": L(11, 1),
            "control_net": L(28),
            "image": L(27),
            "strength": 0.8,
            "start_percent": 0.0,
            "end_percent": 1.0,
        },
    )
    g[14][1].update(positive=L(29, 0), negative=L(29, 1))
    g[30] = ("SaveImage", {"images": L(27), "filename_prefix": "TCIG/seg_map"})
    return g


def colour_image():
    """The two-stage graph with the layout from a colour-coded image + class map (copy
    example_inputs/tcig_layout.png into ComfyUI/input/ first)."""
    return two_stage(layout="colour")


def multi_segmenter():
    """Each guide steers a class subset: SegFormer the sky and mountain, CLIPSeg the water."""
    g = _common()
    del g[31], g[32]
    g[23] = ("TCIGSegmenterLoader", {"segmenter_name": "clipseg-rd64-refined (download)"})
    g[6] = ("TCIGSegmenterGuide", {"segmenter": L(3), "weight": 1.0, "classes": "sky, mountain"})
    g[24] = ("TCIGSegmenterGuide", {"segmenter": L(23), "guides": L(6), "weight": 1.0, "classes": "water"})
    g[7] = _stage1(node_guides=24, node_layout=5)
    judged = {"image": L(7), "segmenter": L(26), "layout": L(5), "title": "stage 1 judged", "filename_prefix": "TCIG/iou_multi"}
    g[16] = ("TCIGIoUEvaluate", judged)
    g[18] = ("SaveImage", {"images": L(7), "filename_prefix": "TCIG/multi"})
    return g


def stage1_only():
    g = _common()
    g[7] = _stage1()
    g[16] = (
        "TCIGIoUEvaluate",
        {"image": L(7), "segmenter": L(26), "layout": L(5), "title": "stage 1 judged", "filename_prefix": "TCIG/iou_stage1_only"},
    )
    g[18] = ("SaveImage", {"images": L(7), "filename_prefix": "TCIG/stage1_only"})
    g[25] = ("SaveImage", {"images": L(16, 2), "filename_prefix": "TCIG/stage1_overlay"})
    return g


GRAPHS = {
    "tcig_two_stage": two_stage,
    "tcig_multi_segmenter": multi_segmenter,
    "tcig_stage1_only": stage1_only,
    "tcig_two_stage_colour_image": colour_image,
    "tcig_two_stage_controlnet_seg": controlnet_seg,
}


def to_api(graph: dict) -> dict:
    api = {}
    for nid, (ntype, inputs) in sorted(graph.items()):
        api[str(nid)] = {
            "class_type": ntype,
            "inputs": {k: ([str(v[1]), v[2]] if isinstance(v, tuple) else v) for k, v in inputs.items() if not k.startswith("+")},
        }
    return api


def to_ui(graph: dict) -> dict:
    nodes, links = [], []
    out_links: dict[tuple[int, int], list[int]] = {}
    order = sorted(graph)
    for nid in order:
        for k, v in graph[nid][1].items():
            if isinstance(v, tuple):
                links.append([len(links) + 1, v[1], v[2], nid, None, NODE_TYPES[graph[v[1]][0]][1][v[2]][1], k])
                out_links.setdefault((v[1], v[2]), []).append(len(links))
    # lay nodes out left to right by dependency depth, so the graph reads like the data flow
    depth: dict[int, int] = {}

    def d(n):
        if n not in depth:
            srcs = [v[1] for v in graph[n][1].values() if isinstance(v, tuple)]
            depth[n] = 1 + max((d(x) for x in srcs), default=-1)
        return depth[n]

    tops: dict[int, int] = {}
    pos, size = {}, {}
    for nid in order:
        col = d(nid)
        size[nid] = [320, TALL.get(graph[nid][0], 240)]
        pos[nid] = [40 + 360 * col, tops.get(col, 40)]
        tops[col] = pos[nid][1] + size[nid][1] + 50
    for i, nid in enumerate(order):
        ntype, inputs = graph[nid]
        widgets, outputs = NODE_TYPES[ntype]
        sockets = [(k, v) for k, v in inputs.items() if isinstance(v, tuple)]
        ui_inputs = []
        for slot, (k, _) in enumerate(sockets):
            link = next(ln for ln in links if ln[3] == nid and ln[6] == k)
            link[4] = slot
            ui_inputs.append({"name": k, "type": link[5], "link": link[0]})
        nodes.append(
            {
                "id": nid,
                "type": ntype,
                "pos": pos[nid],
                "size": size[nid],
                "flags": {},
                "order": i,
                "mode": 0,
                "inputs": ui_inputs,
                "outputs": [
                    {"name": n, "type": t, "links": out_links.get((nid, s), []), "slot_index": s} for s, (n, t) in enumerate(outputs)
                ],
                "properties": {"Node name for S&R": ntype},
                "widgets_values": [inputs[w] for w in widgets],
            }
        )
    return {
        "last_node_id": max(graph),
        "last_link_id": len(links),
        "nodes": nodes,
        "links": [ln[:6] for ln in links],
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
    }


def example_inputs(size: int = 256) -> dict[str, object]:
    """The input images the workflows load: {file name: PIL image}. Masks are painted as
    transparency, as ComfyUI's mask editor does (LoadImage's MASK = 1 - alpha)."""
    import sys

    import numpy as np
    from PIL import Image

    sys.path.insert(0, ROOT)  # a build script, not the pack: reuse the demo layout
    from tcig_ops.demo import demo_layout

    lay = (demo_layout(size, size).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    out = {"tcig_layout.png": Image.fromarray(lay)}
    for name, hexcol in (("sky", (0x87, 0xCE, 0xEB)), ("water", (0x1E, 0x4C, 0xA6)), ("mountain", None)):
        painted = np.ones(lay.shape[:2], bool) if hexcol is None else (lay == np.array(hexcol)).all(-1)
        rgba = np.zeros((*lay.shape[:2], 4), np.uint8)
        rgba[..., :3] = 128
        rgba[..., 3] = np.where(painted, 0, 255)
        out[f"tcig_mask_{name}.png"] = Image.fromarray(rgba, "RGBA")
    return out


def render() -> dict[str, str]:
    """{relative path: file text} for every shipped workflow file."""
    files = {}
    for name, build in GRAPHS.items():
        graph = build()
        ui = json.dumps(to_ui(graph), indent=1) + "\n"
        files[f"workflows/{name}.json"] = ui
        files[f"example_workflows/{name}.json"] = ui
        files[f"workflows/{name}.api.json"] = json.dumps(to_api(graph), indent=1) + "\n"
    return files


if __name__ == "__main__":
    for rel, text in render().items():
        path = os.path.join(ROOT, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        print("wrote", rel)
    for name, image in example_inputs().items():
        image.save(os.path.join(ROOT, "example_inputs", name))
        print("wrote example_inputs/" + name)
