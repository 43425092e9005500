"""Known models and first-run downloads: resumable, verified, written whole or not at all.

``KNOWN_MODELS`` is data: for each model its source (Hugging Face repo files or direct URLs
from the model's original release), the model folder it belongs in (``vqgan``,
``tcig_clip``, ``segmenters``) and the file names our loaders expect. Sizes and sha256 are
listed where the source publishes them (``None`` otherwise; the size a server announces is
then checked instead), Hugging Face revisions where one is known (``None``: the default branch).

``download_url`` resumes a ``.part`` file with an HTTP Range request where the server
allows it, verifies size and checksum, checks that the bytes are what the loader expects (a
checkpoint, a safetensors file, a YAML or JSON config: an HTML error page is refused), and
renames the file into place; a lock file makes a second process (or prompt) wait for the
first download instead of starting its own. Hugging Face files are addressed through
``huggingface_hub`` (its file URLs and repository listing, so ``HF_ENDPOINT`` is honoured); a
segmenter repository is fetched into ``<folder>.partial`` next to its target and renamed into
place when whole, so a folder that is there is complete. ``TCIG_NO_DOWNLOAD=1`` turns
downloads off (air-gapped installs): files already in place are used, missing ones are refused
with the manual steps.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
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


WEIGHTS = (".safetensors", ".bin")


def present_in(name: str, kind_folder: str) -> bool:
    """Whether a known model is whole in the folder. A segmenter folder is renamed into place only
    when whole; one without weights (left by an older version's cut download) does not count."""
    spec = _check(name)
    if spec["kind"] == "segmenters":
        folder = os.path.join(kind_folder, name)
        return os.path.isfile(os.path.join(folder, "config.json")) and any(f.endswith(WEIGHTS) for f in os.listdir(folder))
    return all(os.path.isfile(os.path.join(kind_folder, f)) for f in spec["files"])


def check_content(path: str, name: str) -> None:
    """Refuse a downloaded file that is not what the loader expects (by the name it will have):
    a .ckpt/.bin/.pt is a zip or pickle checkpoint, a .safetensors has a JSON header, a .yaml
    parses and names a model, a .json is an object. ValueError says what it is instead."""
    with open(path, "rb") as f:
        head = f.read(16)
    ext = os.path.splitext(name)[1].lower()
    shown = head[:12]
    if ext in (".ckpt", ".bin", ".pt", ".pth"):
        if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
            raise ValueError(f"not a checkpoint (a zip or pickle file); it starts with {shown!r}")
    elif ext == ".safetensors":
        n = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
        try:
            if not 2 <= n <= min(100 * 2**20, os.path.getsize(path) - 8):
                raise ValueError
            with open(path, "rb") as f:
                f.seek(8)
                if not isinstance(json.loads(f.read(n)), dict):
                    raise ValueError
        except ValueError:
            raise ValueError(f"not a safetensors file; it starts with {shown!r}") from None
    elif ext in (".yaml", ".yml"):
        import yaml

        try:
            with open(path, encoding="utf-8") as f:
                doc = yaml.safe_load(f)
        except (yaml.YAMLError, UnicodeDecodeError):
            doc = None
        if not (isinstance(doc, dict) and isinstance(doc.get("model"), dict) and ("target" in doc["model"] or "params" in doc["model"])):
            raise ValueError(f"not a model config (YAML with model.target); it starts with {shown!r}")
    elif ext == ".json":
        try:
            with open(path, encoding="utf-8") as f:
                ok = isinstance(json.load(f), dict)
        except (ValueError, UnicodeDecodeError):
            ok = False
        if not ok:
            raise ValueError(f"not a JSON object; it starts with {shown!r}")


def safe_relative(name: str, folder: str) -> str:
    """A file name from a remote listing, as a path inside ``folder``; refused if it would land outside."""
    if not isinstance(name, str) or not name or "\\" in name or name.startswith("/") or ":" in name:
        raise TCIGInputError(f"download: the server listed the file name {name!r}, which is not a plain relative path; refused")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise TCIGInputError(f"download: the server listed the file name {name!r}, which leaves the model folder; refused")
    path = os.path.join(folder, *parts)
    root = os.path.realpath(folder)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise TCIGInputError(f"download: the file name {name!r} would land outside {folder}; refused")
    return path


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
    if os.path.isfile(dest):  # in place (downloaded, or put there by hand): used whatever the setting
        return dest
    if not downloads_enabled():
        raise _error(name, url, folder, "downloads are turned off (TCIG_NO_DOWNLOAD) and the file is not there")
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
        try:
            check_content(part, dest)
        except ValueError as exc:
            os.remove(part)
            raise _error(name, url, folder, f"the server sent something else: {exc}; the file was removed") from None
        os.replace(part, dest)
    return dest


def fetch_model(name: str, root: str, progress: Callable[[int, int | None], None] | None = None) -> str:
    """Download a known model into ``root/<kind>/``; returns the path the loaders take."""
    return fetch_into(name, os.path.join(root, _check(name)["kind"]), progress)


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None  # read per call: huggingface_hub reads it once, at import


def hf_url(repo: str, filename: str, revision: str | None = None) -> str:
    """The download URL of a file of a Hugging Face repository (``HF_ENDPOINT`` honoured)."""
    from huggingface_hub import hf_hub_url

    return hf_hub_url(repo, filename, revision=revision or "main", endpoint=_endpoint())


def repo_files(repo: str, revision: str | None = None) -> list[str]:
    """The file names of a Hugging Face repository, from its listing (``HF_ENDPOINT`` honoured)."""
    from huggingface_hub import HfApi

    return list(HfApi(endpoint=_endpoint()).list_repo_files(repo, revision=revision or "main"))


def _fetch_repo(name: str, spec: dict, folder: str, progress) -> str:
    """A segmenter repository into ``folder``: its configs, tokenizer files and weights (.bin only
    where it has no .safetensors) go to ``folder.partial`` and it is renamed into place when whole
    and checked; a cut download resumes there on the next try."""
    from filelock import FileLock

    repo, rev = spec["repo"], spec.get("revision")
    page = f"https://huggingface.co/{repo}"
    if not downloads_enabled():
        raise _error(name, page, folder, "downloads are turned off (TCIG_NO_DOWNLOAD) and the folder is not there")
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    with FileLock(folder + ".lock"):
        if present_in(name, os.path.dirname(folder)):
            return folder
        try:
            names = repo_files(repo, rev)
        except Exception as exc:  # huggingface_hub raises many types (offline, 404, auth)
            raise _error(name, page, folder, f"listing the repository failed: {str(exc).splitlines()[0]}") from None
        wanted = [n for n in names if any(fnmatch.fnmatch(n, p) for p in REPO_PATTERNS)]
        if not any(n.endswith(".safetensors") for n in wanted):
            wanted += [n for n in names if n.endswith(".bin")]
        if "config.json" not in wanted or not any(n.endswith(WEIGHTS) for n in wanted):
            raise _error(name, page, folder, f"the repository lists no config.json and weights ({sorted(names)[:10]})")
        partial = folder + ".partial"
        paths = [(n, safe_relative(n, partial)) for n in wanted]  # every name checked before anything is written
        for n, path in paths:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            download_url(hf_url(repo, n, rev), path, name, progress=progress)
        for _, path in paths:  # the per-file locks stay behind: the folder holds the repository's files only
            if os.path.isfile(path + ".lock"):
                os.remove(path + ".lock")
        if os.path.isdir(folder):  # a half folder of an older version: replaced, never loaded
            shutil.rmtree(folder)
        os.replace(partial, folder)
    return folder


def fetch_into(name: str, kind_folder: str, progress: Callable[[int, int | None], None] | None = None) -> str:
    """Download a known model into one model folder of its kind (ComfyUI's, or the CLI's
    DIR/<kind>); returns the path the loaders take. Files already present are not fetched."""
    spec = _check(name)
    if spec["kind"] == "segmenters":
        folder = target_in(name, kind_folder)
        if present_in(name, kind_folder):
            return folder
        return _fetch_repo(name, spec, folder, progress)
    for fname, src in spec["files"].items():
        url = hf_url(src["hf"][0], src["hf"][1], src.get("revision")) if "hf" in src else src["url"]
        download_url(url, os.path.join(kind_folder, fname), name, src.get("size"), src.get("sha256"), progress)
    if spec.get("arch"):  # the open_clip config beside the weights, so the loader needs no architecture name
        config = os.path.splitext(target_in(name, kind_folder))[0] + ".json"
        if not os.path.isfile(config):
            _write_clip_config(name, spec, config)
    return target_in(name, kind_folder)


def _write_clip_config(name: str, spec: dict, config: str) -> None:
    """The repository's own open_clip_config.json (its model_cfg) where it has one, else open_clip's
    built-in config of the architecture."""
    src = next(iter(spec["files"].values()))
    repo, rev = src["hf"][0], src.get("revision")
    cfg = None
    if downloads_enabled():
        raw = config + ".repo.json"
        try:
            download_url(hf_url(repo, "open_clip_config.json", rev), raw, name)
            with open(raw, encoding="utf-8") as f:
                cfg = json.load(f).get("model_cfg")
        except (TCIGInputError, ValueError, OSError):
            cfg = None
        finally:
            if os.path.isfile(raw):
                os.remove(raw)
    if not isinstance(cfg, dict):
        import open_clip

        cfg = open_clip.get_model_config(spec["arch"])
    with open(config + ".tmp", "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=1)
    os.replace(config + ".tmp", config)


def fetch_models(names: list[str], root: str, progress=None) -> dict:
    """Fetch several known models and write ``root/manifest.json`` (see ``models_manifest``) for
    ``make demo MODELS=root`` and ``stage1``/``batch --models root``."""
    paths = {n: fetch_model(n, root, progress) for n in names}
    manifest = models_manifest({n: os.path.relpath(p, root) for n, p in paths.items()})
    with open(os.path.join(root, "manifest.json.tmp"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    os.replace(os.path.join(root, "manifest.json.tmp"), os.path.join(root, "manifest.json"))
    return manifest


def models_manifest(paths: dict[str, str]) -> dict:
    """The manifest of fetched known models (name -> path): the first VQGAN and CLIP; with one
    segmenter it guides, with more the last one is the ``judge`` (it reads results and never steers)
    and all the others guide (``guides``)."""
    manifest: dict = {"segmenters": []}
    for n, rel in paths.items():
        kind = KNOWN_MODELS[n]["kind"]
        if kind == "vqgan":
            manifest.setdefault("vqgan", rel)
        elif kind == "tcig_clip":
            manifest.setdefault("clip", rel)
            manifest.setdefault("clip_arch", KNOWN_MODELS[n]["arch"])
        else:
            manifest["segmenters"].append(rel)
    if len(manifest["segmenters"]) > 1:
        manifest["judge"] = manifest["segmenters"].pop()
    if manifest["segmenters"]:
        manifest["guides"] = len(manifest["segmenters"])
    return manifest
