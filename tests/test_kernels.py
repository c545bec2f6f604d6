"""The compiled loops of the per-sample path agree with the torch operations they stand for."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from defectaug._kernels import (
    UNCHANGED_COVER_LEVELS,
    _affine,
    _hit_bounds,
    _layer_point,
    _row_span,
    alpha_blocks,
    blur_planes,
    composite_defects,
    composite_layer_tracked,
    composite_relief,
    composite_tracked,
    copy_within,
    coverage_blocks,
    landing_patch,
    place_box,
    place_relief,
    settle_levels,
    settle_window,
    shade_content,
    sparse_mean,
    warp_alpha,
)
from defectaug._poisson_kernels import (
    _band_distance,
    core_threshold,
    dirichlet_solve,
    poisson_footprint,
)
from defectaug.generators.procedural import shade_relief
from defectaug.generators.relief import bright_sign
from defectaug.layer import MIN_VISIBLE_PIXELS, VISIBILITY
from defectaug.per_sample import PlacedDefect, PlacedLayer
from defectaug.placement import antialias
from defectaug.placement.warping import blur_kernel
from defectaug.plan import PlannedDefect, layer_box

NOT_CONFINED = np.empty((0, 0), np.float32)


def rotation_map(angle: float, zoom: float, shift: tuple[float, float]) -> np.ndarray:
    """A box -> layer pixel map: rotation and zoom about the origin, then a shift."""
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    return np.array([[cos, -sin, shift[0]], [sin, cos, shift[1]]])


def grid_sample_box(planes: np.ndarray, box_to_layer: np.ndarray, box: tuple[int, int]):
    """``grid_sample`` (bilinear, zeros, align_corners) of ``planes [P, s, s]`` into ``box``."""
    side = planes.shape[-1]
    rows, cols = torch.meshgrid(
        torch.arange(box[0], dtype=torch.float64),
        torch.arange(box[1], dtype=torch.float64),
        indexing="ij",
    )
    layer_x = box_to_layer[0, 0] * cols + box_to_layer[0, 1] * rows + box_to_layer[0, 2]
    layer_y = box_to_layer[1, 0] * cols + box_to_layer[1, 1] * rows + box_to_layer[1, 2]
    grid = torch.stack([layer_x, layer_y], -1) * (2.0 / (side - 1)) - 1.0
    source = torch.from_numpy(planes).double()[None]
    return F.grid_sample(source, grid[None], align_corners=True, padding_mode="zeros")[0]


@pytest.fixture
def planes() -> np.ndarray:
    generator = torch.Generator().manual_seed(3)
    maps = torch.rand(4, 21, 21, generator=generator) * 2 - 1
    maps[3] = torch.rand(21, 21, generator=generator) * 1.4 - 0.2  # alpha, partly outside [0, 1]
    return maps.numpy().astype(np.float32)


@pytest.mark.parametrize(
    "box_to_layer",
    [
        rotation_map(0.0, 1.0, (0.0, 0.0)),
        rotation_map(0.6, 0.8, (8.0, -6.5)),
        rotation_map(-2.2, 1.3, (30.0, 12.25)),
    ],
)
def test_warp_alpha_is_grid_sample_clipped(planes, box_to_layer):
    box = (27, 31)
    expected = grid_sample_box(planes, box_to_layer, box)[3].clamp(0, 1).numpy()
    np.testing.assert_allclose(
        warp_alpha(planes, alpha_blocks(planes), box_to_layer, NOT_CONFINED, *box),
        expected,
        atol=1e-5,
    )


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("sign", [1.0, -1.0])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_composite_relief_is_shade_relief_then_alpha_compositing(planes, channels, sign, dtype):
    box = (19, 23)
    box_to_layer = rotation_map(0.4, 0.9, (4.0, -3.0))
    rng = np.random.default_rng(channels)
    surface = rng.uniform(0.05, 0.95, (channels, *box))
    window = np.rint(surface * 255).astype(np.uint8) if dtype == np.uint8 else surface.astype(dtype)
    under = window / 255.0 if dtype == np.uint8 else window.astype(np.float64)
    warped = grid_sample_box(planes, box_to_layer, box)
    alpha = warped[3].clamp(0, 1)
    content = shade_relief(warped[None], torch.from_numpy(under)[None], sign, 0.3)[0]
    expected = (torch.from_numpy(under) + alpha * (content - torch.from_numpy(under))).numpy()

    out = window.copy()
    scale = 255.0 if dtype == np.uint8 else 1.0
    composite_relief(
        out, planes, alpha_blocks(planes), box_to_layer, NOT_CONFINED, sign, 0.3, scale
    )
    if dtype == np.uint8:
        # Rounding of a value within 1e-5 of a half step may go either way.
        assert np.abs(out.astype(np.int16) - np.rint(expected * 255)).max() <= 1
    else:
        np.testing.assert_allclose(out, expected, atol=2e-5)
    uncovered = alpha.numpy()[None].repeat(channels, 0) <= 0
    assert np.array_equal(out[uncovered], window[uncovered])  # never written: exact


def test_composite_relief_confines_by_weights(planes):
    box, box_to_layer = (21, 21), rotation_map(0.3, 1.0, (2.0, -3.0))
    confine = np.zeros(box, np.float32)
    confine[:, :10] = 0.5
    free, confined = np.full((1, *box), 0.5), np.full((1, *box), 0.5)
    blocks = alpha_blocks(planes)
    composite_relief(free, planes, blocks, box_to_layer, NOT_CONFINED, 1.0, 0.0, 1.0)
    composite_relief(confined, planes, blocks, box_to_layer, confine, 1.0, 0.0, 1.0)
    assert (confined[:, :, 10:] == 0.5).all()
    # Half the coverage moves the pixel half as far.
    np.testing.assert_allclose(confined[:, :, :10] - 0.5, (free[:, :, :10] - 0.5) / 2, atol=1e-12)


def test_composite_relief_writes_through_a_strided_view(planes):
    image = np.full((3, 40, 50), 128, np.uint8)
    box_to_layer = rotation_map(0.0, 1.0, (0.0, 0.0))
    view = image[:, 5:26, 7:28]
    composite_relief(
        view, planes, alpha_blocks(planes), box_to_layer, NOT_CONFINED, 1.0, 0.0, 255.0
    )
    assert not np.array_equal(image[:, 5:26, 7:28], np.full((3, 21, 21), 128))
    outside = np.ones((40, 50), bool)
    outside[5:26, 7:28] = False
    assert (image[:, outside] == 128).all()


def test_sparse_mean_reads_every_other_pixel_of_the_box():
    pixels = np.arange(2 * 9 * 10, dtype=np.float64).reshape(2, 9, 10)
    expected = pixels[:, 2:7:2, 3:10:2].mean()
    assert sparse_mean(pixels, 2, 3, 5, 7) == pytest.approx(expected)
    assert sparse_mean(pixels.astype(np.uint8), 2, 3, 5, 7) == pytest.approx(expected)


def test_alpha_blocks_skip_only_what_reads_zero():
    rng = np.random.default_rng(0)
    planes = rng.uniform(0.2, 1.0, (4, 37, 37)).astype(np.float32)
    planes[3] = 0.0
    for row, col in rng.integers(0, 37, (6, 2)):  # a few isolated alpha pixels
        planes[3, row, col] = rng.uniform(0.3, 1.0)
    planes[3, 0, 36] = planes[3, 36, 0] = 1.0  # and the layer's corners
    blocks = alpha_blocks(planes)
    assert 0 < blocks.mean() < 0.5
    # Block b of an axis holds the floors f with (f + 1) >> 2 == b, 4b - 1 to 4b + 2, which read
    # pixels 4b - 1 to 4b + 3. A block is marked exactly when one of those holds alpha > 0.
    covered = planes[3] > 0
    for (block_row, block_col), marked in np.ndenumerate(blocks):
        rows = slice(max(4 * block_row - 1, 0), 4 * block_row + 4)
        cols = slice(max(4 * block_col - 1, 0), 4 * block_col + 4)
        assert marked == covered[rows, cols].any()
    everywhere = np.ones_like(blocks)
    for angle in np.linspace(0.0, 3.0, 7):
        # About the centres: box pixel 29.5 lands on layer pixel 18, the layer shown 1.5x.
        box_to_layer = rotation_map(angle, 1.5, (0.0, 0.0))
        box_to_layer[:, 2] = 18.0 - box_to_layer[:, :2] @ np.array([29.5, 29.5])
        skipped = warp_alpha(planes, blocks, box_to_layer, NOT_CONFINED, 60, 60)
        assert skipped.any()
        full = warp_alpha(planes, everywhere, box_to_layer, NOT_CONFINED, 60, 60)
        # Exact: the blocks only decide which pixels run; each one that does runs the same
        # scalar arithmetic (no reduction, no batch), and a skipped one reads alpha 0 anyway.
        assert np.array_equal(skipped, full)
        window_skipped, window_full = np.full((3, 60, 60), 0.4), np.full((3, 60, 60), 0.4)
        composite_relief(window_skipped, planes, blocks, box_to_layer, NOT_CONFINED, 1.0, 0.2, 1.0)
        composite_relief(window_full, planes, everywhere, box_to_layer, NOT_CONFINED, 1.0, 0.2, 1.0)
        assert np.array_equal(window_skipped, window_full)


@pytest.mark.parametrize("layout", ["scattered", "corner", "empty", "full"])
def test_row_spans_hold_every_pixel_that_hits(layout):
    """The resamplers scan only each row's span; every pixel that would hit lies inside it, for
    rotations, zooms, mirrors and axis-aligned maps (whose slopes are 0 or nearly so)."""
    rng = np.random.default_rng(1)
    side = 29
    alpha = np.zeros((side, side), np.float32)
    if layout == "scattered":
        alpha[rng.integers(0, side, 5), rng.integers(0, side, 5)] = 1.0
    elif layout == "corner":
        alpha[-3:, :2] = 1.0
    elif layout == "full":
        alpha[:] = 1.0
    planes = np.zeros((4, side, side), np.float32)
    planes[3] = alpha
    blocks = alpha_blocks(planes)
    maps = [
        rotation_map(angle, zoom, (0.0, 0.0))
        for angle in (0.0, 1e-9, math.pi / 2, 0.7, -2.9)
        for zoom in (0.4, 1.0, 2.5)
    ]
    maps += [
        np.array([[-1.0, 0.0, 40.0], [0.0, 1.0, -3.0]]),
        np.array([[1e-8, 1.0, 2.0], [-1.0, 1e-8, 35.0]]),
    ]
    hits = 0
    for box_to_layer in maps:
        box_to_layer = box_to_layer.copy()
        # Centre the layer in a 64 x 70 box.
        box_to_layer[:, 2] += (side - 1) / 2 - box_to_layer[:, :2] @ np.array([34.5, 31.5])
        affine, bounds = _affine(box_to_layer), _hit_bounds(blocks, (side, side))
        for row in range(64):
            start, stop = _row_span(affine, bounds, row, 70)
            assert 0 <= start <= stop <= 70
            for col in range(70):
                if _layer_point(affine, blocks, (side, side), row, col)[0]:
                    hits += 1
                    assert start <= col < stop, (layout, row, col, start, stop)
    assert (hits == 0) == (layout == "empty")


# ----------------------------------------------------------------- tracked compositing, settling
def _surface(channels: int, dtype, shape=(48, 56)) -> np.ndarray:
    rng = np.random.default_rng(channels)
    surface = rng.uniform(0.2, 0.8, (channels, *shape))
    return np.rint(surface * 255).astype(np.uint8) if dtype == np.uint8 else surface.astype(dtype)


def _threshold(dtype) -> float:
    return round(VISIBILITY * 255.0, 6) if dtype == np.uint8 else float(np.float32(VISIBILITY))


def _measured_levels(after: np.ndarray, before: np.ndarray, threshold: float) -> np.ndarray:
    change = np.abs(after.astype(np.float64) - before.astype(np.float64)).max(0)
    return np.where(change > threshold, 2, np.where(change > 0, 1, 0)).astype(np.uint8)


# Two overlapping boxes (top, left, height, width) and their union, the second rotated.
BOXES = [((6, 4, 21, 21), rotation_map(0.0, 1.0, (0.0, 0.0))), ((15, 14, 27, 25), None)]
UNION = (6, 4, 36, 35)


def _tracked(planes, channels, dtype, sign=1.0, faint=1.0):
    """Both boxes composited with tracking into one image; also through views, untracked."""
    planes = planes.copy()
    planes[3] *= faint
    blocks = alpha_blocks(planes)
    before = _surface(channels, dtype)
    tracked, plain = before.copy(), before.copy()
    level = np.zeros(UNION[2:], np.uint8)
    scale = 255.0 if dtype == np.uint8 else 1.0
    extents = []
    for (top, left, height, width), box_to_layer in BOXES:
        if box_to_layer is None:
            box_to_layer = rotation_map(0.7, 1.3, (3.0, -6.0))
        extents.append(
            composite_tracked(
                tracked,
                before,
                level,
                UNION[0],
                UNION[1],
                _threshold(dtype),
                planes,
                blocks,
                box_to_layer,
                NOT_CONFINED,
                top,
                left,
                height,
                width,
                sign,
                0.3,
                scale,
            )
        )
        view = plain[:, top : top + height, left : left + width]
        composite_relief(view, planes, blocks, box_to_layer, NOT_CONFINED, sign, 0.3, scale)
    rows = (min(e[0] for e in extents), max(e[1] for e in extents))
    cols = (min(e[2] for e in extents), max(e[3] for e in extents))
    return before, tracked, plain, level, rows, cols


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_composite_tracked_is_composite_relief_and_measures_the_change(planes, channels, dtype):
    before, tracked, plain, level, rows, cols = _tracked(planes, channels, dtype, sign=-1.0)
    assert np.array_equal(tracked, plain)  # the same arithmetic, bit for bit
    top, left, height, width = UNION
    window = (slice(None), slice(top, top + height), slice(left, left + width))
    # The levels of the final values, although the boxes overlap (the last write decides).
    assert np.array_equal(
        level, _measured_levels(tracked[window], before[window], _threshold(dtype))
    )
    assert (level == 2).any() and (level == 1).any()
    outside = np.ones(before.shape[1:], bool)
    outside[window[1:]] = False
    assert np.array_equal(tracked[:, outside], before[:, outside])
    # The extents returned hold every pixel written.
    written = np.zeros(level.shape, bool)
    written[rows[0] : rows[1], cols[0] : cols[1]] = True
    changed = (tracked[window] != before[window]).any(0)
    assert not (changed & ~written).any()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("faint", [1.0, 0.02])
def test_settle_levels_is_settle_window(planes, channels, dtype, faint):
    before, tracked, _, level, rows, cols = _tracked(planes, channels, dtype, faint=faint)
    top, left, height, width = UNION
    window = (slice(None), slice(top, top + height), slice(left, left + width))
    expected = tracked.copy()
    rounded = dtype == np.uint8
    mask = settle_window(
        expected[window], before[window], _threshold(dtype), MIN_VISIBLE_PIXELS, rounded
    )
    count = settle_levels(
        tracked, before, level, top, left, MIN_VISIBLE_PIXELS, rounded, *rows, *cols
    )
    assert np.array_equal(tracked, expected)
    assert np.array_equal(level, mask)
    assert count == mask.sum()
    if faint < 1.0:  # too faint to see: nothing labelled, everything restored
        assert count == 0 and np.array_equal(tracked, before)
    else:
        assert count >= MIN_VISIBLE_PIXELS and not np.array_equal(tracked, before)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_composite_defects_is_composite_tracked_in_order_then_settle_levels(planes, dtype):
    before, tracked, _, level, rows, cols = _tracked(planes, 3, dtype)
    top, left = UNION[:2]
    count = settle_levels(
        tracked, before, level, top, left, MIN_VISIBLE_PIXELS, dtype == np.uint8, *rows, *cols
    )
    blocks = alpha_blocks(planes)
    defects = tuple(
        PlacedDefect(
            planes,
            blocks,
            rotation_map(0.7, 1.3, (3.0, -6.0)) if box_to_layer is None else box_to_layer,
            NOT_CONFINED,
            *box,
            1.0,
            0.3,
        )
        for box, box_to_layer in BOXES
    )
    image = before.copy()
    scale = 255.0 if dtype == np.uint8 else 1.0
    fused_level, fused_top, fused_left, fused_count = composite_defects(
        image, before, defects, _threshold(dtype), scale, MIN_VISIBLE_PIXELS
    )
    assert (fused_top, fused_left, fused_level.shape) == (top, left, tuple(UNION[2:]))
    assert np.array_equal(image, tracked)  # the same passes, bit for bit
    assert np.array_equal(fused_level, level) and fused_count == count > 0


def test_the_compiled_placement_is_the_plans():
    """place_box places a layer as layer_box and blur_kernel do, and place_relief also
    low-passes and signs it as bright_sign does, to the bit."""
    rng = np.random.default_rng(0)
    surface = (rng.random((3, 60, 90)) * 255).astype(np.uint8)
    maps = rng.random((4, 23, 23), dtype=np.float32)
    blocks = alpha_blocks(maps)
    blurred = 0
    for _ in range(300):
        defect = PlannedDefect(
            0,
            0,
            float(rng.uniform(2.0, 120.0)),
            float(rng.uniform(-180.0, 180.0)),
            float(np.exp(rng.uniform(-1.0, 1.0))),
            (float(rng.uniform(0, 59)), float(rng.uniform(0, 89))),
            bool(rng.random() < 0.5),
            0,
        )
        draw, probability = float(rng.random()), float(rng.random())
        box = layer_box(defect, (23, 23), (60, 90))
        placed = place_relief(surface, 255.0, maps, blocks, defect, draw, probability)
        out_planes, out_blocks, box_to_layer, top, left, height, width, sign = placed
        assert (top, left, height, width) == (box.top, box.left, box.height, box.width)
        assert np.array_equal(box_to_layer, np.array(box.box_to_layer()))
        blur = blur_kernel(box.zoom, 23, 23)
        landing = place_box(defect, 23, 23, 60, 90)
        assert landing[:4] == (top, left, height, width)
        assert np.array_equal(landing[4], np.array(box.to_image))
        assert np.array_equal(landing[5], box_to_layer)
        assert landing[6:] == (blur or (0, landing[7]))
        if blur is None:
            assert out_planes is maps and out_blocks is blocks
        else:
            blurred += 1
            assert np.array_equal(out_planes, blur_planes(maps, *blur, False))
            assert np.array_equal(out_blocks, alpha_blocks(out_planes))
        tone = sparse_mean(surface, top, left, height, width) / 255.0
        expected = bright_sign(
            torch.tensor([draw], dtype=torch.float64),
            torch.tensor([probability], dtype=torch.float64),
            torch.tensor([tone], dtype=torch.float64),
        )
        assert sign == float(expected)
    assert 0 < blurred < 300


@pytest.mark.parametrize("levels", [0.45, 0.6])
def test_a_cover_too_small_to_change_a_uint8_pixel_is_skipped(levels):
    """A uint8 pixel moves by at most ``cover`` of full scale: below half a level it rounds back
    to itself, and the pass skips it; a float image takes every change."""
    content = np.ones((3, 8, 8), np.float32)  # white over black: the largest possible change
    alpha = np.full((8, 8), levels / 255.0, np.float32)
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    for dtype, scale in [(np.uint8, 255.0), (np.float32, 1.0)]:
        before = np.zeros((3, 12, 12), dtype)
        image, level = before.copy(), np.zeros((12, 12), np.uint8)
        layer = PlacedLayer(
            content, alpha, coverage_blocks(alpha), identity, NOT_CONFINED, 2, 2, 8, 8
        )
        composite_layer_tracked(image, before, level, 0, 0, _threshold(dtype), scale, layer)
        inside = image[:, 3:9, 3:9]  # the box's pixels that read the layer in full
        if dtype == np.uint8 and levels < UNCHANGED_COVER_LEVELS:
            assert not image.any() and not level.any()
        elif dtype == np.uint8:
            assert (inside == 1).all() and (level[3:9, 3:9] == 1).all()
        else:
            assert np.allclose(inside, levels / 255.0) and (level[3:9, 3:9] == 1).all()


def test_settle_levels_fills_pinholes_and_fades_the_margin():
    before = np.full((1, 12, 12), 0.5, np.float32)
    after = before.copy()
    after[0, 3:8, 3:8] = 0.2  # visible, with a pinhole in the middle
    after[0, 5, 5] = 0.5
    after[0, 3:8, 8] = 0.49  # invisible, 1 px from the mask: kept
    after[0, 3:8, 9] = 0.49  # 2 px: halved
    after[0, 3:8, 10] = 0.49  # 3 px: restored
    level = _measured_levels(after, before, _threshold(np.float32))
    count = settle_levels(after, before, level, 0, 0, MIN_VISIBLE_PIXELS, False, 0, 12, 0, 12)
    assert count == 25 and level[5, 5] == 1 and level.sum() == 25
    np.testing.assert_array_equal(after[0, 3:8, 8], np.float32(0.49))
    np.testing.assert_array_equal(
        after[0, 3:8, 9], np.float32(0.5 + 0.5 * (np.float32(0.49) - 0.5))
    )
    np.testing.assert_array_equal(after[0, 3:8, 10], np.float32(0.5))


def test_copy_within_copies_and_checks_the_range():
    source = np.linspace(0.0, 1.0, 3 * 5 * 7, dtype=np.float32).reshape(3, 5, 7)
    source[0, 0, 0] = -0.0
    out = np.empty_like(source)
    assert copy_within(source, out, -1e-3, 1.001)
    assert out.tobytes() == source.tobytes()
    for value in (1.01, -0.01, np.nan, np.inf):
        bad = source.copy()
        bad[2, 4, 6] = value
        assert not copy_within(bad, out, -1e-3, 1.001)


# ------------------------------------------------------------------- the Poisson blends' parts
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [np.uint8, np.float64])
def test_shade_content_is_shade_relief_where_the_layer_covers(planes, channels, dtype):
    box = (19, 23)
    box_to_layer = rotation_map(0.4, 0.9, (4.0, -3.0))
    image = _surface(channels, dtype, shape=(30, 36))
    top, left = 5, 9
    window = image[:, top : top + box[0], left : left + box[1]]
    under = window / 255.0 if dtype == np.uint8 else window.astype(np.float64)
    warped = grid_sample_box(planes, box_to_layer, box)
    expected = shade_relief(warped[None], torch.from_numpy(under)[None], -1.0, 0.3)[0].numpy()
    blocks = alpha_blocks(planes)
    alpha = warp_alpha(planes, blocks, box_to_layer, NOT_CONFINED, *box)
    scale = 255.0 if dtype == np.uint8 else 1.0
    content = shade_content(image, planes, blocks, box_to_layer, alpha, top, left, -1.0, 0.3, scale)
    covered = np.broadcast_to(alpha > 0, content.shape)
    assert covered.any() and (~covered).any()
    np.testing.assert_allclose(content[covered], expected[covered], atol=1e-5)
    assert (content[~covered] == 0).all()


def test_poisson_footprint_is_the_core_dilated_within_bounds(planes):
    from defectaug.batch import POISSON_MARGIN, _dilate

    alpha = warp_alpha(
        planes, alpha_blocks(planes), rotation_map(0.0, 1.0, (0, 0)), NOT_CONFINED, 21, 21
    )
    threshold = core_threshold(alpha, 0.5)
    assert threshold == min(0.5 * alpha.max(), 0.5)
    box_top, box_left = 4, 6
    # Bounds cutting the grown box on two sides (a canvas edge, the image's inner pixels).
    bounds = (5, 40, 1, 25)
    footprint, top, left, row0, row1, col0, col1 = poisson_footprint(
        alpha, threshold, POISSON_MARGIN, box_top, box_left, *bounds
    )
    core = torch.zeros(1, 1, 40, 40, dtype=torch.bool)
    core[0, 0, box_top : box_top + 21, box_left : box_left + 21] = torch.from_numpy(
        (alpha >= threshold) & (alpha > 0)
    )
    grown = core
    for _ in range(POISSON_MARGIN):
        grown = _dilate(grown)
    expected = torch.zeros(40, 40, dtype=torch.bool)
    expected[bounds[0] : bounds[1], bounds[2] : bounds[3]] = grown[0, 0][
        bounds[0] : bounds[1], bounds[2] : bounds[3]
    ]
    placed = torch.zeros(40, 40, dtype=torch.bool)
    placed[top : top + footprint.shape[0], left : left + footprint.shape[1]] = torch.from_numpy(
        footprint.astype(bool)
    )
    assert torch.equal(placed, expected)
    rows, cols = expected.any(1).nonzero()[:, 0], expected.any(0).nonzero()[:, 0]
    assert (row0, row1, col0, col1) == (
        int(rows[0]),
        int(rows[-1]) + 1,
        int(cols[0]),
        int(cols[-1]) + 1,
    )


@pytest.mark.parametrize("band", [1, 3, 5])
def test_band_distance_is_the_exact_distance_within_the_band(band):
    from defectaug.compositing.improved import _squared_distance_within

    rng = np.random.default_rng(band)
    mask = rng.random((23, 31)) < 0.02
    mask[11, 15] = True
    expected = _squared_distance_within(torch.from_numpy(mask)[None], band)[0].numpy()
    distance = _band_distance(mask.astype(np.uint8), band)
    inside = expected <= band * band
    np.testing.assert_array_equal(distance[inside], expected[inside])
    assert (distance[~inside] > band * band).all()


def test_dirichlet_solve_is_the_torch_solver():
    from defectaug.compositing._solvers import solve_dirichlet_rectangle

    rhs = np.random.default_rng(0).normal(size=(3, 17, 29))
    expected = solve_dirichlet_rectangle(torch.from_numpy(rhs)).numpy()
    np.testing.assert_allclose(dirichlet_solve(rhs.copy()), expected, atol=1e-12)
    single = dirichlet_solve(rhs.astype(np.float32))
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, expected, atol=1e-4 * np.abs(expected).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_orthonormal_dst_is_scipy_dstn(dtype, monkeypatch):
    """The DST the compiled Poisson solve calls is scipy.fft.dstn's, bit for bit, with this
    scipy's pocketfft binding and without it (the fallback any other scipy takes)."""
    import scipy.fft

    import defectaug._poisson_kernels as poisson_kernels

    assert poisson_kernels._POCKETFFT_DST is not None  # the locked scipy has the binding
    rng = np.random.default_rng(1)
    for shape in [(3, 17, 29), (1, 5, 64), (3, 48, 48)]:
        array = rng.normal(size=shape).astype(dtype)
        expected = scipy.fft.dstn(array, type=1, axes=(-2, -1), norm="ortho")
        direct = poisson_kernels._orthonormal_dst_1(array.copy())
        assert direct.dtype == dtype
        np.testing.assert_array_equal(direct, expected)
        with monkeypatch.context() as patch:
            patch.setattr(poisson_kernels, "_POCKETFFT_DST", None)
            fallback = poisson_kernels._orthonormal_dst_1(array.copy())
        np.testing.assert_array_equal(fallback, expected)


@pytest.mark.parametrize("border", ["replicate", "constant"])
@pytest.mark.parametrize(("size", "zoom"), [((64, 64), 0.3), ((20, 33), 0.1), ((9, 9), 0.2)])
def test_blur_planes_is_antialias(border, size, zoom):
    planes = torch.rand(4, *size, generator=torch.Generator().manual_seed(5))
    expected = antialias(planes[None], [zoom], border)[0]
    blurred = blur_planes(planes.numpy(), *blur_kernel(zoom, *size), border == "replicate")
    torch.testing.assert_close(torch.from_numpy(blurred), expected, rtol=0, atol=1e-6)


def test_landing_patch_reads_only_its_region():
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8).numpy()
    to_image = np.array([[0.8, 0.3, 5.0], [-0.2, 0.9, 7.0]])
    whole = landing_patch(image, to_image, 24, 20, 255.0, (0, 24, 0, 20))
    part = landing_patch(image, to_image, 24, 20, 255.0, (3, 11, 4, 19))
    np.testing.assert_array_equal(part[:, 3:11, 4:19], whole[:, 3:11, 4:19])
    part[:, 3:11, 4:19] = 0
    assert not part.any()
