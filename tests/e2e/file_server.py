"""Loopback stand-ins for the model hosts (never the internet): a plain HTTP file server, and the
few Hugging Face Hub routes that ``huggingface_hub`` calls for a repository (its listing and file
URLs), for the download tests and the e2e server (``HF_ENDPOINT`` points at it)."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import threading
import urllib.parse

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # the revision every stand-in repository is at


class Files(http.server.ThreadingHTTPServer):
    """Serves ``files`` {path: bytes}; ``mode``: "range" | "norange" | "cut" (half, then the
    connection drops) | "wrong" (other bytes of the same length). Counts GET requests. Paths of
    the form ``/<org>/<repo>/resolve/<rev>/<file>`` are hub files, and ``/api/models/<org>/<repo>/
    (revision|tree)/<rev>`` list the files under ``/<org>/<repo>/resolve/main/`` as the Hub does."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.mode, self.gets, self.lock = files, "range", [], threading.Lock()
        self.listed_extra: dict[str, list[str]] = {}  # repo -> names listed but not served (hostile listings)
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def repo_files(self, repo: str) -> list[str]:
        prefix = f"/{repo}/resolve/main/"
        return sorted(p[len(prefix) :] for p in self.files if p.startswith(prefix)) + self.listed_extra.get(repo, [])


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool):
        srv = self.server
        path = urllib.parse.urlsplit(self.path).path
        if body:
            with srv.lock:
                srv.gets.append((path, self.headers.get("Range")))
        if path.startswith("/api/models/"):
            return self._listing(path[len("/api/models/") :], body)
        key = path
        if "/resolve/" in path:  # any revision name serves the files stored under main
            repo, rest = path.split("/resolve/", 1)
            key = f"{repo}/resolve/main/{rest.split('/', 1)[1]}" if "/" in rest else path
        data = srv.files.get(key)
        if data is None:
            self.send_error(404)
            return
        if srv.mode == "wrong":
            data = bytes(b ^ 0xFF for b in data)
        start = 0
        rng = self.headers.get("Range")
        if rng and srv.mode == "range" and body:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        payload = data[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", '"' + hashlib.sha1(data).hexdigest() + '"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.end_headers()
        if not body:
            return
        if srv.mode == "cut":
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.connection.shutdown(2)  # the connection drops mid-file
            return
        self.wfile.write(payload)

    def _listing(self, rest: str, body: bool):
        srv = self.server
        for word in ("/revision/", "/tree/"):
            if word in rest:
                repo = rest.split(word, 1)[0]
                names = srv.repo_files(repo)
                if not names:
                    break
                if word == "/revision/":
                    doc = {"id": repo, "modelId": repo, "sha": COMMIT, "siblings": [{"rfilename": n} for n in names]}
                else:
                    doc = [
                        {"type": "file", "path": n, "size": len(srv.files.get(f"/{repo}/resolve/main/{n}", b"")), "oid": "0" * 40}
                        for n in names
                    ]
                out = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                if body:
                    self.wfile.write(out)
                return
        self.send_error(404)


CLIP_REPO = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
SEG_REPO = "nvidia/segformer-b0-finetuned-ade-512-512"


def tiny_model_files(tiny: dict) -> dict[str, bytes]:
    """{url path: bytes}: the tiny CLIP and first SegFormer as the hub repositories of two known
    models, and the tiny VQGAN's two files at plain paths (the VQGAN's source is a direct URL)."""
    import safetensors.torch
    import torch

    buf = io.BytesIO()  # open_clip's hub files are torch.save'd state dicts: serve the tiny CLIP that way
    torch.save(safetensors.torch.load_file(tiny["clip"]), buf)
    with open(os.path.splitext(tiny["clip"])[0] + ".json", encoding="utf-8") as f:
        clip_cfg = json.load(f)
    files = {
        "/vqgan/last.ckpt": open(tiny["vqgan"], "rb").read(),
        "/vqgan/model.yaml": open(os.path.splitext(tiny["vqgan"])[0] + ".yaml", "rb").read(),
        f"/{CLIP_REPO}/resolve/main/open_clip_pytorch_model.bin": buf.getvalue(),
        f"/{CLIP_REPO}/resolve/main/open_clip_config.json": json.dumps({"model_cfg": clip_cfg}).encode(),
    }
    seg_dir = tiny["segmenters"][0]
    for name in sorted(os.listdir(seg_dir)):
        with open(os.path.join(seg_dir, name), "rb") as f:
            files[f"/{SEG_REPO}/resolve/main/{name}"] = f.read()
    files[f"/{SEG_REPO}/resolve/main/README.md"] = b"# not fetched: only configs, tokenizer files and weights are\n"
    return files


def point_vqgan_at(server: Files, known: dict) -> None:
    """The known VQGAN's direct URLs -> this server (the table is data; the tests change it, not the code)."""
    files = known["vqgan_imagenet_f16_16384"]["files"]
    files["vqgan_imagenet_f16_16384.ckpt"]["url"] = server.url + "/vqgan/last.ckpt"
    files["vqgan_imagenet_f16_16384.yaml"]["url"] = server.url + "/vqgan/model.yaml"
