"""``DefectInject`` on detection samples: boxes, per-box labels and instance masks are extended.

torchvision's detection samples are ``(image, {"boxes", "labels", "masks"})``; every defect that
shows appends its tight box, its class and its plane, after the existing ones (never rewritten),
so ``v2.SanitizeBoundingBoxes`` can follow.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from defectaug import DefectInject
from defectaug.layer import VISIBILITY
from tests._generators import SquareLayers

HEIGHT, WIDTH = 64, 80


def _image(dtype: torch.dtype = torch.float32) -> tv_tensors.Image:
    ramp = torch.linspace(0.4, 0.6, WIDTH).view(1, 1, WIDTH).expand(3, HEIGHT, WIDTH)
    image = ramp * torch.tensor([1.0, 0.95, 0.9]).view(3, 1, 1)
    if dtype == torch.uint8:
        image = (image * 255).round().to(torch.uint8)
    return tv_tensors.Image(image.contiguous())


def _as_format(xyxy: torch.Tensor, fmt: str) -> torch.Tensor:
    """``xyxy [K, 4]`` in box format ``fmt`` (rotated formats at angle 0), written out by hand."""
    x0, y0, x1, y1 = xyxy.double().unbind(1)
    w, h, zero = x1 - x0, y1 - y0, torch.zeros_like(x0)
    columns = {
        "XYXY": [x0, y0, x1, y1],
        "XYWH": [x0, y0, w, h],
        "CXCYWH": [x0 + w / 2, y0 + h / 2, w, h],
        "XYWHR": [x0, y0, w, h, zero],
        "CXCYWHR": [x0 + w / 2, y0 + h / 2, w, h, zero],
        "XYXYXYXY": [x0, y0, x1, y0, x1, y1, x0, y1],
    }[fmt]
    return torch.stack(columns, dim=1)


def _target(
    boxes=((1, 2, 10, 12), (20, 20, 30, 30)), labels=(3, 4), fmt="XYXY", dtype=torch.float32
):
    xyxy = torch.tensor(boxes, dtype=torch.int64).view(-1, 4)
    planes = torch.zeros(len(xyxy), HEIGHT, WIDTH, dtype=torch.uint8)
    for plane, (x0, y0, x1, y1) in zip(planes, xyxy.tolist(), strict=True):
        plane[y0:y1, x0:x1] = 1
    return {
        "boxes": tv_tensors.BoundingBoxes(
            _as_format(xyxy, fmt).to(dtype), format=fmt, canvas_size=(HEIGHT, WIDTH)
        ),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": tv_tensors.Mask(planes),
        "image_id": 17,
    }


def _changed(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """``[H, W]`` pixels some channel of which changed visibly (in [0, 1] units)."""
    scale = 255.0 if before.dtype == torch.uint8 else 1.0
    delta = after.as_subclass(torch.Tensor).double() - before.as_subclass(torch.Tensor).double()
    return (delta.abs() / scale).amax(0) > VISIBILITY + 1e-9


def _tight_box(mask: torch.Tensor) -> list[int]:
    ys, xs = mask.nonzero(as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


class Squares(SquareLayers):
    """Dark squares: takes the batched path (not the procedural generator)."""

    defect_types = ("dent", "hole")
    inset = 4
    tones = (0.05, 0.05)


PATHS = {
    "per_sample": dict(defect_types="spot"),
    "batched": dict(defect_types="dent", generator=Squares(), rotation=0, scale=0.3),
}


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_issue_sample_keeps_boxes_and_labels_and_appends_the_defect(path, dtype):
    image, target = _image(dtype), _target()
    transform = DefectInject(p=1.0, label=5, seed=0, **PATHS[path])
    out_image, out = transform(image, target)
    assert torch.equal(out["boxes"][:2], target["boxes"]) and torch.equal(
        out["labels"][:2], target["labels"]
    )
    assert out["labels"].tolist() == [3, 4, 5], "label= sets the class of the new box"
    assert isinstance(out["boxes"], tv_tensors.BoundingBoxes)
    assert (
        out["boxes"].canvas_size == (HEIGHT, WIDTH)
        and out["boxes"].format == target["boxes"].format
    )
    changed = _changed(image, out_image)
    assert out["boxes"][2].tolist() == _tight_box(changed)
    # One instance plane per box: the new one is the defect's visible pixels (up to filled holes).
    masks = out["masks"]
    assert isinstance(masks, tv_tensors.Mask) and masks.shape == (3, HEIGHT, WIDTH)
    assert masks.dtype == target["masks"].dtype and torch.equal(masks[:2], target["masks"])
    plane = masks[2].bool()
    assert not bool((changed & ~plane).any()) and _tight_box(plane) == out["boxes"][2].tolist()
    assert out["image_id"] == 17


@pytest.mark.parametrize("path", sorted(PATHS))
def test_instance_planes_match_the_semantic_mask(path):
    image = _image(torch.uint8)
    semantic = tv_tensors.Mask(torch.zeros(1, HEIGHT, WIDTH, dtype=torch.uint8))
    transform = DefectInject(p=1.0, seed=4, count=(2, 3), **PATHS[path])
    out_image, out_semantic, out = transform(image, semantic, _target())
    new = out["masks"][2:].bool()
    assert len(new) == len(out["boxes"]) - 2 == len(out["labels"]) - 2 >= 1
    # Every defect pixel is in some new plane and every plane pixel is a defect pixel.
    assert torch.equal(new.any(0), out_semantic[0].bool())
    for plane, box in zip(new, out["boxes"][2:], strict=True):
        assert _tight_box(plane) == box.tolist()


def test_box_class_rule():
    image = _image()
    for seed in range(6):
        by_type = DefectInject(["dent", "hole"], p=1.0, generator=Squares(), seed=seed, rotation=0)
        _, out = by_type(image, _target())
        added = out["labels"][2:].tolist()
        # Without label=: 1 + the type's position in defect_types (0 is the background).
        assert added and set(added) <= {1, 2}
    mapped = DefectInject(
        ["dent", "hole"], p=1.0, generator=Squares(), seed=2, label={"dent": 7, "hole": 9}
    )
    _, out = mapped(image, _target())
    assert set(out["labels"][2:].tolist()) <= {7, 9} and out["labels"][:2].tolist() == [3, 4]


@pytest.mark.parametrize("fmt", ["XYWH", "CXCYWH", "XYWHR", "CXCYWHR", "XYXYXYXY"])
def test_boxes_keep_their_format_and_dtype(fmt):
    image = _image()
    reference_image, reference = DefectInject("spot", p=1.0, seed=3)(image, _target())
    added = reference["boxes"][2:].as_subclass(torch.Tensor)
    rotated = fmt.endswith("R") or fmt == "XYXYXYXY"  # torchvision: rotated boxes are floats
    for dtype in (torch.float32, torch.float64) if rotated else (torch.float32, torch.int64):
        target = _target(fmt=fmt, dtype=dtype)
        out_image, out = DefectInject("spot", p=1.0, seed=3)(image, target)
        assert torch.equal(out_image, reference_image), "the box format does not change the draw"
        boxes = out["boxes"]
        assert boxes.format.name == fmt and boxes.dtype == dtype and len(boxes) == 3
        assert boxes.canvas_size == (HEIGHT, WIDTH) and torch.equal(boxes[:2], target["boxes"])
        expected = _as_format(added, fmt)
        if not dtype.is_floating_point:
            expected = expected.round()
        assert torch.allclose(boxes[2:].double(), expected, atol=1e-6)


def test_sanitize_bounding_boxes_after_it():
    image = _image()
    target = _target(boxes=((1, 2, 10, 12), (30, 30, 30, 35)), labels=(3, 4))  # the 2nd: no width
    pipeline = v2.Compose(
        [DefectInject("spot", p=1.0, seed=5, count=2), v2.SanitizeBoundingBoxes()]
    )
    _, out = pipeline(image, target)
    kept = len(out["boxes"])
    assert kept >= 2 and len(out["labels"]) == kept and out["masks"].shape[0] == kept
    assert out["labels"][0] == 3 and 4 not in out["labels"].tolist()
    assert torch.equal(out["masks"][0], target["masks"][0])


def test_label_sets_only_the_image_level_label():
    image = _image()
    sample = {"image": image, "label": 0, **_target()}
    out = DefectInject("spot", p=1.0, seed=2, label=6)(sample)
    assert out["label"] == 6 and out["labels"].tolist() == [3, 4, 6]
    # A detection sample without an image-level label: label= is fine, the class goes to the box.
    _, target = DefectInject("spot", p=1.0, seed=2, label=6)(image, _target())
    assert target["labels"].tolist() == [3, 4, 6]
    # One box, labels of shape [1]: still per-box labels, not an image-level label.
    one = _target(boxes=((1, 2, 10, 12),), labels=(3,))
    _, target = DefectInject("spot", p=1.0, seed=2, label=6)(image, one)
    assert target["labels"].tolist() == [3, 6] and target["masks"].shape[0] == 2


@pytest.mark.parametrize(
    "labels, expected",
    [
        (["part", "part"], ["part", "part", "spot"]),
        (("part", "part"), ("part", "part", "spot")),
        ([3, 4], [3, 4, 1]),
        (np.array(["part", "part"]), np.array(["part", "part", "spot"])),
        (np.array([3, 4], dtype=np.int16), np.array([3, 4, 1], dtype=np.int16)),
    ],
)
def test_labels_of_every_kind_get_the_defect(labels, expected):
    target = _target()
    target["labels"] = labels
    _, out = DefectInject("spot", p=1.0, seed=0)(_image(), target)
    if isinstance(expected, np.ndarray):
        assert out["labels"].dtype.kind == expected.dtype.kind
        assert out["labels"].tolist() == expected.tolist()
    else:
        assert type(out["labels"]) is type(expected) and out["labels"] == expected
    assert len(out["boxes"]) == 3


@pytest.mark.parametrize("dtype", ["S2", "<U2", ">U2", object])
def test_fixed_width_string_labels_keep_the_whole_type_name(dtype):
    # Per-box names narrower than the defect type's ("ok", 2 characters, vs "scratch") are
    # widened, not cut to the existing width ("sc").
    target = _target()
    target["labels"] = np.array(["ok", "ok"], dtype=dtype)
    _, out = DefectInject("scratch", p=1.0, seed=0)(_image(), target)
    added = len(out["boxes"]) - 2
    assert added >= 1
    labels = out["labels"]
    assert isinstance(labels, np.ndarray) and labels.dtype.kind == np.dtype(dtype).kind
    name = b"scratch" if labels.dtype.kind == "S" else "scratch"
    okay = b"ok" if labels.dtype.kind == "S" else "ok"
    assert labels.tolist() == [okay, okay] + [name] * added


def test_pil_detection_sample_and_empty_targets():
    pil = PIL.Image.fromarray(_image(torch.uint8).permute(1, 2, 0).numpy())
    empty = {
        "boxes": tv_tensors.BoundingBoxes(
            torch.zeros(0, 4), format="XYXY", canvas_size=(HEIGHT, WIDTH)
        ),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": tv_tensors.Mask(torch.zeros(0, HEIGHT, WIDTH, dtype=torch.bool)),
    }
    out_image, out = DefectInject("spot", p=1.0, seed=8, count=(1, 2))(pil, empty)
    assert isinstance(out_image, PIL.Image.Image)
    count = len(out["boxes"])
    assert count >= 1 and out["labels"].tolist() == [1] * count and out["masks"].shape[0] == count
    assert out["masks"].dtype == torch.bool


def test_reproducible_and_untouched_without_a_defect():
    image, target = _image(), _target()
    first = DefectInject("spot", p=1.0, seed=9)(image, target)
    again = DefectInject("spot", p=1.0, seed=9)(image, target)
    for key in ("boxes", "labels", "masks"):
        assert torch.equal(first[1][key], again[1][key])
    _, out = DefectInject("spot", p=0.0, seed=9)(image, target)
    assert all(out[key] is target[key] for key in ("boxes", "labels", "masks"))


def test_errors_name_the_argument():
    image = _image()
    target = _target()
    target["boxes"] = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(32, 40))
    with pytest.raises(ValueError, match=r"boxes: canvas_size \(32, 40\) differs"):
        DefectInject("spot", p=1.0, seed=0)(image, target)
    target = _target()
    target["masks"] = tv_tensors.Mask(torch.zeros(3, HEIGHT, WIDTH, dtype=torch.uint8))
    with pytest.raises(ValueError, match="masks: instance masks .* 3 planes for 2 boxes"):
        DefectInject("spot", p=1.0, seed=0)(image, target)
    target = _target()
    target["labels"] = torch.tensor([3, 4], dtype=torch.uint8)
    with pytest.raises(ValueError, match="label: class id 300 does not fit"):
        DefectInject("spot", p=1.0, seed=0, label=300)(image, target)


# ------------------------------------------------------------------ plain masks (issue 15, 3)
@pytest.mark.parametrize(
    "mask",
    [
        torch.zeros(HEIGHT, WIDTH, dtype=torch.uint8),
        torch.zeros(1, HEIGHT, WIDTH),
        np.zeros((HEIGHT, WIDTH), dtype=np.uint8),
        PIL.Image.new("L", (WIDTH, HEIGHT)),
    ],
    ids=["tensor", "float-tensor", "numpy", "pil"],
)
def test_a_plain_mask_is_refused_naming_tv_tensors_mask(mask):
    sample = {"image": _image(), "mask": mask, "label": 0}
    # Refused on every call, whether the draw places a defect or not.
    for p in (0.0, 1.0):
        with pytest.raises(TypeError, match=r"mask: .*tv_tensors\.Mask"):
            DefectInject("spot", p=p, seed=0)(sample)
    sample["mask"] = tv_tensors.Mask(torch.zeros(1, HEIGHT, WIDTH, dtype=torch.uint8))
    out = DefectInject("spot", p=1.0, seed=0)(sample)
    assert out["mask"].any()


def test_a_box_of_class_zero_is_refused():
    # Class 0 is torchvision's background: a defect box labelled 0 would train it as background.
    with pytest.raises(ValueError, match="class 0 is the background"):
        DefectInject("spot", p=1.0, seed=2, label=0)(_image(), _target())
    with pytest.raises(ValueError, match="class 0 is the background"):
        DefectInject("spot", p=1.0, seed=2, label={"spot": 0})(_image(), _target())
