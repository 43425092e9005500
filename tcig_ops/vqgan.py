"""Taming-transformers VQGAN: load a checkpoint + yaml, encode, quantize, decode.

Built from ``taming.modules`` only (``taming.models`` needs PyTorch Lightning 1.x).
Images are (B, 3, H, W) in 0..1 at this module's boundary; taming works in -1..1.
The latent the optimizer owns is the *pre-quantization* code z (B, E, h, w) with
E = embed_dim and h = H / factor; decoding snaps it to the codebook with a
straight-through estimator so gradients reach z.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import yaml

from . import fast_decoder
from .checkpoints import load_state_dict, require_file
from .errors import TCIGInputError

CONFIG_SUFFIXES = (".yaml", ".yml")


def find_config(ckpt_path: str) -> str:
    """The taming yaml that belongs to ``ckpt_path``: same stem, or the only yaml beside it."""
    stem = os.path.splitext(ckpt_path)[0]
    for suffix in CONFIG_SUFFIXES:
        if os.path.isfile(stem + suffix):
            return stem + suffix
    folder = os.path.dirname(ckpt_path) or "."
    yamls = sorted(f for f in os.listdir(folder) if f.endswith(CONFIG_SUFFIXES)) if os.path.isdir(folder) else []
    if len(yamls) == 1:
        return os.path.join(folder, yamls[0])
    raise TCIGInputError(
        f"VQGAN config: no taming .yaml found for {ckpt_path}; put it beside the checkpoint as "
        f"{os.path.basename(stem)}.yaml (the model.yaml that comes with the checkpoint)"
    )


def read_config(config_path: str) -> dict:
    """Parse a taming config and return ``model.params`` plus a ``gumbel`` flag."""
    require_file(config_path, "VQGAN config")
    try:
        with open(config_path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise TCIGInputError(f"VQGAN config: {config_path} is not valid YAML ({exc})") from None
    try:
        model = cfg["model"]
        params = dict(model["params"])
        dd = params["ddconfig"]
        params["embed_dim"], params["n_embed"] = int(params["embed_dim"]), int(params["n_embed"])
        _ = dd["ch"], dd["ch_mult"], dd["z_channels"], dd["num_res_blocks"]
    except (KeyError, TypeError, ValueError):
        raise TCIGInputError(
            f"VQGAN config: {config_path} is not a taming VQGAN config (needs model.params.embed_dim, n_embed, ddconfig)"
        ) from None
    target = str(model.get("target", ""))
    params["gumbel"] = target.endswith("GumbelVQ") or "kl_weight" in params
    return params


class VQGAN(nn.Module):
    """Encoder, quantizer and decoder of a taming VQModel or GumbelVQ (inference only)."""

    def __init__(self, params: dict):
        super().__init__()
        from taming.modules.diffusionmodules.model import Decoder, Encoder
        from taming.modules.vqvae.quantize import GumbelQuantize, VectorQuantizer2

        dd = dict(params["ddconfig"])
        self.gumbel = bool(params["gumbel"])
        self.encoder = Encoder(**dd)
        self.decoder = Decoder(**dd)
        embed_dim, n_embed = params["embed_dim"], params["n_embed"]
        if self.gumbel:
            self.quantize = GumbelQuantize(dd["z_channels"], embed_dim, n_embed=n_embed, kl_weight=1e-8, temp_init=1.0)
        else:
            self.quantize = VectorQuantizer2(n_embed, embed_dim, beta=0.25)
        self.quant_conv = nn.Conv2d(dd["z_channels"], embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, dd["z_channels"], 1)
        self.ddconfig = dd
        self.factor = 2 ** (len(dd["ch_mult"]) - 1)
        self.embed_dim = embed_dim

    @property
    def codebook(self) -> torch.Tensor:
        """(n_embed, embed_dim) code vectors."""
        return self.quantize.embed.weight if self.gumbel else self.quantize.embedding.weight

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in 0..1 -> quantized latent (B,E,H/f,W/f)."""
        x = image * 2 - 1
        h = self.quant_conv(fast_decoder.encode(self.encoder, x) if fast_decoder.supports(self.encoder) else self.encoder(x))
        if self.gumbel:
            idx = self.quantize.proj(h).argmax(1)  # (B,h,w) hard code choice
            return self.codebook[idx].permute(0, 3, 1, 2)
        return self.quantize_st(h)

    def quantize_st(self, z: torch.Tensor) -> torch.Tensor:
        """Snap each z (B,E,h,w) vector to its nearest code; gradients pass straight through."""
        with torch.autocast(z.device.type, enabled=False):  # nearest-code search in fp32, even under autocast
            codebook = self.codebook.float()
            flat = z.detach().float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
            # squared distances via the expansion |a|^2 - 2ab + |b|^2 (one matmul, no (N,K,E) tensor)
            d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.t() + codebook.pow(2).sum(1)[None]
            idx = d.argmin(1)
        zq = self.codebook[idx].view(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2).to(z.dtype)
        return z + (zq - z).detach()

    def decode(self, zq: torch.Tensor, fast: bool = True) -> torch.Tensor:
        """Quantized latent (B,E,h,w) -> image (B,3,h*f,w*f) in 0..1 (clamped with gradient).

        ``fast`` uses the fused-activation forward of ``fast_decoder`` (same result up to
        float rounding); False runs taming's own ``Decoder.forward``.
        """
        h = self.post_quant_conv(zq)
        x = fast_decoder.decode(self.decoder, h) if fast and fast_decoder.supports(self.decoder) else self.decoder(h)
        return clamp_with_grad((x + 1) / 2, 0.0, 1.0)

    def z_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel min and max of the codebook, each (1,E,1,1): keeps z near real codes."""
        cb = self.codebook
        return cb.min(0).values[None, :, None, None], cb.max(0).values[None, :, None, None]

    def random_latent(self, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        """A latent made of random codes (1,E,H/f,W/f), the VQGAN-CLIP starting point."""
        h, w = height // self.factor, width // self.factor
        idx = torch.randint(self.codebook.shape[0], (h * w,), generator=generator, device=self.codebook.device)
        return self.codebook[idx].view(1, h, w, -1).permute(0, 3, 1, 2).clone()


class _ClampWithGrad(torch.autograd.Function):
    """Clamp in the forward pass; in the backward pass let gradients through that push back inside."""

    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        # outside the range, only pass gradient that moves x back towards it
        keep = grad * (x - x.clamp(ctx.lo, ctx.hi)) >= 0
        return grad * keep, None, None


def clamp_with_grad(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return _ClampWithGrad.apply(x, lo, hi)


def load_vqgan(ckpt_path: str, config_path: str | None = None, device: str | torch.device = "cpu") -> VQGAN:
    """Load a taming checkpoint (.ckpt or .safetensors) with its yaml into an eval-mode, frozen VQGAN."""
    require_file(ckpt_path, "VQGAN checkpoint")
    params = read_config(config_path or find_config(ckpt_path))
    sd = load_state_dict(ckpt_path, "VQGAN checkpoint")
    if not any(k.startswith("decoder.") for k in sd):
        raise TCIGInputError(
            f"VQGAN checkpoint: {ckpt_path} has no 'decoder.*' weights; it is not a taming VQGAN "
            "(a Stable Diffusion checkpoint goes to the core loaders, not here)"
        )
    sd = {k: v for k, v in sd.items() if not k.startswith("loss.")}  # discriminator/LPIPS: training only
    try:
        model = VQGAN(params)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TCIGInputError(f"VQGAN config: cannot build the model it describes ({exc})") from None
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).split("\n")[1].strip() if "\n" in str(exc) else str(exc)
        raise TCIGInputError(
            f"VQGAN checkpoint: {ckpt_path} does not match its yaml config ({first}); use the yaml that was released with this checkpoint"
        ) from None
    if missing or unexpected:
        raise TCIGInputError(
            f"VQGAN checkpoint: {ckpt_path} does not match its yaml config "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}); "
            "use the yaml that was released with this checkpoint"
        )
    return model.eval().requires_grad_(False).to(device)
