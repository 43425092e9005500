"""Run reports: the JSON the CLI writes and the per-class text the nodes show."""

from __future__ import annotations

import json
import math
import os
import sys

import torch

from .stage1 import Stage1Result


def peak_memory_mb(device: torch.device | str = "cpu") -> float:
    """Peak memory of this process so far: CUDA allocator peak on GPU, peak RSS on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB, on every platform.

    ``resource`` exists only on Unix, so it is imported here, never at module level
    (the pack must import on Windows). Elsewhere psutil's peak working set is used
    (ComfyUI requires psutil), else the current RSS, else 0.
    """
    try:
        import resource
    except ImportError:
        resource = None
    if resource is not None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # macOS: bytes; Linux: KiB
    try:
        import psutil
    except ImportError:
        return 0.0
    info = psutil.Process().memory_info()
    return getattr(info, "peak_wset", info.rss) / 2**20  # Windows keeps the peak working set


def _clean(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def stage1_report(result: Stage1Result, device, settings: dict | None = None) -> dict:
    return {
        "miou": result.miou,
        "iou": {k: _clean(v) for k, v in result.iou.items()},
        "start_miou": _clean(result.start_miou),
        "start_iou": {k: _clean(v) for k, v in result.start_iou.items()},
        "seconds_per_iteration": result.seconds / max(1, result.steps),
        "peak_memory_mb": peak_memory_mb(device),
        "steps": result.steps,
        "stopped": result.stopped,
        "precision": result.precision,
        "notes": result.notes,
        "settings": settings or {},
        "history": [{k: _clean(v) for k, v in h.items()} for h in result.history],
    }


def write_json(data: dict, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)  # never leave a half-written report behind
    return path


def iou_text(miou: float, iou: dict[str, float], title: str = "", start: dict[str, float] | None = None) -> str:
    """A short per-class table for humans; with ``start``, each class's IoU at the first step too."""
    fmt = lambda v: "n/a" if v is None or v != v else f"{v:.3f}"  # noqa: E731
    head = f"{title}mIoU {miou:.3f}"
    if start:
        from .metrics import mean_iou

        head += f" (start {mean_iou(start):.3f})"
    lines = [head]
    for label, v in iou.items():
        lines.append(f"  {label:<16} {fmt(v)}" + (f"  (start {fmt(start.get(label))})" if start else ""))
    return "\n".join(lines)
