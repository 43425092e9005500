"""TCIG node pack for ComfyUI (V3 extension). Importing this package changes nothing global;
ComfyUI calls ``comfy_entrypoint`` to register the model folders and the nodes, and serves
``web/`` (the Layout Painter widget) as this pack's frontend extension."""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes.extension import make_extension

    return await make_extension()
