"""tcig_ops: the pure-PyTorch core of the TCIG node pack (no ComfyUI imports).

Two-stage controlled image generation (TCIG, arXiv 2403.01212): stage 1 optimises a
VQGAN latent for a prompt (CLIP) and a layout (segmenters); stage 2 refines the
result with any diffusion model as img2img (done by ComfyUI's core nodes).
"""

from .errors import TCIGInputError

__all__ = ["TCIGInputError"]
