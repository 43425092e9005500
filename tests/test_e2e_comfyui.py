"""End to end in a real ComfyUI: the pack loads, every shipped workflow runs, cancel and errors behave.

Needs a ComfyUI checkout (COMFYUI_PATH, or this pack inside ComfyUI/custom_nodes) and
ComfyUI's requirements in this Python; otherwise every test here is skipped.
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import time

import pytest

from e2e.comfy_server import ROOT, SKIP_REASON, find_comfyui

COMFY = find_comfyui()
pytestmark = pytest.mark.skipif(COMFY is None, reason=SKIP_REASON)

NODES = [
    "TCIGVQGANLoader",
    "TCIGCLIPLoader",
    "TCIGSegmenterLoader",
    "TCIGLayoutPainter",
    "TCIGLayoutFromColors",
    "TCIGLayoutAddMask",
    "TCIGLayoutToSegMap",
    "TCIGLayoutFromImage",
    "TCIGSegmenterGuide",
    "TCIGStage1",
    "TCIGMaskAwareRefine",
    "TCIGRegionalConditioning",
    "TCIGIoUEvaluate",
]
SIZE = 64
TINY_NAMES = {
    "segformer-b0-finetuned-ade-512-512 (download)": "tiny-segformer-a",
    "segformer-b2-finetuned-ade-512-512 (download)": "tiny-segformer-b",  # the shipped workflows' second guide
    "clipseg-rd64-refined (download)": "tiny-clipseg",
    "mask2former-swin-tiny-ade-semantic (download)": "tiny-judge-upernet",  # the judge of the shipped workflows
}
TINY_NAMES.update({k[: -len(" (download)")]: v for k, v in TINY_NAMES.items()})  # as 0.2.0's workflows name them


def load_api(name: str) -> dict:
    with open(os.path.join(ROOT, "workflows", f"{name}.api.json"), encoding="utf-8") as f:
        return json.load(f)


def tiny_version(prompt: dict, iterations: int = 100) -> dict:
    """Point a shipped workflow at the tiny models and shrink it for a CPU run."""
    p = copy.deepcopy(prompt)
    for node in p.values():
        t, inp = node["class_type"], node["inputs"]
        if t == "TCIGVQGANLoader":
            inp["vqgan_name"] = "tiny-vqgan.ckpt"
        elif t == "TCIGCLIPLoader":
            inp.update(clip_name="tiny-clip.safetensors", architecture="")
        elif t == "TCIGSegmenterLoader":
            inp["segmenter_name"] = TINY_NAMES[inp["segmenter_name"]]
        elif t == "CheckpointLoaderSimple":
            inp["ckpt_name"] = "tiny_sd15.safetensors"
        elif t == "ControlNetLoader":
            inp["control_net_name"] = "tiny_seg_controlnet.safetensors"
        elif t == "TCIGStage1":
            inp.update(width=SIZE, height=SIZE, iterations=iterations, cutn=8)
        elif t == "KSampler":
            inp.update(steps=4)
        elif t == "TCIGMaskAwareRefine":
            inp.update(border_width=4, softness=3)
    return p


def test_object_info_lists_every_tcig_node_and_models(server):
    info = server.get("/object_info")
    for name in NODES:
        assert name in info, name
        assert info[name]["category"].startswith("TCIG")
    vq = info["TCIGVQGANLoader"]["input"]["required"]["vqgan_name"]
    assert "tiny-vqgan.ckpt" in json.dumps(vq)  # found through extra_model_paths.yaml
    assert "tiny-clipseg" in json.dumps(info["TCIGSegmenterLoader"]["input"]["required"]["segmenter_name"])


def test_ui_workflow_widgets_follow_the_servers_input_order(server):
    """The UI twins store widget values by position; the order must be the server's."""
    import sys

    sys.path.insert(0, os.path.join(ROOT, "workflows"))
    try:
        import build_workflows
    finally:
        sys.path.pop(0)
    info = server.get("/object_info")
    sockets = {"IMAGE", "MASK", "LATENT", "MODEL", "CLIP", "VAE", "CONDITIONING"}
    for node_type, (widgets, _) in build_workflows.NODE_TYPES.items():
        spec = info[node_type]["input"]
        names = [
            k
            for part in ("required", "optional")
            for k, v in spec.get(part, {}).items()
            if isinstance(v[0], list) or v[0] in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "TCIG_PAINTING")
        ]
        names = [n for n in names if n not in sockets]
        assert [w for w in widgets if not w.startswith("+")] == names, node_type


def _outputs(server, hist, prompt):
    images, reports = [], []
    for nid, out in hist["outputs"].items():
        for im in out.get("images", []):
            images.append((prompt[nid]["class_type"], pathlib.Path(server.base) / "output" / im["subfolder"] / im["filename"]))
        reports += out.get("text", [])
    return images, reports


SHIPPED = ["tcig_stage1_only", "tcig_multi_segmenter", "tcig_two_stage", "tcig_two_stage_colour_image", "tcig_two_stage_controlnet_seg"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_workflow_runs(server, name):
    from PIL import Image

    prompt = tiny_version(load_api(name))
    t0 = time.time()
    hist = server.wait(server.queue(prompt))
    assert hist["status"]["status_str"] == "success", hist["status"]
    images, reports = _outputs(server, hist, prompt)
    saved = [p for t, p in images if t == "SaveImage"]
    expected_saves = sum(1 for n in prompt.values() if n["class_type"] == "SaveImage")
    assert len(saved) == expected_saves
    for p in saved:
        if p.name.startswith("seg_map"):  # the layout in the ADE20K palette, at the painting's size
            colours = {c for _, c in Image.open(p).convert("RGB").getcolors(1 << 16)}
            assert colours == {(6, 230, 230), (143, 255, 140), (61, 230, 250)}, colours  # sky, mountain, water
            continue
        assert p.is_file() and Image.open(p).size == (SIZE, SIZE), p
    assert reports and all("mIoU" in r for r in reports)
    prefixes = [n["inputs"]["filename_prefix"] for n in prompt.values() if n["class_type"] == "TCIGIoUEvaluate"]
    for prefix in prefixes:
        files = list((pathlib.Path(server.base) / "output").glob(prefix + "_*.json"))
        assert files, prefix
        data = json.loads(files[-1].read_text())
        assert 0.0 <= data["miou"] <= 1.0 and data["size"] == [SIZE, SIZE]
    # stage 1 kept the layout it started from (the layout start already holds most of it, so a rise
    # over the start says little); that the guides pull is shown against weight-0 runs below
    stage1 = [r for r in reports if r.startswith("stage 1 (")]
    assert len(stage1) == 1, reports
    start_miou, end_miou, per_class = parse_stage1_report(stage1[0])
    assert end_miou >= start_miou - 0.05, stage1[0]
    print(f"{name}: {time.time() - t0:.1f} s; " + " | ".join(r.splitlines()[0] for r in reports))


def parse_stage1_report(text: str) -> tuple[float, float, dict[str, tuple[float, float]]]:
    """'stage 1 (...): mIoU 0.912 (start 0.104)' + '  label  0.95  (start 0.10)' lines."""
    import re

    head = re.search(r"mIoU ([\d.]+) \(start ([\d.]+)\)", text)
    rows = re.findall(r"^  (\S.*?)\s+([\d.]+)  \(start ([\d.]+)\)$", text, re.M)
    return float(head.group(2)), float(head.group(1)), {lbl.strip(): (float(s), float(e)) for lbl, e, s in rows}


def test_clipseg_guide_steers_water_in_the_multi_segmenter_workflow(server):
    """The shipped workflow's CLIPSeg guide (class subset: water) must move the image: water's
    IoU as that guide judges it (the stage-1 report) is higher than with the guide's weight at
    0. (Before the fix a one-class CLIPSeg guide had no gradient: both runs were alike.)"""
    base = tiny_version(load_api("tcig_multi_segmenter"), iterations=150)
    # from random codes: the layout start would already hold the water that the guide is to bring
    base["7"]["inputs"]["start_from_layout"] = False
    results = {}
    for weight in (1.0, 0.0):
        prompt = copy.deepcopy(base)
        prompt["24"]["inputs"]["weight"] = weight
        hist = server.wait(server.queue(prompt))
        assert hist["status"]["status_str"] == "success", hist["status"]
        report = next(t for out in hist["outputs"].values() for t in out.get("text", []) if t.startswith("stage 1 ("))
        results[weight] = parse_stage1_report(report)[2]["water"]
    (start_on, water_on), (_, water_off) = results[1.0], results[0.0]
    assert water_on > start_on + 0.3 and water_on > water_off + 0.3, results


def _painting_oracle(tiny, painting: str) -> float:
    """The judge's mIoU on the world's own rendering of the workflow's painting at SIZE: the best any image scores."""
    from tcig_ops.judge import judge_report, oracle_image
    from tcig_ops.painter import layout_from_painting
    from tcig_ops.segmenters import load_segmenter

    layout = layout_from_painting(painting)[0].resized(SIZE, SIZE)
    return judge_report(load_segmenter(tiny["judge"]), oracle_image(layout), layout)["judge_miou"]


def test_stage1_reaches_layout_in_comfyui(server, tiny):
    """The shipped stage-1 workflow's IoU Evaluate reads the result with the judge (a segmenter that
    did not guide): near the oracle, and far above the same graph with the guide at weight 0."""
    prompt = tiny_version(load_api("tcig_stage1_only"), iterations=300)
    assert prompt["16"]["inputs"]["segmenter"] == ["26", 0] and prompt["26"]["inputs"]["segmenter_name"] == "tiny-judge-upernet"
    # an API workflow saved before start_from_layout existed still runs (and starts from the layout)
    del prompt["7"]["inputs"]["start_from_layout"]
    hist = server.wait(server.queue(prompt))
    report = json.loads(sorted((pathlib.Path(server.base) / "output" / "TCIG").glob("iou_stage1_only_*.json"))[-1].read_text())
    assert hist["status"]["status_str"] == "success"
    oracle = _painting_oracle(tiny, prompt["5"]["inputs"]["painting"])
    print(f"judge mIoU {report['miou']:.3f}, oracle {oracle:.3f}")
    assert report["miou"] >= 0.85 * oracle, (report, oracle)
    text = next(t for out in hist["outputs"].values() for t in out.get("text", []) if t.startswith("stage 1 ("))
    assert "started from the layout" in text, text
    # the baseline of the same graph: both guides at weight 0 (CLIP alone)
    prompt["6"]["inputs"]["weight"] = prompt["32"]["inputs"]["weight"] = 0.0
    prompt["16"]["inputs"]["filename_prefix"] = "TCIG/iou_stage1_unguided"
    assert server.wait(server.queue(prompt))["status"]["status_str"] == "success"
    unguided = json.loads(sorted((pathlib.Path(server.base) / "output" / "TCIG").glob("iou_stage1_unguided_*.json"))[-1].read_text())
    assert report["miou"] > unguided["miou"] + 0.3, (report, unguided)


def test_cancel_stops_promptly_and_next_prompt_runs(server):
    long = tiny_version(load_api("tcig_stage1_only"), iterations=10000)
    pid = server.queue(long)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until stage 1 is actually running
        q = server.get("/queue")
        if q["queue_running"] and q["queue_running"][0][1] == pid:
            break
        time.sleep(0.2)
    time.sleep(4)
    t0 = time.time()
    server.post("/interrupt", {})
    hist = server.wait(pid, timeout=60)
    stopped_in = time.time() - t0
    assert hist["status"]["status_str"] == "error"
    assert any(m[0] == "execution_interrupted" for m in hist["status"]["messages"])
    assert stopped_in < 10, stopped_in
    ok = server.wait(server.queue(tiny_version(load_api("tcig_stage1_only"), iterations=5)))
    assert ok["status"]["status_str"] == "success"


def test_bad_input_is_a_node_error_and_server_keeps_serving(server):
    bad = tiny_version(load_api("tcig_two_stage_colour_image"), iterations=5)
    bad["5"]["inputs"]["class_map"] = '{"#zz": "sky"}'
    hist = server.wait(server.queue(bad))
    assert hist["status"]["status_str"] == "error"
    err = [m[1] for m in hist["status"]["messages"] if m[0] == "execution_error"][0]
    assert err["node_id"] == "5" and "#zz" in err["exception_message"] and "#rrggbb" in err["exception_message"]
    # a painting edited by hand (map no longer matches its checksum) is a node error too
    tampered = tiny_version(load_api("tcig_stage1_only"), iterations=5)
    value = json.loads(tampered["5"]["inputs"]["painting"])
    value["crc32"] ^= 1
    tampered["5"]["inputs"]["painting"] = json.dumps(value)
    hist = server.wait(server.queue(tampered))
    err = [m[1] for m in hist["status"]["messages"] if m[0] == "execution_error"][0]
    assert err["node_id"] == "5" and "checksum" in err["exception_message"], err
    # a model name that climbs out of the model folders is refused (at validation or by the loader)
    wrong = tiny_version(load_api("tcig_stage1_only"), iterations=5)
    wrong["1"]["inputs"]["vqgan_name"] = "../../etc/passwd"
    status, body = server.post("/prompt", {"prompt": wrong})
    if status == 200:
        hist = server.wait(body["prompt_id"])
        err = [m[1] for m in hist["status"]["messages"] if m[0] == "execution_error"][0]
        assert err["node_id"] == "1" and "outside the model folders" in err["exception_message"]
    else:
        assert status == 400 and "1" in body.get("node_errors", {})
    ok = server.wait(server.queue(tiny_version(load_api("tcig_stage1_only"), iterations=5)))
    assert ok["status"]["status_str"] == "success"


def test_clip_architecture_config_is_confined_to_the_model_folder(server):
    """The CLIP loader's architecture is free text: a .json there must come from models/tcig_clip.
    This reaches the pack's own guard (ComfyUI's list validation does not check strings)."""
    for arch in ("../../../../../../etc/passwd.json", "/etc/passwd.json", "..\\..\\x.json"):
        bad = tiny_version(load_api("tcig_stage1_only"), iterations=2)
        bad["2"]["inputs"]["architecture"] = arch
        hist = server.wait(server.queue(bad))
        assert hist["status"]["status_str"] == "error", arch
        err = [m[1] for m in hist["status"]["messages"] if m[0] == "execution_error"][0]
        assert err["node_id"] == "2" and "outside the model folders" in err["exception_message"], err
    good = tiny_version(load_api("tcig_stage1_only"), iterations=2)
    good["2"]["inputs"]["architecture"] = "tiny-clip.json"  # the config beside the weights, named explicitly
    assert server.wait(server.queue(good))["status"]["status_str"] == "success"


def _painting(labels_colours):
    """A 64x48 painting: left half label 1, a 16x16 square of label 2 at (40, 8), rest unpainted."""
    import numpy as np

    from tcig_ops.painter import encode_painting

    m = np.zeros((48, 64), np.uint8)
    m[:, :32] = 1
    m[8:24, 40:56] = 2
    names, colours = zip(*labels_colours)
    return encode_painting(m, list(names), list(colours)), m


def test_painter_node_outputs_through_the_server(server):
    """The painter's LAYOUT, colour preview and MASK batch, run by a real ComfyUI."""
    import numpy as np
    from PIL import Image

    text, m = _painting([("grass", "#5ab43c"), ("road", "#6b6b70")])
    prompt = {
        "1": {"class_type": "TCIGLayoutPainter", "inputs": {"painting": text, "background": ["4", 0]}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 1], "filename_prefix": "TCIG/painter_preview"}},
        "3": {"class_type": "MaskToImage", "inputs": {"mask": ["1", 2]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "TCIG/painter_masks"}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "tcig_layout.png"}},
    }
    hist = server.wait(server.queue(prompt))
    assert hist["status"]["status_str"] == "success", hist["status"]
    out = pathlib.Path(server.base) / "output"
    preview = np.asarray(Image.open(out / hist["outputs"]["2"]["images"][0]["subfolder"] / hist["outputs"]["2"]["images"][0]["filename"]))
    assert preview.shape == (48, 64, 3)
    assert (preview[m == 1] == [0x5A, 0xB4, 0x3C]).all() and (preview[m == 2] == [0x6B, 0x6B, 0x70]).all() and (preview[m == 0] == 0).all()
    masks = [np.asarray(Image.open(out / im["subfolder"] / im["filename"]).convert("L")) for im in hist["outputs"]["5"]["images"]]
    assert len(masks) == 2  # one per label, in label order
    assert ((masks[0] > 127) == (m == 1)).all() and ((masks[1] > 127) == (m == 2)).all()
    bg = hist["outputs"]["1"]["tcig_background"][0]  # the background the widget draws under the paint
    assert bg["type"] == "temp" and (pathlib.Path(server.base) / "temp" / bg["subfolder"] / bg["filename"]).is_file()


def test_segmenter_label_routes(server):
    import urllib.error
    import urllib.request

    info = server.get("/tcig/segmenter_labels")["segmenters"]
    by_name = {s["name"]: s for s in info}
    assert by_name["tiny-segformer-a"]["labels"][:3] == ["sky", "tree", "grass"] and not by_name["tiny-segformer-a"]["open_vocabulary"]
    assert by_name["tiny-clipseg"]["open_vocabulary"] and by_name["tiny-clipseg"]["labels"] is None
    status, body = server.post("/tcig/check_labels", {"labels": ["Sky", "skyy", "unicorn"]})
    assert status == 200
    assert "tiny-segformer-a" in body["labels"]["Sky"]["known_by"]
    assert body["labels"]["skyy"]["known_by"] == [] and "sky" in body["labels"]["skyy"]["suggestions"]
    assert body["labels"]["unicorn"]["open_vocabulary"] == ["tiny-clipseg"]
    status, body = server.post("/tcig/check_labels", {"labels": "../../etc/passwd"})
    assert status == 400 and "list" in body["error"]
    req = urllib.request.Request(server.url + "/tcig/check_labels", data=b"not json", headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError("bad JSON was accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 400
    assert server.get("/system_stats")  # still serving


def test_known_models_download_on_first_use_through_the_nodes(server):
    """The two-stage workflow as shipped names '(download)' entries: the guidance CLIP and the
    SegFormer come through huggingface_hub from the loopback stand-in for the Hub (HF_ENDPOINT) into
    the extra_model_paths.yaml folders, and the VQGAN (a direct URL, not the Hub's) is placed by
    hand as the README says, and used; then the graph runs; a second run fetches nothing."""
    info = server.get("/object_info")
    assert "vqgan_imagenet_f16_16384 (download)" in json.dumps(info["TCIGVQGANLoader"]["input"]["required"]["vqgan_name"])
    assert "segformer-b0-finetuned-ade-512-512 (download)" in json.dumps(info["TCIGSegmenterLoader"]["input"]["required"])
    prompt = tiny_version(load_api("tcig_two_stage"), iterations=5)
    prompt["1"]["inputs"]["vqgan_name"] = "vqgan_imagenet_f16_16384 (download)"
    prompt["2"]["inputs"].update(clip_name="open_clip_vit_b32 (download)", architecture="")
    prompt["3"]["inputs"]["segmenter_name"] = "segformer-b0-finetuned-ade-512-512 (download)"
    before = len(server.hub.gets)
    extra = next(pathlib.Path(server.base).parent.glob("extra_models*"))
    made = [
        extra / "vqgan" / "vqgan_imagenet_f16_16384.ckpt",
        extra / "vqgan" / "vqgan_imagenet_f16_16384.yaml",
        extra / "tcig_clip" / "open_clip_vit_b32.bin",
        extra / "tcig_clip" / "open_clip_vit_b32.json",
        extra / "segmenters" / "segformer-b0-finetuned-ade-512-512",
    ]
    from e2e.file_server import CLIP_REPO, SEG_REPO

    made[0].parent.mkdir(parents=True, exist_ok=True)
    made[0].write_bytes(server.hub.files["/vqgan/last.ckpt"])
    made[1].write_bytes(server.hub.files["/vqgan/model.yaml"])
    try:
        hist = server.wait(server.queue(prompt))
        assert hist["status"]["status_str"] == "success", hist["status"]
        got = {p for p, _ in server.hub.gets[before:]}
        assert {
            f"/{CLIP_REPO}/resolve/main/open_clip_pytorch_model.bin",
            f"/{SEG_REPO}/resolve/main/config.json",
            f"/{SEG_REPO}/resolve/main/model.safetensors",
        } <= got, got
        assert not [p for p in got if p.startswith("/vqgan/")]  # the VQGAN placed by hand was used
        assert all(p.exists() for p in made)
        n = len(server.hub.gets)
        again = server.wait(server.queue(prompt))
        assert again["status"]["status_str"] == "success" and len(server.hub.gets) == n  # nothing fetched twice
    finally:
        import shutil

        locks = [lock for sub in ("vqgan", "tcig_clip", "segmenters") for lock in (extra / sub).glob("*.lock")]
        for p in made + locks:  # the extra folders link to the tiny-model cache: leave it as it was
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


@pytest.mark.parametrize("name", ["tcig_stage1_only", "tcig_multi_segmenter", "tcig_two_stage", "tcig_two_stage_colour_image"])
def test_workflows_saved_with_0_2_0_still_run(server, name):
    """The API form of each shipped workflow as released in 0.2.0 (every input its nodes had then,
    none added since) is accepted by ComfyUI's validation and runs."""
    with open(os.path.join(ROOT, "tests", "e2e", "released_0_2_0", f"{name}.api.json"), encoding="utf-8") as f:
        prompt = tiny_version(json.load(f), iterations=10)
    stage1 = next(n for n in prompt.values() if n["class_type"] == "TCIGStage1")["inputs"]
    assert not {"region_prompts", "coarse_to_fine", "plateau_steps", "start_from_layout"} & set(stage1)
    hist = server.wait(server.queue(prompt))
    assert hist["status"]["status_str"] == "success", hist["status"]


def _stage2_pixels(server, hist, prompt):
    import numpy as np
    from PIL import Image

    images, _ = _outputs(server, hist, prompt)
    (path,) = [p for t, p in images if t == "SaveImage" and p.name.startswith("stage2")]
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_the_seg_controlnet_workflow_applies_its_hint(server):
    """The ControlNet of the shipped seg workflow reaches the sampler: the stage-2 image differs from the
    same graph with strength 0; an unknown label stops the seg map with the palette's close matches."""

    base = tiny_version(load_api("tcig_two_stage_controlnet_seg"), iterations=5)
    runs = {}
    for strength in (0.8, 0.0):
        prompt = copy.deepcopy(base)
        prompt["29"]["inputs"]["strength"] = strength
        hist = server.wait(server.queue(prompt))
        assert hist["status"]["status_str"] == "success", hist["status"]
        runs[strength] = _stage2_pixels(server, hist, prompt)
    # same seed and inputs give the same image on CPU, so any changed pixel is the hint's doing (the random
    # tiny ControlNet's effect is small: measured 0.1 of 255 on the mean)
    assert (runs[0.8] != runs[0.0]).any(), "the ControlNet's hint did not change stage 2"
    # the seg map alone (painter -> seg map -> save): an unknown label is a node error naming close classes
    value = json.loads(base["5"]["inputs"]["painting"])
    value["labels"] = [dict(entry, name="skyy" if entry["name"] == "sky" else entry["name"]) for entry in value["labels"]]
    small = {
        "5": {"class_type": "TCIGLayoutPainter", "inputs": {"painting": json.dumps(value)}},
        "27": {"class_type": "TCIGLayoutToSegMap", "inputs": {"layout": ["5", 0]}},  # palette and unknown left out: defaults
        "30": {"class_type": "SaveImage", "inputs": {"images": ["27", 0], "filename_prefix": "TCIG/seg_map_unknown"}},
    }
    hist = server.wait(server.queue(small))
    assert hist["status"]["status_str"] == "error"
    message = json.dumps(hist["status"]["messages"])
    assert "'skyy' is not a class of the ADE20K" in message and "['sky']" in message, message[-800:]
    small["27"]["inputs"]["unknown"] = "ignore"
    hist = server.wait(server.queue(small))
    assert hist["status"]["status_str"] == "success", hist["status"]


def test_region_negatives_reach_the_sampler(server):
    """The shipped two-stage graph's per-region negatives (masked, added to the global negative) change
    stage 2 against the same graph without them; an unknown label, or negatives with no global negative,
    is a node error that says what to do."""

    base = tiny_version(load_api("tcig_two_stage"), iterations=5)
    assert base["11"]["inputs"]["region_negatives"] and base["14"]["inputs"]["negative"] == ["11", 1]
    runs = {}
    for lines in (base["11"]["inputs"]["region_negatives"], ""):
        prompt = copy.deepcopy(base)
        prompt["11"]["inputs"]["region_negatives"] = lines
        hist = server.wait(server.queue(prompt))
        assert hist["status"]["status_str"] == "success", hist["status"]
        runs[bool(lines)] = _stage2_pixels(server, hist, prompt)
    assert (runs[True] != runs[False]).any(), "the region negatives did not change stage 2"  # same seed: same image
    for lines, drop_global, expect in (
        ("lava: smoke", False, "are not in the layout; its labels are"),
        ("water: boats", True, "connect global_negative"),
    ):
        prompt = copy.deepcopy(base)
        prompt["11"]["inputs"]["region_negatives"] = lines
        if drop_global:
            del prompt["11"]["inputs"]["global_negative"]
        hist = server.wait(server.queue(prompt))
        assert hist["status"]["status_str"] == "error" and expect in json.dumps(hist["status"]["messages"]), lines


def test_layout_from_image_reads_a_photo_into_a_layout_and_a_seg_map(server):
    """Photo -> layout -> seg map in a real ComfyUI: the world's rendering of the demo layout, read by
    the tiny SegFormer, comes back as sky / mountain / water, drawn in their ADE20K and COCO panoptic colours."""
    import numpy as np
    from PIL import Image

    from tcig_ops.judge import oracle_image
    from tcig_ops.painter import layout_from_painting

    painting = load_api("tcig_stage1_only")["5"]["inputs"]["painting"]
    layout = layout_from_painting(painting)[0].resized(96, 128)
    photo = (oracle_image(layout)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(photo).save(pathlib.Path(server.base) / "input" / "tcig_world_photo.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "tcig_world_photo.png"}},
        "2": {"class_type": "TCIGSegmenterLoader", "inputs": {"segmenter_name": "tiny-segformer-a"}},
        "3": {"class_type": "TCIGLayoutFromImage", "inputs": {"image": ["1", 0], "segmenter": ["2", 0], "min_region_share": 1.0}},
        "4": {"class_type": "TCIGLayoutToSegMap", "inputs": {"layout": ["3", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "TCIG/photo_seg_map"}},
        "6": {"class_type": "TCIGLayoutToSegMap", "inputs": {"layout": ["3", 0], "palette": "COCO panoptic (133 classes)"}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "TCIG/photo_seg_map_coco"}},
    }
    hist = server.wait(server.queue(prompt))
    assert hist["status"]["status_str"] == "success", hist["status"]
    images, _ = _outputs(server, hist, prompt)
    paths = sorted(p for t, p in images if t == "SaveImage")
    assert len(paths) == 2
    truth = layout.index_map().numpy()
    palettes = {
        "photo_seg_map_0": {"sky": (6, 230, 230), "mountain": (143, 255, 140), "water": (61, 230, 250)},  # ADE20K
        "photo_seg_map_coco": {"sky": (70, 130, 180), "mountain": (64, 170, 64), "water": (58, 41, 149)},  # COCO panoptic
    }
    for prefix, colours in palettes.items():
        (path,) = [p for p in paths if pathlib.Path(p).name.startswith(prefix)]
        seg = np.asarray(Image.open(path).convert("RGB"))
        assert seg.shape == (96, 128, 3)
        for k, label in enumerate(layout.labels):
            inside = (seg[truth == k] == np.array(colours[label])).all(-1).mean()
            assert inside > 0.8, (prefix, label, inside)
