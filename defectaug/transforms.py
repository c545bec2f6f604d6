"""``DefectInject``: a torchvision v2 transform that puts synthetic defects on training samples.

It draws once per call and applies that one draw to every input of the sample: ``make_params``
draws the plan (:func:`defectaug.plan.draw_plan`; it depends on the seed and the options alone,
not on the image's type, dtype or device, nor on the blend) and lays it out on the sample's first
image, and ``transform`` renders it into each input. With the procedural generator and a CPU
image (PIL, or a uint8 / float32 / float64 tensor that needs no gradient) the compiled renderer
does, for every blend (:func:`defectaug.per_sample.place_sample`, compositing and solving around
the defects only: the fast path for data-loader workers), and likewise with the bank or a
learned card and ``blend="alpha"``, and with the self-supervised generators (``cutpaste``,
``nsa``, ``texture``: their layers sampled for each sample, from the patches they land on) and
every blend; otherwise the torch renderer does
(:func:`defectaug.batch.render_plan`). Procedural layers are painted ahead in chunks for both, and
bank and learned layers sampled ahead in chunks, so the defects come out where and as they are
whichever renders them (up to the blend's own look).

- images (``tv_tensors.Image``, a plain tensor ``[C, H, W]`` / ``[H, W]``, a PIL image in mode L or
  RGB; uint8 or float) get the defects composited in, and keep their type, dtype and shape. Float
  images must hold values in [0, 1] (up to ``1e-3`` of rounding): a float image outside that range
  that draws a defect raises ``ValueError`` (its range found, and the hint: convert with
  ``v2.ToDtype(torch.float32, scale=True)``, place ``DefectInject`` before ``v2.Normalize``);
  the defect would otherwise be shaded as if the range were [0, 1] and come out a black blob.
  Images need both sides >= 2 px (and >= ``min_size``);
- a ``tv_tensors.Mask`` (``[H, W]`` or ``[1, H, W]``) gets the defect pixels written in, in the
  Mask's own dtype: with ``mask_mode="binary"`` they are set to 1 (a union with what the mask
  already marks), with ``mask_mode="class"`` to the defect's class id (``label_map[type]`` when a
  ``label_map`` / dict ``label`` is given, else ``1 +`` the type's position in ``defect_types``;
  0 stays background: the label space of :mod:`defectaug.labels`);
- the classification label, when ``label_map`` or ``label`` is set, becomes the defect's class (an
  int for every type, or ``label_map[type]``). It is found like torchvision's ``CutMix`` /
  ``SanitizeBoundingBoxes`` find labels (``labels_getter``), extended to the ``(image, int)``
  samples that ``ImageFolder`` yields: the second item of a tuple when it is an int or a scalar
  integer tensor, a ``"labels"``-like key of a dict (top level or second item), or the last item
  of a longer tuple such as ``(image, mask, label)``. In a dict that holds bounding boxes only a
  scalar (an int or a 0-d tensor) is an image-level label: the per-box ``"labels"`` are never
  overwritten, and ``label`` needs no image-level label there;
- detection targets (``tv_tensors.BoundingBoxes``, as in torchvision's ``(image, {"boxes",
  "labels", "masks"})`` samples) get one entry per defect that shows, in draw order, after the
  existing ones (which are never changed): its tight box (``x0, y0, x1, y1`` with exclusive ends,
  around the pixels it visibly changed, in the boxes' format, dtype and canvas), and, in the same
  dict, its class appended to the per-box ``"labels"`` (a 1-d tensor, list, tuple or numpy
  array: ``label[type]`` for a dict ``label``, ``label`` for an int, else ``1 +`` the type's
  position in ``defect_types``, the class ids of ``mask_mode="class"`` with 0 left to the
  background as torchvision's detection models expect; labels held as strings get the type
  name) and, when the dict holds instance masks (a ``tv_tensors.Mask`` ``[N, H, W]`` under
  ``"masks"`` with one plane per box), one plane per defect: the visibly changed pixels within
  the rectangle that defect changed (so its box is the tight box of its plane; where defects
  overlap a pixel can belong to several planes). ``v2.SanitizeBoundingBoxes`` can follow;
- a tensor, numpy array or PIL image under a dict key containing ``"mask"`` that is not a
  ``tv_tensors.Mask`` raises ``TypeError``: torchvision v2 passes plain tensors through by design
  and guessing which tensor is a mask is unsafe, so it would otherwise be left without the defect
  while the image gets it. Wrap it: ``tv_tensors.Mask(mask)``;
- everything else (key points, videos, extra tensors, metadata) passes through untouched.
  That includes numpy arrays beside a tensor or PIL image, but a sample whose only image-like
  content is a numpy array (a lone ``[H, W, C]`` array, ``(array, label)``) raises ``TypeError``
  rather than coming back without a defect: convert it first (``v2.ToImage()``).

Because masks are tv_tensors, geometric v2 transforms placed after ``DefectInject`` keep image and
defect mask aligned. Wrap masks as ``tv_tensors.Mask``: a PIL mask would be treated as an image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import PIL.Image
import torch
from torch.utils._pytree import (
    MappingKey,
    SequenceKey,
    tree_flatten,
    tree_flatten_with_path,
    tree_unflatten,
)
from torchvision import tv_tensors
from torchvision.transforms.v2 import Transform
from torchvision.transforms.v2 import functional as TF

from defectaug._checks import check_probability, describe, is_int, is_number
from defectaug._io import as_chw, check_unit_range, to_float_image
from defectaug._legacy import legacy_positional
from defectaug._seeding import SeedLike, mix_seed
from defectaug.batch import (
    DEFAULT_ASPECT,
    DEFAULT_ROTATION,
    DEFAULT_SCALE,
    NO_DEFECT,
    BlendMode,
    CallSeeds,
    DefectPlan,
    check_blend,
    check_blend_options,
    composite_plan,
    composite_visible,
    paints_relief,
    render_plan,
    resolve_defect_types,
    resolve_generator,
)
from defectaug.generators.base import DefectGenerator
from defectaug.labels import MASK_MODES as MASK_MODES  # re-exported: its home was here
from defectaug.labels import check_label_map, check_mask_mode
from defectaug.per_sample import (
    LayerReservoir,
    SamplePlan,
    composite_sample,
    place_sample,
    reservoir_for,
    samples_per_call,
    takes_fast_path,
)
from defectaug.placement import CountArg, PlacementOptions, RangeArg, RoiArg, resolve_roi
from defectaug.plan import Plan, RoiSource, draw_plan

LabelArg = int | Mapping[str, int] | None
_ONE_SAMPLE = (
    "image: DefectInject transforms one sample at a time, got a batch of shape {shape}; "
    "use defectaug.inject_defects / DefectInjector for batches"
)


def _check_fits(value: int, dtype: torch.dtype, what: str) -> None:
    """Raise when class id ``value`` does not fit an integer ``dtype`` (it would wrap around)."""
    if dtype.is_floating_point or dtype == torch.bool:
        return
    info = torch.iinfo(dtype)
    if not info.min <= value <= info.max:
        raise ValueError(
            f"label: class id {value} does not fit the {what}'s dtype {dtype} "
            f"([{info.min}, {info.max}])"
        )


#: Draws tried per call before a sample whose defects stay invisible is left without a defect.
#: Fewer than ``defectaug.dataset.DRAW_ATTEMPTS`` (8), which raises instead: giving up costs a
#: training step nothing, and each attempt is a full composite in the data-loading loop. Changing
#: either count changes seeded outputs, so they are kept apart.
DRAW_ATTEMPTS = 4


def _attempt_seed(call_seed: int | None, attempt: int) -> int | None:
    if call_seed is None or attempt == 0:
        return call_seed
    return mix_seed(call_seed, 7, attempt)


def _no_defect() -> dict[str, Any]:
    """``make_params``'s draw for a sample that receives no defect."""
    return {"plan": None, "mask": None, "source": None, "converted": None, "out": None}


def _image_size(image: Any) -> tuple[int, int]:
    """``(H, W)`` of a sample's image, without converting it."""
    if isinstance(image, PIL.Image.Image):
        return image.height, image.width
    if image.ndim < 2:
        to_float_image(image, "image")  # raises, naming the shape
    return tuple(image.shape[-2:])


def _levels(image: Any) -> int | None:
    """255 for an 8-bit image (its composite is measured after rounding), else ``None``."""
    if isinstance(image, PIL.Image.Image):
        return 255
    return 255 if isinstance(image, torch.Tensor) and image.dtype == torch.uint8 else None


def _rewrap(out: Any, like: Any) -> Any:
    if type(like) is tv_tensors.Image:
        # What tv_tensors.wrap does for an Image, without its torch.compiler.disable wrapper,
        # which costs more than the rewrap itself on every sample.
        return out.as_subclass(tv_tensors.Image)
    return tv_tensors.wrap(out, like=like) if isinstance(like, tv_tensors.TVTensor) else out


def _type_index(plan: DefectPlan | SamplePlan) -> int:
    return plan.type_index if isinstance(plan, SamplePlan) else int(plan.labels[0])


def _defect_plane(params: dict[str, Any]) -> torch.Tensor | None:
    """``[H, W]`` bool pixels of a draw of ``make_params`` (``None``: no defect)."""
    plan = params["plan"]
    if plan is None:
        return None
    return plan.mask if isinstance(plan, SamplePlan) else params["mask"]


def _is_pure_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and not isinstance(value, tv_tensors.TVTensor)


def _is_image(value: Any) -> bool:
    return isinstance(value, (tv_tensors.Image, PIL.Image.Image)) or _is_pure_tensor(value)


def _refuse_numpy_images(flat_inputs: list[Any]) -> None:
    """Raise when a numpy array would be the sample's only image.

    torchvision v2 passes types it does not know through untouched, so a numpy image would come
    back without a defect and without a word. Beside a tensor / PIL image a numpy array is some
    other payload and passes through like any other.
    """
    arrays = [inpt for inpt in flat_inputs if isinstance(inpt, np.ndarray)]
    if not arrays or any(
        isinstance(inpt, (tv_tensors.Image, PIL.Image.Image))
        or (_is_pure_tensor(inpt) and inpt.ndim >= 2)
        for inpt in flat_inputs
    ):
        return
    raise TypeError(
        f"image: DefectInject transforms torch tensors and PIL images, got {describe(arrays[0])} "
        "and no tensor or PIL image; convert numpy images first, e.g. v2.ToImage() or "
        "torch.from_numpy(array).permute(2, 0, 1) for an [H, W, C] array"
    )


def _is_class_label(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return _is_pure_tensor(value) and value.numel() == 1 and not value.is_floating_point()


def _label_key(mapping: Mapping[Any, Any]) -> Any:
    keys = [key for key in mapping if isinstance(key, str)]
    if any(isinstance(value, tv_tensors.BoundingBoxes) for value in mapping.values()):
        # Beside boxes, "labels" are per-box: only a scalar is an image-level label.
        keys = [key for key in keys if _is_class_label(mapping[key])]
    exact = [key for key in keys if key.lower() == "labels"]
    if exact:
        return exact[0]
    return next((key for key in keys if "label" in key.lower()), None)


def default_label_path(sample: Any) -> tuple[Any, ...] | None:
    """Where the classification label of ``sample`` is, as a pytree key path (``None``: none)."""
    if isinstance(sample, (tuple, list)) and len(sample) >= 2:
        second = sample[1]
        if _is_class_label(second):
            return (SequenceKey(1),)
        if isinstance(second, Mapping):
            key = _label_key(second)
            return None if key is None else (SequenceKey(1), MappingKey(key))
        if _is_class_label(sample[-1]):
            return (SequenceKey(len(sample) - 1),)
        return None
    if isinstance(sample, Mapping):
        key = _label_key(sample)
        return None if key is None else (MappingKey(key),)
    return None


def _is_per_box(value: Any) -> bool:
    """Whether ``value`` can be a per-box labels container (not a scalar class label)."""
    if isinstance(value, (list, tuple)):
        return True
    if isinstance(value, np.ndarray):
        return value.ndim == 1
    return _is_pure_tensor(value) and value.ndim == 1


class DetectionTarget(NamedTuple):
    """Bounding boxes of a sample and, when they sit in a dict, their per-box labels / masks."""

    boxes: tv_tensors.BoundingBoxes
    labels: Any  # per-box labels object, or None
    masks: tv_tensors.Mask | None  # instance masks [N, H, W], or None


def _plain_mask_error(key: str, value: Any) -> TypeError:
    return TypeError(
        f"{key}: DefectInject writes defect pixels only into a tv_tensors.Mask, got "
        f"{describe(value)} under {key!r} (torchvision v2 passes plain tensors through, so it "
        f"would silently keep no defect while the image gets one); wrap it: "
        f"sample[{key!r}] = tv_tensors.Mask(...)"
    )


def _scan_sample(sample: Any) -> list[DetectionTarget]:
    """Detection targets of ``sample``; raise on plain tensors / arrays / PIL under a mask key."""
    found: list[DetectionTarget] = []
    stack = [sample]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            boxes = [
                value for value in node.values() if isinstance(value, tv_tensors.BoundingBoxes)
            ]
            if len(boxes) > 1:
                raise ValueError(
                    f"boxes: a dict holds {len(boxes)} tv_tensors.BoundingBoxes; DefectInject "
                    "appends defect boxes to one BoundingBoxes per dict"
                )
            labels = masks = None
            for key, value in node.items():
                if isinstance(key, str) and "mask" in key.lower():
                    is_plain = (
                        (_is_pure_tensor(value) and value.ndim >= 2)
                        or (isinstance(value, np.ndarray) and value.ndim >= 2)
                        or isinstance(value, PIL.Image.Image)
                    )
                    if is_plain:
                        raise _plain_mask_error(key, value)
                if not boxes or not isinstance(key, str):
                    continue
                if key.lower() == "labels" and _is_per_box(value):
                    labels = value
                elif key.lower() == "masks" and isinstance(value, tv_tensors.Mask):
                    masks = _instance_masks(value, boxes[0])
            if boxes:
                found.append(DetectionTarget(boxes[0], labels, masks))
            stack.extend(value for value in node.values() if isinstance(value, (dict, list, tuple)))
        elif isinstance(node, (list, tuple)):
            for value in node:
                if isinstance(value, tv_tensors.BoundingBoxes):
                    found.append(DetectionTarget(value, None, None))
                elif isinstance(value, (dict, list, tuple)):
                    stack.append(value)
    return found


def _instance_masks(
    masks: tv_tensors.Mask, boxes: tv_tensors.BoundingBoxes
) -> tv_tensors.Mask | None:
    """``masks`` when it is a plane-per-box ``[N, H, W]`` Mask (``None``: a semantic mask)."""
    if masks.ndim != 3 or (masks.shape[0] == 1 and len(boxes) != 1):
        return None
    if masks.shape[0] != len(boxes):
        raise ValueError(
            f"masks: instance masks [N, H, W] need one plane per box; got {masks.shape[0]} "
            f"planes for {len(boxes)} boxes"
        )
    return masks


def _to_box_format(xyxy: torch.Tensor, like: tv_tensors.BoundingBoxes) -> tv_tensors.BoundingBoxes:
    """``xyxy [K, 4]`` pixel boxes in the format, dtype, device and canvas of ``like``."""
    boxes = xyxy.to(torch.float64)
    target = like.format
    if target.name in ("XYWHR", "CXCYWHR", "XYXYXYXY"):  # rotated: from an unrotated XYWHR
        x0, y0, x1, y1 = boxes.unbind(1)
        boxes = torch.stack([x0, y0, x1 - x0, y1 - y0, torch.zeros_like(x0)], dim=1)
        source = tv_tensors.BoundingBoxFormat.XYWHR
    else:
        source = tv_tensors.BoundingBoxFormat.XYXY
    if target != source:
        boxes = TF.convert_bounding_box_format(boxes, old_format=source, new_format=target)
    if not like.dtype.is_floating_point:
        boxes = boxes.round()
    return tv_tensors.wrap(boxes.to(device=like.device, dtype=like.dtype), like=like)


def _legacy_inject_order(args: tuple[Any, ...]) -> tuple[str, ...] | None:
    """The old order ``(defect_types, p, generator, blend)``: a real number in second place."""
    if len(args) >= 2 and is_number(args[1]):
        return ("defect_types", "p", "generator", "blend")
    return None


class DefectInject(Transform):
    """Composite synthetic defects onto a sample with probability ``p`` (torchvision v2 transform).

    Arguments follow the entry points' one convention: ``defect_types`` and ``generator`` are
    the only positional ones, the rest are keywords named as in
    :func:`defectaug.inject_defects` and :class:`defectaug.dataset.SyntheticDefectDataset`, and
    labels follow :mod:`defectaug.labels`.
    The old order ``DefectInject(defect_types, p, generator, blend)`` (a number in second place)
    still works, with a ``FutureWarning``.

    Args:
        defect_types: type name(s) to draw from (default: all of the generator's); each call picks
            one uniformly for the sample.
        generator: a ``DefectGenerator``, or a name / folder / Hub id for ``load_generator``.
        p: probability that the sample receives defects: a real number in [0, 1] (Python or
            numpy scalar; not a bool, not NaN).
        blend: ``"alpha"``, ``"poisson"`` or ``"improved_poisson"``.
        blend_options: the blend's options, see :data:`defectaug.batch.BLEND_OPTIONS` (``mode``
            of both Poisson blends, ``band`` of ``"improved_poisson"``).
        count, scale, rotation, aspect, min_size, roi, confine: placement options, see
            :func:`defectaug.inject_defects`. A callable ``roi`` receives the image as
            ``[1, C, H, W]`` float.
        seed: ``None`` draws from torch's global generator; an int (or a ``torch.Generator``,
            which gives one by a single draw) makes the stream of draws reproducible: call ``k``
            is seeded from ``(seed, k)`` mixed with the DataLoader worker id and base seed and
            the distributed rank (see :class:`defectaug.batch.CallSeeds`), and pre-painted
            layers come from chunks seeded the same way
            (:class:`defectaug.per_sample.LayerReservoir`,
            :class:`~defectaug.per_sample.SampledReservoir`), so workers never repeat each other
            and the same sequence of calls gives the same outputs.
        label_map: ``{type: class}``, as on the other entry points (:mod:`defectaug.labels`):
            the image-level label of a sample that received a ``type`` defect becomes ``class``
            (never per-box labels), and so do its class-mask pixels and appended boxes. The same
            as a dict ``label``; giving both raises ``ValueError``.
        label: ``None`` leaves classification labels alone; an int or a ``{type: class}`` dict sets
            the image-level label of samples that received a defect (never per-box labels). It
            also gives the class of the boxes appended to detection targets (see the module
            docs; without it a box's class is ``1 +`` the type's position in ``defect_types``).
            A class id that does not fit the sample's label, per-box labels or ``Mask`` dtype
            (-3 or 256 in a uint8 ``Mask``) raises ``ValueError`` instead of wrapping around.
        mask_mode: ``"binary"`` or ``"class"``: what is written into a ``tv_tensors.Mask`` (in
            that Mask's own dtype). In ``"class"`` mode 0 is the background, so a ``label_map``
            may not map a type to 0, and a bool ``Mask`` can only take class id 1.
        labels_getter: ``"default"`` (see the module docs) or a callable ``sample -> label`` that
            returns the label object itself (it is replaced where it sits in the sample).

    A draw whose defects all end up invisible is redrawn, up to ``DRAW_ATTEMPTS`` (4) draws in
    all; then the sample is left without a defect. The first draw is the same for every image
    type, dtype, device and blend (see the module docs), but a redraw happens only when that
    draw is invisible in the output's own dtype and blend (a uint8 or PIL image after rounding to
    8 bits; a faint defect a Poisson solve fades), so a uint8 image and its float copy, or two
    blends, can then end up with different draws. Layers are taken from the reservoir in draw
    order, so after such a redraw later calls take different layers too.
    """

    @legacy_positional("DefectInject", ("defect_types", "generator"), _legacy_inject_order)
    def __init__(
        self,
        defect_types: str | Sequence[str] | None = None,
        generator: str | DefectGenerator = "procedural",
        *,
        p: float = 0.5,
        blend: BlendMode = "alpha",
        blend_options: Mapping[str, Any] | None = None,
        count: CountArg = (1, 1),
        scale: RangeArg = DEFAULT_SCALE,
        rotation: RangeArg = DEFAULT_ROTATION,
        aspect: RangeArg = DEFAULT_ASPECT,
        min_size: int = 8,
        roi: RoiArg = None,
        confine: bool = True,
        seed: SeedLike = None,
        label_map: Mapping[str, int] | None = None,
        label: LabelArg = None,
        mask_mode: str = "binary",
        labels_getter: str | Callable[[Any], Any] = "default",
    ) -> None:
        super().__init__()
        self.generator = resolve_generator(generator)
        self.defect_types = resolve_defect_types(defect_types, self.generator)
        self.p = check_probability(p)
        self.blend = check_blend(blend)
        self.blend_options = check_blend_options(blend, blend_options)
        self.placement = PlacementOptions.check(
            count=count,
            scale=scale,
            rotation=rotation,
            aspect=aspect,
            min_size=min_size,
            roi=roi,
            confine=confine,
        )
        self.mask_mode = check_mask_mode(mask_mode)
        if label_map is not None and label is not None:
            raise ValueError(
                "label, label_map: give one of them (label_map={type: class} is label's dict "
                "form under the name the other entry points use)"
            )
        if label_map is not None:
            if not isinstance(label_map, Mapping):
                raise TypeError(
                    f"label_map: expected None or a dict type -> int, got {label_map!r} "
                    "(one int class for every type is label=...)"
                )
            self.label = self._check_label(label_map, self.mask_mode, "label_map")
        else:
            self.label = self._check_label(label, self.mask_mode)
        if labels_getter != "default" and not callable(labels_getter):
            raise ValueError(
                f"labels_getter: expected 'default' or a callable, got {labels_getter!r}"
            )
        self.labels_getter = labels_getter
        self._seeds = CallSeeds(seed)
        seed = self._seeds.seed
        # Procedural layers are painted ahead in chunks, for both renderers: the compiled one
        # (CPU images) and the torch one (other devices, dtypes) then shade the same layers,
        # so changing either leaves the defects where and what they are. Bank and learned
        # layers are sampled ahead in chunks too (a generator call per sample would dominate
        # a worker's time), and finished for the patch each lands on.
        self._reservoir = reservoir_for(self.generator, seed)
        # What the compiled renderer takes its layers from (None: the torch renderer renders).
        # It composites relief layers with every blend, and sampled layers with the alpha
        # blend (the Poisson blends of sampled layers stay with torch); the layers of the
        # self-supervised generators are sampled for each plan (from the image they land on),
        # as the torch renderer samples them, and composited with every blend.
        self._compiled: LayerReservoir | DefectGenerator | None = None
        if self._reservoir is not None and (paints_relief(self.generator) or self.blend == "alpha"):
            self._compiled = self._reservoir
        elif self._reservoir is None and samples_per_call(self.generator):
            self._compiled = self.generator

    @property
    def label_map(self) -> dict[str, int] | None:
        """The ``{type: class}`` map of ``label_map`` (or a dict ``label``); ``None`` otherwise."""
        return dict(self.label) if isinstance(self.label, Mapping) else None

    def _check_label(self, label: LabelArg, mask_mode: str, name: str = "label") -> LabelArg:
        if label is None or is_int(label):
            return None if label is None else int(label)
        if not isinstance(label, Mapping):
            raise TypeError(f"{name}: expected None, an int or a dict type -> int, got {label!r}")
        # 0 is the background of a class mask: the defect would vanish from the mask.
        reserved = {0: "the background in mask_mode='class'"} if mask_mode == "class" else None
        return check_label_map(label, self.defect_types, name, reserved=reserved)

    def mask_value(self, type_index: int) -> int:
        """Class id written into masks for ``defect_types[type_index]`` in ``"class"`` mode."""
        if isinstance(self.label, Mapping):
            return int(self.label[self.defect_types[type_index]])
        return type_index + 1

    def box_class(self, type_index: int) -> int:
        """Class id of a box appended for a ``defect_types[type_index]`` defect.

        ``label[type]`` for a dict ``label``, ``label`` for an int, else ``type_index + 1`` (0 is
        the background class of torchvision's detection models).
        """
        if isinstance(self.label, Mapping):
            value = int(self.label[self.defect_types[type_index]])
        elif self.label is not None:
            value = self.label
        else:
            return type_index + 1
        if value == 0:
            raise ValueError(
                "label: class 0 is the background of torchvision's detection models; a defect "
                "box needs a class id >= 1"
            )
        return value

    def label_value(self, type_index: int) -> int:
        """New classification label of a sample with a ``defect_types[type_index]`` defect."""
        if isinstance(self.label, Mapping):
            return int(self.label[self.defect_types[type_index]])
        if self.label is None:
            raise ValueError("label: not set; DefectInject leaves classification labels alone")
        return self.label

    # --------------------------------------------------------------------------- v2 hooks
    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """Draw the sample's plan (:func:`~defectaug.plan.draw_plan`) and lay it out on its
        first image, for the compiled renderer or the torch one; ``transform`` renders it."""
        # "plan" is None when the sample gets no defect; "mask" is the torch renderer's mask
        # (the compiled renderer's plan computes its own on demand, see `defect_mask`).
        images = [inpt for inpt in flat_inputs if _is_image(inpt)]
        if not images:
            return _no_defect()
        source = images[0]
        # tv_tensors pay a dispatch per attribute read; the checks below read a plain view.
        plain = (
            source.as_subclass(torch.Tensor) if isinstance(source, tv_tensors.TVTensor) else source
        )
        call_seed = self._seeds.next()
        if self._compiled is not None and takes_fast_path(plain):
            return self._compiled_params(source, plain, call_seed)
        return self._torch_params(source, plain, call_seed)

    def _draw(
        self,
        image_size: tuple[int, int],
        call_seed: int | None,
        attempt: int,
        roi: RoiSource,
    ) -> Plan:
        """The plan of draw ``attempt`` for the sample seeded ``call_seed`` (``p`` decides the
        first draw only)."""
        return draw_plan(
            self.placement,
            self.defect_types,
            1,
            image_size,
            _attempt_seed(call_seed, attempt),
            p=self.p if attempt == 0 else 1.0,
            roi=roi,
        )

    def _roi_source(self, float_image: Callable[[], torch.Tensor]) -> RoiSource:
        """The sample's region of interest for :meth:`_draw`: resolved on ``float_image()`` (the
        source as a float batch) when a draw first needs it, then kept for the later attempts
        (``None``: the whole image)."""
        roi = self.placement.roi
        if roi is None:
            return None
        resolved: list[torch.Tensor | None] = []

        def source() -> torch.Tensor | None:
            if not resolved:
                resolved.append(resolve_roi(roi, float_image()))
            return resolved[0]

        return source

    def _compiled_params(self, source: Any, plain: Any, call_seed: int | None) -> dict[str, Any]:
        """:meth:`make_params` for a source the compiled renderer takes (``plain``: its plain
        view)."""
        image_size = _image_size(plain)
        roi_source = self._roi_source(lambda: to_float_image(source, "image")[0])
        pixels = None  # the source as the compiled renderer reads it: as_chw, once
        # A draw whose defects end up invisible (below the visibility floor) is redrawn a few
        # times (p is decided by the first); if it stays invisible the sample gets no defect
        # (and keeps its labels).
        for attempt in range(DRAW_ATTEMPTS):
            plan = self._draw(image_size, call_seed, attempt, roi_source)
            if not plan.defects:
                break
            if pixels is None:
                if (
                    not isinstance(plain, PIL.Image.Image)
                    and plain.ndim == 4
                    and plain.shape[0] != 1
                ):
                    raise ValueError(_ONE_SAMPLE.format(shape=tuple(plain.shape)))
                pixels = as_chw(plain)
            sample_plan = place_sample(
                plan,
                source,
                self._compiled,
                self.placement.confine,
                self.blend,
                self.blend_options,
                pixels=pixels,
            )
            if sample_plan.visible:
                return {"plan": sample_plan, "mask": None, "source": source, "converted": None}
        return _no_defect()

    def _torch_params(self, source: Any, plain: Any, call_seed: int | None) -> dict[str, Any]:
        """:meth:`make_params` for the torch renderer (``plain``: the source's plain view)."""
        image_size = _image_size(plain)
        converted: list[Any] = []

        def float_source() -> tuple[torch.Tensor, Any]:
            # Converted once, and only for a sample that receives a defect.
            if not converted:
                converted.append(to_float_image(source, "image"))
            return converted[0]

        roi_source = self._roi_source(lambda: float_source()[0])
        for attempt in range(DRAW_ATTEMPTS):  # as in _compiled_params
            plan = self._draw(image_size, call_seed, attempt, roi_source)
            if not plan.defects:
                break
            image = float_source()[0]
            check_unit_range(image, "image")
            if image.shape[0] != 1:
                raise ValueError(_ONE_SAMPLE.format(shape=tuple(image.shape)))
            layout = render_plan(
                image,
                plan,
                self.generator,
                confine=self.placement.confine,
                reservoir=self._reservoir,
            )
            result = composite_visible(
                image, layout, self.blend, _levels(source), self.blend_options
            )
            if bool((result.labels != NO_DEFECT).any()):
                return dict(
                    plan=layout,
                    mask=result.masks[0, 0],
                    source=source,
                    converted=float_source(),
                    out=result.images,
                    boxes=result.boxes,
                )
        return _no_defect()

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        plan: DefectPlan | SamplePlan | None = params["plan"]
        if plan is None:
            return inpt
        if isinstance(inpt, tv_tensors.Mask):
            return self._write_mask(inpt, params)
        if not _is_image(inpt):
            return inpt
        if isinstance(plan, SamplePlan):
            return _rewrap(composite_sample(inpt, plan), inpt)
        if inpt is params["source"]:
            _, restore = params["converted"]
            return _rewrap(restore(params["out"]), inpt)
        image, restore = to_float_image(inpt, "image")
        check_unit_range(image, "image")
        if tuple(image.shape[-2:]) != plan.image_size:
            raise ValueError(
                f"image: all images of a sample must share one size; got {tuple(image.shape[-2:])} "
                f"and {plan.image_size}"
            )
        out = restore(composite_plan(image, plan, self.blend, _levels(inpt), self.blend_options))
        return _rewrap(out, inpt)

    # torchvision 0.19-0.20 named the hooks `_get_params` / `_transform`.
    def _get_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return self.make_params(flat_inputs)

    def _transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self.transform(inpt, params)

    def forward(self, *inputs: Any) -> Any:
        # Like torchvision's CutMix, forward is extended (not replaced in spirit) so the label,
        # which v2 never hands to `transform`, can be updated with the same draw.
        sample = inputs if len(inputs) > 1 else inputs[0]
        if len(inputs) == 1 and self.label is None and _is_image(sample):
            # The common ImageFolder case: a lone image needs no pytree flattening.
            return self.transform(sample, self.make_params([sample]))
        targets = _scan_sample(sample)
        # Per-box label lists are replaced whole, so they are leaves here.
        box_labels = [
            target.labels for target in targets if isinstance(target.labels, list | tuple)
        ]
        is_leaf = (
            (lambda node: any(node is labels for labels in box_labels)) if box_labels else None
        )
        flat_inputs, spec = tree_flatten(sample, is_leaf=is_leaf)
        _refuse_numpy_images(flat_inputs)
        label_index = (
            self._locate_label(sample, flat_inputs, bool(targets), is_leaf)
            if self.label is not None
            else None
        )
        needs_transform = self._needs_transform_list(flat_inputs)
        instance_masks = [target.masks for target in targets if target.masks is not None]
        for index, inpt in enumerate(flat_inputs):
            if any(inpt is masks for masks in instance_masks):
                needs_transform[index] = False  # planes are appended below, not painted in
        params = self.make_params(
            [inpt for inpt, needed in zip(flat_inputs, needs_transform, strict=True) if needed]
        )
        flat_outputs = [
            self.transform(inpt, params) if needed else inpt
            for inpt, needed in zip(flat_inputs, needs_transform, strict=True)
        ]
        if label_index is not None and params["plan"] is not None:
            flat_outputs[label_index] = self._relabel(flat_inputs[label_index], params["plan"])
        if targets and params["plan"] is not None:
            self._append_detections(flat_inputs, flat_outputs, targets, params)
        return tree_unflatten(flat_outputs, spec)

    # --------------------------------------------------------------------------- helpers
    @staticmethod
    def defect_mask(params: dict[str, Any]) -> torch.Tensor | None:
        """``[1, H, W]`` bool pixels a draw of :meth:`make_params` covers (``None``: no defect).

        The per-sample mask shape of every entry point (:mod:`defectaug.labels`).
        """
        plane = _defect_plane(params)
        return None if plane is None else plane[None]

    def _locate_label(
        self,
        sample: Any,
        flat_inputs: list[Any],
        has_boxes: bool = False,
        is_leaf: Callable[[Any], bool] | None = None,
    ) -> int | None:
        """Leaf index of the image-level label; ``None`` when a detection sample has none."""
        if self.labels_getter == "default":
            path = default_label_path(sample)
            if path is not None:
                paths = [
                    leaf_path for leaf_path, _ in tree_flatten_with_path(sample, is_leaf=is_leaf)[0]
                ]
                if path in paths:
                    return paths.index(path)
        else:
            value = self.labels_getter(sample)
            matches = [i for i, leaf in enumerate(flat_inputs) if leaf is value]
            if len(matches) > 1:
                raise ValueError(
                    "labels_getter: the returned label object occurs several times in the sample; "
                    "return a tensor or use a sample structure where the label is unique"
                )
            if matches and _is_class_label(value):
                return matches[0]
        if has_boxes:
            return None  # the defect's class goes to the boxes' labels
        raise ValueError(
            "label: DefectInject(label=...) needs a classification label in the sample (an int or "
            "a scalar integer tensor), e.g. (image, label) or {'image': ..., 'label': ...}; none "
            "was found. Pass labels_getter=callable, or label=None to leave labels alone"
        )

    def _relabel(self, old: Any, plan: DefectPlan | SamplePlan) -> Any:
        new = self.label_value(_type_index(plan))
        if isinstance(old, torch.Tensor):
            _check_fits(new, old.dtype, "sample's label tensor")
            return torch.full_like(old, new)
        if isinstance(old, np.integer):
            info = np.iinfo(type(old))
            if not info.min <= new <= info.max:
                raise ValueError(
                    f"label: class id {new} does not fit the sample's label type "
                    f"{type(old).__name__} ([{info.min}, {info.max}])"
                )
            return type(old)(new)
        return new

    def defect_instances(self, params: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per defect that shows (draw order): ``boxes [K, 4]`` int64 XYXY, planes ``[K, H, W]``.

        A defect's plane is the visibly changed pixels within the rectangle it changed, its box
        the tight box of that plane (exclusive ends); defects that show nowhere are left out.
        """
        mask = _defect_plane(params)
        plan = params["plan"]
        if isinstance(plan, SamplePlan):
            rows = []
            # A Poisson blend can change pixels around a defect's box: its reach holds them.
            for top, left, height, width in plan.reach:
                window = mask[top : top + height, left : left + width]
                ys, xs = window.nonzero(as_tuple=True)
                if len(ys) == 0:
                    rows.append([0, 0, 0, 0])
                    continue
                rows.append(
                    [
                        left + int(xs.min()),
                        top + int(ys.min()),
                        left + int(xs.max()) + 1,
                        top + int(ys.max()) + 1,
                    ]
                )
            boxes = torch.tensor(rows, dtype=torch.int64).view(-1, 4)
        else:
            boxes = params["boxes"].to(device="cpu", dtype=torch.int64)
        boxes = boxes[boxes[:, 2] > boxes[:, 0]]
        mask = mask.cpu()
        height, width = mask.shape
        cols = torch.arange(width)
        rows_index = torch.arange(height)
        inside_x = (cols >= boxes[:, 0:1]) & (cols < boxes[:, 2:3])
        inside_y = (rows_index >= boxes[:, 1:2]) & (rows_index < boxes[:, 3:4])
        planes = mask[None] & inside_y[:, :, None] & inside_x[:, None, :]
        return boxes, planes

    def _append_detections(
        self,
        flat_inputs: list[Any],
        flat_outputs: list[Any],
        targets: list[DetectionTarget],
        params: dict[str, Any],
    ) -> None:
        """Append each visible defect's box, class and plane to the sample's detection targets."""
        boxes, planes = self.defect_instances(params)
        type_index = _type_index(params["plan"])
        image_size = tuple(planes.shape[-2:]) if len(boxes) else tuple(params["plan"].image_size)

        def replace(old: Any, new: Any) -> None:
            for index, inpt in enumerate(flat_inputs):
                if inpt is old:
                    flat_outputs[index] = new

        for target in targets:
            canvas = tuple(target.boxes.canvas_size)
            if canvas != image_size:
                raise ValueError(
                    f"boxes: canvas_size {canvas} differs from the image's size {image_size}"
                )
            if not len(boxes):
                continue
            existing = target.boxes.as_subclass(torch.Tensor)
            added = _to_box_format(boxes, target.boxes).as_subclass(torch.Tensor)
            replace(target.boxes, tv_tensors.wrap(torch.cat([existing, added]), like=target.boxes))
            if target.labels is not None:
                replace(target.labels, self._append_labels(target.labels, type_index, len(boxes)))
            if target.masks is not None:
                masks = target.masks
                if tuple(masks.shape[-2:]) != image_size:
                    raise ValueError(
                        f"masks: size {tuple(masks.shape[-2:])} differs from the image's, "
                        f"{image_size}"
                    )
                new = planes.to(device=masks.device, dtype=masks.dtype)
                stacked = torch.cat([masks.as_subclass(torch.Tensor), new])
                replace(masks, tv_tensors.wrap(stacked, like=masks))

    def _append_labels(self, labels: Any, type_index: int, count: int) -> Any:
        """``labels`` (per box) followed by ``count`` entries for a ``type_index`` defect."""
        name = self.defect_types[type_index]
        if isinstance(labels, np.ndarray):
            if labels.dtype.kind in "USO" and (
                labels.dtype.kind != "O" or all(isinstance(v, str) for v in labels)
            ):
                # The new entries get a width of their own and the result the common dtype of
                # both: a fixed-width array narrower than the name (S3, <U3) must not cut it.
                if labels.dtype.kind == "S":
                    added = np.array([name.encode()] * count, dtype=np.bytes_)
                elif labels.dtype.kind == "U":
                    added = np.array([name] * count, dtype=np.str_)
                else:
                    added = np.array([name] * count, dtype=object)
                return np.concatenate([labels, added], dtype=np.result_type(labels, added))
            value = self.box_class(type_index)
            if labels.dtype.kind in "iu":
                info = np.iinfo(labels.dtype)
                if not info.min <= value <= info.max:
                    raise ValueError(
                        f"label: class id {value} does not fit the per-box labels' dtype "
                        f"{labels.dtype} ([{info.min}, {info.max}])"
                    )
            return np.concatenate([labels, np.full(count, value, dtype=labels.dtype)])
        if isinstance(labels, (list, tuple)):
            strings = bool(labels) and all(isinstance(v, str) for v in labels)
            added = [name if strings else self.box_class(type_index)] * count
            return tuple([*labels, *added]) if isinstance(labels, tuple) else [*labels, *added]
        value = self.box_class(type_index)
        _check_fits(value, labels.dtype, "per-box labels")
        new = torch.full((count,), value, dtype=labels.dtype, device=labels.device)
        return torch.cat([labels, new])

    def _write_mask(self, mask: tv_tensors.Mask, params: dict[str, Any]) -> tv_tensors.Mask:
        defect = _defect_plane(params).to(mask.device)
        if mask.ndim not in (2, 3) or (mask.ndim == 3 and mask.shape[0] != 1):
            raise ValueError(
                f"mask: DefectInject writes into a semantic mask [H, W] or [1, H, W], got shape "
                f"{tuple(mask.shape)}; instance masks [N, H, W] are extended only under the key "
                "'masks' of a dict that holds their tv_tensors.BoundingBoxes (one plane per box)"
            )
        if tuple(mask.shape[-2:]) != tuple(defect.shape):
            raise ValueError(
                f"mask: size {tuple(mask.shape[-2:])} differs from the image's, "
                f"{tuple(defect.shape)}"
            )
        value = 1 if self.mask_mode == "binary" else self.mask_value(_type_index(params["plan"]))
        if mask.dtype == torch.bool:
            if value != 1:
                raise ValueError(
                    f"mask: a bool Mask cannot hold class id {value} (mask_mode='class'); use an "
                    "integer Mask or mask_mode='binary'"
                )
            value = True
        else:
            _check_fits(value, mask.dtype, "Mask")
        filled = mask.as_subclass(torch.Tensor).masked_fill(defect.expand_as(mask), value)
        return tv_tensors.wrap(filled, like=mask)

    def extra_repr(self) -> str:
        # In the signature's order; a dict label is shown under its consistent name, label_map.
        labels = (
            f"label_map={self.label!r}"
            if isinstance(self.label, Mapping)
            else f"label={self.label!r}"
        )
        return (
            f"defect_types={list(self.defect_types)}, "
            f"generator={type(self.generator).__name__}, p={self.p}, blend={self.blend!r}, "
            f"{labels}, mask_mode={self.mask_mode!r}"
        )
