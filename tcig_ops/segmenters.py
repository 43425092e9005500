"""Segmenters: one interface over several pretrained segmentation models.

``Segmenter.forward(image, labels=None)`` maps (B, 3, H, W) in 0..1 to differentiable
class probabilities (B, K, H, W), at the input's resolution. Normalisation and resizing
to the model's native input size happen in torch, so gradients flow back to the image
(and on to the VQGAN latent).

Adapters:
- transformers semantic segmentation (SegFormer, UperNet, DPT, ... : ``logits`` (B,K,h,w)),
  K = ``segmenter.labels``, probabilities are a softmax over K;
- transformers universal segmentation (Mask2Former, MaskFormer: class + mask queries), same;
- CLIPSeg: open vocabulary. The caller passes the K label texts with every call
  (``labels=[...]``); each label gets its own sigmoid probability, as CLIPSeg was trained
  (one binary mask per prompt), so a guide of one class still has a gradient and pixels
  of other classes are pushed to 0, not to 1/K. Nothing about the labels is stored on the
  model: one loaded CLIPSeg can serve several guides with different class subsets.
"""

from __future__ import annotations

import json
import os
import threading

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoints import require_file
from .errors import TCIGInputError


def _read_json(path: str, what: str) -> dict:
    require_file(path, what)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except ValueError as exc:
        raise TCIGInputError(f"{what}: {path} is not valid JSON ({exc})") from None


def _native_size(pre: dict, default: int) -> tuple[int, int] | None:
    """(H, W) the preprocessor resizes to, or None when it keeps the input size."""
    if not pre.get("do_resize", True):
        return None
    size = pre.get("size", default)
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, dict):
        if "height" in size and "width" in size:
            return (int(size["height"]), int(size["width"]))
        if "shortest_edge" in size:
            return (int(size["shortest_edge"]),) * 2
    return (default, default)


class Segmenter(nn.Module):
    """Base: subclasses implement ``logits`` (B,K,h,w) for normalised, resized input."""

    labels: list[str]
    open_vocabulary = False

    def __init__(self, mean, std, native_size: tuple[int, int] | None, name: str):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.native_size = native_size
        self.name = name

    def vocabulary(self, layout_labels: list[str]) -> list[str]:
        """The class names this segmenter scores when it judges a layout with ``layout_labels``:
        its fixed vocabulary, or (open vocabulary) the layout's labels themselves."""
        return self.labels

    def query(self, labels: list[str]) -> list[str] | None:
        """What to pass as ``labels=`` to score ``labels`` (None for a fixed vocabulary)."""
        return None

    def logits(self, x: torch.Tensor, labels: list[str] | None = None) -> torch.Tensor:
        raise NotImplementedError

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores (B,K,H,W) -> probabilities: a softmax over the K classes."""
        return scores.softmax(1)

    def decide(self, probs: torch.Tensor) -> torch.Tensor:
        """Probabilities (B,K,H,W) -> class index map (B,H,W); K means "none of them"."""
        return probs.argmax(1)

    def forward(self, image: torch.Tensor, size: tuple[int, int] | None = None, labels: list[str] | None = None) -> torch.Tensor:
        """(B,3,H,W) 0..1 -> class probabilities (B,K,H',W') with (H',W') = ``size`` or (H,W)."""
        return self.probabilities(self.scores(image, size, labels))

    def scores(self, image: torch.Tensor, size: tuple[int, int] | None = None, labels: list[str] | None = None) -> torch.Tensor:
        """Unnormalised class scores (B,K,H',W'), upsampled to ``size`` (default: the input's)."""
        if image.dim() != 4 or image.shape[1] != 3:
            raise TCIGInputError(f"segmenter input: expected an image (B,3,H,W), got shape {tuple(image.shape)}")
        out_size = size or image.shape[-2:]
        x = image
        if self.native_size and tuple(x.shape[-2:]) != tuple(self.native_size):
            x = F.interpolate(x, size=self.native_size, mode="bilinear", align_corners=False, antialias=False)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        logits = self.logits(x, labels)
        return F.interpolate(logits.float(), size=out_size, mode="bilinear", align_corners=False)

    def predict(self, image: torch.Tensor, labels: list[str] | None = None) -> torch.Tensor:
        """(B,3,H,W) -> class index map (B,H,W), no gradients; see ``decide``."""
        with torch.no_grad():
            return self.decide(self.probabilities(self.scores(image, labels=labels)))


class _HFLabelledSegmenter(Segmenter):
    """A transformers model with a fixed vocabulary in ``config.id2label``."""

    default_size = 512

    def __init__(self, model: nn.Module, pre: dict, name: str):
        super().__init__(
            pre.get("image_mean", [0.485, 0.456, 0.406]),
            pre.get("image_std", [0.229, 0.224, 0.225]),
            _native_size(pre, self.default_size),
            name,
        )
        self.model = model.eval().requires_grad_(False)
        id2label = model.config.id2label
        self.labels = [str(id2label[i]) for i in range(len(id2label))]


class HFSemanticSegmenter(_HFLabelledSegmenter):
    """transformers models whose output has per-pixel ``logits`` (SegFormer, UperNet, DPT, BEiT...)."""

    def logits(self, x: torch.Tensor, labels: list[str] | None = None) -> torch.Tensor:
        return self.model(pixel_values=x).logits


class HFUniversalSegmenter(_HFLabelledSegmenter):
    """Mask2Former / MaskFormer: per-query class scores times per-query masks, summed per class."""

    default_size = 384

    def logits(self, x: torch.Tensor, labels: list[str] | None = None) -> torch.Tensor:
        out = self.model(pixel_values=x)
        cls = out.class_queries_logits.softmax(-1)[..., :-1]  # (B,Q,K) without the "no object" class
        masks = out.masks_queries_logits.sigmoid()  # (B,Q,h,w)
        semantic = torch.einsum("bqk,bqhw->bkhw", cls, masks)
        return semantic.clamp_min(1e-6).log()  # log-scores so softmax gives normalised shares


class CLIPSegSegmenter(Segmenter):
    """CLIPSeg: one mask per text label; the vision tower runs once per image, the decoder per label.

    Every call names its labels; a label's text embedding is computed once and cached
    per (text, device) (a pure function of the text, so sharing it between guides is safe).
    """

    open_vocabulary = True
    threshold = 0.5  # a pixel belongs to no label unless some label's probability reaches this

    def __init__(self, model: nn.Module, tokenizer, pre: dict, name: str):
        super().__init__(
            pre.get("image_mean", [0.485, 0.456, 0.406]), pre.get("image_std", [0.229, 0.224, 0.225]), _native_size(pre, 352), name
        )
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.labels: list[str] = []  # no fixed vocabulary
        self._text_cache: dict[tuple[str, str], torch.Tensor] = {}
        self._text_lock = threading.Lock()

    def vocabulary(self, layout_labels: list[str]) -> list[str]:
        return [str(label) for label in layout_labels]

    def query(self, labels: list[str]) -> list[str]:
        return [str(label) for label in labels]

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        return scores.sigmoid()  # CLIPSeg is trained with one sigmoid per prompt

    def decide(self, probs: torch.Tensor) -> torch.Tensor:
        """Argmax over the labels, or K ("none") where no label's sigmoid reaches ``threshold``."""
        best, idx = probs.max(1)
        return torch.where(best >= self.threshold, idx, torch.full_like(idx, probs.shape[1]))

    def text_embeddings(self, labels: list[str]) -> torch.Tensor:
        """(K, D) text embeddings of ``labels`` on the model's device (no gradient)."""
        if not labels:
            raise TCIGInputError(f"CLIPSeg segmenter {self.name!r}: no labels to score; it needs the layout's labels")
        device = self.mean.device
        missing = [lbl for lbl in dict.fromkeys(labels) if (lbl, str(device)) not in self._text_cache]
        if missing:
            tok = self.tokenizer(missing, padding=True, return_tensors="pt")
            with torch.no_grad(), torch.inference_mode(False):
                out = self.model.clip.get_text_features(
                    input_ids=tok["input_ids"].to(device), attention_mask=tok["attention_mask"].to(device)
                )
                out = getattr(out, "pooler_output", out).detach().clone()
            with self._text_lock:
                for lbl, emb in zip(missing, out):
                    self._text_cache[(lbl, str(device))] = emb
        return torch.stack([self._text_cache[(lbl, str(device))] for lbl in labels])

    def logits(self, x: torch.Tensor, labels: list[str] | None = None) -> torch.Tensor:
        if not labels:
            raise TCIGInputError(f"CLIPSeg segmenter {self.name!r}: no labels given; it needs the layout's labels")
        return self.logits_for(x, self.text_embeddings([str(label) for label in labels]).to(x.dtype))

    def logits_for(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Logits (B, K, h, w) of normalised images for K conditioning vectors (K, D)."""
        vis = self.model.clip.vision_model(pixel_values=x, output_hidden_states=True, interpolate_pos_encoding=True)
        k, b = cond.shape[0], x.shape[0]
        acts = [vis.hidden_states[i + 1].repeat_interleave(k, dim=0) for i in self.model.extract_layers]
        cond = cond.repeat(b, 1)  # (B*K, D), label index fastest, matching repeat_interleave
        logits = self.model.decoder(acts, cond).logits  # (B*K, h, w) or (h, w) when B*K == 1
        return logits.reshape(b, k, *logits.shape[-2:])


def describe_folder(folder: str) -> dict:
    """What a segmenter folder can label, from its config.json alone (no weights are read):
    ``{"labels": [...], "open_vocabulary": False}`` or ``{"labels": None, "open_vocabulary": True}``."""
    config = _read_json(os.path.join(folder, "config.json"), "segmenter config")
    if config.get("model_type") == "clipseg":
        return {"labels": None, "open_vocabulary": True}
    id2label = config.get("id2label") or {}
    try:
        labels = [str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k))]
    except (TypeError, ValueError):
        raise TCIGInputError(f"segmenter config: {folder}/config.json has an id2label that is not numbered") from None
    return {"labels": labels, "open_vocabulary": False}


def load_segmenter(folder: str, device: str | torch.device = "cpu") -> Segmenter:
    """Load a transformers ``save_pretrained`` folder as a Segmenter (frozen, eval mode)."""
    if not os.path.isdir(folder):
        raise TCIGInputError(f"segmenter: folder not found: {folder} (a transformers save_pretrained folder)")
    config = _read_json(os.path.join(folder, "config.json"), "segmenter config")
    pre = {}
    # hub folders carry preprocessor_config.json; transformers 5's processors save
    # processor_config.json with the image processor nested inside
    for pre_name in ("preprocessor_config.json", "processor_config.json"):
        pre_path = os.path.join(folder, pre_name)
        if os.path.isfile(pre_path):
            pre = _read_json(pre_path, "segmenter preprocessor")
            pre = pre.get("image_processor", pre)
            break
    model_type = config.get("model_type", "")
    archs = config.get("architectures") or []
    name = os.path.basename(os.path.normpath(folder))
    import transformers

    try:
        if model_type == "clipseg":
            model = transformers.CLIPSegForImageSegmentation.from_pretrained(folder, local_files_only=True)
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
            seg = CLIPSegSegmenter(model, tokenizer, pre, name)
        elif model_type == "oneformer":
            raise TCIGInputError(
                f"segmenter: {folder} is OneFormer, which needs task text inputs; use a SegFormer, UperNet or Mask2Former folder"
            )
        elif any(a.endswith("ForUniversalSegmentation") or a == "MaskFormerForInstanceSegmentation" for a in archs):
            model = transformers.AutoModelForUniversalSegmentation.from_pretrained(folder, local_files_only=True)
            seg = HFUniversalSegmenter(model, pre, name)
        elif any(a.endswith("ForSemanticSegmentation") for a in archs) or not archs:
            model = transformers.AutoModelForSemanticSegmentation.from_pretrained(folder, local_files_only=True)
            seg = HFSemanticSegmenter(model, pre, name)
        else:
            raise TCIGInputError(
                f"segmenter: {folder} holds a {archs[0]} ({model_type}), not a segmentation model; "
                "use a semantic segmentation model (SegFormer, UperNet, Mask2Former) or CLIPSeg"
            )
    except TCIGInputError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TCIGInputError(
            f"segmenter: cannot load {folder} ({msg}); it should be a complete transformers save_pretrained folder"
        ) from None
    return seg.to(device)
