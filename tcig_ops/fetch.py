"""Known models and first-run downloads: resumable, verified, written whole or not at all.

``KNOWN_MODELS`` is data: for each model its source (Hugging Face repo files or direct URLs
from the model's original release), the model folder it belongs in (``vqgan``,
``tcig_clip``, ``segmenters``) and the file names our loaders expect. Sizes and sha256 are
listed where the source publishes them (``None`` otherwise; the size a server announces is
then checked instead).

``download_url`` resumes a ``.part`` file with an HTTP Range request where the server
allows it, verifies size and checksum, and renames the file into place; a lock file makes a
second process (or prompt) wait for the first download instead of starting its own.
``TCIG_NO_DOWNLOAD=1`` turns downloads off (air-gapped installs). ``TCIG_MODEL_BASE_URL``
replaces every source with ``<base>/<model name>/<file>`` and exists for the tests' loopback
server only.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable

from .errors import TCIGInputError

# Sources. VQGAN: the taming-transformers README links the ImageNet f16-16384 release folder
# https://heibox.uni-heidelberg.de/d/a7530b09fed84f80a887/ ; the file links below are the ones
# the VQGAN-CLIP README (nerdyrodent/VQGAN-CLIP) downloads from that folder.
# open_clip: the hf_hub entries of open_clip's pretrained table (open_clip/pretrained.py:
# ViT-B-32 laion2b_s34b_b79k, ViT-B-16 laion2b_s34b_b88k, ViT-L-14 laion2b_s32b_b82k), file name
# open_clip's HF_WEIGHTS_NAME. Segmenters: the model cards' Hugging Face repos, fetched whole
# (configs + weights) with huggingface_hub.
HEIBOX = "https://heibox.uni-heidelberg.de/d/a7530b09fed84f80a887/files/?p="
KNOWN_MODELS: dict[str, dict] = {
    "vqgan_imagenet_f16_16384": {
        "kind": "vqgan",
        "files": {
            "vqgan_imagenet_f16_16384.ckpt": {"url": HEIBOX + "%2Fckpts%2Flast.ckpt&dl=1", "size": None, "sha256": None},
            "vqgan_imagenet_f16_16384.yaml": {"url": HEIBOX + "%2Fconfigs%2Fmodel.yaml&dl=1", "size": None, "sha256": None},
        },
    },
    "open_clip_vit_b32": {
        "kind": "tcig_clip",
        "arch": "ViT-B-32",
        "files": {"open_clip_vit_b32.bin": {"hf": ("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "open_clip_pytorch_model.bin")}},
    },
    "open_clip_vit_b16": {
        "kind": "tcig_clip",
        "arch": "ViT-B-16",
        "files": {"open_clip_vit_b16.bin": {"hf": ("laion/CLIP-ViT-B-16-laion2B-s34B-b88K", "open_clip_pytorch_model.bin")}},
    },
    "open_clip_vit_l14": {
        "kind": "tcig_clip",
        "arch": "ViT-L-14",
        "files": {"open_clip_vit_l14.bin": {"hf": ("laion/CLIP-ViT-L-14-laion2B-s32B-b82K", "open_clip_pytorch_model.bin")}},
    },
    "segformer-b0-finetuned-ade-512-512": {"kind": "segmenters", "repo": "nvidia/segformer-b0-finetuned-ade-512-512"},
    "segformer-b2-finetuned-ade-512-512": {"kind": "segmenters", "repo": "nvidia/segformer-b2-finetuned-ade-512-512"},
    "mask2former-swin-tiny-ade-semantic": {"kind": "segmenters", "repo": "facebook/mask2former-swin-tiny-ade-semantic"},
    "clipseg-rd64-refined": {"kind": "segmenters", "repo": "CIDAS/clipseg-rd64-refined"},
}
# what a segmenter folder needs (configs, tokenizer files, weights); .bin only where no .safetensors exists
REPO_PATTERNS = ["*.json", "*.txt", "*.safetensors"]
DEFAULT_SET = ["vqgan_imagenet_f16_16384", "open_clip_vit_b32", "segformer-b0-finetuned-ade-512-512", "clipseg-rd64-refined"]
MANUAL = "see the README's 'Real weights: where they go' table for the files and folders to place by hand"


def downloads_enabled() -> bool:
    return os.environ.get("TCIG_NO_DOWNLOAD", "").strip().lower() not in ("1", "true", "yes", "on")


def _check(name: str) -> dict:
    if name not in KNOWN_MODELS:
        raise TCIGInputError(f"model {name!r} is not a known model; known: {sorted(KNOWN_MODELS)}")
    return KNOWN_MODELS[name]


def target_path(name: str, root: str) -> str:
    """Where a known model lives under a models root: the weights file, or the segmenter folder."""
    return target_in(name, os.path.join(root, _check(name)["kind"]))


def target_in(name: str, kind_folder: str) -> str:
    """The same inside one model folder of its kind (e.g. ComfyUI's models/vqgan)."""
    spec = _check(name)
    if spec["kind"] == "segmenters":
        return os.path.join(kind_folder, name)
    return os.path.join(kind_folder, next(iter(spec["files"])))


def is_present(name: str, root: str) -> bool:
    return present_in(name, os.path.join(root, _check(name)["kind"]))


def present_in(name: str, kind_folder: str) -> bool:
    spec = _check(name)
    if spec["kind"] == "segmenters":
        return os.path.isfile(os.path.join(kind_folder, name, "config.json"))
    return all(os.path.isfile(os.path.join(kind_folder, f)) for f in spec["files"])


def _error(name: str, url: str, folder: str, why: str) -> TCIGInputError:
    return TCIGInputError(f"download of {name} failed: {why}; URL {url}; folder {folder}. To install it by hand, {MANUAL}")


def download_url(
    url: str,
    dest: str,
    name: str,
    size: int | None = None,
    sha256: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 60,
) -> str:
    """Fetch ``url`` to ``dest`` (resuming ``dest.part``), verify, rename; returns ``dest``.

    Another process downloading the same file is waited for (lock file), and a file already
    in place is not fetched again. A wrong size or checksum removes the part file."""
    from filelock import FileLock

    folder = os.path.dirname(os.path.abspath(dest))
    if not downloads_enabled():
        raise _error(name, url, folder, "downloads are turned off (TCIG_NO_DOWNLOAD)")
    os.makedirs(folder, exist_ok=True)
    with FileLock(dest + ".lock"):
        if os.path.isfile(dest):
            return dest
        part = dest + ".part"
        have = os.path.getsize(part) if os.path.isfile(part) else 0
        total = size
        req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                if have and r.status != 206:  # the server ignores Range: start again
                    have = 0
                length = r.headers.get("Content-Length")
                total = have + int(length) if length is not None else size
                if size is not None and total is not None and total != size:
                    raise _error(name, url, folder, f"the server offers {total} bytes, the table says {size}")
                with open(part, "ab" if have else "wb") as f:
                    done = have
                    while chunk := r.read(1 << 20):
                        f.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(done, total)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and size is not None and have == size:  # the part file is already whole
                pass
            else:
                raise _error(name, url, folder, f"HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _error(name, url, folder, f"{reason} (offline? the partial file is kept and the next try resumes)") from None
        got = os.path.getsize(part)
        expected = size if size is not None else total
        if expected is not None and got != expected:
            what = "the transfer was cut" if got < expected else "more bytes than announced"
            if got > expected:
                os.remove(part)
            raise _error(name, url, folder, f"{what}: {got} of {expected} bytes (the next try resumes)")
        if sha256 is not None:
            h = hashlib.sha256()
            with open(part, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            if h.hexdigest() != sha256.lower():
                os.remove(part)
                raise _error(name, url, folder, f"checksum mismatch (sha256 {h.hexdigest()}, expected {sha256}); the file was removed")
        os.replace(part, dest)
    return dest


def fetch_model(name: str, root: str, progress: Callable[[int, int | None], None] | None = None) -> str:
    """Download a known model into ``root/<kind>/``; returns the path the loaders take."""
    return fetch_into(name, os.path.join(root, _check(name)["kind"]), progress)


def fetch_into(name: str, kind_folder: str, progress: Callable[[int, int | None], None] | None = None) -> str:
    """Download a known model into one model folder of its kind (ComfyUI's, or the CLI's
    DIR/<kind>); returns the path the loaders take. Files already present are not fetched."""
    spec = _check(name)
    base = os.environ.get("TCIG_MODEL_BASE_URL", "").rstrip("/")
    if spec["kind"] == "segmenters":
        folder = target_in(name, kind_folder)
        if present_in(name, kind_folder):
            return folder
        if base:  # tests: a loopback server lists the folder's files in index.json
            with urllib.request.urlopen(f"{base}/{name}/index.json", timeout=30) as r:
                files = json.load(r)
            for f in files:
                download_url(f"{base}/{name}/{f}", os.path.join(folder, f), name, progress=progress)
            return folder
        if not downloads_enabled():
            raise _error(name, f"https://huggingface.co/{spec['repo']}", folder, "downloads are turned off (TCIG_NO_DOWNLOAD)")
        try:
            from huggingface_hub import snapshot_download

            snapshot_download(spec["repo"], local_dir=folder, allow_patterns=REPO_PATTERNS)
            if not any(f.endswith(".safetensors") for f in os.listdir(folder)):
                snapshot_download(spec["repo"], local_dir=folder, allow_patterns=["*.bin"])
        except Exception as exc:  # huggingface_hub raises many types (offline, 404, auth)
            raise _error(name, f"https://huggingface.co/{spec['repo']}", folder, str(exc).splitlines()[0]) from None
        return folder
    folder = kind_folder
    for fname, src in spec["files"].items():
        if base:
            url = f"{base}/{name}/{fname}"
        elif "hf" in src:
            url = f"https://huggingface.co/{src['hf'][0]}/resolve/main/{src['hf'][1]}"
        else:
            url = src["url"]
        download_url(url, os.path.join(folder, fname), name, src.get("size"), src.get("sha256"), progress)
    if spec.get("arch"):  # the open_clip config beside the weights, so the loader needs no architecture name
        config = os.path.splitext(target_in(name, kind_folder))[0] + ".json"
        if not os.path.isfile(config) and base:  # the test server's own config (its weights are not ViT-B-32's)
            download_url(f"{base}/{name}/{os.path.basename(config)}", config, name, progress=progress)
        if not os.path.isfile(config):
            import open_clip

            with open(config + ".tmp", "w", encoding="utf-8") as f:
                json.dump(open_clip.get_model_config(spec["arch"]), f, indent=1)
            os.replace(config + ".tmp", config)
    return target_in(name, kind_folder)


def fetch_models(names: list[str], root: str, progress=None) -> dict:
    """Fetch several known models and write ``root/manifest.json`` for ``make demo MODELS=root``
    and ``stage1``/``batch --models root``: the first VQGAN, CLIP and segmenter fetched."""
    paths = {n: fetch_model(n, root, progress) for n in names}
    manifest: dict = {"segmenters": []}
    for n, p in paths.items():
        kind, rel = KNOWN_MODELS[n]["kind"], os.path.relpath(p, root)
        if kind == "vqgan":
            manifest.setdefault("vqgan", rel)
        elif kind == "tcig_clip":
            manifest.setdefault("clip", rel)
            manifest.setdefault("clip_arch", KNOWN_MODELS[n]["arch"])
        else:
            manifest["segmenters"].append(rel)
    with open(os.path.join(root, "manifest.json.tmp"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    os.replace(os.path.join(root, "manifest.json.tmp"), os.path.join(root, "manifest.json"))
    return manifest
