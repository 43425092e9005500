"""Run reports: the JSON the CLI writes and the per-class text the nodes show."""

from __future__ import annotations

import json
import math
import os
import resource

import torch

from .stage1 import Stage1Result


def peak_memory_mb(device: torch.device | str = "cpu") -> float:
    """Peak memory of this process so far: CUDA allocator peak on GPU, peak RSS on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _clean(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def stage1_report(result: Stage1Result, device, settings: dict | None = None) -> dict:
    return {
        "miou": result.miou,
        "iou": {k: _clean(v) for k, v in result.iou.items()},
        "seconds_per_iteration": result.seconds / max(1, result.steps),
        "peak_memory_mb": peak_memory_mb(device),
        "steps": result.steps,
        "stopped": result.stopped,
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


def iou_text(miou: float, iou: dict[str, float], title: str = "") -> str:
    """A short per-class table for humans."""
    lines = [f"{title}mIoU {miou:.3f}"] if title else [f"mIoU {miou:.3f}"]
    for label, v in iou.items():
        lines.append(f"  {label:<16} {'n/a' if v != v else f'{v:.3f}'}")
    return "\n".join(lines)
