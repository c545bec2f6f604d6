"""Procedural defects fitted to a user's own real defects (few-shot: 5 to 50 per class).

:func:`fit_defects` measures, per class and per connected defect region of the real masks: size
(longer box side / image shorter side), elongation (minor / major principal axis), orientation
(principal axis angle), count per image, stroke width (distance transform on the ridge), contrast
against the local background (mean inside vs a ring around it: sign, relative and absolute
magnitude, texture as a std ratio), edge blur (step height over the boundary gradient, as a
Gaussian sigma), and where the defects lie (a smoothed 16x16 histogram of normalised centroids,
the distance to the image border and the border side they touch). Shape and contrast are those
of each region's visible core (the mask pixels that differ from the ring by more than
``VISIBILITY``), as an injected defect's mask is exactly its visible change; generous masks drawn
around a small defect fit the defect. Robust quantiles are stored, not means.

Painters get the real *absolute* change over the part's surface level (see
:func:`_relief_magnitudes`): a relative contrast measured where defects sit on darker ground than
the rest of the part would paint them far too dark on it.

:class:`FittedGenerator` turns the statistics into procedural painters (one painter type per
class, ``class_map``, chosen by a simple rule and overridable) and placement arguments::

    fitted = fit_defects("data/magnetic_tile", split="train")
    generator = FittedGenerator(fitted)
    out = inject_defects(images, "crack", generator, **generator.placement("crack"))

``generator.save_pretrained(folder)`` writes a card without any pickle (``config.json`` holding
every statistic as JSON numbers, ``README.md``, and an empty ``model.safetensors`` so the hub
loader accepts the folder); ``FittedGenerator.from_pretrained(folder)`` and
``load_generator(folder or shipped card name)`` read it back.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
from huggingface_hub import ModelCard, ModelCardData
from safetensors.torch import save_file
from scipy import ndimage

import defectaug
from defectaug.datasets import DefectRecord, load_image, load_mask, read_defect_dataset
from defectaug.generators.bank import DefectBank
from defectaug.generators.hub import (
    CARD_NAME,
    CONFIG_NAME,
    FORMAT_NAME,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    PretrainedDefectGenerator,
    register_architecture,
    resolve_pretrained,
)
from defectaug.generators.procedural import (
    ANCHORED_TYPES,
    PAINTER_PARAMS,
    ProceduralGenerator,
    _Params,
    _resolve_params,
)
from defectaug.layer import VISIBILITY
from defectaug.location import (
    EDGE_SHARE,
    QUANTILES,
    SIDES,
    LocationRoi,
    check_placement_request,
    count_range,
    edge_placement,
    edge_tolerance,
    location_prior,
    quantiles,
    region_site,
    scale_range,
    side_shares,
)

#: Painter types a class may map to.
PAINTERS = tuple(PAINTER_PARAMS)
ARCHITECTURE = "defectaug-fitted-procedural"

# Allowed ranges of the stored statistics (checked when a card is read: a hand-edited or corrupt
# card fails with the key's path instead of drawing nonsense).
_QUANTILE_BOUNDS: dict[str, tuple[float, float]] = {
    "size": (0.0, 50.0),
    "elongation": (0.0, 1.0),
    "width_px": (0.0, 1e5),
    "width_rel": (0.0, 1.0),
    "long_px": (0.0, 1e6),
    "contrast": (-1.0, 50.0),
    "texture": (0.0, 1e3),
    "blur_px": (0.0, 1e3),
    "count": (0.0, 1e5),
    "border_distance": (0.0, 1.0),
    "depth_ratio": (0.0, 1e3),
    "orientation_deviation": (0.0, 90.0),
}
# Quantile statistics added after the first cards: a card without them reads as all zeros.
# ``delta``: mean change inside the defect, absolute (in [0, 1] image units); ``level``: the
# local background level around it; ``surface``: the part's level in the defect's image (its
# defect-free pixels' median); ``visible``: share of the mask in the visible core.
_OPTIONAL_QUANTILE_BOUNDS: dict[str, tuple[float, float]] = {
    "lean": (0.0, 90.0),
    "delta": (-1.0, 1.0),
    "level": (0.0, 1.0),
    "surface": (0.0, 1.0),
    "visible": (0.0, 1.0),
}
_SCALAR_BOUNDS: dict[str, tuple[float, float]] = {
    "n_defects": (1.0, 1e9),
    "n_images": (1.0, 1e9),
    "bright_fraction": (0.0, 1.0),
    "on_edge": (0.0, 1.0),
    "orientation": (-90.0, 90.0),
}


# ------------------------------------------------------------------------------- measuring
def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _ring(region: np.ndarray, defects: np.ndarray, width_px: float) -> np.ndarray:
    """The local background of ``region``: a ring around it, kept off every defect."""
    ring_px = int(np.clip(round(0.25 * math.sqrt(region.sum()) + 0.5 * width_px), 3, 25))
    grown = cv2.dilate(region.astype(np.uint8), _disk(ring_px)).astype(bool)
    near = cv2.dilate(region.astype(np.uint8), _disk(1)).astype(bool)
    ring = grown & ~near & ~defects
    return ring if ring.sum() >= 4 else ~defects


def _shape_stats(region: np.ndarray) -> dict[str, float]:
    """Box, principal axes and stroke width of a bool ``[H, W]`` region."""
    ys, xs = np.nonzero(region)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    long_px = float(max(y1 - y0 + 1, x1 - x0 + 1))
    # Principal axes from the second moments; +1 so a one-pixel-wide line has width ~1, not 0.
    cov = np.cov(np.stack([ys, xs]).astype(np.float64)) if ys.size > 1 else np.zeros((2, 2))
    evals, evecs = np.linalg.eigh(cov)
    major = 4.0 * math.sqrt(max(evals[1], 0.0)) + 1.0
    minor = 4.0 * math.sqrt(max(evals[0], 0.0)) + 1.0
    vy, vx = evecs[0, 1], evecs[1, 1]
    # Angle counter-clockwise from the x axis as seen on screen (y points down), in (-90, 90].
    angle = math.degrees(math.atan2(-vy, vx))
    angle = (angle + 90.0) % 180.0 - 90.0
    # Stroke width: twice the distance transform along the ridge (its local maxima), minus the
    # centre pixel's own half, so a line w px wide measures w.
    padded = np.pad(region, 1)
    distance = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
    ridge = region & (distance >= ndimage.maximum_filter(distance, size=3))
    ridge_width = 2.0 * float(np.median(distance[ridge])) - 1.0
    # The ridge estimate runs high on diagonal raster lines; area / major axis is exact for
    # straight strokes and only runs high on curved ones: the smaller of the two.
    width_px = max(1.0, min(ridge_width, float(region.sum()) / major))
    return {
        "box": (int(y0), int(y1), int(x0), int(x1)),
        "long_px": long_px,
        "major": major,
        "minor": minor,
        "angle": angle,
        "width_px": width_px,
    }


#: Smallest Gaussian sigma (px) of the blur applied before deciding which mask pixels visibly
#: differ from the ring around them (single grain pixels do not make a core).
CORE_SIGMA = 1.0


def _visible_core(
    gray: np.ndarray, region: np.ndarray, level: float, sign: float, scale_px: float, min_area: int
) -> np.ndarray | None:
    """The part of ``region`` that visibly differs from the local background ``level``.

    Pixels beyond ``VISIBILITY`` from ``level`` on the defect's side ``sign``, both themselves
    and on ``gray`` blurred at a tenth of the defect's width ``scale_px`` (at least
    ``CORE_SIGMA``): grain and streaks finer than the defect do not count, so a large faint
    patch on a streaky surface is not reduced to its brightest streaks. Holes are filled (a
    glint inside a pit is part of it) and islands under a tenth of the largest one dropped.
    ``None`` (the whole region is measured then) when the core is under ``min_area`` pixels
    or 5 % of the region (no visible core), or when more than a quarter as many pixels
    visibly differ the other way (a textured or shaded area, not a defect drawn generously:
    its one-sided part would be its brightest streaks, not the defect).
    """
    sigma = max(CORE_SIGMA, 0.1 * scale_px)
    margin = int(math.ceil(3.0 * sigma)) + 1
    ys, xs = np.nonzero(region)
    top, left = max(int(ys.min()) - margin, 0), max(int(xs.min()) - margin, 0)
    bottom, right = int(ys.max()) + margin + 1, int(xs.max()) + margin + 1
    smooth = cv2.GaussianBlur(gray[top:bottom, left:right], (0, 0), sigma)
    raw = gray[top:bottom, left:right]
    window = region[top:bottom, left:right]
    core = np.zeros_like(region)
    # Both the pixel and its neighbourhood must differ: no grain, and no halo of the blur.
    # Closed over one-pixel gaps (a streak of the surface crossing a faint patch) and filled.
    found = window & (sign * (smooth - level) > VISIBILITY) & (sign * (raw - level) > VISIBILITY)
    found = cv2.morphologyEx(found.astype(np.uint8), cv2.MORPH_CLOSE, _disk(1)).astype(bool)
    core[top:bottom, left:right] = ndimage.binary_fill_holes(found & window)
    total = int(core.sum())
    opposite = int((window & (sign * (level - smooth) > VISIBILITY)).sum())
    if total < max(min_area, 0.05 * float(region.sum())) or opposite > 0.25 * total:
        return None
    count, labels, table, _ = cv2.connectedComponentsWithStats(core.astype(np.uint8), 8)
    if count > 2:
        areas = table[1:, cv2.CC_STAT_AREA]
        keep = np.flatnonzero(areas >= 0.1 * areas.max()) + 1
        core = np.isin(labels, keep)
    return core


def _region_stats(
    gray: np.ndarray,
    region: np.ndarray,
    defects: np.ndarray,
    gradient: np.ndarray,
    core: bool = True,
    surface: float = 0.0,
    min_area: int = 4,
) -> dict[str, float]:
    """Statistics of one connected region ``region`` (bool ``[H, W]``) of image ``gray``.

    With ``core`` the shape and appearance are those of the region's visible core
    (:func:`_visible_core`): real masks are often drawn generously around a defect, while the
    masks of injected defects hold exactly the visibly changed pixels, so the visible core is
    what a fitted defect has to reproduce. Where it lies (centre, border, side) is always the
    whole region's.
    """
    height, width = gray.shape
    short = float(min(height, width))
    whole = _shape_stats(region)
    ring = _ring(region, defects, whole["width_px"])
    outside = gray[ring]
    mean_out = float(outside.mean())
    measured, shape, visible = region, whole, 1.0
    if core:
        sign = 1.0 if float(gray[region].mean()) > mean_out else -1.0
        visible_core = _visible_core(gray, region, mean_out, sign, whole["width_px"], min_area)
        if visible_core is not None:
            measured, shape = visible_core, _shape_stats(visible_core)
            visible = float(visible_core.sum()) / float(region.sum())
    inside = gray[measured]
    mean_in = float(inside.mean())
    # Relative to the local level (the painters' relief is relative to the surface tone) and
    # absolute (``delta``): the two differ where defects sit on darker or brighter ground
    # than the part's ``surface`` level, where a fitted defect lands.
    contrast = (mean_in - mean_out) / max(mean_out, 0.02)
    texture = float(inside.std()) / max(float(outside.std()), 1e-3)
    # Edge blur: a Gaussian-blurred step of height d has a peak gradient d / (sigma sqrt(2 pi)).
    near = cv2.dilate(measured.astype(np.uint8), _disk(1)).astype(bool)
    boundary = near & ~cv2.erode(measured.astype(np.uint8), _disk(1)).astype(bool)
    step = abs(mean_in - mean_out)
    slope = float(gradient[boundary].mean()) if boundary.any() else 0.0
    blur = step / (math.sqrt(2.0 * math.pi) * slope) if step > 0.01 and slope > 1e-6 else math.nan
    cy, cx, gaps = region_site(region)
    side = min(gaps, key=gaps.get)
    c0, c1, d0, d1 = shape["box"]
    box_h, box_w = c1 - c0 + 1, d1 - d0 + 1
    along, across = (box_w, box_h) if side in ("top", "bottom") else (box_h, box_w)
    long_px, width_px = shape["long_px"], shape["width_px"]
    return {
        "size": long_px / short,
        "elongation": min(1.0, shape["minor"] / shape["major"]),
        "orientation": shape["angle"],
        "width_px": width_px,
        "width_rel": min(1.0, width_px / long_px),
        "long_px": long_px,
        "contrast": contrast,
        "delta": mean_in - mean_out,
        "level": mean_out,
        "surface": surface,
        "visible": visible,
        "texture": texture,
        "blur_px": float(np.clip(blur, 0.2, 50.0)) if math.isfinite(blur) else math.nan,
        "border_px": float(gaps[side]),
        "border_distance": gaps[side] / short,
        "side": SIDES.index(side),
        "depth_ratio": across / along,
        "cy": cy,
        "cx": cx,
        "short": short,
    }


def measure_image(
    image: torch.Tensor, mask: torch.Tensor, min_area: int = 4, core: bool = True
) -> list[dict[str, float]]:
    """Per-region statistics of one image ``[C, H, W]`` and its defect mask ``[1, H, W]``.

    ``core``: measure each region's visible core (the mask pixels differing from the ring
    around the region by more than ``VISIBILITY``) for shape and contrast, not the whole mask.
    """
    gray = image.float().mean(dim=0).cpu().numpy().astype(np.float32)
    binary = (mask[0] >= 0.5 if mask.dtype != torch.bool else mask[0]).cpu().numpy()
    count, labels = cv2.connectedComponents(binary.astype(np.uint8), connectivity=8)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    gradient = np.hypot(gx, gy)
    # The part's surface level, where fitted defects land: the median of the defect-free pixels.
    surface = float(np.median(gray[~binary])) if (~binary).any() else float(np.median(gray))
    stats = []
    for index in range(1, count):
        region = labels == index
        if region.sum() >= min_area:
            stats.append(_region_stats(gray, region, binary, gradient, core, surface, min_area))
    return stats


def _axial_mean(angles: Sequence[float]) -> tuple[float, list[float]]:
    """Mean of axial angles (degrees, period 180) and each one's absolute deviation from it."""
    doubled = np.radians(np.asarray(angles, dtype=np.float64) * 2.0)
    mean = math.degrees(math.atan2(np.sin(doubled).mean(), np.cos(doubled).mean())) / 2.0
    deviation = (np.asarray(angles) - mean + 90.0) % 180.0 - 90.0
    return mean, [abs(float(d)) for d in deviation]


def _summarise(regions: list[dict[str, float]], counts: list[int]) -> dict[str, Any]:
    def column(key: str) -> list[float]:
        return [r[key] for r in regions]

    orientation, deviation = _axial_mean(column("orientation"))
    on_edge = [r["border_px"] <= edge_tolerance(r["short"]) for r in regions]
    # Lean: tilt of the principal axis from the normal of the side a region touches (0: straight
    # in from the edge, 90: lying along it), over the on-edge regions (all when none is).
    edge_regions = [r for r, touching in zip(regions, on_edge, strict=True) if touching]
    leaning = edge_regions or regions
    lean = [
        90.0 - abs(r["orientation"]) if int(r["side"]) < 2 else abs(r["orientation"])
        for r in leaning
    ]
    return {
        "n_defects": len(regions),
        "n_images": len(counts),
        **{key: quantiles(column(key)) for key in _QUANTILE_BOUNDS if key in regions[0]},
        **{key: quantiles(column(key)) for key in _OPTIONAL_QUANTILE_BOUNDS if key in regions[0]},
        "count": quantiles([float(c) for c in counts]),
        "lean": quantiles(lean),
        "orientation": round(orientation, 4),
        "orientation_deviation": quantiles(deviation),
        "bright_fraction": round(sum(c > 0 for c in column("contrast")) / len(regions), 6),
        "on_edge": round(sum(on_edge) / len(regions), 6),
        "sides": side_shares([SIDES[int(r["side"])] for r in edge_regions]),
        "location": location_prior([(r["cy"], r["cx"]) for r in regions]),
    }


# ------------------------------------------------------------------------------- the fit
@dataclass
class FittedDefects:
    """Per-class statistics of real defects (see :func:`fit_defects`); JSON types only.

    Attributes:
        classes: class name -> statistics: quantile lists (``QUANTILES``) for ``size``,
            ``elongation``, ``width_px``, ``width_rel``, ``long_px``, ``contrast``, ``texture``,
            ``blur_px``, ``count``, ``border_distance``, ``depth_ratio`` and
            ``orientation_deviation``; numbers ``n_defects``, ``n_images``, ``orientation``
            (degrees, counter-clockwise), ``bright_fraction``, ``on_edge``; ``sides`` (share of
            on-edge defects per image side) and ``location`` (a 16x16 prior summing to 1).
        source: what was fitted (a description for the card).
    """

    classes: dict[str, dict[str, Any]]
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"classes": self.classes, "source": self.source, "info": self.info}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FittedDefects:
        """Validate and wrap ``to_dict()`` output; a bad value raises ``ValueError`` naming it."""
        if not isinstance(data, Mapping) or not isinstance(data.get("classes"), Mapping):
            raise ValueError("fitted: expected a mapping with a 'classes' mapping of statistics")
        if not data["classes"]:
            raise ValueError("fitted: 'classes' is empty")
        classes = {}
        for name, stats in data["classes"].items():
            classes[str(name)] = _check_stats(f"fitted.classes[{name!r}]", stats)
        source = data.get("source", "")
        info = data.get("info", {})
        if not isinstance(source, str) or not isinstance(info, Mapping):
            raise ValueError("fitted: 'source' must be a string and 'info' a mapping")
        return cls(classes, source, dict(info))

    def summary(self) -> str:
        """One line per class with the median statistics."""
        lines = []
        for name, s in self.classes.items():
            lines.append(
                f"{name}: n={s['n_defects']} size={s['size'][2]:.3f} "
                f"elong={s['elongation'][2]:.2f} "
                f"width={s['width_px'][2]:.1f}px contrast={s['contrast'][2]:+.3f} "
                f"blur={s['blur_px'][2]:.2f}px bright={s['bright_fraction']:.2f} "
                f"on_edge={s['on_edge']:.2f} orient={s['orientation']:.0f}deg"
            )
        return "\n".join(lines)


def _number(where: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a finite JSON number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{where}: expected a number in [{low}, {high}], got {value!r}")
    return float(value)


def _check_stats(where: str, stats: Any) -> dict[str, Any]:
    if not isinstance(stats, Mapping):
        raise ValueError(f"{where}: expected a mapping of statistics, got {type(stats).__name__}")
    out: dict[str, Any] = {}
    absent = [0.0] * len(QUANTILES)
    bounds = [(key, span, None) for key, span in _QUANTILE_BOUNDS.items()]
    bounds += [(key, span, absent) for key, span in _OPTIONAL_QUANTILE_BOUNDS.items()]
    for key, (low, high), default in bounds:
        values = stats.get(key, default)
        if not isinstance(values, list) or len(values) != len(QUANTILES):
            raise ValueError(f"{where}.{key}: expected a list of {len(QUANTILES)} quantiles")
        numbers = [_number(f"{where}.{key}[{i}]", v, low, high) for i, v in enumerate(values)]
        if any(b < a for a, b in zip(numbers, numbers[1:], strict=False)):
            raise ValueError(f"{where}.{key}: quantiles must not decrease, got {numbers}")
        out[key] = numbers
    for key, (low, high) in _SCALAR_BOUNDS.items():
        out[key] = _number(f"{where}.{key}", stats.get(key), low, high)
    sides = stats.get("sides")
    if not isinstance(sides, Mapping) or set(sides) != set(SIDES):
        raise ValueError(f"{where}.sides: expected shares for {', '.join(SIDES)}")
    out["sides"] = {s: _number(f"{where}.sides.{s}", sides[s], 0.0, 1.0) for s in SIDES}
    grid = stats.get("location")
    if (
        not isinstance(grid, list)
        or not 1 <= len(grid) <= 256
        or not all(isinstance(row, list) and len(row) == len(grid) for row in grid)
    ):
        raise ValueError(f"{where}.location: expected a square nested list (at most 256 cells)")
    cells = [
        [_number(f"{where}.location[{i}][{j}]", v, 0.0, 1.0) for j, v in enumerate(row)]
        for i, row in enumerate(grid)
    ]
    total = sum(map(sum, cells))
    if not 0.99 <= total <= 1.01:
        raise ValueError(f"{where}.location: cells must sum to 1, got {total:.4f}")
    out["location"] = cells
    return out


def fit_defects(
    source: str | os.PathLike[str] | Sequence[DefectRecord] | DefectBank,
    *,
    split: str | None = None,
    classes: str | Sequence[str] | None = None,
    min_area: int = 4,
    core: bool = True,
) -> FittedDefects:
    """Fit per-class defect statistics from real defects with masks.

    Args:
        source: a dataset root (``read_defect_dataset`` layout; pass ``split=``), a list of
            ``DefectRecord`` (records without a mask are skipped), or a ``DefectBank`` (its crops
            carry no image context: the location prior is then uniform and nothing is on an edge;
            crops of the bank's edge classes are measured as stored, their border side on top).
        split: the split to read from a dataset root (fit on training data only).
        classes: class name(s) to fit (default: every label that has masks).
        min_area: connected regions smaller than this many pixels are ignored.
        core: measure each region's visible core (mask pixels differing from the ring around
            the region by more than ``VISIBILITY``) for size, shape and contrast: a generous
            mask drawn around a small defect fits the defect, not the mask (an injected defect's
            mask is exactly its visible change). ``False`` measures whole mask regions.
    """
    if not isinstance(min_area, int) or isinstance(min_area, bool) or min_area < 1:
        raise ValueError(f"min_area: expected an int >= 1, got {min_area!r}")
    wanted = [classes] if isinstance(classes, str) else None if classes is None else list(classes)
    per_class: dict[str, tuple[list[dict[str, float]], list[int]]] = {}
    if isinstance(source, DefectBank):
        description = f"DefectBank of {len(source)} crops"
        for content, alpha, label in zip(
            source._contents, source._alphas, source.crop_labels.tolist(), strict=True
        ):
            name = source.defect_types[label]
            if wanted is not None and name not in wanted:
                continue
            regions = measure_image(content, alpha >= 0.5, min_area, core)
            if not regions:
                continue  # as for records: an empty class would reach _summarise with no region
            for region in regions:
                # A crop is not the image: no location, no border.
                region.update(cy=0.5, cx=0.5, border_px=1e9, border_distance=1.0)
            bucket = per_class.setdefault(name, ([], []))
            bucket[0].extend(regions)
            bucket[1].append(len(regions))
    else:
        if isinstance(source, (str, os.PathLike)):
            records = read_defect_dataset(source, split)
            description = f"{os.fspath(source)} (split {split!r})"
        elif isinstance(source, Sequence) and all(isinstance(r, DefectRecord) for r in source):
            records = list(source)
            description = f"{len(records)} records"
        else:
            raise TypeError(
                "source: expected a dataset folder, a list of DefectRecord or a DefectBank, got "
                f"{type(source).__name__}"
            )
        for record in records:
            if record.mask is None or (wanted is not None and record.label not in wanted):
                continue
            mask = load_mask(record.mask)
            if not bool(mask.any()):
                continue
            image = load_image(record.image)
            if image.shape[-2:] != mask.shape[-2:]:
                raise ValueError(
                    f"source: mask {record.mask} is {tuple(mask.shape[-2:])} but its image is "
                    f"{tuple(image.shape[-2:])}"
                )
            regions = measure_image(image, mask, min_area, core)
            if regions:
                bucket = per_class.setdefault(record.label, ([], []))
                bucket[0].extend(regions)
                bucket[1].append(len(regions))
    if wanted is not None:
        missing = [name for name in wanted if name not in per_class]
        if missing:
            raise ValueError(
                f"classes: no masked defect of at least {min_area} px for {', '.join(missing)} "
                f"in {description}; found: {', '.join(sorted(per_class)) or 'none'}"
            )
    if not per_class:
        raise ValueError(f"source: no masked defect of at least {min_area} px in {description}")
    fitted = {name: _summarise(*per_class[name]) for name in sorted(per_class)}
    info = {"min_area": min_area, "quantiles": list(QUANTILES), "core": bool(core)}
    return FittedDefects(fitted, description, info)


# ------------------------------------------------------------------------------- mapping
def choose_painter(stats: Mapping[str, Any]) -> str:
    """The painter type for a class, by a simple rule on its median statistics.

    Large and faint: ``edge_shade`` (a shading band) when most lie on an image edge, else
    ``uneven``; on an image edge for most defects: ``edge_patch`` when large, else
    ``edge_chip``; thin (minor/major <= 0.3) and long: ``crack`` (dark) or ``scratch``;
    large otherwise: ``stain``; small and compact: ``spot`` (a single irregular blob; the count
    per image comes from the placement).
    """
    size, elongation = stats["size"][2], stats["elongation"][2]
    contrast = abs(stats["contrast"][2])
    # Thin and long first: cracks run from edge to edge, so they touch borders too.
    if elongation <= 0.2 and size >= 0.1:
        return "crack" if stats["bright_fraction"] < 0.5 else "scratch"
    if size >= 0.35 and contrast < 0.12:
        return "edge_shade" if stats["on_edge"] >= EDGE_SHARE else "uneven"
    if stats["on_edge"] >= EDGE_SHARE:
        return "edge_patch" if size >= 0.35 else "edge_chip"
    if size >= 0.5:
        return "stain"
    return "spot"


def _span(low: float, high: float, bounds: tuple[float, float], width: float = 0.0) -> list[float]:
    """A ``[low, high]`` range clipped into ``bounds`` and at least ``width`` wide."""
    lo_b, hi_b = bounds
    low, high = sorted((float(low), float(high)))
    if high - low < width:
        middle = (low + high) / 2.0
        low, high = middle - width / 2.0, middle + width / 2.0
    low = min(max(low, lo_b), hi_b)
    high = min(max(high, low), hi_b)
    return [round(low, 5), round(high, 5)]


def _inner(q: Sequence[float]) -> tuple[float, float]:
    """A robust range from 5 quantiles: halfway between q05/q25 and between q75/q95."""
    return (q[0] + q[1]) / 2.0, (q[3] + q[4]) / 2.0


# How much of the layer's longer side each painter's defect fills (the placement's ``scale`` is
# the layer's longer side, the fitted ``size`` the defect's box).
_FILL = {"spot": 0.85, "stain": 0.9, "crack": 0.9, "scratch": 0.85, "uneven": 0.9, "pit": 0.6}
_FILL |= {"edge_chip": 0.95, "edge_patch": 0.95, "edge_shade": 0.95}
#: Below this share of bright real defects, fitted defects are all dark (and the reverse above
#: ``1 -`` it): a few bright outliers in a small fit would otherwise give glaring opposites.
_MINORITY_SHARE = 0.2


def _bright_probability(share: float) -> float:
    share = float(share)
    if share < _MINORITY_SHARE:
        return 0.0
    if share > 1.0 - _MINORITY_SHARE:
        return 1.0
    return round(share, 4)


def _relief_magnitudes(stats: Mapping[str, Any]) -> list[float]:
    """Lower quartile, median and upper quartile of the relief to paint, sorted.

    A painter's relief scales the surface it lands on: a dark defect takes ``relief * tone``
    off it, a bright one adds ``relief * (1 - tone)``. Fitted defects land on the part's
    ``surface`` level, which can differ from the local ``level`` the real ones were measured
    against (BSData pits sit in darker wear bands: a relative contrast measured there paints
    far too dark a pit on the bright surface). So the relief is the real *absolute* change
    ``delta`` over the room the surface leaves (its level for dark defects, one minus it for
    bright ones): on the part's surface a fitted defect changes the tone as much as the real
    ones do. Where the real defects' local level leaves more room than the surface, that is
    used instead: the relief stays within both the real relative and absolute contrasts.
    Cards fitted before ``delta`` was stored use the relative contrast.
    """
    delta, surface = stats.get("delta"), stats.get("surface")
    if not delta or not surface or surface[2] <= 0.0 or not any(delta):
        return sorted(abs(v) for v in stats["contrast"][1:4])
    bright = float(stats["bright_fraction"]) > 0.5
    level = stats.get("level", surface)[2]
    # Over the larger room of the two: a defect seen on brighter ground than the part's
    # surface (magnetic-tile cracks) keeps its relative contrast rather than a stronger one.
    room = max(1.0 - min(surface[2], level) if bright else max(surface[2], level), 0.05)
    return sorted(abs(v) / room for v in delta[1:4])


def _shade_contrast(
    stats: Mapping[str, Any], magnitude: Sequence[float], bounds: tuple[float, float]
) -> list[float]:
    """Relief of a faint shading band: the real change, kept just above the visibility floor.

    Real shading is often fainter than ``VISIBILITY`` over much of its (hand-drawn) mask; an
    injected one is labelled where it visibly changes the image, so it is painted from 2 to 3
    times the floor at the edge (or the real median and upper quartile change, when stronger)
    on the part's surface level, fading inwards (``gradient``) to sink below the floor: faint,
    with no hard far border, yet one coherent mask rather than scattered fragments.
    """
    surface = stats.get("surface", [0.0] * len(QUANTILES))[2]
    if surface <= 0.0:  # a card without absolute statistics: the relative contrast
        return _span(max(magnitude[0] * 1.4, 0.15), max(magnitude[2] * 1.4, 0.25), bounds)
    bright = float(stats["bright_fraction"]) > 0.5
    room = max(1.0 - surface if bright else surface, 0.05)
    delta = sorted(abs(v) for v in stats["delta"][2:4])
    low = max(delta[0], 2.0 * VISIBILITY) / room
    high = max(delta[1], 3.0 * VISIBILITY) / room
    return _span(low, high, bounds, 0.02)


def painter_parameters(painter: str, stats: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters of ``painter`` (fields of its ``*Params``) set from a class's statistics."""
    cls = PAINTER_PARAMS[painter]
    bounds = {f.name: f.metadata["bounds"] for f in cls.__dataclass_fields__.values()}
    magnitude = _relief_magnitudes(stats)
    # The mean contrast over the visible core is diluted by soft edges and, for thin strokes,
    # by their fading rims: the painted core relief must be stronger than the measured mean.
    # Cracks and edge patches take less (chosen on training-split window KID, see
    # benchmarks/README): a patch's large area has little rim to dilute, and cracks at 1.4 read
    # darker than the real faint hairlines (1.0 and 1.2 tie on KID; 1.2 keeps the refitted
    # contrast nearer the real one).
    gain = {"crack": 1.2, "scratch": 1.4, "spot": 1.3, "pit": 1.5, "edge_patch": 1.0}.get(
        painter, 1.4
    )
    params: dict[str, Any] = {
        "contrast": _span(magnitude[0] * gain, magnitude[2] * gain, bounds["contrast"], 0.02),
        "bright_probability": _bright_probability(stats["bright_fraction"]),
        # Content is the landing patch shaded, so it already has the surface's grain; a defect
        # rougher than its surround gets extra grain.
        "texture": _span(0.0, min(0.25, 0.08 * max(stats["texture"][2] - 1.0, 0.0)), (0, 0.5)),
    }
    blur_px, long_px = stats["blur_px"][2], max(stats["long_px"][2], 4.0)
    # Sizes are fractions of the layer's shorter side S, which maps to ~long_px / fill pixels.
    layer_px = long_px / _FILL[painter]
    if painter in ("crack", "scratch"):
        width = [v / layer_px for v in _inner([stats["width_px"][i] for i in range(5)])]
        params |= {
            "width": _span(*width, bounds["width"]),
            "length": _span(0.85, 0.95, bounds["length"]),
            # Drawn along the layer's x axis: the placement's rotation sets the orientation.
            "heading": [0.0, 0.0],
            "width_jitter": _span(0.1, 0.35, bounds["width_jitter"]),
            "fade": _span(0.0, 0.3, bounds["fade"]),
        }
        if painter == "crack":
            # Elongated classes bend little: straighter for lower minor/major.
            jag = 0.15 + 0.8 * stats["elongation"][2]
            params |= {"jaggedness": _span(0.5 * jag, jag, bounds["jaggedness"])}
            params |= {"branches": [0, 0] if stats["elongation"][2] < 0.15 else [0, 1]}
            # ... and their course drifts less: thin real cracks run nearly straight.
            params |= {"bend": round(0.2 * stats["elongation"][2], 4)}
        else:
            params |= {"curvature": _span(0.0, 0.1, bounds["curvature"])}
            params |= {"highlight_probability": 0.0}
    elif painter in ("spot", "stain"):
        aspect = _span(*_inner(stats["elongation"]), bounds["aspect"], 0.05)
        # Radius such that the major axis spans ``fill`` of the layer: major = r / sqrt(aspect).
        mid_aspect = math.sqrt(aspect[0] * aspect[1])
        radius = _FILL[painter] / 2.0 * math.sqrt(mid_aspect) / 1.05
        softness = min(0.9, 3.0 * blur_px / max(0.5 * long_px, 1.0))
        # Ragged outlines: a solid ellipse is as wide (stroke width / length) as its minor /
        # major axis; real blobs much thinner than that (BSData pits: 0.12 against 0.6) are
        # frayed, so their outline gets more noise (up to 0.45 of the radius).
        solidity = stats["width_rel"][2] / max(stats["elongation"][2], 1e-3)
        ragged = min(max(1.0 - solidity, 0.0), 1.0)
        params |= {
            "aspect": aspect,
            "radius": _span(radius * 0.9, radius * 1.1, bounds["radius"]),
            "softness": _span(0.6 * softness, softness, bounds["softness"]),
            "irregularity": _span(0.1 + 0.1 * ragged, 0.25 + 0.2 * ragged, bounds["irregularity"]),
        }
        if painter == "spot":
            params |= {"core": _span(0.0, 0.3, bounds["core"])}
    elif painter == "uneven":
        params |= {
            "softness": _span(0.5 * blur_px / layer_px, blur_px / layer_px, bounds["softness"]),
            "vignette": _span(0.05, 0.1, bounds["vignette"]),
            "cut": _span(-0.5, -0.35, bounds["cut"]),
            "shading": _span(0.2, 0.5, bounds["shading"]),
        }
    elif painter == "edge_shade":
        # A band along the edge: its reach from the edge spans the real depth ratios.
        ratio = stats["depth_ratio"]
        fill = _FILL[painter]
        params |= {
            "depth": _span(fill * min(ratio[1], 1.0), fill * min(ratio[3], 1.0), bounds["depth"]),
            "width": _span(0.85 * fill, fill, bounds["width"]),
            # Faint shading fades out over several pixels rather than ending in a hard step.
            "softness": _span(max(blur_px / layer_px, 0.04), 0.1, bounds["softness"]),
            "contrast": _shade_contrast(stats, magnitude, bounds["contrast"]),
            "mottling": [0.1, 0.2],
            # Wavy inner borders, flatter than an ellipse: bands across the part, not blobs.
            "corner": [0.3, 0.8],
            "irregularity": [0.1, 0.25],
            # Strongest at the edge, fading inwards: the far border is where it sinks below
            # the visibility floor, as a shading does, not a cut.
            "gradient": [0.6, 0.9],
        }
    elif painter in ANCHORED_TYPES:
        # The layer is square: the longer of (depth, extent along the edge) fills it.
        ratio = max(stats["depth_ratio"][2], 1e-3)
        fill = _FILL[painter]
        depth = fill * min(1.0, ratio)
        width = fill * min(1.0, 1.0 / ratio)
        lean = [min(v, 75.0) for v in _inner(stats.get("lean", [0.0] * len(QUANTILES)))]
        if stats["elongation"][2] < 0.4:
            # Slivers (thin chips) leaning like the real ones: needles as thick as the stroke
            # width across the axis, narrow where they leave the edge, widest about a third of
            # the way in and tapering to a point; the painter shortens a steep one to fit. The
            # stroke width is a mean thickness, two thirds of such a needle's widest (a wedge,
            # widest at the edge, would need twice it and reads as a wide triangle).
            middle = math.radians(min(stats.get("lean", [0.0] * 5)[2], 75.0))
            width = min(1.0, max(0.06, 1.5 * stats["width_rel"][2] * fill / math.cos(middle)))
            depth = fill
            params |= {"belly": [0.2, 0.45], "neck": [0.3, 0.6], "point": [0.6, 0.9]}
            # Thin shapes lose their faint rims to the visibility floor of the masks.
            low, high = params["contrast"]
            params["contrast"] = _span(max(low, 0.25), max(high, 0.35), bounds["contrast"])
            params |= {"lean": _span(*lean, bounds["lean"])}
        params |= {
            "depth": _span(0.85 * depth, min(1.0, 1.1 * depth), bounds["depth"]),
            "width": _span(0.85 * width, min(1.0, 1.1 * width), bounds["width"]),
            "softness": _span(0.5 * blur_px / layer_px, blur_px / layer_px, bounds["softness"]),
        }
        if painter == "edge_patch":
            # Pear-shaped patches: widest a quarter to 40 % of the way in, tapering beyond,
            # narrow where they leave the edge. Painted at the median depth ratio's width they
            # read squatter than the real ones (the large patches are the tall ones, the median
            # mixes in small wide burrs): 0.8 of it and a neck of 0.3-0.6 matched the real
            # windows better (training-split window KID, see benchmarks/README).
            low, high = params["width"]
            params |= {"width": _span(0.8 * low, 0.8 * high, bounds["width"])}
            params |= {"belly": [0.15, 0.35], "neck": [0.3, 0.6], "point": [0.1, 0.35]}
            # A large patch's 1-2 px measured blur is a few thousandths of its layer: an outline
            # that sharp reads as cut out; a floor of 2-5 % of the layer matched the real
            # windows better (training-split window KID, see benchmarks/README).
            low, high = params["softness"]
            params["softness"] = _span(max(low, 0.02), max(high, 0.05), bounds["softness"])
    elif painter == "pit":
        params |= {"count": [1, 1], "spread": [0.0, 0.0], "radius": [0.18, 0.2]}
    return params


def _box_share(aspect: float) -> float:
    """Mean longer side of the upright box around an ellipse (minor / major ``aspect``) turned
    to a uniformly random angle, as a share of its major axis."""
    angles = np.linspace(0.0, math.pi / 2.0, 91)
    cos, sin = np.cos(angles), np.sin(angles)
    sides = np.maximum(np.hypot(cos, aspect * sin), np.hypot(sin, aspect * cos))
    return float(sides.mean())


def placement_arguments(
    painter: str, stats: Mapping[str, Any], side: str | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``inject_defects`` / ``DefectInject`` for one fitted class.

    Edge-anchored painters land on one image ``side`` (default: the one most real defects touch);
    the others ignore it.
    """
    fill = _FILL[painter]
    if painter in ("spot", "stain"):
        # A blob's major axis spans ``fill / 1.05`` of the layer (painter_parameters); turned
        # to a random angle, its upright box (what ``size`` measures) is shorter.
        bounds = PAINTER_PARAMS[painter].__dataclass_fields__["aspect"].metadata["bounds"]
        aspect = _span(*_inner(stats["elongation"]), bounds, 0.05)
        fill = fill / 1.05 * _box_share(math.sqrt(aspect[0] * aspect[1]))
    placement: dict[str, Any] = {
        "scale": scale_range(stats["size"], fill),
        "count": count_range(stats["count"]),
        "aspect": 1.0,
        # Never cut a defect to the ROI: the ROI only says where centres go.
        "confine": False,
    }
    if painter in ANCHORED_TYPES:
        return edge_placement(placement, stats["location"], stats["sides"], side)
    if painter in ("crack", "scratch", "uneven"):
        # Uniform over +-spread has a median deviation of spread / 2: match the real median (the
        # upper inner quantile let a few stray defects tilt most of them).
        spread = max(5.0, 2.0 * stats["orientation_deviation"][2])
        angle = stats["orientation"]
        placement["rotation"] = (round(angle - spread, 3), round(angle + spread, 3))
    else:
        placement["rotation"] = (-180.0, 180.0)
    if painter == "uneven":
        # Elongated regions (bands): stretch the square layer along the principal axis.
        stretch = [1.0 / max(v, 0.05) for v in _inner(stats["elongation"])]
        placement["aspect"] = (round(min(stretch), 4), round(max(stretch), 4))
        # The stretch widens the layer by sqrt(aspect): keep the stretched box at the real size.
        shrink = math.sqrt(math.sqrt(stretch[0] * stretch[1]))
        low_s, high_s = placement["scale"]
        placement["scale"] = (round(low_s / shrink, 4), round(high_s / shrink, 4))
    placement["roi"] = LocationRoi(stats["location"])
    return placement


# ------------------------------------------------------------------------------- generator
def _read_json_strict(path: Path) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"{path}: {constant} is not a JSON number (write finite numbers only)")

    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


@register_architecture
class FittedGenerator(ProceduralGenerator, PretrainedDefectGenerator):
    """Procedural defects driven by statistics fitted to real defects (:func:`fit_defects`).

    Args:
        fitted: a :class:`FittedDefects` or its ``to_dict()``.
        class_map: class name -> painter type (``PAINTERS``); missing classes use
            :func:`choose_painter`.
        params: class name -> painter parameter overrides (fields of the painter's ``*Params``).
        layer_size: native layer size (``inject_defects`` renders at the placed size anyway).
        base_level: surface tone range when ``sample`` gets no background.

    Its ``defect_types`` are the fitted class names. Use with the fitted placement::

        inject_defects(images, "crack", fitted, **fitted.placement("crack"))
    """

    architecture: ClassVar[str] = ARCHITECTURE
    accepts_background: ClassVar[bool] = True

    def __init__(
        self,
        fitted: FittedDefects | Mapping[str, Any],
        *,
        class_map: Mapping[str, str] | None = None,
        params: Mapping[str, Mapping[str, Any]] | None = None,
        layer_size: int | tuple[int, int] | list[int] = (64, 64),
        base_level: tuple[float, float] | list[float] = (0.3, 0.6),
    ) -> None:
        if isinstance(layer_size, list):
            layer_size = tuple(layer_size)
        super().__init__(layer_size, base_level=tuple(base_level))
        self.fitted = (
            fitted if isinstance(fitted, FittedDefects) else FittedDefects.from_dict(fitted)
        )
        names = tuple(self.fitted.classes)
        given = dict(class_map or {})
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise ValueError(
                f"class_map: unknown class(es) {', '.join(unknown)}; fitted: {', '.join(names)}"
            )
        for name, painter in given.items():
            if painter not in PAINTER_PARAMS:
                raise ValueError(
                    f"class_map[{name!r}]: expected one of {', '.join(PAINTERS)}, got {painter!r}"
                )
        self.class_map = {n: given.get(n, choose_painter(self.fitted.classes[n])) for n in names}
        overrides = {str(k): dict(v) for k, v in (params or {}).items()}
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ValueError(f"params: unknown class(es) {', '.join(unknown)}")
        self.param_overrides = overrides
        self.defect_types = names
        self.params: dict[str, _Params] = {}
        for name in names:
            painter = self.class_map[name]
            values = painter_parameters(painter, self.fitted.classes[name])
            values |= overrides.get(name, {})
            try:
                self.params[name] = _resolve_params(painter, values)
            except (TypeError, ValueError) as error:
                raise ValueError(f"params[{name!r}] ({painter}): {error}") from None

    def painter_type(self, defect_type: str) -> str:
        return self.class_map[defect_type]

    def placement(self, class_name: str, side: str | None = None) -> dict[str, Any]:
        """Keyword arguments for ``inject_defects`` / ``DefectInject`` / ``SyntheticDefectDataset``
        that place ``class_name`` like the real ones: ``scale``, ``aspect``, ``rotation``,
        ``count``, ``roi`` (a :class:`LocationRoi`) and ``confine=False``.

        Edge classes (``edge_chip`` / ``edge_patch``) land on one image ``side`` per call, the
        most frequent one by default: one placement cannot tie the rotation to the border a
        centre is drawn near. To cover several sides, split the batch by :meth:`side_shares`
        and call once per side.
        """
        check_placement_request(class_name, self.defect_types, side)
        return placement_arguments(
            self.class_map[class_name], self.fitted.classes[class_name], side
        )

    def side_shares(self, class_name: str) -> dict[str, float]:
        """Share of the real on-edge defects of ``class_name`` touching each image side."""
        check_placement_request(class_name, self.defect_types)
        return dict(self.fitted.classes[class_name]["sides"])

    def get_config(self) -> dict[str, Any]:
        return {
            "fitted": self.fitted.to_dict(),
            "class_map": dict(self.class_map),
            "params": self.param_overrides,
            "layer_size": list(self.layer_size),
            "base_level": list(self.base_level),
        }

    def extra_repr(self) -> str:
        return f"class_map={self.class_map}, layer_size={tuple(self.layer_size)}"

    # ------------------------------------------------------------------ card
    def save_pretrained(  # type: ignore[override]
        self,
        save_directory: str | os.PathLike[str],
        *,
        license: str = "other",
        datasets: Sequence[str] = (),
        description: str = "",
        citation: str = "",
    ) -> Path:
        """Write ``config.json`` (all statistics as JSON numbers), ``README.md`` and an empty
        ``model.safetensors`` (no weights; it lets the hub loader read the folder)."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "architecture": self.architecture,
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "defectaug_version": defectaug.__version__,
            "kwargs": self.get_config(),
        }
        text = json.dumps(config, indent=1, sort_keys=True, allow_nan=False)
        (folder / CONFIG_NAME).write_text(text + "\n", encoding="utf-8")
        save_file(
            {}, folder / WEIGHTS_NAME, metadata={"format": "pt", "architecture": ARCHITECTURE}
        )
        self._card(license, datasets, description, citation).save(folder / CARD_NAME)
        return folder

    def _card(
        self, license: str, datasets: Sequence[str], description: str, citation: str
    ) -> ModelCard:
        data = ModelCardData(
            license=license,
            library_name="defectaug",
            tags=["defectaug", "defect-synthesis", "procedural", ARCHITECTURE],
            datasets=list(datasets),
            metrics=[],
        )
        rows = [
            "| class | painter | defects | images | size (median) | contrast (median) "
            "| change (median) |"
        ]
        rows.append("|---|---|---|---|---|---|---|")
        for name, s in self.fitted.classes.items():
            rows.append(
                f"| {name} | {self.class_map[name]} | {int(s['n_defects'])} | "
                f"{int(s['n_images'])} | {s['size'][2]:.3f} | {s['contrast'][2]:+.3f} | "
                f"{s['delta'][2]:+.3f} |"
            )
        body = [
            "# Procedural defects fitted to real defects",
            "",
            description or "Procedural defect painters driven by statistics of real defects.",
            "",
            f"Fitted on: {self.fitted.source}. No image or pixel of the data is stored: only "
            "summary statistics (quantiles of size, shape, contrast, blur, count and a 16x16 "
            "location prior per class) in `config.json`. `model.safetensors` is empty. Size, "
            "shape and contrast are those of each mask's visible core; contrast is relative to "
            "the local background, change is absolute (in [0, 1] image units).",
            "",
            *rows,
            "",
            "```python",
            "import defectaug",
            "",
            'gen = defectaug.load_generator("<this folder or card name>")',
            'out = defectaug.inject_defects(images, "<class>", gen, **gen.placement("<class>"))',
            "```",
        ]
        if citation:
            body += ["", "## Data, license and citation", "", citation]
        return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls, name_or_path: str | os.PathLike[str], *, device: torch.device | str | None = None
    ) -> FittedGenerator:
        """Read a card written by :meth:`save_pretrained` (a folder or a shipped card name).

        Only ``config.json`` is read; NaN/Infinity or out-of-range statistics raise ``ValueError``.
        """
        folder = resolve_pretrained(name_or_path, local_files_only=True)
        config = _read_json_strict(folder / CONFIG_NAME)
        if not isinstance(config, dict) or config.get("architecture") != ARCHITECTURE:
            raise ValueError(f"name_or_path: {str(folder)!r} does not hold a {ARCHITECTURE!r} card")
        kwargs = config.get("kwargs")
        if not isinstance(kwargs, dict):
            raise ValueError(f"{folder / CONFIG_NAME}: 'kwargs' must be a JSON object")
        generator = cls.from_config(kwargs)
        return generator if device is None else generator.to(device)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FittedGenerator:
        try:
            return cls(**config)
        except TypeError as error:
            raise ValueError(f"config: does not fit FittedGenerator: {error}") from None
