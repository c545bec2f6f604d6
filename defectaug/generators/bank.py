"""``DefectBank``: real defects cut out of annotated images and pasted back with random variation.

The copy-paste baseline (Crop&Paste): every connected region of every defect mask becomes one
layer (content = the real pixels of its box plus a margin, alpha = the region's mask with a soft
edge). Sampling picks a stored layer of the requested type and varies it with a random flip,
quarter turn, small rotation, scale and brightness/contrast change, all drawn from the
``torch.Generator`` passed to ``sample``. Given the ``background`` a layer will land on (as
:func:`defectaug.inject_defects` passes it), the crop is first matched to it: its surroundings
(the context around the defect, alpha < 0.5) take the landing patch's mean and standard deviation
(the factor kept within ``MATCH_CONTRAST``), so a crop from a bright part lands dark on a dark part.

Built from annotated images, the bank also knows where each crop's region lay (:class:`CropSite`)
and :meth:`DefectBank.placement` places a class as its real defects were: where (the location
prior), how large and how many, by the rules of the fitted generator (:mod:`defectaug.location`).
Crops of edge classes (most regions on an image border) are stored turned so their border side is
on top, drawn against the layer's top and never turned or flipped off it: their placement puts
that side against an image side.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from defectaug._checks import check_int, check_number, check_range, check_size
from defectaug._lazy import compiled_kernels as _kernels
from defectaug._seeding import as_generator
from defectaug.datasets import (
    DefectRecord,
    defect_crops,
    defect_regions,
    load_image,
    load_mask,
    read_defect_dataset,
)
from defectaug.generators.base import (
    NO_PATCH,
    AheadLayer,
    DefectGenerator,
    Landing,
    match_channels,
    support_boxes,
)
from defectaug.layer import DefectLayer
from defectaug.location import (
    EDGE_SHARE,
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

Crop = tuple[torch.Tensor, torch.Tensor]

#: Counter-clockwise quarter turns (``torch.rot90``) that bring an image side to the top: the
#: inverse of ``SIDE_ROTATION``, which turns the top to that side when the layer is placed.
_TURNS_TO_TOP = {"top": 0, "right": 1, "bottom": 2, "left": 3}


@dataclass(frozen=True)
class CropSite:
    """Where a crop's defect region lay in its source image.

    Attributes:
        centre: the region's centroid ``(row, column)``, normalised to [0, 1] by the image size.
        extent: the crop's longer side over the image's shorter side.
        side: the image side nearest to the region's box.
        touches: the image sides the region's box lies within ``edge_tolerance`` of (empty: the
            region is not on an edge).
        image: the number of the source image (regions of one image share it).
    """

    centre: tuple[float, float]
    extent: float
    side: str
    touches: tuple[str, ...]
    image: int

    @classmethod
    def of_region(cls, region: torch.Tensor, crop_size: Sequence[int], image: int) -> CropSite:
        """The site of a bool ``[1, H, W]`` region whose crop is ``crop_size`` ``(h, w)``."""
        cy, cx, gaps = region_site(region[0].cpu().numpy())
        short = min(region.shape[-2:])
        reach = edge_tolerance(short)
        return cls(
            centre=(cy, cx),
            extent=max(crop_size) / short,
            side=min(gaps, key=gaps.get),
            touches=tuple(side for side in SIDES if gaps[side] <= reach),
            image=image,
        )


#: Range of the contrast factor that matches a crop's surroundings to its landing patch.
MATCH_CONTRAST = (0.5, 2.0)


def match_tone(
    content: torch.Tensor, valid: torch.Tensor, alpha: torch.Tensor, patch: torch.Tensor
) -> torch.Tensor:
    """``content [n, C, h, w]`` with its surroundings' per-channel mean / std set to ``patch``'s.

    The surroundings are the valid pixels (``valid > 0.5``) outside the defect (``alpha < 0.5``);
    the landing statistics come from ``patch [n, C, h, w]`` over the same valid pixels. Items
    without surroundings are matched by the mean over all valid pixels; the factor on the spread
    stays within ``MATCH_CONTRAST``.
    """
    inside = (valid > 0.5).to(content.dtype)
    around = inside * (alpha < 0.5).to(content.dtype)
    enough = around.sum(dim=(2, 3), keepdim=True) >= 8
    weight = torch.where(enough, around, inside)

    def stats(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = weight.sum(dim=(2, 3), keepdim=True).clamp_min(1.0)
        mean = (values * weight).sum(dim=(2, 3), keepdim=True) / total
        spread = (((values - mean) ** 2) * weight).sum(dim=(2, 3), keepdim=True) / total
        return mean, spread.sqrt()

    crop_mean, crop_std = stats(content)
    patch_mean, patch_std = stats(patch.to(content.dtype))
    factor = (patch_std / crop_std.clamp_min(1e-3)).clamp(*MATCH_CONTRAST)
    return (content - crop_mean) * factor + patch_mean


def feather_alpha(region: torch.Tensor, feather: float) -> torch.Tensor:
    """Soft alpha ``[1, h, w]`` from a bool region ``[1, h, w]``; ``alpha >= 0.5`` is the region.

    Pixels inside get ``1 - 0.5 * exp(-d^2 / (2 feather^2))`` with ``d`` their distance to the
    outside, pixels outside ``0.5 * exp(-d^2 / (2 feather^2))`` with ``d`` their distance to the
    region, so the edge ramps over about ``2 * feather`` px while the binary mask stays exact.
    ``feather == 0`` gives the binary mask as float.
    """
    check_number(feather, "feather", 0, finite=False)
    binary = region[0].to("cpu", torch.bool).numpy().astype(np.uint8)
    if feather == 0 or binary.all():
        return torch.from_numpy(binary.astype(np.float32))[None]
    # Pad by one pixel of background so the distance to "outside" counts the crop border too.
    padded = np.pad(binary, 1)
    inside = cv2.distanceTransform(padded, cv2.DIST_L2, 5)[1:-1, 1:-1]
    outside = cv2.distanceTransform(1 - binary, cv2.DIST_L2, 5)
    falloff = lambda d: 0.5 * np.exp(-(d**2) / (2.0 * feather**2))
    alpha = np.where(binary > 0, 1.0 - falloff(inside), falloff(outside)).astype(np.float32)
    return torch.from_numpy(alpha)[None]


class DefectBank(DefectGenerator):
    """Real defect crops, sampled with geometric and photometric jitter.

    Args:
        crops: per defect type, a list of ``(content [C, h, w], alpha [1, h, w])`` float crops
            (alpha already soft; see :meth:`from_folder` to build them from a dataset).
        layer_size: ``(h, w)`` of sampled layers (``sample(..., layer_size=...)`` overrides).
            Each crop is centred and zero-padded (alpha 0) to it, keeping its aspect.
        preserve_scale: True keeps the real pixel size (times ``scale``), only shrinking crops
            that would not fit; False scales every crop to fill the layer (times ``scale``,
            capped at 1).
        scale: range of the random scale factor.
        rotation: range of the random small rotation, degrees (added to a random quarter turn
            when ``rot90``).
        flip: random horizontal and vertical flips.
        rot90: random quarter turns.
        brightness: range added to the content.
        contrast: range of the factor about the defect's mean.
        skipped_empty, skipped_small: empty masks and regions below ``min_area`` met while
            building (informational, see ``from_folder``).
        sites: per defect type, the :class:`CropSite` of each crop in ``crops`` (as
            ``from_folder`` builds them): needed by :meth:`placement`. Crops of an edge class
            (at least ``EDGE_SHARE`` of its regions on an edge) are turned so the side nearest
            their region is on top and are drawn against the layer's top, without quarter
            turns, small rotations or upside-down flips.

    ``channels`` is the crops' channel count (1 for grayscale datasets, 3 for RGB). Requests for
    the other count are served by conversion (see :class:`DefectGenerator`): a grey bank on RGB
    images shifts the luminance of the patch each crop lands on, an RGB bank on grey images gives
    the crops' luminance.
    """

    #: ``background`` is optional: given, each crop is matched to where it lands (``match_tone``).
    accepts_background: ClassVar[bool] = True
    samples_ahead: ClassVar[bool] = True

    def __init__(
        self,
        crops: Mapping[str, Sequence[Crop]],
        *,
        layer_size: int | tuple[int, int] = (128, 128),
        preserve_scale: bool = True,
        scale: tuple[float, float] = (0.8, 1.2),
        rotation: tuple[float, float] = (-15.0, 15.0),
        flip: bool = True,
        rot90: bool = True,
        brightness: tuple[float, float] = (-0.06, 0.06),
        contrast: tuple[float, float] = (0.85, 1.15),
        skipped_empty: int = 0,
        skipped_small: int = 0,
        sites: Mapping[str, Sequence[CropSite]] | None = None,
    ) -> None:
        super().__init__()
        self.layer_size = check_size(layer_size, "layer_size", 4)
        self.preserve_scale = bool(preserve_scale)
        self.scale = check_range(scale, "scale", 1e-3, math.inf)
        self.rotation = check_range(rotation, "rotation", -180.0, 180.0)
        self.flip, self.rot90 = bool(flip), bool(rot90)
        self.brightness = check_range(brightness, "brightness", -1.0, 1.0)
        self.contrast = check_range(contrast, "contrast", 0.0, math.inf)
        self.skipped_empty = int(skipped_empty)
        self.skipped_small = int(skipped_small)
        if not isinstance(crops, Mapping) or not crops:
            raise ValueError(
                "crops: expected a non-empty mapping {defect type: [(content, alpha), ...]}"
            )
        names = tuple(sorted(crops))
        ordered_sites = self._check_sites(sites, crops, names)
        edge_types = set()
        contents: list[torch.Tensor] = []
        alphas: list[torch.Tensor] = []
        labels: list[int] = []
        channel_counts = set()
        for index, name in enumerate(names):
            if not crops[name]:
                raise ValueError(f"crops: defect type {name!r} has no crops")
            if ordered_sites is not None:
                on_edge = sum(bool(site.touches) for site in ordered_sites[name])
                if on_edge >= EDGE_SHARE * len(crops[name]):
                    edge_types.add(name)
            for number, (content, alpha) in enumerate(crops[name]):
                where = f"crops[{name!r}][{number}]"
                if (
                    content.ndim != 3
                    or content.shape[0] not in (1, 3)
                    or not content.is_floating_point()
                ):
                    raise ValueError(f"{where}: content must be a float [C, h, w] with C 1 or 3")
                if alpha.shape != (1, *content.shape[1:]) or not alpha.is_floating_point():
                    raise ValueError(
                        f"{where}: alpha must be a float [1, h, w] matching content "
                        f"{tuple(content.shape)}, got {tuple(alpha.shape)}"
                    )
                channel_counts.add(content.shape[0])
                if name in edge_types:
                    turns = _TURNS_TO_TOP[ordered_sites[name][number].side]
                    content = torch.rot90(content, turns, dims=(1, 2))
                    alpha = torch.rot90(alpha, turns, dims=(1, 2))
                contents.append(content.detach().float().contiguous())
                alphas.append(alpha.detach().float().clamp(0.0, 1.0).contiguous())
                labels.append(index)
        if len(channel_counts) > 1:
            raise ValueError(
                f"crops: all crops must have one channel count, got {sorted(channel_counts)}"
            )
        self.defect_types = names
        #: Defect types whose crops are anchored on the layer's top (see ``sites``).
        self.edge_types = frozenset(edge_types)
        self.channels = channel_counts.pop()
        self._contents, self._alphas = contents, alphas
        self.sites = (
            None
            if ordered_sites is None
            else tuple(site for name in names for site in ordered_sites[name])
        )
        self.register_buffer(
            "crop_labels", torch.tensor(labels, dtype=torch.int64), persistent=False
        )
        self.register_buffer(
            "crop_anchored",
            torch.tensor([names[label] in self.edge_types for label in labels]),
            persistent=False,
        )
        self.register_buffer(
            "crop_sizes",
            torch.tensor([c.shape[1:] for c in contents], dtype=torch.int64).view(-1, 2),
            persistent=False,
        )

    # ------------------------------------------------------------------ building
    @classmethod
    def from_folder(
        cls,
        root: str | os.PathLike[str],
        split: str | None = None,
        types: str | Iterable[str] | None = None,
        *,
        margin: int = 8,
        feather: float = 2.0,
        min_area: int = 16,
        channels: int | None = None,
        **options: Any,
    ) -> DefectBank:
        """Build a bank from a dataset folder (MVTec-AD layout or ``manifest.csv``).

        Every connected region of at least ``min_area`` px of every mask becomes one crop with
        ``margin`` px of context; its alpha is softened by ``feather`` (see :func:`feather_alpha`)
        and where it lay is kept as its :class:`CropSite` (for :meth:`placement`).
        Images without a mask (normal ones) are not used. Empty masks are skipped and counted in
        ``bank.skipped_empty`` (one warning). ``channels`` converts the images (default: the
        first image's own). ``options`` go to the constructor (layer_size, scale, rotation, ...).
        """
        records = read_defect_dataset(root, split=split, types=types)
        return cls.from_records(
            records,
            margin=margin,
            feather=feather,
            min_area=min_area,
            channels=channels,
            source=str(root),
            **options,
        )

    @classmethod
    def from_records(
        cls,
        records: Sequence[DefectRecord],
        *,
        margin: int = 8,
        feather: float = 2.0,
        min_area: int = 16,
        channels: int | None = None,
        source: str = "records",
        **options: Any,
    ) -> DefectBank:
        """Build a bank from :class:`DefectRecord` s (see :meth:`from_folder`)."""
        check_int(min_area, "min_area", 1, what="an int >= 1")
        check_int(margin, "margin", 0)
        check_number(feather, "feather", 0, finite=False)
        masked = [r for r in records if r.mask is not None]
        crops: dict[str, list[Crop]] = {}
        sites: dict[str, list[CropSite]] = {}
        empty, small = 0, 0
        for number, record in enumerate(masked):
            mask = load_mask(record.mask)
            if not bool(mask.any()):
                empty += 1
                continue
            image = load_image(record.image, channels)
            channels = image.shape[0] if channels is None else channels
            if image.shape[-2:] != mask.shape[-2:]:
                raise ValueError(
                    f"mask: {record.mask} is {tuple(mask.shape[-2:])} but its image {record.image} "
                    f"is {tuple(image.shape[-2:])}"
                )
            # defect_crops cuts the regions of defect_regions, in their order.
            regions = list(
                zip(defect_regions(mask), defect_crops(image, mask, margin), strict=True)
            )
            kept = [(region, crop) for region, crop in regions if crop[1].sum() >= min_area]
            small += len(regions) - len(kept)
            for region, (content, alpha) in kept:
                crops.setdefault(record.label, []).append(
                    (content, feather_alpha(alpha >= 0.5, feather))
                )
                site = CropSite.of_region(region, content.shape[-2:], number)
                sites.setdefault(record.label, []).append(site)
        if not crops:
            raise ValueError(
                f"root: no defect region of at least {min_area} px found in {source} "
                f"({len(masked)} image(s) with a mask, {empty} of them empty, {small} region(s) "
                "below min_area)"
            )
        if empty:
            warnings.warn(
                f"DefectBank: skipped {empty} empty mask(s) in {source}",
                UserWarning,
                stacklevel=3,
            )
        return cls(crops, skipped_empty=empty, skipped_small=small, sites=sites, **options)

    def __len__(self) -> int:
        return len(self._contents)

    def counts(self) -> dict[str, int]:
        """Number of stored crops per defect type."""
        totals = torch.bincount(self.crop_labels.cpu(), minlength=len(self.defect_types)).tolist()
        return dict(zip(self.defect_types, totals, strict=True))

    @staticmethod
    def _check_sites(
        sites: Mapping[str, Sequence[CropSite]] | None,
        crops: Mapping[str, Sequence[Crop]],
        names: Sequence[str],
    ) -> dict[str, list[CropSite]] | None:
        if sites is None:
            return None
        if not isinstance(sites, Mapping) or set(sites) != set(names):
            raise ValueError(
                f"sites: expected a mapping with the defect types of crops ({', '.join(names)})"
            )
        checked = {}
        for name in names:
            listed = list(sites[name])
            if len(listed) != len(crops[name]) or not all(
                isinstance(site, CropSite) and site.side in SIDES for site in listed
            ):
                raise ValueError(
                    f"sites[{name!r}]: expected one CropSite per crop ({len(crops[name])}), "
                    f"got {len(listed)} item(s)"
                )
            checked[name] = listed
        return checked

    def _class_sites(self, class_name: str, side: str | None = None) -> list[CropSite]:
        check_placement_request(class_name, self.defect_types, side)
        if self.sites is None:
            raise ValueError(
                "sites: this bank was built without its crops' sites; build it with "
                "from_folder / from_records, or pass sites= to DefectBank"
            )
        label = self.defect_types.index(class_name)
        labels = self.crop_labels.tolist()
        return [site for site, own in zip(self.sites, labels, strict=True) if own == label]

    def placement(self, class_name: str, side: str | None = None) -> dict[str, Any]:
        """Keyword arguments for ``inject_defects`` / ``DefectInject`` / ``SyntheticDefectDataset``
        that place ``class_name`` like the bank's real defects: ``scale`` (the crops' size on
        their images, for crops that fill their layer: ``preserve_scale=False``, or images of
        the source resolution), ``count`` (per image), ``roi`` (a :class:`LocationRoi` from
        the location prior of the regions' centroids), ``rotation``, ``aspect=1.0`` and
        ``confine=False``, by the fitted generator's rules (:mod:`defectaug.location`).

        Edge classes land on one image ``side`` per call (default: the side most of their
        on-edge regions touched), in a band along it, turned so their crops' border side lies
        against it; to cover several sides, split the batch by :meth:`side_shares` and call
        once per side. Other classes ignore ``side``: their crops keep the bank's own turns
        and flips (``rotation=(0, 0)``).
        """
        sites = self._class_sites(class_name, side)
        prior = location_prior([site.centre for site in sites])
        per_image = Counter(site.image for site in sites)
        placement: dict[str, Any] = {
            "scale": scale_range(quantiles([site.extent for site in sites])),
            "count": count_range(quantiles([float(n) for n in per_image.values()])),
            "aspect": 1.0,
            # The bank turns and flips its crops itself; real crops are not stretched.
            "rotation": (0.0, 0.0),
            "roi": LocationRoi(prior),
            # Never cut a defect to the ROI: the ROI only says where centres go.
            "confine": False,
        }
        if class_name in self.edge_types:
            return edge_placement(placement, prior, self.side_shares(class_name), side)
        return placement

    def side_shares(self, class_name: str) -> dict[str, float]:
        """Share of the bank's on-edge regions of ``class_name`` touching each image side (the
        side nearest to each)."""
        return side_shares([site.side for site in self._class_sites(class_name) if site.touches])

    def _apply(
        self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True
    ) -> DefectBank:
        # Crops of different sizes live in plain lists; move and cast them with the buffers.
        self._contents = [fn(t) for t in self._contents]
        self._alphas = [fn(t) for t in self._alphas]
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, crops={self.counts()}, skipped_empty={self.skipped_empty}"

    # ------------------------------------------------------------------ sampling
    def _generate(
        self,
        labels: torch.Tensor,
        *,
        generator: torch.Generator,
        device: torch.device,
        dtype: torch.dtype,
        channels: int,
        background: torch.Tensor | None,
        reference: torch.Tensor | None,
        layer_size: int | tuple[int, int] | None = None,
        **options: Any,
    ) -> DefectLayer:
        if options:
            raise TypeError(
                f"options: unknown sample option(s) {', '.join(sorted(options))} for DefectBank; "
                "accepted: layer_size"
            )
        size = self.layer_size if layer_size is None else check_size(layer_size, "layer_size", 4)
        content, valid, alpha, jitter = self._warp_crops(labels, generator, device, channels, size)
        content, alpha = self._finish(content, valid, alpha, jitter, background)
        return DefectLayer(
            content.to(dtype), alpha.to(dtype), labels.to(torch.int64), self.defect_types
        )

    @torch.no_grad()
    def sample_ahead(
        self,
        n: int,
        defect_type: str,
        *,
        generator: Any,
        channels: int,
        layer_size: tuple[int, int] | None = None,
    ) -> list[AheadLayer]:
        """Crops picked, flipped, turned and scaled ahead (the draws of ``sample``); the tone
        match to the landing patch and the brightness / contrast jitter wait for :meth:`land`."""
        device = self.crop_labels.device
        rng = as_generator(generator, device)
        label = self.type_index(defect_type)
        labels = torch.full((check_int(n, "n", 1),), label, dtype=torch.int64, device=device)
        size = self.layer_size if layer_size is None else check_size(layer_size, "layer_size", 4)
        content, valid, alpha, jitter = self._warp_crops(labels, rng, device, self.channels, size)
        # Clamped here, once per chunk, as _finish clamps it: land_planes then takes it as it is.
        alpha = alpha.clamp(0.0, 1.0)
        # The tone match reads the patch under the crop, compositing next to its alpha.
        regions = support_boxes((valid[:, 0] > 0) | (alpha[:, 0] > 0))
        return [
            AheadLayer(content[i], alpha[i], label, (valid[i], jitter[i]), regions[i])
            for i in range(n)
        ]

    @torch.no_grad()
    def land(
        self, layers: Sequence[AheadLayer], channels: int, background: torch.Tensor | None
    ) -> DefectLayer:
        """Layers of :meth:`sample_ahead` matched to the patches they land on and jittered, as
        ``sample`` with that ``background`` would give them."""
        content = torch.stack([item.content for item in layers])
        alpha = torch.stack([item.alpha for item in layers])
        valid = torch.stack([item.extras[0] for item in layers])
        jitter = torch.stack([item.extras[1] for item in layers])
        landing = background
        if background is not None and background.shape[1] != self.channels:
            background = match_channels(background, self.channels)
        content, alpha = self._finish(content, valid, alpha, jitter, background)
        return self._landed(layers, content, alpha, channels, landing)

    def land_planes(self, layer: AheadLayer, channels: int, landing: Landing | None) -> np.ndarray:
        """:meth:`land` of one layer in compiled passes (see
        :meth:`~defectaug.generators.base.DefectGenerator.land_planes`)."""
        content, alpha, valid, jitter = layer.arrays
        kernels = _kernels()
        patch = NO_PATCH
        if landing is not None:
            patch = landing.patch(tuple(content.shape[-2:]), layer.region)
        contrast, brightness = float(jitter[0]), float(jitter[1])
        finished = kernels.finish_crop(content, valid[0], alpha[0], contrast, brightness, patch)
        return kernels.landed_planes(finished, alpha[0], patch, channels)

    def _warp_crops(
        self,
        labels: torch.Tensor,
        generator: torch.Generator,
        device: torch.device,
        channels: int,
        size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pick, flip, turn and scale crops: ``content, valid, alpha, jitter [n, 2]`` (the
        contrast and brightness drawn for each, applied by :meth:`_finish`)."""
        height, width = size
        n = labels.shape[0]
        uniform = lambda bounds: (
            bounds[0] + (bounds[1] - bounds[0]) * torch.rand(n, generator=generator, device=device)
        )
        crop_labels = self.crop_labels.to(device)
        per_type = torch.bincount(crop_labels, minlength=len(self.defect_types))
        first = torch.cumsum(per_type, 0) - per_type
        # Crops are stored grouped by type, so a type's crops are a contiguous index range.
        pick = torch.rand(n, generator=generator, device=device)
        index = first[labels] + (pick * per_type[labels]).long().clamp(max=per_type[labels] - 1)
        quarter = (
            torch.randint(0, 4, (n,), generator=generator, device=device)
            if self.rot90
            else torch.zeros(n, dtype=torch.int64, device=device)
        )
        flips = torch.rand(n, 2, generator=generator, device=device) < 0.5
        if not self.flip:
            flips = torch.zeros_like(flips)
        angle = torch.deg2rad(uniform(self.rotation)) + quarter * (math.pi / 2)
        # An edge crop's top is the part's edge: only a mirror along it keeps it there.
        anchored = self.crop_anchored.to(device)[index]
        angle = torch.where(anchored, torch.zeros_like(angle), angle)
        flips[:, 1] &= ~anchored
        jitter = uniform(self.scale)
        brightness = uniform(self.brightness)
        contrast = uniform(self.contrast)

        sizes = self.crop_sizes.to(device)[index].float()
        crop_h, crop_w = sizes[:, 0], sizes[:, 1]
        cos, sin = torch.cos(angle), torch.sin(angle)
        turned_w = cos.abs() * crop_w + sin.abs() * crop_h
        turned_h = sin.abs() * crop_w + cos.abs() * crop_h
        fit = torch.minimum(width / turned_w, height / turned_h)
        scale = jitter if self.preserve_scale else jitter.clamp(max=1.0) * fit
        scale = torch.minimum(scale, fit)

        sources = [
            self._source(int(i), float(s))
            for i, s in zip(index.tolist(), scale.tolist(), strict=True)
        ]
        src_h = max(s.shape[-2] for s in sources)
        src_w = max(s.shape[-1] for s in sources)
        batch = torch.zeros(n, channels + 2, src_h, src_w, device=device)
        for item, source in enumerate(sources):
            batch[item, :, : source.shape[-2], : source.shape[-1]] = source.to(device)
        # ``sources`` may be pre-shrunk (anti-aliased); the warp applies what is left of ``scale``.
        source_h = torch.tensor([float(s.shape[-2]) for s in sources], device=device)
        source_w = torch.tensor([float(s.shape[-1]) for s in sources], device=device)
        residual = scale * crop_h / source_h

        flip_x = torch.where(flips[:, 0], -1.0, 1.0)
        flip_y = torch.where(flips[:, 1], -1.0, 1.0)
        # Output pixel -> source pixel: p_src = c_src + Flip . R(-angle) . (p_out - c_out) / s.
        linear = torch.stack(
            [
                torch.stack([flip_x * cos, flip_x * sin], dim=1),
                torch.stack([-flip_y * sin, flip_y * cos], dim=1),
            ],
            dim=1,
        ) / residual.view(n, 1, 1)
        out_half = torch.tensor([width / 2.0, height / 2.0], device=device)
        src_half = torch.tensor([src_w / 2.0, src_h / 2.0], device=device)
        theta_linear = linear * out_half.view(1, 1, 2) / src_half.view(1, 2, 1)
        crop_centre = torch.stack([(source_w - 1) / 2.0, (source_h - 1) / 2.0], dim=1)
        batch_centre = torch.tensor([(src_w - 1) / 2.0, (src_h - 1) / 2.0], device=device)
        # Edge crops are drawn against the layer's top row instead of centred: their centre
        # rises by half the free rows, so each output pixel reads ``linear`` times that lower.
        rise = torch.where(anchored, (height - scale * crop_h).clamp_min(0.0) / 2.0, 0.0)
        theta_shift = (crop_centre - batch_centre + linear[:, :, 1] * rise[:, None]) / src_half
        theta = torch.cat([theta_linear, theta_shift[:, :, None]], dim=2)
        grid = F.affine_grid(theta, [n, channels + 2, height, width], align_corners=False)
        warped = F.grid_sample(
            batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )

        content, valid, alpha = (
            warped[:, :channels],
            warped[:, channels : channels + 1],
            warped[:, -1:],
        )
        content = torch.where(
            valid > 1e-3, content / valid.clamp_min(1e-3), torch.zeros_like(content)
        )
        return content, valid, alpha, torch.stack([contrast, brightness], dim=1)

    def _finish(
        self,
        content: torch.Tensor,
        valid: torch.Tensor,
        alpha: torch.Tensor,
        jitter: torch.Tensor,
        background: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tone match to ``background`` (when given), contrast and brightness jitter, clamp."""
        n, height, width = content.shape[0], content.shape[-2], content.shape[-1]
        device = content.device
        contrast, brightness = jitter[:, 0], jitter[:, 1]
        if background is not None:
            patch = background.to(device=device, dtype=content.dtype)
            if tuple(patch.shape[-2:]) != (height, width):  # resized to the layer, as elsewhere
                patch = F.interpolate(
                    patch, (height, width), mode="bilinear", align_corners=False, antialias=True
                )
            content = match_tone(content, valid, alpha, patch)
        weight = alpha.sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        mean = (content * alpha).sum(dim=(2, 3), keepdim=True) / weight
        content = (content - mean) * contrast.view(n, 1, 1, 1) + mean + brightness.view(n, 1, 1, 1)
        content = torch.where(valid > 1e-3, content, torch.zeros_like(content))
        return content.clamp(0.0, 1.0), alpha.clamp(0.0, 1.0)

    def _source(self, index: int, scale: float) -> torch.Tensor:
        """Crop ``index`` as ``[C + 2, h, w]`` (content, validity, alpha), pre-shrunk when small."""
        content, alpha = self._contents[index], self._alphas[index]
        stacked = torch.cat([content, torch.ones_like(alpha), alpha], dim=0)
        if scale >= 0.75:
            return stacked
        h, w = stacked.shape[-2:]
        # Shrink with anti-aliasing first; bilinear warping alone would alias fine texture.
        size = (max(2, round(h * scale)), max(2, round(w * scale)))
        return F.interpolate(stacked[None], size=size, mode="bilinear", antialias=True)[0]
