"""A loopback HTTP file server for download tests (never the internet), and the tiny models laid
out under the known-model names of tcig_ops/fetch.py (what TCIG_MODEL_BASE_URL points at)."""

from __future__ import annotations

import http.server
import io
import json
import os
import threading


class Files(http.server.ThreadingHTTPServer):
    """Serves ``files`` {path: bytes}; ``mode``: "range" | "norange" | "cut" (half, then the
    connection drops) | "wrong" (other bytes of the same length). Counts GET requests."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.mode, self.gets, self.lock = files, "range", [], threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.gets.append((self.path, self.headers.get("Range")))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        if srv.mode == "wrong":
            data = bytes(b ^ 0xFF for b in data)
        start = 0
        rng = self.headers.get("Range")
        if rng and srv.mode == "range":
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.mode == "cut":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection drops mid-file
            return
        self.wfile.write(body)


def tiny_model_files(tiny: dict) -> dict[str, bytes]:
    """{url path: bytes}: the tiny VQGAN, CLIP and first SegFormer as three known models."""
    import safetensors.torch
    import torch

    buf = io.BytesIO()  # open_clip's hub files are torch.save'd state dicts: serve the tiny CLIP that way
    torch.save(safetensors.torch.load_file(tiny["clip"]), buf)
    seg_dir = tiny["segmenters"][0]
    seg_files = sorted(os.listdir(seg_dir))
    with open(tiny["vqgan"], "rb") as f:
        vq = f.read()
    with open(os.path.splitext(tiny["vqgan"])[0] + ".yaml", "rb") as f:
        yaml = f.read()
    files = {
        "/vqgan_imagenet_f16_16384/vqgan_imagenet_f16_16384.ckpt": vq,
        "/vqgan_imagenet_f16_16384/vqgan_imagenet_f16_16384.yaml": yaml,
        "/open_clip_vit_b32/open_clip_vit_b32.bin": buf.getvalue(),
        "/open_clip_vit_b32/open_clip_vit_b32.json": open(os.path.splitext(tiny["clip"])[0] + ".json", "rb").read(),
        "/segformer-b0-finetuned-ade-512-512/index.json": json.dumps(seg_files).encode(),
    }
    for name in seg_files:
        with open(os.path.join(seg_dir, name), "rb") as f:
            files[f"/segformer-b0-finetuned-ade-512-512/{name}"] = f.read()
    return files
