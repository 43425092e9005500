"""Start a real ComfyUI headless on loopback with this pack and tiny models (test helper).

ComfyUI is found through COMFYUI_PATH or the usual ComfyUI/custom_nodes/<pack> layout;
its code is never part of this repository.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SKIP_REASON = "real-ComfyUI tests need a ComfyUI checkout: set COMFYUI_PATH=/path/to/ComfyUI (or install this pack in ComfyUI/custom_nodes)"


def find_comfyui() -> str | None:
    path = os.environ.get("COMFYUI_PATH")
    if path and os.path.isfile(os.path.join(path, "main.py")):
        return os.path.abspath(path)
    parent = os.path.dirname(os.path.dirname(ROOT))  # ComfyUI/custom_nodes/<pack>
    if os.path.basename(os.path.dirname(ROOT)) == "custom_nodes" and os.path.isfile(os.path.join(parent, "main.py")):
        return parent
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _generated(comfy: str, cache: str, name: str, script: str) -> str:
    """A random tiny checkpoint written once by ``script`` with ComfyUI's own classes, cached."""
    path = os.path.join(cache, name)
    if not os.path.isfile(path):
        os.makedirs(cache, exist_ok=True)
        here = os.path.join(ROOT, "tests", "e2e")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([comfy, here]))
        subprocess.run([sys.executable, os.path.join(here, script), path + ".tmp"], cwd=comfy, env=env, check=True, timeout=600)
        os.replace(path + ".tmp", path)
    return path


def tiny_sd_checkpoint(comfy: str, cache: str) -> str:
    """The random tiny SD1.5-family checkpoint, generated once with ComfyUI's own classes."""
    return _generated(comfy, cache, "tiny_sd15.safetensors", "make_tiny_sd.py")


def tiny_controlnet(comfy: str, cache: str) -> str:
    """A random ControlNet for the tiny checkpoint (the seg ControlNet's stand-in), generated once."""
    return _generated(comfy, cache, "tiny_seg_controlnet.safetensors", "make_tiny_controlnet.py")


def prepare_base(base: str, extra: str, tiny: dict, sd_ckpt: str, controlnet: str | None = None) -> str:
    """A --base-directory with the pack and checkpoints, and an extra_model_paths.yaml for TCIG models."""
    for sub in ("custom_nodes", "models/checkpoints", "models/controlnet", "input", "output", "temp", "user"):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    link = os.path.join(base, "custom_nodes", "tcig-layout")
    if not os.path.islink(link):
        os.symlink(ROOT, link)
    ck = os.path.join(base, "models", "checkpoints", "tiny_sd15.safetensors")
    if not os.path.exists(ck):
        os.symlink(sd_ckpt, ck)
    cn = os.path.join(base, "models", "controlnet", "tiny_seg_controlnet.safetensors")
    if controlnet and not os.path.exists(cn):
        os.symlink(controlnet, cn)
    # TCIG models live outside the base folder and arrive through extra_model_paths.yaml
    for key, src in (
        ("vqgan", os.path.dirname(tiny["vqgan"])),
        ("tcig_clip", os.path.dirname(tiny["clip"])),
        ("segmenters", os.path.dirname(tiny["segmenters"][0])),
    ):
        dst = os.path.join(extra, key)
        if not os.path.exists(dst):
            os.makedirs(extra, exist_ok=True)
            os.symlink(src, dst)
    yaml_path = os.path.join(base, "extra_model_paths.yaml")
    with open(yaml_path, "w", encoding="utf-8") as f:
        f.write(f"tcig_tests:\n  base_path: {extra}\n  vqgan: vqgan\n  tcig_clip: tcig_clip\n  segmenters: segmenters\n")
    sys.path.insert(0, os.path.join(ROOT, "workflows"))
    try:
        from build_workflows import example_inputs
    finally:
        sys.path.pop(0)
    for name, image in example_inputs(64).items():
        image.save(os.path.join(base, "input", name))
    return yaml_path


class ComfyServer:
    def __init__(self, comfy: str, base: str, yaml_path: str, log_path: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base = base
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "main.py",
                "--cpu",
                "--listen",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--base-directory",
                base,
                "--extra-model-paths-config",
                yaml_path,
                "--disable-auto-launch",
                "--disable-metadata",
            ],
            cwd=comfy,
            env=dict(os.environ, **(env or {})),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode}; see {log_path}")
            try:
                self.get("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(1)
        raise RuntimeError(f"ComfyUI did not answer in 180 s; see {log_path}")

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, data: dict) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, data=json.dumps(data).encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                body = r.read()
                return r.status, (json.loads(body) if body else {})
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def queue(self, prompt: dict) -> str:
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": "tcig-tests"})
        if status != 200:
            raise AssertionError(f"/prompt refused the workflow: {body}")
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            hist = self.get(f"/history/{prompt_id}")
            if prompt_id in hist and hist[prompt_id].get("status", {}).get("completed") is not None:
                st = hist[prompt_id]["status"]
                if st.get("status_str") in ("success", "error") or st.get("completed"):
                    return hist[prompt_id]
            if self.proc.poll() is not None:
                raise AssertionError("ComfyUI died while running the prompt")
            time.sleep(0.5)
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def shutil_rmtree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
