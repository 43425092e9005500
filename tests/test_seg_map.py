"""Layouts drawn in the segmentation ControlNets' palettes (ADE20K's 150 classes, COCO panoptic's 133)."""

from __future__ import annotations

import pytest
import torch

from tcig_ops.errors import TCIGInputError
from tcig_ops.layout import layout_from_index_map
from tcig_ops.seg_palettes import PALETTES, palette_colours, seg_map

ADE = "ADE20K (150 classes)"


def _matches_published(palette: str, published: dict[int, tuple[str, tuple[int, int, int]]]):
    """Asserts each published entry (index: class name -> RGB) is the palette's; returns its names and colours."""
    names, colours = PALETTES[palette]
    for i, (name, rgb) in published.items():
        assert names[i].split(",")[0] == name and colours[i] == rgb, (i, names[i], colours[i])
    return names, colours


def test_known_entries_match_the_published_ade20k_palette():
    # values as MMSegmentation's ADE20KDataset.METAINFO lists them (index: class -> RGB)
    published = {
        0: ("wall", (120, 120, 120)),
        1: ("building", (180, 120, 120)),
        2: ("sky", (6, 230, 230)),
        4: ("tree", (4, 200, 3)),
        6: ("road", (140, 140, 140)),
        9: ("grass", (4, 250, 7)),
        16: ("mountain", (143, 255, 140)),
        21: ("water", (61, 230, 250)),
        46: ("sand", (160, 150, 20)),
        128: ("lake", (10, 190, 212)),
        149: ("flag", (92, 0, 255)),
    }
    names, colours = _matches_published(ADE, published)
    assert len(names) == len(colours) == 150
    assert palette_colours(["Sky", "tree", "water", "road"]) == [(6, 230, 230), (4, 200, 3), (61, 230, 250), (140, 140, 140)]
    assert palette_colours(["edifice", "palm_tree", "street-lamp"]) == [(180, 120, 120), (0, 82, 255), (0, 71, 255)]  # synonyms


def _layout():
    idx = torch.zeros(6, 8, dtype=torch.long)
    idx[3:, :] = 1
    idx[:, 6:] = 2
    idx[0, 0] = -1  # an ignored pixel
    return layout_from_index_map(idx, ["sky", "water", "volcanoes"])


def test_seg_map_pixels_unknown_labels_and_ignore_mode():
    with pytest.raises(TCIGInputError, match=r"'volcanoes' is not a class of the ADE20K .*'ignore'"):
        seg_map(_layout())
    image, notes = seg_map(_layout(), unknown="ignore")
    assert image.shape == (1, 3, 6, 8) and image.dtype == torch.float32
    px = (image[0] * 255).round().to(torch.uint8).permute(1, 2, 0)
    assert px[1, 1].tolist() == [6, 230, 230] and px[4, 1].tolist() == [61, 230, 250]
    assert px[0, 0].tolist() == [0, 0, 0] and px[2, 7].tolist() == [0, 0, 0]  # ignored, unknown
    assert notes == ["label 'volcanoes' is not a ADE20K (150 classes) class; painted black"]
    with pytest.raises(TCIGInputError, match="close: \\['sky'\\]"):
        palette_colours(["skyy"])
    with pytest.raises(TCIGInputError, match="unknown"):
        palette_colours(["sky"], unknown="skip")


COCO = "COCO panoptic (133 classes)"


def test_coco_panoptic_entries_match_the_published_table():
    # values as detectron2's COCO_CATEGORIES lists them (from panopticapi's panoptic_coco_categories.json)
    published = {
        0: ("person", (220, 20, 60)),
        2: ("car", (0, 0, 142)),
        79: ("toothbrush", (191, 162, 208)),
        80: ("banner", (255, 255, 128)),
        103: ("sea", (73, 77, 174)),
        113: ("water-other", (58, 41, 149)),
        116: ("tree-merged", (107, 142, 35)),
        119: ("sky-other-merged", (70, 130, 180)),
        132: ("rug-merged", (250, 141, 255)),
    }
    names, colours = _matches_published(COCO, published)
    assert len(names) == len(colours) == len(set(colours)) == 133  # one colour per class
    # everyday names reach the merged classes, as they reach a segmenter's vocabulary
    assert palette_colours(["sky", "tree", "water", "road", "mountain"], COCO) == [
        (70, 130, 180),
        (107, 142, 35),
        (58, 41, 149),
        (128, 64, 128),
        (64, 170, 64),
    ]
    image, _ = seg_map(_layout(), COCO, unknown="ignore")
    px = (image[0] * 255).round().to(torch.uint8).permute(1, 2, 0)
    assert px[1, 1].tolist() == [70, 130, 180] and px[4, 1].tolist() == [58, 41, 149]
    with pytest.raises(TCIGInputError, match="not a class of the COCO panoptic"):
        palette_colours(["volcanoes"], COCO)
