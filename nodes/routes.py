"""Read-only server routes for the Layout Painter: which labels the installed segmenters know.

``GET /tcig/segmenter_labels`` lists every folder of the ``segmenters`` model paths with its
class names, read from its config.json (no weights are loaded); open-vocabulary folders
(CLIPSeg) say so instead. ``POST /tcig/check_labels`` with ``{"labels": [...]}`` answers, per
label, which segmenters know it and the close matches the backend's own label errors give.
No path or file name from the client is used: both routes only read the folders ComfyUI
has registered for ``segmenters``.
"""

from __future__ import annotations

import asyncio
import logging
import os

from aiohttp import web

from ..tcig_ops.errors import TCIGInputError
from ..tcig_ops.segmenters import describe_folder
from . import model_folders
from .glue import check_labels

MAX_LABELS = 256
MAX_LABEL_CHARS = 200


_DESCRIBED: dict[str, tuple[int, dict]] = {}  # folder -> (config.json's mtime, what it describes)


def describe_cached(folder: str) -> dict:
    """``describe_folder``, read again only when the folder's config.json changed (by mtime)."""
    try:
        mtime = os.stat(os.path.join(folder, "config.json")).st_mtime_ns
    except OSError:
        return describe_folder(folder)  # says what is missing
    hit = _DESCRIBED.get(folder)
    if hit is None or hit[0] != mtime:
        hit = _DESCRIBED[folder] = (mtime, describe_folder(folder))
    return hit[1]


def installed_segmenters() -> list[dict]:
    """[{"name", "labels" (None for open vocabulary), "open_vocabulary"}] for every segmenter folder."""
    out = []
    for name in model_folders.present_segmenter_folders():
        try:
            info = describe_cached(model_folders.segmenter_path(name))
        except TCIGInputError as exc:
            logging.warning("TCIG: segmenter folder %s skipped: %s", name, exc)
            continue
        out.append({"name": name, **info})
    return out


def register(routes) -> None:
    """Add the routes to ComfyUI's route table (before the server starts)."""

    @routes.get("/tcig/segmenter_labels")
    async def segmenter_labels(request):
        # file reads off the server's event loop: other requests (the queue, previews) are not held up
        segmenters = await asyncio.get_running_loop().run_in_executor(None, installed_segmenters)
        return web.json_response({"segmenters": segmenters})

    @routes.post("/tcig/check_labels")
    async def check(request):
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": 'send JSON like {"labels": ["sky"]}'}, status=400)
        labels = body.get("labels") if isinstance(body, dict) else None
        if (
            not isinstance(labels, list)
            or len(labels) > MAX_LABELS
            or not all(isinstance(x, str) and len(x) <= MAX_LABEL_CHARS for x in labels)
        ):
            return web.json_response({"error": f"'labels' must be a list of at most {MAX_LABELS} strings"}, status=400)
        answer = await asyncio.get_running_loop().run_in_executor(None, lambda: check_labels(labels, installed_segmenters()))
        return web.json_response({"labels": answer})
