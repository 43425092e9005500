"""The lean decoder and CLIP forwards give the models' own results; stage 1 agrees on both paths."""

import open_clip
import pytest
import torch

from conftest import region_layout
from tcig_ops import fast_clip, fast_decoder
from tcig_ops.clip_guide import ClipGuide, ClipModel, _mean_std
from tcig_ops.prompts import parse_prompts
from tcig_ops.stage1 import Guide, Stage1Settings, run_stage1
from tcig_ops.vqgan import VQGAN

TEXT = {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}


def _clip(vision: dict, **kw) -> ClipModel:
    torch.manual_seed(0)
    model = open_clip.model.CLIP(embed_dim=24, vision_cfg=vision, text_cfg=TEXT, **kw)
    return ClipModel(model, open_clip.tokenizer.SimpleTokenizer(context_length=16), *_mean_std(model))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


VIT = {"image_size": 32, "layers": 3, "width": 64, "patch_size": 8, "head_width": 16}


@pytest.mark.parametrize(
    "vision, kw",
    [
        (VIT, {}),
        (dict(VIT, ls_init_value=0.5), {"quick_gelu": True}),  # LayerScale + OpenAI's QuickGELU
        (dict(VIT, image_size=48, patch_size=16, no_ln_pre=True), {}),
    ],
)
def test_fast_clip_tower_matches_open_clip_forward_and_gradient(vision, kw):
    clip = _clip(vision, **kw)
    assert fast_clip.supports(clip.model.visual)
    s = clip.image_size
    img = torch.rand(5, 3, s, s, requires_grad=True)
    fast, plain = clip.encode_image(img, fast=True), clip.encode_image(img, fast=False)
    assert fast.shape == plain.shape == (5, 24)
    assert (fast - plain).abs().max() < 1e-5
    w = torch.randn(5, 24)
    (g_fast,) = torch.autograd.grad((fast * w).sum(), img)
    (g_plain,) = torch.autograd.grad((plain * w).sum(), img)
    assert _rel(g_fast, g_plain) < 1e-4


@pytest.mark.parametrize("vision", [dict(VIT, pool_type="avg"), dict(VIT, attentional_pool=True, attn_pooler_queries=4)])
def test_fast_clip_declines_towers_it_does_not_know(vision):
    clip = _clip(vision)
    assert not fast_clip.supports(clip.model.visual)
    img = torch.rand(2, 3, 32, 32)
    assert torch.equal(clip.encode_image(img, fast=True), clip.encode_image(img, fast=False))


# with an attention block and a channel change (nin_shortcut), as the ImageNet VQGANs
DDCONFIG_ATTN = {
    "double_z": False,
    "z_channels": 16,
    "resolution": 32,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 32,
    "ch_mult": [1, 2],
    "num_res_blocks": 1,
    "attn_resolutions": [16],
    "dropout": 0.0,
}


@pytest.mark.parametrize(
    "ddconfig",
    [
        DDCONFIG_ATTN,
        {
            "double_z": False,
            "z_channels": 8,
            "resolution": 32,
            "in_channels": 3,
            "out_ch": 3,
            "ch": 32,
            "ch_mult": [1, 1, 2],
            "num_res_blocks": 2,
            "attn_resolutions": [],
            "dropout": 0.0,
        },
    ],
)
def test_fast_decoder_matches_taming_forward_and_gradient(ddconfig):
    torch.manual_seed(0)
    vq = VQGAN({"embed_dim": ddconfig["z_channels"], "n_embed": 64, "gumbel": False, "ddconfig": ddconfig}).eval()
    z = torch.randn(1, ddconfig["z_channels"], 8, 8, requires_grad=True)
    fast, plain = vq.decode(z, fast=True), vq.decode(z, fast=False)
    assert fast.shape == plain.shape == (1, 3, 8 * vq.factor, 8 * vq.factor)
    assert (fast - plain).abs().max() < 1e-5
    w = torch.randn_like(fast)
    (g_fast,) = torch.autograd.grad((fast * w).sum(), z)
    (g_plain,) = torch.autograd.grad((plain * w).sum(), z)
    assert _rel(g_fast, g_plain) < 1e-4


@pytest.mark.parametrize("ddconfig", [DDCONFIG_ATTN, dict(DDCONFIG_ATTN, ch_mult=[1, 1], attn_resolutions=[])])
def test_fast_encoder_matches_taming_forward(ddconfig):
    """``vqgan.encode`` takes the fused path (swish, attention on contiguous q/k/v) for taming's
    encoder, its mid attention included, and gives taming's own result up to float rounding."""
    torch.manual_seed(0)
    vq = VQGAN({"embed_dim": ddconfig["z_channels"], "n_embed": 64, "gumbel": False, "ddconfig": ddconfig}).eval()
    assert fast_decoder.supports(vq.encoder) and not fast_decoder.supports(vq.encoder.train())
    vq.eval()
    x = torch.rand(3, 3, 48, 48) * 2 - 1  # 24x24 = 576 positions at the mid attention of a factor-2 model
    fast, plain = fast_decoder.encode(vq.encoder, x), vq.encoder(x)
    assert fast.shape == plain.shape and _rel(fast, plain) < 1e-5
    assert torch.equal(vq.encode((x + 1) / 2), vq.quantize_st(vq.quant_conv(fast)))


def _bf16_errors(forward, x: torch.Tensor) -> dict[str, float]:
    """Relative error of output and input gradient under CPU bf16 autocast, fast and the model's own
    path, each against the model's own fp32 result."""
    out = forward(x, fast=False)
    w = torch.randn_like(out)
    (ref_g,) = torch.autograd.grad((out * w).sum(), x)
    errs = {}
    for fast in (True, False):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = forward(x, fast=fast)
        (g,) = torch.autograd.grad((y.float() * w).sum(), x)
        errs[fast] = (_rel(y.float(), out.detach()), _rel(g, ref_g))
    return errs


def test_bf16_fast_paths_are_as_accurate_as_the_models_own():
    """Under CPU bf16 autocast the fast paths run CLIP attention as matmuls and the decoder's
    GroupNorm in bf16: their output and gradient stay as close to fp32 as the models' own bf16 path."""
    torch.manual_seed(0)
    clip = _clip(VIT)
    img = torch.rand(6, 3, 32, 32, requires_grad=True)
    vq = VQGAN({"embed_dim": 16, "n_embed": 64, "gumbel": False, "ddconfig": DDCONFIG_ATTN}).eval()
    z = torch.randn(1, 16, 8, 8, requires_grad=True)
    for name, errs in (("clip", _bf16_errors(clip.encode_image, img)), ("decoder", _bf16_errors(vq.decode, z))):
        (fast_out, fast_g), (plain_out, plain_g) = errs[True], errs[False]
        assert fast_out < 0.05 and fast_g < 0.1, (name, errs)  # bf16 keeps about 3 significant digits
        assert fast_out <= 2 * plain_out + 2e-3 and fast_g <= 2 * plain_g + 2e-3, (name, errs)


def test_fast_decoder_declines_other_modules():
    assert not fast_decoder.supports(torch.nn.Conv2d(3, 3, 1))


def test_stage1_fast_and_plain_paths_agree(models):
    """Same seed, both paths: the trajectories differ only by float rounding."""
    layout = region_layout("lake")
    results = {}
    for fast in (True, False):
        guide = ClipGuide(models["clip"], parse_prompts("a mountain lake"), cutn=8)
        settings = Stage1Settings(width=64, height=64, iterations=40, seed=3, fast=fast)
        results[fast] = run_stage1(models["vqgan"], layout, [Guide(models["seg_a"])], settings, clip_guide=guide)
    fast, plain = results[True], results[False]
    assert fast.history[0]["loss"] == pytest.approx(plain.history[0]["loss"], rel=1e-5)
    losses = torch.tensor([[h["loss"] for h in r.history] for r in (fast, plain)])
    assert torch.allclose(losses[0], losses[1], rtol=1e-2), losses
    assert (fast.image - plain.image).abs().mean() < 1e-2
    assert abs(fast.miou - plain.miou) < 0.02
