"""Each loader reads its real format; round trips give the same numbers."""

import copy
import os

import safetensors.torch
import torch
import yaml

from tcig_ops.clip_guide import load_open_clip
from tcig_ops.segmenters import CLIPSegSegmenter, HFSemanticSegmenter, load_segmenter
from tcig_ops.tiny import VQGAN_CONFIG
from tcig_ops.vqgan import VQGAN, load_vqgan


def test_vqgan_ckpt_and_safetensors_give_same_decode(tiny, tmp_path):
    vq = load_vqgan(tiny["vqgan"])
    assert vq.factor == 2 and vq.codebook.shape == (1024, 16)
    sd = torch.load(tiny["vqgan"], weights_only=True)["state_dict"]
    st = tmp_path / "tiny.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    yaml_path = os.path.splitext(tiny["vqgan"])[0] + ".yaml"
    vq2 = load_vqgan(str(st), yaml_path)
    z = vq.random_latent(32, 32, torch.Generator().manual_seed(0))
    a, b = vq.decode(vq.quantize_st(z)), vq2.decode(vq2.quantize_st(z))
    assert a.shape == (1, 3, 32, 32) and torch.equal(a, b)
    assert 0 <= a.min() and a.max() <= 1


def test_vqgan_encode_decode_roundtrip_reconstructs(tiny):
    from tcig_ops import world

    vq = load_vqgan(tiny["vqgan"])
    x, _ = world.sample(4, 64, torch.Generator().manual_seed(1))
    rec = vq.decode(vq.encode(x))
    assert rec.shape == x.shape
    # trained tiny model: much closer than a flat grey image would be
    assert (rec - x).abs().mean() < 0.6 * (x - 0.5).abs().mean()


def test_gumbel_variant_loads_and_decodes(tmp_path):
    cfg = copy.deepcopy(VQGAN_CONFIG)
    cfg["model"]["target"] = "taming.models.vqgan.GumbelVQ"
    cfg["model"]["params"]["embed_dim"] = 32  # gumbel f8 releases use embed_dim == z_channels
    cfg["model"]["params"]["kl_weight"] = 1e-8
    params = dict(cfg["model"]["params"], gumbel=True)
    torch.manual_seed(0)
    model = VQGAN(params)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "g.ckpt")
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(cfg))
    vq = load_vqgan(str(tmp_path / "g.ckpt"))
    assert vq.gumbel and vq.codebook.shape == (1024, 32)
    img = torch.rand(1, 3, 32, 32)
    z = vq.encode(img)
    assert z.shape == (1, 32, 16, 16)
    # encode picks real codes
    flat = z.permute(0, 2, 3, 1).reshape(-1, 32)
    assert (flat[:, None, :] == vq.codebook[None]).all(-1).any(1).all()
    assert vq.decode(z).shape == (1, 3, 32, 32)


def test_straight_through_quantize_passes_gradient(tiny):
    vq = load_vqgan(tiny["vqgan"])
    z = vq.random_latent(16, 16, torch.Generator().manual_seed(0)) + 0.3
    z.requires_grad_(True)
    zq = vq.quantize_st(z)
    # forward values are codebook vectors
    d = (zq.detach().permute(0, 2, 3, 1).reshape(-1, 16)[:, None] - vq.codebook[None]).abs().amax(-1).min(1).values
    assert d.max() < 1e-5
    zq.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_open_clip_loads_from_config_and_weights(tiny):
    clip = load_open_clip(tiny["clip"])
    t = clip.encode_text(["a lake", "a road"])
    assert t.shape == (2, 32)
    assert torch.allclose(t.norm(dim=-1), torch.ones(2), atol=1e-5)
    img = torch.rand(3, 3, clip.image_size, clip.image_size, requires_grad=True)
    e = clip.encode_image(img)
    assert e.shape == (3, 32)
    e.sum().backward()
    assert img.grad.abs().sum() > 0


def test_segformer_folder_loads_labels_and_is_differentiable(tiny):
    seg = load_segmenter(tiny["segmenters"][0])
    assert isinstance(seg, HFSemanticSegmenter)
    assert seg.labels == tiny["labels"]
    img = torch.rand(1, 3, 48, 40, requires_grad=True)
    p = seg(img)
    assert p.shape == (1, 8, 48, 40)
    assert torch.allclose(p.sum(1), torch.ones(1, 48, 40), atol=1e-5)
    p[:, 0].mean().backward()
    assert img.grad.abs().sum() > 0


def test_clipseg_folder_loads_any_labels_and_is_differentiable(tiny):
    seg = load_segmenter(tiny["segmenters"][2])
    assert isinstance(seg, CLIPSegSegmenter) and seg.open_vocabulary
    labels = ["a red house", "blue water", "sky"]
    img = torch.rand(2, 3, 40, 40, requires_grad=True)
    p = seg(img, labels=labels)
    assert p.shape == (2, 3, 40, 40)
    assert p.min() >= 0 and p.max() <= 1  # one sigmoid per label, not a softmax over them
    assert seg.labels == []  # nothing about the labels is stored on the shared model
    assert seg(img, labels=["sky"]).shape == (2, 1, 40, 40)
    p[:, 1].mean().backward()
    assert img.grad.abs().sum() > 0
