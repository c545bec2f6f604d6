"""defectaug.fitting: statistics recovered on synthetic fixtures, round trips, card checks."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from defectaug import inject_defects, load_generator
from defectaug.datasets import DefectRecord
from defectaug.fitting import FittedGenerator, LocationRoi, fit_defects, measure_image

SIZE = (120, 160)  # H, W


def _write(folder: Path, name: str, image: np.ndarray, mask: np.ndarray) -> DefectRecord:
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / f"{name}.png"), (image * 255).round().astype(np.uint8))
    cv2.imwrite(str(folder / f"{name}_mask.png"), mask.astype(np.uint8) * 255)
    return DefectRecord(
        folder / f"{name}.png", name.split("_")[0], folder / f"{name}_mask.png", "train"
    )


@pytest.fixture(scope="module")
def fixture_records(tmp_path_factory) -> list[DefectRecord]:
    """Dark discs of radius 6 near (0.25, 0.75) and dark lines 3 px wide at 30 degrees."""
    folder = tmp_path_factory.mktemp("fixtures")
    rng = np.random.default_rng(0)
    records = []
    for index in range(8):
        image = np.full(SIZE, 0.6) + rng.normal(0, 0.01, SIZE)
        mask = np.zeros(SIZE, np.uint8)
        centre = (int(0.75 * SIZE[1]) + index % 3, int(0.25 * SIZE[0]) + index % 2)  # x, y
        cv2.circle(mask, centre, 6, 1, -1)
        image[mask > 0] = 0.3
        records.append(_write(folder, f"disc_{index}", image, mask))
    for index in range(6):
        image = np.full(SIZE, 0.5) + rng.normal(0, 0.01, SIZE)
        mask = np.zeros(SIZE, np.uint8)
        angle = math.radians(30.0)  # counter-clockwise on screen: y decreases as x grows
        cx, cy, half = 80 + index, 60, 40
        start = (int(cx - half * math.cos(angle)), int(cy + half * math.sin(angle)))
        end = (int(cx + half * math.cos(angle)), int(cy - half * math.sin(angle)))
        cv2.line(mask, start, end, 1, 3)
        image[mask > 0] = 0.3
        records.append(_write(folder, f"line_{index}", image, mask))
    return records


@pytest.fixture(scope="module")
def fitted(fixture_records):
    return fit_defects(fixture_records)


def test_disc_statistics_are_recovered(fitted):
    disc = fitted.classes["disc"]
    assert disc["n_defects"] == 8
    assert disc["size"][2] == pytest.approx(13 / 120, abs=0.01)  # diameter / shorter side
    assert disc["elongation"][2] > 0.9
    assert disc["contrast"][2] == pytest.approx(-0.5, abs=0.05)  # 0.3 on 0.6
    assert disc["bright_fraction"] == 0.0
    assert disc["on_edge"] == 0.0
    assert disc["count"] == [1.0] * 5
    grid = np.array(disc["location"])
    row, col = np.unravel_index(grid.argmax(), grid.shape)
    assert abs(row - 0.25 * 16) <= 1.5 and abs(col - 0.75 * 16) <= 1.5
    assert grid.sum() == pytest.approx(1.0, abs=1e-3)


def test_line_statistics_are_recovered(fitted):
    line = fitted.classes["line"]
    assert line["orientation"] == pytest.approx(30.0, abs=3.0)
    # cv2 rasterises a 3-px line at 30 degrees about 4 px wide across.
    assert line["width_px"][2] == pytest.approx(3.5, abs=1.0)
    assert line["elongation"][2] < 0.15
    assert line["size"][2] == pytest.approx(2 * 40 * math.cos(math.radians(30)) / 120, abs=0.05)
    assert line["contrast"][2] < 0


def test_class_map_and_placement(fitted):
    generator = FittedGenerator(fitted)
    assert generator.defect_types == ("disc", "line")
    assert generator.class_map == {"disc": "spot", "line": "crack"}
    placement = generator.placement("line")
    low, high = placement["rotation"]
    assert low <= 30.0 <= high and high - low < 30
    assert placement["confine"] is False
    roi = placement["roi"](torch.zeros(1, 1, 60, 80))
    assert roi.shape == (1, 1, 60, 80) and roi.dtype == torch.bool and bool(roi.any())
    disc_roi = generator.placement("disc")["roi"](torch.zeros(1, 1, 64, 64))
    # The prior keeps the upper right, where the discs were.
    assert bool(disc_roi[0, 0, 16, 48]) and not bool(disc_roi[0, 0, 56, 8])
    with pytest.raises(ValueError, match="class_name: expected one of disc, line, got 'nope'"):
        generator.placement("nope")
    with pytest.raises(ValueError, match="class_name: expected one of disc, line"):
        generator.side_shares("nope")
    with pytest.raises(ValueError, match="side: expected None or one of top, bottom, left, right"):
        generator.placement("disc", side="middle")
    with pytest.raises(ValueError, match="class_map"):
        FittedGenerator(fitted, class_map={"disc": "laser"})


def test_generated_defects_follow_the_fit(fitted):
    generator = FittedGenerator(fitted)
    images = torch.full((4, 1, 96, 128), 0.6)
    for name in ("disc", "line"):
        out = inject_defects(images, name, generator, seed=3, **generator.placement(name))
        stats = [s for i in range(4) for s in measure_image(out.images[i], out.masks[i])]
        assert stats, name
        # Same contrast sign as the real ones (dark), magnitude of the same order.
        contrasts = [s["contrast"] for s in stats]
        assert np.median(contrasts) < -0.1, (name, contrasts)
    out = inject_defects(images, "line", generator, seed=5, **generator.placement("line"))
    angles = [
        s["orientation"] for i in range(4) for s in measure_image(out.images[i], out.masks[i])
    ]
    # Placement rotation is counter-clockwise, as the fitted orientation.
    assert np.median(angles) == pytest.approx(30.0, abs=15.0)


def test_edge_class_lands_on_its_side(tmp_path):
    rng = np.random.default_rng(1)
    records = []
    for index in range(5):
        image = np.full(SIZE, 0.6) + rng.normal(0, 0.01, SIZE)
        mask = np.zeros(SIZE, np.uint8)
        cv2.ellipse(mask, (40 + 15 * index, SIZE[0] - 1), (10, 7), 0, 180, 360, 1, -1)
        image[mask > 0] = 0.25
        records.append(_write(tmp_path, f"chip_{index}", image, mask))
    fitted = fit_defects(records)
    chip = fitted.classes["chip"]
    assert chip["on_edge"] == 1.0 and chip["sides"]["bottom"] == 1.0
    generator = FittedGenerator(fitted)
    assert generator.class_map["chip"] == "edge_chip"
    placement = generator.placement("chip")
    assert placement["rotation"] == (180.0, 180.0)
    out = inject_defects(torch.full((3, 1, 96, 96), 0.6), "chip", generator, seed=0, **placement)
    for mask in out.masks[:, 0]:
        rows = torch.nonzero(mask.any(dim=1)).flatten()
        assert int(rows.max()) >= 94, "the chip should reach the bottom border"
    with pytest.raises(ValueError, match="side"):
        generator.placement("chip", side="middle")
    assert generator.placement("chip", side="top")["rotation"] == (0.0, 0.0)


def test_round_trip_gives_same_config_and_samples(fitted, tmp_path):
    generator = FittedGenerator(fitted, params={"disc": {"irregularity": [0.2, 0.3]}})
    folder = generator.save_pretrained(tmp_path / "card", citation="synthetic fixtures")
    assert {p.name for p in folder.iterdir()} == {"config.json", "README.md", "model.safetensors"}
    assert (folder / "config.json").stat().st_size < 50_000
    loaded = FittedGenerator.from_pretrained(folder)
    assert loaded.get_config() == json.loads(json.dumps(generator.get_config()))
    for name in ("disc", "line"):
        first = generator.sample(3, name, generator=7, channels=1)
        again = loaded.sample(3, name, generator=7, channels=1)
        assert torch.equal(first.content, again.content) and torch.equal(first.alpha, again.alpha)
    via_registry = load_generator(str(folder))
    assert isinstance(via_registry, FittedGenerator)
    assert via_registry.class_map == generator.class_map


def _card_with(folder: Path, generator: FittedGenerator, edit) -> Path:
    generator.save_pretrained(folder)
    path = folder / "config.json"
    text = path.read_text()
    path.write_text(edit(text))
    return folder


def test_bad_cards_are_refused(fitted, tmp_path):
    generator = FittedGenerator(fitted)
    size = json.dumps(fitted.classes["disc"]["size"][0])
    nan = _card_with(tmp_path / "nan", generator, lambda t: t.replace(size, "NaN", 1))
    with pytest.raises(ValueError, match="NaN is not a JSON number"):
        FittedGenerator.from_pretrained(nan)
    with pytest.raises(ValueError, match="finite JSON number"):
        load_generator(str(nan))
    text_value = _card_with(tmp_path / "text", generator, lambda t: t.replace(size, '"big"', 1))
    with pytest.raises(ValueError, match=r"size\[0\]: expected a finite JSON number"):
        FittedGenerator.from_pretrained(text_value)

    def out_of_range(text: str) -> str:
        config = json.loads(text)
        config["kwargs"]["fitted"]["classes"]["line"]["bright_fraction"] = 3.5
        return json.dumps(config)

    bad = _card_with(tmp_path / "range", generator, out_of_range)
    with pytest.raises(ValueError, match=r"\['line'\]\.bright_fraction: expected a number in"):
        FittedGenerator.from_pretrained(bad)


def test_location_roi_band():
    prior = [[1.0 / 256] * 16 for _ in range(16)]
    mask = LocationRoi(prior, side="left", band=2)(torch.zeros(2, 1, 40, 50))
    assert mask.shape == (1, 1, 40, 50)
    assert bool(mask[0, 0, :, :2].all()) and not bool(mask[0, 0, :, 2:].any())
    # The band follows the prior's marginal along the side: defects seen only near the top.
    floor = 0.1 / 256
    top_only = [[floor + (0.9 / 64 if row < 4 else 0.0)] * 16 for row in range(16)]
    mask = LocationRoi(top_only, side="left", band=2)(torch.zeros(1, 1, 32, 32))
    assert bool(mask[0, 0, :8, :2].all()) and not bool(mask[0, 0, 8:].any())


def test_bad_arguments(fixture_records):
    with pytest.raises(ValueError, match="min_area"):
        fit_defects(fixture_records, min_area=0)
    with pytest.raises(ValueError, match="classes: no masked defect"):
        fit_defects(fixture_records, classes="scratch")
    with pytest.raises(TypeError, match="source"):
        fit_defects(42)


def _shared_data() -> Path:
    return Path(os.environ.get("DEFECTAUG_SHARED_DATA", Path(__file__).parents[2] / "shared/data"))


def test_shipped_magnetic_tile_card_matches_real_data():
    root = _shared_data() / "magnetic_tile"
    if not root.is_dir():
        pytest.skip(f"real data absent: {root} (set DEFECTAUG_SHARED_DATA)")
    generator = load_generator("procedural-magnetic-tile")
    assert isinstance(generator, FittedGenerator)
    assert set(generator.defect_types) == {"blowhole", "break", "crack", "fray", "uneven"}
    # Refit one small class from the training split: the card holds the same statistics.
    crack = fit_defects(root, split="train", classes="crack").classes["crack"]
    assert crack["size"] == pytest.approx(generator.fitted.classes["crack"]["size"], abs=1e-4)
    images = torch.full((2, 1, 128, 160), 0.45)
    for name in generator.defect_types:
        out = inject_defects(images, name, generator, seed=1, **generator.placement(name))
        assert bool(out.masks.any())


def test_bank_without_large_enough_regions_is_refused():
    from defectaug.generators.bank import DefectBank

    image = torch.full((1, 20, 20), 0.5)
    image[:, 5:15, 5:15] = 0.2
    alpha = torch.zeros(1, 20, 20)
    alpha[:, 5:15, 5:15] = 1.0
    bank = DefectBank({"a": [(image, alpha)]})
    assert list(fit_defects(bank).classes) == ["a"]
    with pytest.raises(ValueError, match="no masked defect of at least 5000 px"):
        fit_defects(bank, min_area=5000)


def _edge_stats(**changes) -> dict:
    """Statistics of an on-edge class, as ``fit_defects`` writes them, with ``changes``."""
    quantiles = [0.1, 0.2, 0.3, 0.4, 0.5]
    stats = {
        key: list(quantiles)
        for key in ("size", "elongation", "width_rel", "contrast", "border_distance")
    }
    stats |= {
        "width_px": [2.0, 3.0, 4.0, 5.0, 6.0],
        "long_px": [20.0, 25.0, 30.0, 35.0, 40.0],
        "texture": [1.0] * 5,
        "blur_px": [1.0] * 5,
        "count": [1.0] * 5,
        "depth_ratio": [0.5, 0.8, 1.0, 1.5, 2.0],
        "orientation_deviation": [5.0, 10.0, 20.0, 30.0, 40.0],
        "lean": [10.0, 20.0, 30.0, 45.0, 60.0],
        "n_defects": 20.0,
        "n_images": 20.0,
        "bright_fraction": 0.1,
        "on_edge": 0.9,
        "orientation": 60.0,
        "sides": {"top": 1.0, "bottom": 0.0, "left": 0.0, "right": 0.0},
        "location": [[1.0 / 256] * 16 for _ in range(16)],
    }
    return stats | changes


def test_rare_bright_share_gives_all_dark_and_slivers_lean():
    from defectaug.fitting import choose_painter, painter_parameters

    stats = _edge_stats()
    assert choose_painter(stats) == "edge_chip"
    params = painter_parameters("edge_chip", stats)
    assert params["bright_probability"] == 0.0
    # Thin chips lean like the real ones (inner range of the fitted lean).
    assert params["lean"] == pytest.approx([15.0, 52.5])
    assert painter_parameters("edge_chip", stats | {"bright_fraction": 0.5})[
        "bright_probability"
    ] == pytest.approx(0.5)
    assert painter_parameters("edge_chip", stats | {"bright_fraction": 0.9})[
        "bright_probability"
    ] == pytest.approx(1.0)


def test_large_faint_edge_class_is_a_shading_band():
    from defectaug.fitting import choose_painter

    contrast = [-0.05, 0.0, 0.05, 0.1, 0.2]
    stats = _edge_stats(size=[0.3, 0.8, 1.0, 1.1, 2.0], contrast=contrast, bright_fraction=0.7)
    assert choose_painter(stats) == "edge_shade"
    assert choose_painter(stats | {"on_edge": 0.1}) == "uneven"
    generator = FittedGenerator({"classes": {"shade": stats}})
    placement = generator.placement("shade")
    assert placement["scale"][1] <= 1.0  # an edge layer never outgrows the image
    out = inject_defects(torch.full((4, 1, 96, 96), 0.4), "shade", generator, seed=0, **placement)
    for mask in out.masks[:, 0]:
        rows = torch.nonzero(mask.any(dim=1)).flatten()
        # Within the layer's bilinear fade of the border: one layer pixel, up to 1.19 px now that
        # every renderer renders at the middle of a defect's size step (paint_side) and may
        # enlarge a layer by up to 2 ** 0.25 (the per-sample path always did).
        assert int(rows.min()) <= 2, "the band should reach the top border"


def test_thin_classes_paint_straight_cracks_at_their_real_spread_and_contrast():
    from defectaug.fitting import choose_painter, painter_parameters, placement_arguments

    stats = _edge_stats(elongation=[0.05] * 5, size=[0.2] * 5, on_edge=0.0)
    # No absolute statistics: the relief magnitudes are the relative contrast's quartiles.
    stats["contrast"] = [-0.5, -0.4, -0.3, -0.2, -0.1]
    assert choose_painter(stats) == "crack"
    params = painter_parameters("crack", stats)
    assert params["bend"] == pytest.approx(0.01)
    # Painted at 1.2 times the measured contrast quartiles.
    assert params["contrast"] == pytest.approx([0.24, 0.48])
    # Uniform over 60 +- 2 x the median deviation (20 degrees).
    assert placement_arguments("crack", stats)["rotation"] == pytest.approx((20.0, 100.0))
    wide = painter_parameters("crack", stats | {"elongation": [0.18] * 5})
    assert wide["bend"] > params["bend"]


def test_large_edge_patches_get_a_soft_outline_floor():
    from defectaug.fitting import painter_parameters

    stats = _edge_stats(elongation=[0.6] * 5, long_px=[200.0] * 5, blur_px=[1.0] * 5)
    params = painter_parameters("edge_patch", stats)
    assert params["softness"] == pytest.approx([0.02, 0.05])
    blurred = painter_parameters("edge_patch", stats | {"blur_px": [30.0] * 5})
    assert blurred["softness"][0] > 0.05


def test_edge_patches_are_narrower_than_their_median_depth_ratio():
    from defectaug.fitting import painter_parameters

    stats = _edge_stats(elongation=[0.6] * 5, long_px=[200.0] * 5)
    params = painter_parameters("edge_patch", stats)
    # Median depth ratio 1: the fill (0.95) wide, drawn from 0.85-1.1 of it (clipped at 1),
    # then narrowed to 0.8 of that, with a neck of 0.3-0.6 of the widest.
    assert params["width"] == pytest.approx([0.8 * 0.85 * 0.95, 0.8])
    assert params["neck"] == pytest.approx([0.3, 0.6])


def test_old_cards_without_lean_still_read():
    from defectaug.fitting import FittedDefects

    stats = _edge_stats()
    del stats["lean"]
    fitted = FittedDefects.from_dict({"classes": {"chip": stats}})
    assert fitted.classes["chip"]["lean"] == [0.0] * 5
    FittedGenerator(fitted)


def test_leaning_chip_is_one_piece():
    from defectaug.generators.procedural import EdgeChipParams

    generator = FittedGenerator(
        {"classes": {"chip": _edge_stats()}},
        params={"chip": {"lean": [40.0, 60.0], "width": [0.1, 0.12], "irregularity": [0.5, 0.6]}},
    )
    assert isinstance(generator.params["chip"], EdgeChipParams)
    layer = generator.sample(16, "chip", generator=3, channels=1, layer_size=(64, 64))
    for alpha in layer.alpha[:, 0]:
        # One piece; at most a few raster specks where the thin tip tapers out.
        count, _, stats, _ = cv2.connectedComponentsWithStats(
            (alpha >= 0.5).numpy().astype(np.uint8)
        )
        areas = sorted(stats[1:, cv2.CC_STAT_AREA].tolist())
        assert count >= 2 and sum(areas[:-1]) <= 0.03 * areas[-1]


def _generous_records(folder: Path, core: float, ground: float, surface: float) -> list:
    """Small dark discs (radius 4, tone ``core``) on a local ``ground`` patch, each inside a
    generous square mask (25 px a side), in images whose surface is at ``surface``."""
    rng = np.random.default_rng(2)
    records = []
    for index in range(6):
        image = np.full(SIZE, surface) + rng.normal(0, 0.004, SIZE)
        cx, cy = 60 + 6 * index, 60
        image[cy - 30 : cy + 31, cx - 30 : cx + 31] = ground + rng.normal(0, 0.004, (61, 61))
        disc = np.zeros(SIZE, np.uint8)
        cv2.circle(disc, (cx, cy), 4, 1, -1)
        image[disc > 0] = core
        mask = np.zeros(SIZE, np.uint8)
        mask[cy - 12 : cy + 13, cx - 12 : cx + 13] = 1
        records.append(_write(folder, f"pit_{index}", image, mask))
    return records


def test_generous_mask_fits_the_visible_core(tmp_path):
    records = _generous_records(tmp_path, core=0.2, ground=0.5, surface=0.5)
    pit = fit_defects(records).classes["pit"]
    # The disc (9 px across), not the 25 px mask; its contrast, not the mask's diluted mean.
    assert pit["size"][2] == pytest.approx(9 / 120, abs=0.01)
    assert pit["contrast"][2] == pytest.approx(-0.6, abs=0.05)
    assert pit["delta"][2] == pytest.approx(-0.3, abs=0.02)
    assert pit["visible"][2] == pytest.approx(math.pi * 4.5**2 / 25**2, abs=0.03)
    whole = fit_defects(records, core=False).classes["pit"]
    assert whole["size"][2] == pytest.approx(25 / 120, abs=0.01)
    assert -0.2 < whole["contrast"][2] < -0.02
    assert fit_defects(records).info["core"] is True


def test_textured_mask_without_one_sided_core_is_measured_whole(tmp_path):
    # Bright and dark stripes across the whole mask: no defect drawn generously, a texture.
    image = np.full(SIZE, 0.5)
    mask = np.zeros(SIZE, np.uint8)
    mask[20:100, 30:130] = 1
    for column in range(30, 130, 10):
        image[20:100, column : column + 5] = 0.58
        image[20:100, column + 5 : column + 10] = 0.43
    record = _write(tmp_path, "band_0", image, mask)
    band = fit_defects([record]).classes["band"]
    assert band["visible"][2] == 1.0
    assert band["size"][2] == pytest.approx(100 / 120, abs=0.02)


def test_relief_is_the_absolute_change_on_the_part_surface(tmp_path):
    from defectaug.fitting import painter_parameters

    # The same dark disc 0.1 below its ground: on a dark ground in a bright part (as BSData
    # pits sit in dark wear bands) and on a ground as bright as the part.
    dark_band = fit_defects(
        _generous_records(tmp_path / "a", core=0.15, ground=0.25, surface=0.5)
    ).classes["pit"]
    plain = fit_defects(
        _generous_records(tmp_path / "b", core=0.4, ground=0.5, surface=0.5)
    ).classes["pit"]
    assert dark_band["delta"][2] == pytest.approx(plain["delta"][2], abs=0.01)
    assert dark_band["contrast"][2] < 1.5 * plain["contrast"][2]  # -0.4 against -0.2
    assert dark_band["surface"][2] == pytest.approx(0.5, abs=0.01)
    # Painted relative to the surface it lands on: the same relief for both.
    relief_a = painter_parameters("spot", dark_band)["contrast"]
    relief_b = painter_parameters("spot", plain)["contrast"]
    assert relief_a == pytest.approx(relief_b, abs=0.02)
    assert np.mean(relief_a) == pytest.approx(1.3 * 0.1 / 0.5, abs=0.03)
    # On the part's surface, fitted pits change it about as much as the real ones did.
    generator = FittedGenerator(fit_defects(_generous_records(tmp_path / "c", 0.15, 0.25, 0.5)))
    out = inject_defects(
        torch.full((6, 1, 120, 160), 0.5),
        "pit",
        generator,
        seed=0,
        **generator.placement("pit"),
    )
    deltas = [s["delta"] for i in range(6) for s in measure_image(out.images[i], out.masks[i])]
    assert np.median(deltas) == pytest.approx(-0.1, abs=0.035)


def test_old_cards_without_absolute_statistics_paint_the_relative_contrast():
    from defectaug.fitting import FittedDefects, painter_parameters

    stats = _edge_stats(contrast=[-0.5, -0.4, -0.3, -0.2, -0.1])
    fitted = FittedDefects.from_dict({"classes": {"chip": stats}}).classes["chip"]
    assert fitted["delta"] == [0.0] * 5 and fitted["surface"] == [0.0] * 5
    low, high = painter_parameters("spot", fitted)["contrast"]
    assert (low, high) == pytest.approx((0.2 * 1.3, 0.4 * 1.3))


def test_break_slivers_are_thin_needles():
    from defectaug.fitting import painter_parameters

    stats = _edge_stats(width_rel=[0.05, 0.08, 0.12, 0.2, 0.3])
    params = painter_parameters("edge_chip", stats)
    # Narrow at the edge, widest inside, pointed: not a wedge standing on the edge.
    assert params["neck"][1] <= 0.6 and params["belly"][0] >= 0.2 and params["point"][0] >= 0.6
    # Widest 1.5 times the mean stroke width across the (leaning) axis.
    expected = 1.5 * 0.12 * 0.95 / math.cos(math.radians(30.0))
    assert np.mean(params["width"]) == pytest.approx(expected * 0.975, rel=0.02)
    generator = FittedGenerator({"classes": {"chip": stats}})
    layer = generator.sample(16, "chip", generator=3, channels=1, layer_size=(96, 96))
    for alpha in layer.alpha[:, 0]:
        region = (alpha >= 0.5).numpy()
        (measured,) = measure_image(torch.full((1, 96, 96), 0.5), torch.from_numpy(region)[None])
        assert measured["elongation"] < 0.45


def test_sizes_are_drawn_with_the_real_quartiles():
    from defectaug.fitting import placement_arguments

    # Skewed sizes: drawn up to the outer quantiles, a few large breaks would put most draws
    # at twice the median; the uniform draw's quartiles are the real ones instead.
    stats = _edge_stats(size=[0.01, 0.12, 0.18, 0.33, 1.07])
    low, high = (0.95 * v for v in placement_arguments("edge_chip", stats)["scale"])
    assert low + 0.25 * (high - low) == pytest.approx(0.12, abs=0.003)
    assert low + 0.75 * (high - low) == pytest.approx(0.33, abs=0.003)


def test_faint_shading_stays_near_the_visibility_floor():
    from defectaug.fitting import painter_parameters
    from defectaug.layer import VISIBILITY

    faint = [-0.035, 0.001, 0.028, 0.07, 0.15]
    stats = _edge_stats(
        size=[0.3, 0.8, 1.0, 1.1, 2.0],
        contrast=[-0.07, 0.0, 0.05, 0.15, 0.3],
        bright_fraction=0.8,
        delta=faint,
        level=[0.3, 0.4, 0.5, 0.6, 0.7],
        surface=[0.3, 0.4, 0.5, 0.6, 0.7],
    )
    params = painter_parameters("edge_shade", stats)
    # From 2 to 3 times the floor (or the real change) over the room above the surface.
    assert params["contrast"] == pytest.approx(
        [2 * VISIBILITY / 0.5, 3 * VISIBILITY / 0.5], abs=1e-3
    )
    assert params["gradient"][0] >= 0.5 and params["softness"][0] >= 0.04
    generator = FittedGenerator({"classes": {"shade": stats}})
    placement = generator.placement("shade")
    out = inject_defects(torch.full((4, 1, 96, 96), 0.5), "shade", generator, seed=0, **placement)
    for image, mask in zip(out.images, out.masks, strict=True):
        change = (image - 0.5)[mask >= 0.5]
        assert change.numel() > 0
        # Faint: a few floors at most, not a clearly brighter patch.
        assert float(change.mean()) < 4 * VISIBILITY and float(change.max()) < 0.12
