"""Memory: the estimate of a step's peak, what the device has available, and the refusal before
anything is allocated."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import TCIGInputError
from ..vqgan import VQGAN


def estimate_memory_bytes(vqgan: VQGAN, width: int, height: int) -> int:
    """Rough peak of one stage-1 step: decoder activations kept for backward dominate.

    Per output pixel the taming decoder keeps about 12 feature maps of its widest
    full-resolution width in fp32 (convolutions, norms and activations of each block);
    measured on the tiny and ImageNet-f16 architectures this is within 2x.
    """
    dd = vqgan.ddconfig
    ch = dd["ch"] * dd["ch_mult"][0]  # channels at full resolution
    return int(width * height * ch * 4 * 12 * (dd["num_res_blocks"] + 1))


def available_memory_bytes(device: torch.device) -> int | None:
    """Memory a new allocation on ``device`` can get, or None if unknown.

    CUDA: the driver's free memory plus what PyTorch's allocator holds reserved but unused.
    CPU: the OS's *available* memory (MemAvailable: free pages plus the page cache and
    other memory it can reclaim), not merely free pages, which a warm page cache keeps low.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(
    vqgan: VQGAN, width: int, height: int, device: torch.device, free_memory: Callable[[int, torch.device], None] | None = None
) -> None:
    """Refuse sizes whose estimated need exceeds the available memory, before allocating anything.
    ``free_memory(bytes, device)``, when given, is asked to make room first."""
    need, free = estimate_memory_bytes(vqgan, width, height), available_memory_bytes(device)
    if free is not None and need > free and free_memory is not None:
        free_memory(need, device)
        free = available_memory_bytes(device)
    if free is not None and need > free:
        raise TCIGInputError(
            f"size {width}x{height}: stage 1 would need about {need / 2**30:.1f} GiB but {free / 2**30:.1f} GiB is available on "
            f"{device.type}; use a smaller size and upscale in stage 2"
        )
