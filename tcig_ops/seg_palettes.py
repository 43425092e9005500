"""Layouts as the colour maps that segmentation ControlNets take.

A segmentation ControlNet (``control_v11p_sd15_seg``, the SDXL seg ControlNets) was trained on
class maps drawn in one fixed palette. The main one is ADE20K's 150 SceneParse classes in the
colours of the ADE20K annotators: the values below are that palette, class by class in ADE20K's
order, as published by MMSegmentation (``mmseg/datasets/ade.py``,
``ADE20KDataset.METAINFO["palette"]``; ControlNet's annotator draws its seg maps with the same
table). ControlNet 1.1's seg model was also shown COCO maps, drawn in COCO panoptic's palette
(``COCO panoptic (133 classes)``, sourced below). Class names are the sources'; the extra names after
a comma are synonyms (ADE20K's objectInfo150 names and everyday words) that the layout label matcher
accepts, as it does for a segmenter's vocabulary. Note that ADE20K itself gives "road" and
"skyscraper" the same colour.
"""

from __future__ import annotations

import torch

from .errors import TCIGInputError
from .layout import Layout, close_matches, lookup_labels

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


# colour, then the class name and its synonyms (COCO panoptic order: 80 things, then 53 stuff classes).
# The values are COCO's panoptic categories as detectron2 lists them (``detectron2/data/datasets/
# builtin_meta.py``, ``COCO_CATEGORIES``, taken there from cocodataset/panopticapi's
# ``panoptic_coco_categories.json``). ControlNet 1.1's COCO seg annotator (OneFormer trained on COCO
# panoptic) draws its maps with exactly these ``stuff_colors``, one flat colour per class. It is
# COCO-Stuff's vocabulary with some stuff classes merged (the ``-merged`` names), not the 171-class
# COCO-Stuff table of MMSegmentation, whose colours are not one per class.
_COCO_PANOPTIC = """
    #dc143c person, people, human
    #770b20 bicycle
    #00008e car
    #0000e6 motorcycle, motorbike
    #6a00e4 airplane, aeroplane, plane
    #003c64 bus
    #005064 train
    #000046 truck
    #0000c0 boat
    #faaa1e traffic light
    #64aa1e fire hydrant
    #dcdc00 stop sign
    #af74af parking meter
    #fa001e bench
    #a52a2a bird
    #ff4dff cat
    #00e2fc dog
    #b6b6ff horse
    #005200 sheep
    #78a69d cow
    #6e4c00 elephant
    #ae39ff bear
    #c76400 zebra
    #480076 giraffe
    #ffb3f0 backpack
    #007d5c umbrella
    #d10097 handbag
    #bcd0b6 tie
    #00dcb0 suitcase
    #ff63a4 frisbee
    #5c0049 skis
    #8581ff snowboard
    #4eb4ff sports ball, ball
    #00e400 kite
    #aefff3 baseball bat
    #2d59ff baseball glove
    #868667 skateboard
    #9194ae surfboard
    #ffd0ba tennis racket
    #c5e2ff bottle
    #ab8601 wine glass
    #6d3f36 cup
    #cf8aff fork
    #97005f knife
    #09503d spoon
    #546933 bowl
    #4a4169 banana
    #a6c466 apple
    #d0c3d2 sandwich
    #ff6d41 orange
    #008f95 broccoli
    #b300c2 carrot
    #d1636a hot dog
    #057900 pizza
    #e3ffcd donut
    #93bad0 cake
    #994501 chair
    #035fa1 couch, sofa
    #a3ff00 potted plant, plant, houseplant
    #7700aa bed
    #00b6c7 dining table, table
    #00a578 toilet
    #b78258 tv, television, tv monitor
    #5f2000 laptop
    #827287 mouse
    #6e8185 remote
    #a64a76 keyboard
    #db8eb9 cell phone, mobile phone, phone
    #4fd272 microwave
    #b25a3e oven
    #41460f toaster
    #7fa773 sink
    #3b696a refrigerator
    #8e6c2d book
    #c4ac00 clock
    #5f3650 vase
    #804cff scissors
    #c93901 teddy bear, teddy
    #f6007a hair drier, hair dryer
    #bfa2d0 toothbrush
    #ffff80 banner
    #93d3cb blanket
    #966464 bridge
    #a8abac cardboard
    #9270c6 counter
    #d2aa64 curtain
    #5c8859 door-stuff, door
    #da58b8 floor-wood, wooden floor
    #f18100 flower
    #d911ff fruit
    #7c4ab5 gravel
    #464646 house, home
    #ffe4ff light
    #9ad000 mirror-stuff, mirror
    #c1005c net
    #4c5b71 pillow
    #ffb4c3 platform
    #6a9ab0 playingfield, playing field, field
    #e6968c railroad, railway, rail
    #3c8fff river
    #804080 road
    #5c5237 roof
    #fed47c sand
    #494dae sea, ocean
    #ffa062 shelf
    #ffffff snow
    #68546d stairs, steps, staircase
    #a9a483 tent
    #e1c7ff towel
    #89364a wall-brick
    #879edf wall-stone
    #07f6e7 wall-tile
    #6bffc8 wall-wood
    #3a2995 water-other, water, lake, pond
    #b7798e window-blind, blind
    #ff4961 window-other, window, windowpane
    #6b8e23 tree-merged, tree, trees, forest
    #be9999 fence-merged, fence
    #928b8d ceiling-merged, ceiling
    #4682b4 sky-other-merged, sky
    #86c79c cabinet-merged, cabinet
    #d1e28c table-merged, desk
    #60246c floor-other-merged, floor
    #606060 pavement-merged, pavement, sidewalk
    #40aa40 mountain-merged, mountain, hill
    #98fb98 grass-merged, grass, lawn
    #d0e5e4 dirt-merged, dirt, earth, ground
    #cebaab paper-merged, paper
    #98a140 food-other-merged, food
    #747000 building-other-merged, building, edifice
    #00728f rock-merged, rock, stone
    #66669c wall-other-merged, wall
    #fa8dff rug-merged, rug, carpet
"""


def _parse(table: str) -> tuple[list[str], list[tuple[int, int, int]]]:
    names, colours = [], []
    for line in table.strip().splitlines():
        hexcol, entry = line.strip().split(" ", 1)
        names.append(entry)
        colours.append(tuple(int(hexcol[i : i + 2], 16) for i in (1, 3, 5)))
    return names, colours


PALETTES = {"ADE20K (150 classes)": _parse(_ADE20K), "COCO panoptic (133 classes)": _parse(_COCO_PANOPTIC)}
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
    out = []
    for label, k in zip(labels, lookup_labels(labels, names)):
        if k is None and unknown == "error":
            close = close_matches(label, names)
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
