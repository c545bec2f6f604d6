import math

import pytest
import torch

from defectaug.layer import DefectLayer
from defectaug.placement import (
    as_count_range,
    as_range,
    crop_windows,
    estimate_foreground,
    layer_backgrounds,
    layer_geometry,
    resolve_roi,
    sample_placements,
    warp_layer,
)


def _layer(n: int, size: tuple[int, int] = (16, 24), seed: int = 0) -> DefectLayer:
    g = torch.Generator().manual_seed(seed)
    content = torch.rand(n, 3, *size, generator=g)
    alpha = torch.rand(n, 1, *size, generator=g)
    return DefectLayer(content, alpha, torch.zeros(n, dtype=torch.int64), ("defect",))


def test_counts_sizes_and_determinism():
    kwargs = dict(count=(0, 3), scale=(0.1, 0.5), min_size=6, generator=None)
    first = sample_placements(50, (40, 60), **{**kwargs, "generator": 7})
    again = sample_placements(50, (40, 60), **{**kwargs, "generator": 7})
    other = sample_placements(50, (40, 60), **{**kwargs, "generator": 8})
    counts = first.counts()
    assert counts.min() >= 0 and counts.max() <= 3 and counts.sum() == len(first)
    assert set(counts.tolist()) == {0, 1, 2, 3}
    assert torch.equal(first.image_index, torch.sort(first.image_index).values)
    for image in range(50):
        ranks = first.rank[first.image_index == image]
        assert ranks.tolist() == list(range(int(counts[image])))
    assert first.size.min() >= 6 and first.size.max() <= 0.5 * 40 + 1e-4
    assert torch.equal(first.center, again.center) and torch.equal(first.size, again.size)
    assert not torch.equal(first.counts(), other.counts()) or not torch.equal(
        first.size, other.size
    )


def test_active_images_only_and_roi_centres():
    roi = torch.zeros(4, 1, 30, 30, dtype=torch.bool)
    roi[:, :, 5:10, 20:25] = True
    active = torch.tensor([True, False, True, False])
    placements = sample_placements(4, (30, 30), count=5, roi=roi, active=active, generator=0)
    assert placements.counts().tolist() == [5, 0, 5, 0]
    y, x = placements.center[:, 0], placements.center[:, 1]
    assert ((y >= 5) & (y < 10) & (x >= 20) & (x < 25)).all()


def test_image_smaller_than_smallest_defect_names_the_sizes():
    with pytest.raises(ValueError, match=r"6x40.*smallest allowed defect \(8 px"):
        sample_placements(1, (6, 40), min_size=8)


@pytest.mark.parametrize("size", [(1, 1), (1, 16), (16, 1)])
def test_a_one_pixel_side_leaves_no_room_whatever_min_size(size):
    with pytest.raises(ValueError, match=f"{size[0]}x{size[1]} is too small.*at least 2 px"):
        sample_placements(1, size, min_size=1)
    placements = sample_placements(1, (2, 16), min_size=1, generator=0)
    geometry = layer_geometry(placements, (8, 8))
    assert (geometry.zoom > 0).all() and geometry.canvas_size[0] <= 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: as_range((3, 1), "scale"), "scale"),
        (lambda: as_range("x", "rotation"), "rotation"),
        (lambda: as_count_range((2, 1)), "count"),
        (lambda: as_count_range(1.5), "count"),
        (lambda: as_count_range((1, 10**9)), "at most 256 defects"),
        (lambda: sample_placements(1, (32, 32), aspect=(0, 1)), "aspect"),
        (lambda: sample_placements(1, (32, 32), scale=0), "scale"),
        (lambda: sample_placements(1, (32, 32), min_size=0), "min_size"),
    ],
)
def test_bad_options_are_named(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_identity_geometry_copies_the_layer_without_resampling():
    layer = _layer(1, (16, 24))
    placements = sample_placements(1, (40, 50), scale=24 / 40, rotation=0, aspect=1, generator=0)
    geometry = layer_geometry(placements, layer.size)
    warped = warp_layer(layer, geometry).layer
    rows, cols = (warped.alpha[0, 0] > 1e-3).nonzero(as_tuple=True)
    top, left = int(rows.min()), int(cols.min())
    assert (int(rows.max()) - top + 1, int(cols.max()) - left + 1) == (16, 24)
    torch.testing.assert_close(warped.alpha[..., top : top + 16, left : left + 24], layer.alpha)
    torch.testing.assert_close(warped.content[..., top : top + 16, left : left + 24], layer.content)


def test_quarter_turn_matches_rot90():
    layer = _layer(1, (10, 10))
    placements = sample_placements(1, (40, 40), scale=0.25, rotation=90, aspect=1, generator=0)
    warped = warp_layer(layer, layer_geometry(placements, layer.size)).layer
    rows, cols = (warped.alpha[0, 0] > 1e-3).nonzero(as_tuple=True)
    top, left = int(rows.min()), int(cols.min())
    turned = warped.alpha[..., top : top + 10, left : left + 10]
    # kornia's positive angles turn counter-clockwise, as torch.rot90 with k=1 does.
    torch.testing.assert_close(turned, torch.rot90(layer.alpha, k=1, dims=(2, 3)))


def test_layers_always_land_inside_with_uncut_corners():
    image_size = (48, 80)
    placements = sample_placements(
        200, image_size, scale=(0.2, 1.4), rotation=(-180, 180), aspect=(0.5, 2.0), generator=3
    )
    solid = DefectLayer(
        torch.ones(200, 1, 12, 12),
        torch.ones(200, 1, 12, 12),
        torch.zeros(200, dtype=torch.int64),
        ("a",),
    )
    geometry = layer_geometry(placements, solid.size)
    warped = warp_layer(solid, geometry)
    boxes = geometry.boxes
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= image_size[1]).all() and (boxes[:, 3] <= image_size[0]).all()
    # Every visible pixel of every layer is inside its own box, hence inside the image.
    alpha = warped.layer.alpha[:, 0]
    rows = torch.arange(alpha.shape[1])[None, :, None] + warped.offsets[:, 0, None, None]
    cols = torch.arange(alpha.shape[2])[None, None, :] + warped.offsets[:, 1, None, None]
    inside = (
        (rows >= boxes[:, 1, None, None])
        & (rows < boxes[:, 3, None, None])
        & (cols >= boxes[:, 0, None, None])
        & (cols < boxes[:, 2, None, None])
    )
    assert float(alpha[~inside].max()) < 1e-6
    # Corners are not cut: the warped area is the scaled layer area (bilinear edges aside).
    scale = geometry.to_image[:, :, :2].det().abs()
    expected = 12 * 12 * scale
    area = alpha.sum((1, 2))
    assert torch.allclose(area, expected.float(), rtol=0.12, atol=4.0)


def test_layer_backgrounds_line_up_with_the_image():
    images = torch.rand(2, 3, 30, 40)
    placements = sample_placements(2, (30, 40), scale=0.5, rotation=0, aspect=1, generator=1)
    geometry = layer_geometry(placements, (15, 15))
    patches = layer_backgrounds(images, placements.image_index, geometry)
    for i in range(2):
        left, top = geometry.to_image[i, :, 2].round().long().tolist()
        expected = images[placements.image_index[i], :, top : top + 15, left : left + 15]
        torch.testing.assert_close(patches[i], expected)


def test_crop_windows_matches_slicing_with_zero_outside():
    maps = torch.arange(2 * 1 * 6 * 7, dtype=torch.float32).reshape(2, 1, 6, 7) + 1
    offsets = torch.tensor([[-2, 3], [4, -1]])
    windows = crop_windows(maps, torch.tensor([1, 0]), offsets, (4, 5))
    expected = torch.zeros(2, 1, 4, 5)
    expected[0, :, 2:4, 0:4] = maps[1, :, 0:2, 3:7]
    expected[1, :, 0:2, 1:5] = maps[0, :, 4:6, 0:4]
    assert torch.equal(windows, expected)
    boolean = crop_windows(maps > 20, torch.tensor([1, 0]), offsets, (4, 5))
    assert torch.equal(boolean, expected > 20)


def _object_images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(128.0), indexing="ij")
    disk = ((yy - 50) ** 2 + (xx - 60) ** 2) < 30**2
    noise = 0.05 * torch.randn(2, 1, 96, 128, generator=g)
    bright_object = torch.where(disk, 0.8, 0.2) + noise
    dark_object = torch.where(disk, 0.25, 0.85) + noise
    images = torch.cat([bright_object, dark_object]).clamp(0, 1).expand(-1, 3, -1, -1)
    return images, disk


def test_auto_foreground_finds_bright_and_dark_objects():
    images, disk = _object_images()
    foreground = estimate_foreground(images)
    for item in range(2):
        estimate = foreground[item, 0]
        iou = (estimate & disk).sum() / (estimate | disk).sum()
        assert iou > 0.9, f"image {item}: IoU {float(iou):.3f}"


def test_auto_foreground_falls_back_to_the_whole_image_on_textures():
    g = torch.Generator().manual_seed(1)
    texture = torch.rand(2, 1, 64, 64, generator=g)
    flat = torch.full((1, 1, 64, 64), 0.5)
    assert estimate_foreground(texture).all()
    assert estimate_foreground(flat).all()


def test_resolve_roi_forms():
    images = torch.rand(2, 3, 8, 10)
    assert resolve_roi(None, images) is None
    plain = torch.zeros(8, 10)
    plain[2:4, 3:5] = 1
    roi = resolve_roi(plain, images)
    assert roi.shape == (2, 1, 8, 10) and roi.dtype == torch.bool and int(roi.sum()) == 8
    per_image = resolve_roi(lambda x: x.mean(1, keepdim=True) >= 0, images)
    assert per_image.all()
    assert resolve_roi("auto", images).shape == (2, 1, 8, 10)
    with pytest.raises(ValueError, match="roi: the region of interest is empty"):
        resolve_roi(torch.zeros(8, 10, dtype=torch.bool), images)
    with pytest.raises(ValueError, match="roi: expected a mask of shape"):
        resolve_roi(torch.ones(9, 10), images)
    with pytest.raises(ValueError, match="roi"):
        resolve_roi("center", images)
    with pytest.raises(TypeError, match="roi"):
        resolve_roi(lambda x: [1], images)


def test_shrinks_layers_that_cannot_fit():
    placements = sample_placements(1, (20, 200), scale=5.0, rotation=45, aspect=1, generator=0)
    geometry = layer_geometry(placements, (10, 10))
    x0, y0, x1, y1 = geometry.boxes[0].tolist()
    assert y1 - y0 <= 20 and y0 >= 0 and y1 <= 20
    # Shrunk to the largest rotated support that fits the 20 px height (minus the slack pixel).
    assert math.isclose(float(geometry.zoom[0]) * 11 * math.sqrt(2), 19, rel_tol=1e-6)
