"""``DefectGenerator``: the one interface every source of defects implements.

Procedural generators, the real-defect bank and learned GANs all answer ``sample(n, ...)`` with a
``DefectLayer``, so the transform, the batched path and the dataset never care which one they hold.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from defectaug._checks import check_device, check_int
from defectaug._lazy import compiled_kernels as _kernels
from defectaug._seeding import SeedLike, as_generator
from defectaug.layer import DefectLayer

DefectTypeArg = str | Sequence[str] | None

#: ITU-R BT.601 luma weights: the grey value of an RGB pixel (``r, g, b`` in [0, 1]).
LUMA = (0.299, 0.587, 0.114)


def luminance(images: torch.Tensor) -> torch.Tensor:
    """``[n, 1, h, w]`` ITU-R 601 luminance of ``[n, 3, h, w]`` (a 1-channel input is returned)."""
    if images.shape[1] == 1:
        return images
    weights = torch.tensor(LUMA, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


def match_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """``images [n, 1 or 3, h, w]`` with ``channels`` channels: luminance, or grey replicated."""
    if images.shape[1] == channels:
        return images
    if channels == 1:
        return luminance(images)
    return images.expand(-1, channels, -1, -1)


def convert_layer(
    layer: DefectLayer, channels: int, background: torch.Tensor | None
) -> DefectLayer:
    """``layer`` with ``channels`` content channels (1 or 3); alpha and labels are kept.

    RGB -> grey is the ITU-R 601 luminance of the content. Grey -> RGB is a luminance change
    relative to the landing patch when ``background [n, 3, H, W]`` is given (resized to the layer
    when its size differs): ``clamp(background + grey - luminance(background), 0, 1)``, so a
    composited grey defect shifts the brightness of a coloured surface and keeps its hue, as it
    would shift a grey one. Without a background the grey value is replicated.
    """
    content = layer.content
    if content.shape[1] == channels:
        return layer
    if channels == 1:
        converted = luminance(content)
    elif background is None or background.shape[1] != 3:
        converted = content.expand(-1, 3, -1, -1).contiguous()
    else:
        patch = background.to(device=content.device, dtype=content.dtype)
        if tuple(patch.shape[-2:]) != tuple(content.shape[-2:]):
            patch = F.interpolate(
                patch, size=content.shape[-2:], mode="bilinear", align_corners=False, antialias=True
            )
        converted = (patch + (content - luminance(patch))).clamp(0.0, 1.0)
    return DefectLayer(converted, layer.alpha, layer.labels, layer.type_names)


def _native_reference(reference: torch.Tensor, requested: int, native: int) -> torch.Tensor:
    """Reference crops in the request's channels (plus an optional alpha channel) -> native ones."""
    if reference.shape[1] == requested:
        return match_channels(reference, native)
    if reference.shape[1] == requested + 1:
        content, alpha = reference[:, :requested], reference[:, requested:]
        return torch.cat([match_channels(content, native), alpha], dim=1)
    return reference  # the generator names what it expected


@dataclass(frozen=True, eq=False)
class AheadLayer:
    """One layer sampled ahead of its placement (:meth:`DefectGenerator.sample_ahead`).

    ``content [C, h, w]`` and ``alpha [1, h, w]`` in the generator's native channels;
    ``extras`` holds what the generator's :meth:`~DefectGenerator.land` needs to finish it
    (empty for generators whose layers do not depend on where they land). ``region`` (rows
    and columns, half-open) holds every pixel :meth:`~DefectGenerator.land_planes` reads of
    the landing patch: the pixels next to the alpha (those compositing reads), and the
    pixels ``land`` measures the patch over; ``None``: all.
    """

    content: torch.Tensor
    alpha: torch.Tensor
    label: int
    extras: tuple[torch.Tensor, ...] = ()
    region: tuple[int, int, int, int] | None = None

    @functools.cached_property
    def arrays(self) -> tuple[np.ndarray, ...]:
        """``content``, ``alpha`` and ``extras`` as float32 CPU arrays, for
        :meth:`DefectGenerator.land_planes` (converted once, for all the layer's uses)."""
        tensors = (self.content, self.alpha, *self.extras)
        return tuple(tensor.detach().to("cpu", torch.float32).numpy() for tensor in tensors)


#: ``land_planes``'s stand-in for "no landing patch" (the kernels take arrays only).
NO_PATCH = np.zeros((0, 0, 0), dtype=np.float32)


def support_boxes(mask: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """Per item of ``mask [n, h, w]`` (bool), the box ``row_start, row_stop, col_start,
    col_stop`` of its true pixels grown by one pixel (the bilinear taps around them), within
    the item; an item without a true pixel gets an empty box."""
    n, height, width = mask.shape
    boxes = []
    for hits, length in ((mask.any(2), height), (mask.any(1), width)):
        index = torch.arange(length, device=mask.device)
        first = torch.where(hits, index, length).amin(1)
        last = torch.where(hits, index, -1).amax(1)
        boxes += [(first - 1).clamp_min(0), (last + 2).clamp(0, length)]
    rows_and_cols = torch.stack(boxes, 1).tolist()
    return [(a, b, c, d) if a < b else (0, 0, 0, 0) for a, b, c, d in rows_and_cols]


class Landing(NamedTuple):
    """Where a layer of :meth:`DefectGenerator.sample_ahead` lands, for
    :meth:`DefectGenerator.land_planes`: the image ``surface [C, H, W]`` (a uint8 or float
    array whose white is ``scale``) and ``to_image [2, 3]``, the map from layer pixel to image
    point. ``whole``: every pixel of the landed layer is read (it is low-passed), not only
    those of its ``region``."""

    surface: np.ndarray
    to_image: np.ndarray
    scale: float
    whole: bool

    def patch(
        self, size: tuple[int, int], region: tuple[int, int, int, int] | None = None
    ) -> np.ndarray:
        """The patch ``[C, h, w]`` (float32 in [0, 1]) a layer of ``size`` lands on, as
        :func:`defectaug.placement.layer_backgrounds` reads it, over ``region`` (the whole
        layer when ``None`` or ``whole``; 0 elsewhere)."""
        height, width = size
        if region is None or self.whole:
            region = (0, height, 0, width)
        return _kernels().landing_patch(
            self.surface, self.to_image, height, width, self.scale, region
        )


class DefectGenerator(nn.Module):
    """Base class of every defect source.

    Subclasses set ``defect_types``, ``channels`` (1, 3 or ``"any"``) and ``layer_size`` (native
    ``(h, w)`` of the layers they produce), flag ``needs_background`` / ``needs_reference`` when
    ``sample`` requires those inputs, and implement ``_generate``.

    Every generator serves 1- and 3-channel requests: one with a fixed ``channels`` samples
    natively (``background`` and ``reference`` converted to its channels) and the layer's content
    is converted by :func:`convert_layer` (grey -> RGB as a luminance change of the landing patch
    when ``background`` is given, else replicated; RGB -> grey by ITU-R 601 luminance).
    """

    defect_types: tuple[str, ...] = ()
    channels: int | Literal["any"] = "any"
    layer_size: tuple[int, int] = (64, 64)
    needs_background: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = False
    #: Whether :meth:`sample_ahead` + :meth:`land` give the layers ``sample`` gives, so layers
    #: can be sampled ahead in batches, before their placement is known (a per-worker
    #: reservoir, :class:`defectaug.per_sample.SampledReservoir`). Opt-in: a generator whose
    #: layers depend on the ``background`` must move that dependence into ``land``.
    samples_ahead: ClassVar[bool] = False
    #: Samples each layer sampled ahead serves (each with its own placement and surface);
    #: ``None``: the reservoir's ``USES_PER_LAYER``. More for generators whose layers are
    #: costly to make.
    uses_per_layer: ClassVar[int | None] = None
    #: Whether the compiled per-sample renderer (:mod:`defectaug.per_sample`) may sample this
    #: generator's layers itself, for each plan, with the one ``sample`` call per render size
    #: the torch renderer makes (:func:`defectaug.batch.sample_group`): for generators whose
    #: layers are made from the image they land on (so cannot be sampled ahead) and are cheap
    #: enough to sample for every sample (the self-supervised ones).
    samples_per_call: ClassVar[bool] = False

    def resolve_channels(self, channels: int | None) -> int:
        """The channel count of a sample: the request (1 or 3), else the generator's own.

        Any generator serves both counts (see the class docs); ``None`` means the generator's
        own ``channels`` (3 for ``"any"``).
        """
        if channels is None:
            if self.channels == "any":
                return 3
            return int(self.channels)
        if isinstance(channels, bool) or channels not in (1, 3):
            raise ValueError(f"channels: expected 1 or 3, got {channels!r}")
        return int(channels)

    def native_channels(self, channels: int) -> int:
        """Channels the generator makes for a request of ``channels`` (before conversion)."""
        return channels if self.channels == "any" else int(self.channels)

    def type_index(self, defect_type: str) -> int:
        """Index of ``defect_type`` in ``defect_types``; a ``KeyError`` lists the accepted ones."""
        try:
            return self.defect_types.index(defect_type)
        except ValueError:
            raise KeyError(
                f"defect_type: unknown defect type {defect_type!r} for {type(self).__name__}; "
                f"accepted: {', '.join(self.defect_types)}"
            ) from None

    def resolve_labels(
        self, n: int, defect_type: DefectTypeArg, generator: torch.Generator
    ) -> torch.Tensor:
        """Per-item type indices ``[n]`` (CPU int64): one name, a name per item, or uniform."""
        if isinstance(defect_type, str):
            return torch.full((n,), self.type_index(defect_type), dtype=torch.int64)
        if defect_type is None:
            draw = torch.randint(
                0, len(self.defect_types), (n,), generator=generator, device=generator.device
            )
            return draw.cpu()
        names = list(defect_type)
        if len(names) != n:
            raise ValueError(
                f"defect_type: expected one name or a sequence of {n} names, got {len(names)} names"
            )
        return torch.tensor([self.type_index(name) for name in names], dtype=torch.int64)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        defect_type: DefectTypeArg = None,
        *,
        generator: SeedLike = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        channels: int | None = None,
        background: torch.Tensor | None = None,
        reference: torch.Tensor | None = None,
        **options: Any,
    ) -> DefectLayer:
        """Draw ``n`` defect layers.

        Args:
            n: number of layers (>= 1).
            defect_type: one type name for all items, a name per item, or ``None`` (uniform).
            generator: a ``torch.Generator`` or int seed; the same value gives the same layers.
            device: where the layers are made (default: the device of the module's parameters
                or buffers, else CPU).
            dtype: floating dtype of content and alpha.
            channels: 1 or 3 (default: the generator's own, or 3 for ``"any"``). A generator with a
                fixed other count samples natively and converts (see the class docs).
            background: ``[n, C, H, W]`` images the defects will land on (generators that need it).
            reference: ``[n, C, h, w]`` real defect crops to vary (reference-guided generators).
            options: generator-specific extras (documented by each generator).
        """
        n = check_int(n, "n", 1)
        if device is None:
            held = itertools.chain(self.parameters(), self.buffers())
            device = next((t.device for t in held), torch.device("cpu"))
        device = check_device(device)
        rng = as_generator(generator, device)
        resolved_channels = self.resolve_channels(channels)
        labels = self.resolve_labels(n, defect_type, rng)
        if self.needs_background and background is None:
            raise ValueError(
                f"background: {type(self).__name__} needs the background images to sample"
            )
        if self.needs_reference and reference is None:
            raise ValueError(
                f"reference: {type(self).__name__} needs reference defect crops to sample"
            )
        for name, images in (("background", background), ("reference", reference)):
            if images is not None and (images.ndim != 4 or images.shape[0] != n):
                raise ValueError(
                    f"{name}: expected [n={n}, C, H, W], got shape {tuple(images.shape)}"
                )
        native = self.native_channels(resolved_channels)
        landing = background
        if native != resolved_channels:
            if background is not None:
                background = match_channels(background, native)
            if reference is not None:
                reference = _native_reference(reference, resolved_channels, native)
        layer = self._generate(
            labels.to(device),
            generator=rng,
            device=device,
            dtype=dtype,
            channels=native,
            background=background,
            reference=reference,
            **options,
        )
        if layer.content.shape[1] != resolved_channels:
            layer = convert_layer(layer, resolved_channels, landing)
        return layer.to(device=device, dtype=dtype)

    @torch.no_grad()
    def sample_ahead(
        self,
        n: int,
        defect_type: str,
        *,
        generator: SeedLike,
        channels: int,
        layer_size: tuple[int, int] | None = None,
    ) -> list[AheadLayer]:
        """``n`` layers of ``defect_type`` sampled before their placement is known, in the
        native channels for a request of ``channels`` (float32, on the generator's device).

        :meth:`land` finishes them once their landing patch is known. The default samples
        without a background; generators that use it override both.
        """
        layer = self.sample(
            n,
            defect_type,
            generator=generator,
            channels=self.native_channels(channels),
            **({} if layer_size is None else {"layer_size": layer_size}),
        )
        label = self.type_index(defect_type)
        regions = support_boxes(layer.alpha[:, 0] > 0)
        return [
            AheadLayer(content, alpha, label, region=region)
            for content, alpha, region in zip(layer.content, layer.alpha, regions, strict=True)
        ]

    @torch.no_grad()
    def land(
        self, layers: Sequence[AheadLayer], channels: int, background: torch.Tensor | None
    ) -> DefectLayer:
        """Layers of :meth:`sample_ahead` finished for the patches ``background [n, C, h, w]``
        they land on (``None``: unknown), with ``channels`` content channels."""
        content = torch.stack([item.content for item in layers])
        alpha = torch.stack([item.alpha for item in layers])
        return self._landed(layers, content, alpha, channels, background)

    def land_planes(self, layer: AheadLayer, channels: int, landing: Landing | None) -> np.ndarray:
        """:meth:`land` of one layer for the compiled renderer (:mod:`defectaug.per_sample`):
        its content in ``channels`` channels over its alpha, ``[channels + 1, h, w]`` float32,
        for the patch of ``landing`` (``None``: unknown).

        A sample then pays a compiled pass or two, not a dozen torch operations on small
        tensors, and reads the patch over the layer's ``region`` only (the content outside it
        is never read unless ``landing.whole``). A generator that overrides :meth:`land`
        alone is landed by it, on the whole patch.
        """
        size = tuple(layer.alpha.shape[-2:])
        if type(self).land is not DefectGenerator.land:
            background = None if landing is None else torch.from_numpy(landing.patch(size))[None]
            landed = self.land([layer], channels, background)
            stack = torch.cat([landed.content, landed.alpha], 1)[0]
            return stack.to("cpu", torch.float32).numpy()
        content, alpha = layer.arrays[:2]
        patch = NO_PATCH
        if landing is not None and content.shape[0] == 1 and channels == 3:
            # Only a grey layer on RGB images reads the patch (convert_layer).
            patch = landing.patch(size, layer.region)
        return _kernels().landed_planes(content, alpha[0], patch, channels)

    def _landed(
        self,
        layers: Sequence[AheadLayer],
        content: torch.Tensor,
        alpha: torch.Tensor,
        channels: int,
        background: torch.Tensor | None,
    ) -> DefectLayer:
        """The finished ``content`` / ``alpha`` of ``layers`` as a layer with ``channels``
        content channels (converted for the patches ``background`` when they differ)."""
        labels = torch.tensor([item.label for item in layers], dtype=torch.int64)
        layer = DefectLayer(content, alpha, labels, self.defect_types)
        if content.shape[1] != channels:
            layer = convert_layer(layer, channels, background)
        return layer

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
        **options: Any,
    ) -> DefectLayer:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f"defect_types={list(self.defect_types)}, channels={self.channels}, "
            f"layer_size={tuple(self.layer_size)}"
        )
