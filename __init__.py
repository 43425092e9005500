"""TCIG node pack for ComfyUI (V3 extension). Importing this package changes nothing global;
ComfyUI calls ``comfy_entrypoint`` to register the model folders and the nodes."""


async def comfy_entrypoint():
    from .nodes.extension import make_extension

    return await make_extension()
