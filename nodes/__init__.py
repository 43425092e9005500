"""ComfyUI wrappers around tcig_ops. Only ``extension.py`` and the node files import ComfyUI."""
