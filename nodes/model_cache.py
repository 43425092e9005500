"""A small LRU of loaded models shared by the loader nodes (keyed by path, size and mtime).

ComfyUI caches node outputs per graph; this also keeps a model across graphs and
prompts, and reloads it when the file on disk changes.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable

import torch

_LOCK = threading.Lock()
_CACHE: OrderedDict[tuple, object] = OrderedDict()
MAX_ENTRIES = 6


def _stamp(path: str) -> tuple:
    if os.path.isdir(path):
        files = sorted(os.listdir(path))
        return tuple((f, os.path.getmtime(os.path.join(path, f))) for f in files)
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns)


def cached(kind: str, path: str, extra: tuple, load: Callable[[], object]) -> object:
    """Return the cached model for (kind, path, extra) or load and remember it."""
    key = (kind, os.path.abspath(path), extra, _stamp(path))
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    # ComfyUI runs nodes under inference_mode; weights made there could never take part in
    # stage 1's backward pass, so models are always loaded as normal tensors
    with torch.inference_mode(False):
        model = load()
    with _LOCK:
        _CACHE[key] = model
        while len(_CACHE) > MAX_ENTRIES:
            _CACHE.popitem(last=False)
    return model


def stats() -> int:
    return len(_CACHE)
