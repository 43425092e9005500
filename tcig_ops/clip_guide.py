"""CLIP guidance: open_clip loading, the loss on augmented cutouts, spherical distance.

Images are (B, 3, H, W) in 0..1. Text embeddings are computed once per run; cutouts
and their augmentations are made in ``cutouts.py``.
"""

from __future__ import annotations

import difflib
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import fast_clip
from .checkpoints import load_state_dict, require_file
from .cutouts import make_cutouts
from .errors import TCIGInputError
from .prompts import Prompt


def _config_beside(weights: str) -> str | None:
    stem = os.path.splitext(weights)[0]
    return stem + ".json" if os.path.isfile(stem + ".json") else None


def load_open_clip(weights: str, arch: str | None = None, device: str | torch.device = "cpu") -> ClipModel:
    """An open_clip model from local weights.

    ``arch`` is an open_clip architecture name ("ViT-B-32") or a model-config .json;
    when omitted, ``<weights stem>.json`` beside the weights is used. When ``weights``
    is not a file but an open_clip pretrained tag ("laion2b_s34b_b79k"), open_clip
    downloads it (needs internet).
    """
    import open_clip

    if arch and not arch.endswith(".json") and weights and not os.path.exists(weights) and os.sep not in weights and "." not in weights:
        model = open_clip.create_model(arch, pretrained=weights, device="cpu")  # pretrained tag: online
        return ClipModel(model, open_clip.get_tokenizer(arch), *_mean_std(model)).to(device)
    require_file(weights, "CLIP weights")
    config_path = arch if arch and arch.endswith(".json") else (None if arch else _config_beside(weights))
    if config_path:
        require_file(config_path, "CLIP config")
        try:
            with open(config_path, encoding="utf-8") as f:
                cfg = json.load(f)
            cfg = cfg.get("model_cfg", cfg)
            _ = cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise TCIGInputError(f"CLIP config: {config_path} is not an open_clip model config (embed_dim, vision_cfg, text_cfg)") from None
    elif arch:
        cfg = open_clip.get_model_config(arch)
        if cfg is None:
            close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
            raise TCIGInputError(f"CLIP architecture {arch!r} is unknown to open_clip; close matches: {close}")
    else:
        raise TCIGInputError(
            f"CLIP weights: {weights} needs an architecture: give an open_clip name (e.g. ViT-B-32) "
            f"or put its config beside it as {os.path.splitext(os.path.basename(weights))[0]}.json"
        )
    if "hf_model_name" in cfg.get("text_cfg", {}):
        raise TCIGInputError("CLIP config: text towers from Hugging Face (hf_model_name) are not supported; use a CLIP-style text tower")
    cfg = dict(cfg)
    # configs of towers trained with a separate text model say so; CustomTextCLIP builds those
    model_cls = open_clip.model.CustomTextCLIP if cfg.pop("custom_text", False) else open_clip.model.CLIP
    known = {
        "embed_dim",
        "vision_cfg",
        "text_cfg",
        "quick_gelu",
        "cast_dtype",
        "init_logit_scale",
        "init_logit_bias",
        "nonscalar_logit_scale",
        "output_dict",
    }
    try:
        model = model_cls(**{k: v for k, v in cfg.items() if k in known})
    except (TypeError, ValueError, KeyError, AssertionError, RuntimeError) as exc:
        raise TCIGInputError(
            f"CLIP config {config_path or arch}: open_clip cannot build it ({_first_line(exc)}); check that it is an open_clip model config"
        ) from None
    sd = load_state_dict(weights, "CLIP weights")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    try:
        result = model.load_state_dict(sd, strict=False)
    except RuntimeError as exc:
        raise TCIGInputError(
            f"CLIP weights: {weights} do not fit the architecture ({_first_line(exc)}); check the config/arch name"
        ) from None
    missing = [k for k in result.missing_keys if "attn_mask" not in k]
    if missing or result.unexpected_keys:
        raise TCIGInputError(
            f"CLIP weights: {weights} do not fit the architecture (missing {missing[:3]}, unexpected "
            f"{result.unexpected_keys[:3]}); check the config/arch name"
        )
    ctx = cfg["text_cfg"].get("context_length", 77)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=ctx)
    return ClipModel(model, tokenizer, *_mean_std(model)).to(device)


def _first_line(exc: Exception) -> str:
    lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
    return lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)


def _mean_std(model) -> tuple[tuple, tuple]:
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    visual = model.visual
    return getattr(visual, "image_mean", None) or OPENAI_DATASET_MEAN, getattr(visual, "image_std", None) or OPENAI_DATASET_STD


class ClipModel(nn.Module):
    """A frozen open_clip model with its tokenizer and input normalisation."""

    def __init__(self, model: nn.Module, tokenizer, mean, std):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        size = model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """(N,) strings -> (N, D) unit vectors."""
        with torch.no_grad():
            tokens = self.tokenizer(texts).to(self.device)
            return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def encode_image(self, images: torch.Tensor, fast: bool = True) -> torch.Tensor:
        """(N,3,S,S) in 0..1 at the model's size -> (N, D) unit vectors (differentiable).

        ``fast`` uses the leaner ViT forward of ``fast_clip`` (same result up to float
        rounding) where the tower is one it recognises; False runs open_clip's own.
        """
        x = (images - self.mean) / self.std
        if fast and images.shape[-1] == images.shape[-2] == self.image_size and fast_clip.supports(self.model.visual):
            return F.normalize(fast_clip.encode(self.model.visual, x).float(), dim=-1)
        return F.normalize(self.model.encode_image(x).float(), dim=-1)


class ClipGuide(nn.Module):
    """L_clip for one run: prompts are embedded once; ``forward(image)`` returns a scalar loss."""

    def __init__(
        self,
        clip: ClipModel,
        prompts: list[Prompt],
        cutn: int = 32,
        cut_pow: float = 1.0,
        noise: float = 0.1,
        image_prompts: list[torch.Tensor] | None = None,
    ):
        super().__init__()
        if cutn < 1:
            raise TCIGInputError(f"cutn: {cutn} cutouts; use at least 1 (32 is the usual value)")
        if cut_pow <= 0:
            raise TCIGInputError(f"cut_pow: {cut_pow}; use a positive number (1.0 is the usual value)")
        self.clip, self.cutn, self.cut_pow, self.noise = clip, cutn, cut_pow, noise
        embeds = [clip.encode_text([p.text for p in prompts])] if prompts else []
        weights = [p.weight for p in prompts]
        stops = [p.stop for p in prompts]
        for img in image_prompts or []:
            small = F.interpolate(img.to(clip.device), size=(clip.image_size,) * 2, mode="bilinear", align_corners=False)
            with torch.no_grad():
                embeds.append(clip.encode_image(small))
            weights.append(1.0)
            stops.append(float("-inf"))
        if not embeds:
            raise TCIGInputError("prompt: nothing to guide CLIP; give a text prompt or an image prompt")
        self.register_buffer("embeds", torch.cat(embeds), persistent=False)  # (P, D)
        self.register_buffer("weights", torch.tensor(weights, device=clip.device), persistent=False)
        self.register_buffer("stops", torch.tensor(stops, device=clip.device), persistent=False)

    def make_batch(self, image: torch.Tensor) -> torch.Tensor:
        """(1,3,H,W) -> augmented, noised cutouts (cutn,3,S,S)."""
        return make_cutouts(image, self.cutn, self.clip.image_size, self.cut_pow, self.noise)

    def forward(self, image: torch.Tensor, fast: bool = True) -> torch.Tensor:
        emb = self.clip.encode_image(self.make_batch(image), fast=fast)  # (cutn, D)
        return spherical_loss(emb, self.embeds, self.weights, self.stops)

    def region_loss(self, image: torch.Tensor, box: tuple[int, int, int, int], mask: torch.Tensor, fast: bool = True) -> torch.Tensor:
        """L_clip of one region: cutouts drawn inside ``box`` (x0, y0, x1, y1) of ``image`` (1,3,H,W);
        pixels outside ``mask`` (the region within the box, (h, w) bool) are seen but pass no gradient."""
        x0, y0, x1, y1 = box
        crop = image[..., y0:y1, x0:x1]
        m = mask.to(crop.dtype)
        crop = crop * m + crop.detach() * (1 - m)
        return self(crop, fast=fast)


def spherical_loss(emb: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, stops: torch.Tensor) -> torch.Tensor:
    """Weighted squared great-circle distance between (N,D) and (P,D) unit vectors, mean over N, sum over P.

    A prompt whose distance is already below its ``stop`` contributes no gradient.
    """
    d = (emb[:, None] - targets[None]).norm(dim=-1).div(2).clamp(max=1).arcsin().pow(2).mul(2)  # (N, P)
    d = torch.where(d > stops[None], d, d.detach())
    return (d.mean(0) * weights).sum()
