"""A leaner forward pass for the taming VQGAN decoder (and encoder): same modules, same maths.

taming writes swish as ``x * sigmoid(x)`` (three tensors kept for backward, four
kernels forward and backward) and attention as explicit bmm + softmax. Here swish is
``F.silu`` (one fused kernel each way) and attention is ``scaled_dot_product_attention``.
Measured on a 2-core CPU at 256 px (ImageNet f16 architecture) this trims the
element-wise share of decoder forward + backward; the convolutions, which are the
bulk, are untouched. Convolutions already run at the CPU's fp32 GEMM speed (a
Winograd variant written in torch was measured slower: its tile shuffles cost more
than the multiplies it saves).

``supports(decoder)`` is False for modules that are not the taming layout it knows
(or are in training mode); callers then use ``decoder(h)``. Same shape as ``fast_clip``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def decode(decoder: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """Decoder input (B, z_channels, h, w) -> output (B, 3, h*f, w*f), about -1..1; ``supports(decoder)`` must hold."""
    h = decoder.conv_in(h)
    h = _resnet(decoder.mid.block_1, h)
    h = _attention(decoder.mid.attn_1, h)
    h = _resnet(decoder.mid.block_2, h)
    for level in reversed(range(decoder.num_resolutions)):
        up = decoder.up[level]
        for i, block in enumerate(up.block):
            h = _resnet(block, h)
            if len(up.attn) > 0:
                h = _attention(up.attn[i], h)
        if level != 0:
            h = up.upsample(h)
    return decoder.conv_out(_norm_silu(decoder.norm_out, h))


def encode(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Encoder input (B, 3, H, W) in -1..1 -> (B, z_channels, H/f, W/f); ``supports(encoder)`` must hold.
    The same modules as taming's ``Encoder.forward``, with the fused swish and attention of ``decode``."""
    h = encoder.conv_in(x)
    for level in range(encoder.num_resolutions):
        down = encoder.down[level]
        for i, block in enumerate(down.block):
            h = _resnet(block, h)
            if len(down.attn) > 0:
                h = _attention(down.attn[i], h)
        if level != encoder.num_resolutions - 1:
            h = down.downsample(h)
    h = _resnet(encoder.mid.block_2, _attention(encoder.mid.attn_1, _resnet(encoder.mid.block_1, h)))
    return encoder.conv_out(_norm_silu(encoder.norm_out, h))


def supports(decoder: nn.Module) -> bool:
    """True for a taming ``Decoder`` (or ``Encoder``) in eval mode built from ResnetBlock/AttnBlock, without
    temb or pre-end output."""
    kind = type(decoder).__name__
    if kind not in ("Decoder", "Encoder") or getattr(decoder, "give_pre_end", False) or getattr(decoder, "tanh_out", False):
        return False
    if decoder.training or getattr(decoder, "temb_ch", 0):
        return False
    stages = decoder.up if kind == "Decoder" else decoder.down
    blocks = [decoder.mid.block_1, decoder.mid.block_2] + [b for st in stages for b in st.block]
    attns = [decoder.mid.attn_1] + [a for st in stages for a in st.attn]
    return all(type(b).__name__ == "ResnetBlock" for b in blocks) and all(type(a).__name__ == "AttnBlock" for a in attns)


def _norm_silu(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """silu(GroupNorm(x)). Under CPU bf16 autocast, where the convolutions hand over bf16, it runs
    in bf16 (statistics still accumulate in fp32 inside the kernel): autocast would cast the
    activation up to fp32 for the norm and back down for the next convolution, and the fp32 norm's
    backward at 256 px is 3x the bf16 one (85 vs 27 ms per 128x256x256 norm + silu on a 2-core
    EPYC). fp32 runs, and every GPU, take the unchanged path."""
    if x.dtype == torch.bfloat16 and x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            w, b = (None if p is None else p.to(x.dtype) for p in (norm.weight, norm.bias))
            return F.silu(F.group_norm(x, norm.num_groups, w, b, norm.eps))
    return F.silu(norm(x))


def _resnet(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    h = block.conv1(_norm_silu(block.norm1, x))
    h = block.conv2(_norm_silu(block.norm2, h))  # dropout: identity in eval
    if block.in_channels != block.out_channels:
        x = block.conv_shortcut(x) if block.use_conv_shortcut else block.nin_shortcut(x)
    return x + h


def _attention(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Single-head self-attention over the h*w positions of (B,C,h,w). q, k and v are made contiguous:
    the fused CPU kernels need the channel stride to be 1 and otherwise fall back to the explicit
    (hw, hw) product, 6x slower at 4096 positions (a tiny VQGAN's 128 px latent)."""
    b, c, hh, ww = x.shape
    n = attn.norm(x)
    q, k, v = (conv(n).reshape(b, 1, c, hh * ww).transpose(2, 3).contiguous() for conv in (attn.q, attn.k, attn.v))  # (B,1,hw,C)
    out = F.scaled_dot_product_attention(q, k, v)  # scale C**-0.5, as taming
    return x + attn.proj_out(out.transpose(2, 3).reshape(b, c, hh, ww))
