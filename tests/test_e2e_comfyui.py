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

from e2e.comfy_server import ROOT, SKIP_REASON, ComfyServer, find_comfyui, prepare_base, tiny_sd_checkpoint

COMFY = find_comfyui()
pytestmark = pytest.mark.skipif(COMFY is None, reason=SKIP_REASON)

NODES = ["TCIGVQGANLoader", "TCIGCLIPLoader", "TCIGSegmenterLoader", "TCIGLayoutFromColors", "TCIGLayoutAddMask",
         "TCIGSegmenterGuide", "TCIGStage1", "TCIGMaskAwareRefine", "TCIGRegionalConditioning", "TCIGIoUEvaluate"]
SIZE = 64
TINY_NAMES = {"segformer-b0-finetuned-ade-512-512": "tiny-segformer-a", "clipseg-rd64-refined": "tiny-clipseg"}


@pytest.fixture(scope="module")
def server(tiny, tmp_path_factory):
    cache = pathlib.Path(ROOT) / ".cache"
    sd = tiny_sd_checkpoint(COMFY, str(cache / "e2e"))
    base = tmp_path_factory.mktemp("comfy_base")
    yaml_path = prepare_base(str(base), str(tmp_path_factory.mktemp("extra_models")), tiny, sd)
    srv = ComfyServer(COMFY, str(base), yaml_path, str(base / "server.log"))
    yield srv
    srv.stop()


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
        names = [k for part in ("required", "optional") for k, v in spec.get(part, {}).items()
                 if isinstance(v[0], list) or v[0] in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")]
        names = [n for n in names if n not in sockets]
        assert [w for w in widgets if not w.startswith("+")] == names, node_type


def _outputs(server, hist, prompt):
    images, reports = [], []
    for nid, out in hist["outputs"].items():
        for im in out.get("images", []):
            images.append((prompt[nid]["class_type"], pathlib.Path(server.base) / "output" / im["subfolder"] / im["filename"]))
        reports += out.get("text", [])
    return images, reports


@pytest.mark.parametrize("name", ["tcig_stage1_only", "tcig_multi_segmenter", "tcig_two_stage"])
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
        assert p.is_file() and Image.open(p).size == (SIZE, SIZE), p
    assert reports and all("mIoU" in r for r in reports)
    prefixes = [n["inputs"]["filename_prefix"] for n in prompt.values() if n["class_type"] == "TCIGIoUEvaluate"]
    for prefix in prefixes:
        files = list((pathlib.Path(server.base) / "output").glob(prefix + "_*.json"))
        assert files, prefix
        data = json.loads(files[-1].read_text())
        assert 0.0 <= data["miou"] <= 1.0 and data["size"] == [SIZE, SIZE]
    print(f"{name}: {time.time() - t0:.1f} s; " + " | ".join(r.splitlines()[0] for r in reports))


def test_stage1_reaches_layout_in_comfyui(server):
    prompt = tiny_version(load_api("tcig_stage1_only"), iterations=300)
    hist = server.wait(server.queue(prompt))
    report = json.loads(sorted((pathlib.Path(server.base) / "output" / "TCIG").glob("iou_stage1_only_*.json"))[-1].read_text())
    assert hist["status"]["status_str"] == "success"
    assert report["miou"] >= 0.85, report


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
    bad = tiny_version(load_api("tcig_stage1_only"), iterations=5)
    bad["5"]["inputs"]["class_map"] = '{"#zz": "sky"}'
    hist = server.wait(server.queue(bad))
    assert hist["status"]["status_str"] == "error"
    err = [m[1] for m in hist["status"]["messages"] if m[0] == "execution_error"][0]
    assert err["node_id"] == "5" and "#zz" in err["exception_message"] and "#rrggbb" in err["exception_message"]
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
