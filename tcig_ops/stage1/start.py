"""The starting latent: an init image (encoded at full size), the layout start (a smooth colour
field the guides already read as the layout, VQGAN-encoded), or random codes."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..layout import Layout
from ..vqgan import VQGAN
from .guides import Guide, balanced_pixel_weights, bind_guides, segmentation_loss
from .schedule import latent_at
from .settings import Stage1Settings, StepInfo


def start_latent(
    vqgan: VQGAN,
    full_layout: Layout,
    guides: list[Guide],
    settings: Stage1Settings,
    init_image: torch.Tensor | None,
    first_size: tuple[int, int],
    generator: torch.Generator,
    callback: Callable[[StepInfo], None] | None,
    total: int,
    notes: list[str],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(latent at the first level's size (w0, h0), the init image's full-size latent or None)."""
    device = vqgan.codebook.device
    (w0, h0), H, W = first_size, settings.height, settings.width
    if init_image is not None:  # encoded at full size: its detail is kept through the coarse levels
        init = init_image.to(device).float()
        if tuple(init.shape[-2:]) != (H, W):
            init = F.interpolate(init, size=(H, W), mode="bilinear", align_corners=False)
        with torch.no_grad():
            z_init = vqgan.encode(init).detach().clone()
        return latent_at(z_init, h0 // vqgan.factor, w0 // vqgan.factor), z_init
    if settings.layout_start_steps <= 0:
        return vqgan.random_latent(h0, w0, generator), None
    start_steps = settings.layout_start_steps
    counter = iter(range(1, start_steps + 1))

    def shown(image):  # the colour field as the preview; the callback may cancel
        if callback is not None:
            k = next(counter)
            callback(StepInfo(0, total, float("nan"), None, lambda: image.cpu(), "start", k, start_steps))

    lay0 = full_layout.downsampled(h0, w0).to(device)
    start = layout_start_image(
        lay0, guides, start_steps, settings.balance_classes, on_step=shown, generator=generator, regions=settings.layout_start == "regions"
    )
    with torch.no_grad():
        z = vqgan.encode(start).detach().clone()
    notes.append(f"started from the layout ({start_steps} colour-field steps)")
    return z, None


def layout_start_image(
    layout: Layout,
    guides: list[Guide],
    steps: int,
    balance_classes: bool = True,
    cell: int = 4,
    on_step: Callable[[torch.Tensor], None] | None = None,
    generator: torch.Generator | None = None,
    regions: bool = False,
) -> torch.Tensor:
    """A smooth image (1, 3, H, W) in 0..1 that the guides' segmenters read as ``layout``.

    A colour field of one RGB value per ``cell`` x ``cell`` pixels, bicubic-upsampled, starts at
    mid grey and is optimised with Adam against the segmentation terms only, as binary
    cross-entropy: from grey, where every class is about equally likely, the squared error of a
    softmax barely moves. Smooth, so it holds colours and no pixel-level pattern. ``generator``
    jitters the grey start (+-0.1) so that seeds find different colourings; None: plain grey.
    A step whose field turns non-finite is dropped (the last finite field is kept).
    ``regions``: one such field per layout label, each shown only inside its region (the layout's
    own shares at soft pixels): the start then has the layout's shapes by construction, and the
    guides choose only each region's colours, so no shape can be drawn that the layout lacks.
    ``on_step(image)`` runs after each step (progress, cancelling)."""
    bound = [b for b in bind_guides(guides, layout) if b.guide.weight > 0]
    H, W = layout.size
    if not bound:
        steps = 0  # no guide pulls: nothing to optimise
    valid = ~layout.ignore
    weights = [balanced_pixel_weights(b.targets, valid) if balance_classes else None for b in bound]
    shape = (len(layout.labels) if regions else 1, 3, max(1, H // cell), max(1, W // cell))
    field_ = torch.full(shape, 0.5, device=layout.device)
    if generator is not None:
        field_ += 0.2 * (torch.rand(shape, generator=generator, device=field_.device) - 0.5)
    field_.requires_grad_(True)
    good = field_.detach().clone()  # the last finite field (kept on the device: no sync per step)
    opt = torch.optim.Adam([field_], lr=0.05)

    if regions:
        share = layout.targets.float()  # (K, H, W); zero where ignored: those pixels take every field's mean
        share = torch.where(share.sum(0, keepdim=True) > 0, share / share.sum(0, keepdim=True).clamp_min(1e-6), 1.0 / len(share))

    def smooth(f: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(f, size=(H, W), mode="bicubic", align_corners=False).clamp(0, 1)
        return (up * share[:, None]).sum(0, keepdim=True) if regions else up

    for _ in range(steps):
        image = smooth(field_)
        loss = sum(
            b.guide.weight * segmentation_loss(b.probabilities(image).float()[:, b.vocab_idx], b.targets, valid, w, kind="bce")
            for b, w in zip(bound, weights)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            field_.clamp_(0, 1)
            good = torch.where(torch.isfinite(field_).all(), field_, good)
        if on_step is not None:
            on_step(smooth(good))
    return smooth(good)
