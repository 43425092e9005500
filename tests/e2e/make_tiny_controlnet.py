"""Write a random-weight ControlNet for the tiny SD checkpoint (make_tiny_sd.py), in the original
ControlNet format (``control_model.*`` keys) that ComfyUI's ControlNetLoader detects.

Run with ComfyUI importable (the e2e tests put COMFYUI_PATH on this subprocess's path):
    python make_tiny_controlnet.py OUT.safetensors

Its UNet half has the tiny UNet's shapes (one level, 320 channels, context 768); the hint encoder
takes a 3-channel image at 8x the latent size, as a seg ControlNet does. The zero convolutions are
not zero (a real ControlNet's are trained away from zero), so the hint changes the result.
Generated at test time and cached, never committed.
"""

import sys

from make_tiny_sd import _init


def main(out: str) -> None:
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # before model_management is imported: no CUDA probing
    import comfy.ops
    import safetensors.torch
    from comfy.cldm.cldm import ControlNet

    net = ControlNet(
        image_size=32,
        in_channels=4,
        model_channels=320,
        hint_channels=3,
        num_res_blocks=[1],
        channel_mult=(1,),
        num_heads=8,
        use_spatial_transformer=True,
        transformer_depth=[1],
        transformer_depth_middle=1,
        context_dim=768,
        use_linear_in_transformer=False,
        operations=comfy.ops.disable_weight_init,
    )
    sd = {"control_model." + k: v.contiguous() for k, v in _init(net, 3).items()}
    safetensors.torch.save_file(sd, out)


if __name__ == "__main__":
    main(sys.argv[1])
