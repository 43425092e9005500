"""Which precision stage 1's forward pass runs at, and why.

``precision="auto"`` picks, for the device the models are on:
- CUDA: bf16 where the device supports it (Ampere and newer), else fp16 with the gradient
  scaler where fp16 autocast helps (compute capability 7.0 and newer: tensor cores), else fp32;
- CPU: bf16 where the CPU multiplies bf16 natively (avx512_bf16 or AMX, as torch reads its
  flags: 2-5x fp32's matrix-product speed on this project's machines), fp32 where it does not
  (emulated bf16 is up to 100x slower). The flags, not a timing, decide: a timed probe flipped
  under load (a batch's Ray driver chose fp32 while Ray started, the in-process run bf16, and the
  same job gave two images). Only a CPU whose flags torch cannot read is timed: bf16 where a
  short matrix-product probe (once per process and thread count) shows it at least
  ``CPU_BF16_MIN_SPEEDUP`` times faster than fp32;
- anything else: fp32.
Inside ComfyUI the node passes ComfyUI's own choice for the device instead (its model
management, which honours ``--force-fp32`` and ``--force-fp16``). The latent, Adam's state, the
losses and the IoU stay fp32 whatever is chosen; only the autocast region changes.
"""

from __future__ import annotations

import time

import torch

from .errors import TCIGInputError

CHOICES = ("auto", "fp32", "bf16", "fp16")
CPU_BF16_MIN_SPEEDUP = 1.5
_PROBES: dict[int, float] = {}  # torch thread count -> measured bf16 speed-up over fp32


def cpu_bf16_speedup(size: int = 256, budget_s: float = 0.5) -> float:
    """fp32 time / bf16 time of a (size x size) matrix product on this CPU (cached per thread count).
    Slow (emulated) bf16 ends the probe early: it never costs more than about ``budget_s``."""
    threads = torch.get_num_threads()
    if threads in _PROBES:
        return _PROBES[threads]
    gen = torch.Generator().manual_seed(0)
    a32 = torch.randn(size, size, generator=gen)
    b32 = torch.randn(size, size, generator=gen)
    a16, b16 = a32.bfloat16(), b32.bfloat16()

    def timed(a, b, limit: float) -> float:
        torch.mm(a, b)  # warm-up (kernel selection, caches)
        best, spent = float("inf"), 0.0
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(4):
                torch.mm(a, b)
            dt = (time.perf_counter() - t0) / 4
            best, spent = min(best, dt), spent + 4 * dt
            if spent > limit:
                break
        return best

    t32 = timed(a32, b32, budget_s / 2)
    t16 = timed(a16, b16, budget_s / 2)
    _PROBES[threads] = t32 / max(t16, 1e-12)
    return _PROBES[threads]


def cpu_native_bf16() -> str | None:
    """Which native bf16 instructions this x86 CPU has ("AMX", "avx512_bf16"; "" for none), or None
    where torch cannot tell (another architecture, or a torch without these helpers)."""
    cpu = getattr(torch, "cpu", None)
    helpers = [getattr(cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported", "_is_avx2_supported")]
    if any(h is None for h in helpers):
        return None
    amx, avx512_bf16, avx2 = (bool(h()) for h in helpers)
    if not (avx2 or avx512_bf16 or amx):  # not an x86 CPU torch knows the flags of
        return None
    return ", ".join(name for name, has in (("AMX", amx), ("avx512_bf16", avx512_bf16)) if has)


def choose(precision: str, device: torch.device | str) -> tuple[str, str]:
    """(precision to run, why) for a requested precision ("auto" or an explicit one)."""
    if precision not in CHOICES:
        raise TCIGInputError(f"precision: {precision!r}; use one of {', '.join(CHOICES)}")
    device = torch.device(device)
    if precision != "auto":
        return precision, "asked for"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", f"auto: {torch.cuda.get_device_name(device)} supports bf16"
        major, _ = torch.cuda.get_device_capability(device)
        if major >= 7:
            return "fp16", f"auto: {torch.cuda.get_device_name(device)} has no bf16; fp16 with loss scaling"
        return "fp32", "auto: this GPU has no fast reduced precision"
    if device.type == "cpu":
        native = cpu_native_bf16()
        if native is not None:
            if native:
                return "bf16", f"auto: this CPU multiplies bf16 natively ({native})"
            return "fp32", "auto: this CPU has no native bf16 (no avx512_bf16 or AMX), so bf16 would be emulated and slower"
        speedup = cpu_bf16_speedup()
        if speedup >= CPU_BF16_MIN_SPEEDUP:
            return "bf16", f"auto: bf16 matrix products run {speedup:.1f}x faster than fp32 on this CPU"
        return "fp32", f"auto: bf16 matrix products run at {speedup:.2f}x fp32 on this CPU (bf16 needs >= {CPU_BF16_MIN_SPEEDUP}x)"
    return "fp32", f"auto: fp32 on {device.type}"
