"""ComfyUI model folders for TCIG: models/vqgan, models/tcig_clip, models/segmenters.

``tcig_clip`` holds open_clip weights for CLIP *guidance*; it is separate from ComfyUI's
``clip``/``text_encoders`` folder, whose files are diffusion text encoders. Each folder
also accepts entries from extra_model_paths.yaml under the same key.
"""

from __future__ import annotations

import os

import folder_paths

from ..tcig_ops.errors import TCIGInputError
from .glue import refuse_escape, resolve_inside

WEIGHT_EXTS = {".ckpt", ".pt", ".pth", ".bin", ".safetensors"}
FOLDERS = {"vqgan": WEIGHT_EXTS, "tcig_clip": WEIGHT_EXTS, "segmenters": {"folder"}}


def register() -> None:
    """Add our folders (idempotent); keep paths that extra_model_paths.yaml added first."""
    for name, exts in FOLDERS.items():
        default = os.path.join(folder_paths.models_dir, name)
        folder_paths.add_model_folder_path(name, default, is_default=True)
        paths, _ = folder_paths.folder_names_and_paths[name]
        folder_paths.folder_names_and_paths[name] = (paths, set(exts))


DOWNLOAD = " (download)"  # the mark of a known model that is not on disk yet


def weight_files(name: str) -> list[str]:
    """Files present in the folder, then the known models of this kind, marked '(download)' (none
    when downloads are turned off). A known model stays listed once it is on disk: a shared
    workflow that names it then works on every machine, and it is fetched only where missing."""
    return folder_paths.get_filename_list(name) + _downloadable(name)


def _downloadable(kind: str) -> list[str]:
    from ..tcig_ops import fetch

    if not fetch.downloads_enabled():
        return []
    return [n + DOWNLOAD for n, spec in fetch.KNOWN_MODELS.items() if spec["kind"] == kind]


def download_folder(kind: str) -> str:
    """Where a first-run download goes: the first folder of that kind from extra_model_paths.yaml
    (where such users keep models), else ComfyUI's own models/<kind>."""
    default = os.path.join(folder_paths.models_dir, kind)
    paths = folder_paths.get_folder_paths(kind)
    extra = [p for p in paths if os.path.abspath(p) != os.path.abspath(default)]
    return extra[0] if extra else default


def resolve_or_download(kind: str, name: str, progress=None) -> str | None:
    """The known model behind a '<name> (download)' entry, fetched on first use; None for other names."""
    if not name.endswith(DOWNLOAD):
        return None
    from ..tcig_ops import fetch

    return fetch.fetch_into(name[: -len(DOWNLOAD)], download_folder(kind), progress)


def weight_path(folder: str, filename: str) -> str:
    refuse_escape(filename)
    return folder_paths.get_full_path_or_raise(folder, filename)


def config_path(folder: str, name: str) -> str:
    """A config file named in a text input (e.g. an open_clip .json), found inside ``folder``'s paths only."""
    return resolve_inside(folder_paths.get_folder_paths(folder), name, f"{folder} config")


def segmenter_folders() -> list[str]:
    """Sub-folders of every segmenters path that hold a transformers config.json, then the known
    segmenters marked '(download)' (see weight_files)."""
    return present_segmenter_folders() + _downloadable("segmenters")


def present_segmenter_folders() -> list[str]:
    out = set()
    for root in folder_paths.get_folder_paths("segmenters"):
        if not os.path.isdir(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
            if "config.json" in filenames:
                out.add(os.path.relpath(dirpath, root).replace(os.sep, "/"))
                dirnames[:] = []  # a model folder's sub-folders are not models
    return sorted(out)


def segmenter_path(name: str) -> str:
    refuse_escape(name)
    for root in folder_paths.get_folder_paths("segmenters"):
        path = os.path.abspath(os.path.join(root, name))
        if os.path.commonpath([path, os.path.abspath(root)]) == os.path.abspath(root) and os.path.isfile(os.path.join(path, "config.json")):
            return path
    raise TCIGInputError(
        f"segmenter {name!r} not found in models/segmenters (a folder with config.json); folders: {present_segmenter_folders()[:8]}"
    )
