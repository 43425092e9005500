"""Custom socket types of the pack (the wire names are stable: saved workflows use them)."""

from comfy_api.latest import io

VQGAN = io.Custom("TCIG_VQGAN")
CLIP = io.Custom("TCIG_CLIP")
SEGMENTER = io.Custom("TCIG_SEGMENTER")
GUIDES = io.Custom("TCIG_GUIDES")
LAYOUT = io.Custom("TCIG_LAYOUT")
PAINTING = io.Custom("TCIG_PAINTING")  # a widget value (the painted layout), drawn by web/tcig_painter.js
