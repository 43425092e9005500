"""Fused cutouts: the composed maps land where they should; colour matrices keep grey grey."""

import math

import pytest
import torch
import torch.nn.functional as F

from tcig_ops.cutouts import (
    Augment,
    colour_matrices,
    colour_matrix,
    crop_maps,
    homographies,
    make_cutouts,
    perspective_maps,
    random_boxes,
    sample,
)

NO_AUG = Augment(p=0.0)


def _image(size=64, seed=0):
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_a_box_at_scale_one_is_an_exact_crop():
    img = _image()
    boxes = torch.tensor([[5.0, 9.0, 37.0, 41.0], [0.0, 0.0, 32.0, 32.0], [32.0, 32.0, 64.0, 64.0]])
    out = sample(img, crop_maps(boxes, 64, 64), 32, torch.ones(3))
    for o, (x0, y0, x1, y1) in zip(out, boxes.long().tolist()):
        assert torch.allclose(o, img[0, :, y0:y1, x0:x1], atol=1e-5)


def test_a_cutout_that_halves_the_image_reads_the_area_pooled_level():
    img = _image()
    boxes = torch.tensor([[0.0, 0.0, 64.0, 64.0]])
    out = sample(img, crop_maps(boxes, 64, 64), 32, torch.tensor([2.0]))
    assert torch.allclose(out[0], F.avg_pool2d(img, 2)[0], atol=1e-5)


def test_homographies_send_points_where_asked():
    src = torch.rand(6, 4, 2, dtype=torch.float64) * 2 - 1
    dst = src + 0.2 * torch.rand(6, 4, 2, dtype=torch.float64)
    h = homographies(src, dst)
    pts = torch.cat([src, torch.ones(6, 4, 1, dtype=torch.float64)], -1) @ h.transpose(1, 2)
    assert torch.allclose(pts[..., :2] / pts[..., 2:], dst, atol=1e-9)


def test_perspective_moves_each_corner_inwards_by_at_most_the_distortion():
    torch.manual_seed(0)
    maps = perspective_maps(200, Augment(p=1.0, distortion=0.7), "cpu")
    # the inverse sends the crop corners to the output quad's corners: inside the square, at most 0.7 in
    quad = torch.tensor([[-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1]], dtype=torch.float64) @ torch.linalg.inv(maps).transpose(1, 2)
    quad = quad[..., :2] / quad[..., 2:]
    assert (quad.abs() <= 1 + 1e-9).all() and (quad.abs() >= 0.3 - 1e-9).all()
    assert quad.abs().min() < 0.4  # the full range is used


def test_colour_matrices_keep_grey_and_are_identity_without_jitter():
    torch.manual_seed(0)
    m = colour_matrices(50, Augment(p=1.0), "cpu")
    grey = torch.full((3,), 0.4, dtype=torch.float64)
    assert torch.allclose(m @ grey, grey.expand(50, 3), atol=1e-9)
    assert torch.allclose(colour_matrices(5, NO_AUG, "cpu"), torch.eye(3, dtype=torch.float64).expand(5, 3, 3))
    # a third of a turn about the grey axis cycles the primaries: red -> green -> blue
    m = colour_matrix(torch.ones(1), torch.tensor([2 * math.pi / 3], dtype=torch.float64))[0]
    assert torch.allclose(m @ torch.tensor([1.0, 0, 0], dtype=torch.float64), torch.tensor([0, 1.0, 0], dtype=torch.float64), atol=1e-9)
    # saturation 0 is the luma grey
    m = colour_matrix(torch.zeros(1), torch.zeros(1))[0]
    assert torch.allclose(m @ torch.tensor([1.0, 0, 0], dtype=torch.float64), torch.full((3,), 0.299, dtype=torch.float64))


def test_make_cutouts_shape_gradient_and_seed():
    img = _image(96).requires_grad_(True)
    torch.manual_seed(4)
    a = make_cutouts(img, 12, 32, cut_pow=1.0)
    assert a.shape == (12, 3, 32, 32) and torch.isfinite(a).all()
    a.square().mean().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    torch.manual_seed(4)
    assert torch.equal(make_cutouts(img, 12, 32, cut_pow=1.0), a)


@pytest.mark.parametrize("size", [32, 50, 300])
def test_boxes_stay_inside_and_sides_span_cut_to_full(size):
    torch.manual_seed(0)
    boxes = random_boxes(500, size, size, 32, 1.0, "cpu")
    side = boxes[:, 2] - boxes[:, 0]
    assert (boxes >= 0).all() and (boxes[:, 2:] <= size).all()
    assert side.min() >= min(size, 32) and side.max() <= size
