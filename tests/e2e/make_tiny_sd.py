"""Write a random-weight SD1.5-family checkpoint that ComfyUI's CheckpointLoaderSimple detects.

Run with ComfyUI importable (the e2e tests put COMFYUI_PATH on this subprocess's path):
    python make_tiny_sd.py OUT.safetensors

The UNet keeps what SD1.5 detection checks (model_channels 320, context 768, 8 heads)
but has one level, one res block and one transformer block; the VAE and the CLIP-L text
encoder have their real shapes (ComfyUI builds them from fixed configs). About 430 MB in
fp16; generated at test time and cached, never committed.
"""

import sys

import torch


def _init(module: torch.nn.Module, seed: int) -> dict:
    # ComfyUI's ops skip weight init; give every tensor small, finite, seeded values
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in module.state_dict().items():
        if v.is_floating_point():
            if k.endswith("bias"):
                v = torch.zeros_like(v)
            elif "norm" in k and k.endswith("weight"):
                v = torch.ones_like(v)
            else:
                fan_in = max(1, v[0].numel()) if v.dim() > 1 else 1
                v = torch.randn(v.shape, generator=g) * (0.5 / fan_in**0.5 if v.dim() > 1 else 0.02)
        sd[k] = v.half() if v.is_floating_point() else v
    return sd


def main(out: str) -> None:
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before model_management is imported: no CUDA probing
    import comfy.ops
    import safetensors.torch
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = UNetModel(
        image_size=32,
        in_channels=4,
        out_channels=4,
        model_channels=320,
        num_res_blocks=[1],
        channel_mult=(1,),
        num_heads=8,
        use_spatial_transformer=True,
        transformer_depth=[1],
        transformer_depth_output=[1, 1],
        transformer_depth_middle=1,
        context_dim=768,
        use_linear_in_transformer=False,
        operations=comfy.ops.disable_weight_init,
    )
    vae = AutoencoderKL(
        ddconfig={
            "double_z": True,
            "z_channels": 4,
            "resolution": 256,
            "in_channels": 3,
            "out_ch": 3,
            "ch": 128,
            "ch_mult": [1, 2, 4, 4],
            "num_res_blocks": 2,
            "attn_resolutions": [],
            "dropout": 0.0,
        },
        embed_dim=4,
    )
    torch.manual_seed(0)
    clip = CLIPTextModel(
        CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, projection_dim=768)
    )
    sd = {}
    sd.update({"model.diffusion_model." + k: v for k, v in _init(unet, 1).items()})
    sd.update({"first_stage_model." + k: v for k, v in _init(vae, 2).items()})
    sd.update({"cond_stage_model.transformer." + k: v.half() if v.is_floating_point() else v for k, v in clip.state_dict().items()})
    safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, out)


if __name__ == "__main__":
    main(sys.argv[1])
