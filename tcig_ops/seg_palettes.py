"""Layouts as the colour maps that segmentation ControlNets take.

A segmentation ControlNet (``control_v11p_sd15_seg``, the SDXL seg ControlNets) was trained on
class maps drawn in one fixed palette: ADE20K's 150 SceneParse classes in the colours of the ADE20K
annotators. The values below are that palette, class by class in ADE20K's order, as published by
MMSegmentation (``mmseg/datasets/ade.py``, ``ADE20KDataset.METAINFO["palette"]``; ControlNet's
annotator draws its seg maps with the same table). Class names are MMSegmentation's; the extra
names after a comma are synonyms (from ADE20K's objectInfo150 names and everyday words) that the
layout label matcher accepts, as it does for a segmenter's vocabulary. Note that ADE20K itself gives
"road" and "skyscraper" the same colour.
"""

from __future__ import annotations

import torch

from .errors import TCIGInputError
from .layout import Layout, _lookup, _normalise, close_matches

# colour, then the class name and its synonyms (ADE20K order: index 0 is "wall")
_ADE20K = """
    #787878 wall
    #b47878 building, edifice
    #06e6e6 sky
    #503232 floor, flooring
    #04c803 tree
    #787850 ceiling
    #8c8c8c road, route
    #cc05ff bed
    #e6e6e6 windowpane, window
    #04fa07 grass
    #e005ff cabinet
    #ebff07 sidewalk, pavement
    #96053d person, people, human
    #787846 earth, ground, dirt
    #08ff33 door
    #ff0652 table
    #8fff8c mountain, mount
    #ccff04 plant, flora, vegetation
    #ff3307 curtain, drape, drapery
    #cc4603 chair
    #0066c8 car, auto, automobile
    #3de6fa water
    #ff0633 painting, picture
    #0b66ff sofa, couch
    #ff0747 shelf
    #ff09e0 house
    #0907e6 sea
    #dcdcdc mirror
    #ff095c rug, carpet
    #7009ff field
    #08ffd6 armchair
    #07ffe0 seat
    #ffb806 fence, fencing
    #0aff47 desk
    #ff290a rock, stone
    #07ffff wardrobe, closet
    #e0ff08 lamp
    #6608ff bathtub, tub, bath
    #ff3d06 railing, rail
    #ffc207 cushion
    #ff7a08 base, pedestal
    #00ff14 box
    #ff0829 column, pillar
    #ff0599 signboard, sign
    #0633ff chest of drawers, bureau, dresser
    #eb0cff counter
    #a09614 sand
    #00a3ff sink
    #8c8c8c skyscraper
    #fa0a0f fireplace, hearth
    #14ff00 refrigerator, fridge, icebox
    #1fff00 grandstand
    #ff1f00 path
    #ffe000 stairs, steps
    #99ff00 runway
    #0000ff case, showcase, display case
    #ff4700 pool table, billiard table
    #00ebff pillow
    #00adff screen door
    #1f00ff stairway, staircase
    #0bc8c8 river
    #ff5200 bridge, span
    #00fff5 bookcase
    #003dff blind
    #00ff70 coffee table, cocktail table
    #00ff85 toilet, commode
    #ff0000 flower
    #ffa300 book
    #ff6600 hill
    #c2ff00 bench
    #008fff countertop
    #33ff00 stove, cooker, kitchen range
    #0052ff palm, palm tree
    #00ff29 kitchen island
    #00ffad computer
    #0a00ff swivel chair
    #adff00 boat
    #00ff99 bar
    #ff5c00 arcade machine
    #ff00ff hovel, hut, shack
    #ff00f5 bus, coach
    #ff0066 towel
    #ffad00 light, light source
    #ff0014 truck, lorry
    #ffb8b8 tower
    #001fff chandelier, pendant lamp
    #00ff3d awning, sunshade
    #0047ff streetlight, street lamp
    #ff00cc booth, kiosk, stall
    #00ffc2 television receiver, television, tv
    #00ff52 airplane, aeroplane, plane
    #000aff dirt track
    #0070ff apparel, clothes, clothing
    #3300ff pole
    #00c2ff land, soil
    #007aff bannister, banister, handrail
    #00ffa3 escalator
    #ff9900 ottoman, pouf
    #00ff0a bottle
    #ff7000 buffet, sideboard
    #8fff00 poster, placard
    #5200ff stage
    #a3ff00 van
    #ffeb00 ship
    #08b8aa fountain
    #8500ff conveyer belt
    #00ff5c canopy
    #b800ff washer, washing machine
    #ff001f plaything, toy
    #00b8ff swimming pool
    #00d6ff stool
    #ff0070 barrel, cask
    #5cff00 basket
    #00e0ff waterfall, falls
    #70e0ff tent
    #46b8a0 bag
    #a300ff minibike, motorbike
    #9900ff cradle
    #47ff00 oven
    #ff00a3 ball
    #ffcc00 food
    #ff008f step, stair
    #00ffeb tank
    #85ff00 trade name, brand
    #ff00eb microwave
    #f500ff pot, flowerpot
    #ff007a animal, creature
    #fff500 bicycle, bike
    #0abed4 lake
    #d6ff00 dishwasher
    #00ccff screen, projection screen
    #1400ff blanket, cover
    #ffff00 sculpture
    #0099ff hood, exhaust hood
    #0029ff sconce
    #00ffcc vase
    #2900ff traffic light, traffic signal, stoplight
    #29ff00 tray
    #ad00ff ashcan, trash can, garbage can, dustbin
    #00f5ff fan
    #4700ff pier, wharf, dock
    #7a00ff crt screen
    #00ffb8 plate
    #005cff monitor, computer monitor
    #b8ff00 bulletin board, notice board
    #0085ff shower
    #ffd600 radiator
    #19c2c2 glass, drinking glass
    #66ff00 clock
    #5c00ff flag
"""


def _parse(table: str) -> tuple[list[str], list[tuple[int, int, int]]]:
    names, colours = [], []
    for line in table.strip().splitlines():
        hexcol, entry = line.strip().split(" ", 1)
        names.append(entry)
        colours.append(tuple(int(hexcol[i : i + 2], 16) for i in (1, 3, 5)))
    return names, colours


PALETTES = {"ADE20K (150 classes)": _parse(_ADE20K)}
UNKNOWN_MODES = ("error", "ignore")


def palette_colours(labels: list[str], palette: str = "ADE20K (150 classes)", unknown: str = "error") -> list[tuple[int, int, int] | None]:
    """The palette colour (0-255 RGB) of each label, matched to the palette's class names as a
    segmenter's vocabulary is (case, ``_``/``-`` and synonyms ignored). An unknown label is an error
    that lists close matches, or None (painted black) with ``unknown="ignore"``."""
    if palette not in PALETTES:
        raise TCIGInputError(f"palette: {palette!r} is not known; use one of {list(PALETTES)}")
    if unknown not in UNKNOWN_MODES:
        raise TCIGInputError(f"unknown: {unknown!r}; use one of {list(UNKNOWN_MODES)}")
    names, colours = PALETTES[palette]
    lookup = _lookup(names)
    out = []
    for label in labels:
        k = lookup.get(_normalise(label))
        if k is None and unknown == "error":
            close = close_matches(label, names, lookup)
            hint = f" (close: {close})" if close else ""
            raise TCIGInputError(
                f"layout label {label!r} is not a class of the {palette} palette{hint}; rename the label to one of its classes, "
                "or set unknown to 'ignore' to paint it black"
            )
        out.append(None if k is None else colours[k])
    return out


def seg_map(layout: Layout, palette: str = "ADE20K (150 classes)", unknown: str = "error") -> tuple[torch.Tensor, list[str]]:
    """(1, 3, H, W) 0..1 image of the layout in the palette, and notes. Ignored pixels, and labels
    left unknown under ``unknown="ignore"``, are black (0, 0, 0: no class for the ControlNet)."""
    colours = palette_colours(layout.labels, palette, unknown)
    lut = torch.zeros(len(colours) + 1, 3, dtype=torch.uint8)  # the last row: ignored pixels
    for k, c in enumerate(colours):
        if c is not None:
            lut[k] = torch.tensor(c, dtype=torch.uint8)
    idx = layout.index_map().cpu().long()
    image = lut[torch.where(idx < 0, len(colours), idx)].permute(2, 0, 1)[None].float() / 255
    notes = [f"label {label!r} is not a {palette} class; painted black" for label, c in zip(layout.labels, colours) if c is None]
    return image, notes
