"""Move TCIG models to the device ComfyUI picked for this run and back afterwards."""

from __future__ import annotations

import contextlib

import comfy.model_management as mm
import torch


@contextlib.contextmanager
def on_compute_device(*models):
    """Run with ``models`` on ComfyUI's torch device; return them to the offload device after,
    so the diffusion model of stage 2 gets the VRAM back."""
    device, offload = mm.get_torch_device(), mm.unet_offload_device()
    used = [m for m in models if m is not None]
    with torch.inference_mode(False):  # moved weights must stay usable by autograd
        for m in used:
            m.to(device)
    try:
        yield device
    finally:
        with torch.inference_mode(False):
            for m in used:
                m.to(offload)
