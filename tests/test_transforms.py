import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2

from defectaug.generators.base import DefectGenerator
from defectaug.layer import DefectLayer
from defectaug.per_sample import SamplePlan
from defectaug.transforms import DefectInject


class HardDisks(DefectGenerator):
    """Black disks with a hard edge: defect pixels are exactly those darker than the midpoint."""

    defect_types = ("disk", "blob")
    channels = "any"
    layer_size = (16, 16)

    def _generate(self, labels, *, generator, device, dtype, channels, background, reference):
        yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
        disk = (((yy - 7.5) ** 2 + (xx - 7.5) ** 2) < 36).to(dtype)
        alpha = disk.expand(labels.shape[0], 1, 16, 16).to(device)
        content = torch.zeros(labels.shape[0], channels, 16, 16, device=device, dtype=dtype)
        return DefectLayer(content, alpha, labels, self.defect_types)


def _float_image(channels=3, size=(40, 48)):
    g = torch.Generator().manual_seed(0)
    return (0.55 + 0.1 * torch.rand(channels, *size, generator=g)).clamp(0, 1)


def _changed(before, after) -> torch.Tensor:
    return (after.float() - before.float()).abs().sum(0) > 0


INPUTS = {
    "tv_image_uint8": lambda: tv_tensors.Image((_float_image() * 255).round().to(torch.uint8)),
    "tv_image_float": lambda: tv_tensors.Image(_float_image()),
    "tensor_chw_float": lambda: _float_image(),
    "tensor_hw_float": lambda: _float_image(1)[0],
    "tensor_chw_uint8": lambda: (_float_image() * 255).round().to(torch.uint8),
    "pil_rgb": lambda: Image.fromarray(
        (_float_image().permute(1, 2, 0).numpy() * 255).astype(np.uint8), mode="RGB"
    ),
    "pil_l": lambda: Image.fromarray((_float_image(1)[0].numpy() * 255).astype(np.uint8), mode="L"),
}


@pytest.mark.parametrize("kind", list(INPUTS))
def test_every_input_type_keeps_its_form_and_gets_a_defect(kind):
    image = INPUTS[kind]()
    out = DefectInject("stain", p=1.0, seed=0)(image)
    assert type(out) is type(image)
    if isinstance(image, Image.Image):
        assert out.mode == image.mode and out.size == image.size
        before, after = np.asarray(image, dtype=np.float32), np.asarray(out, dtype=np.float32)
        assert np.abs(after - before).max() > 10
    else:
        assert out.dtype == image.dtype and out.shape == image.shape
        assert (out.float() - image.float()).abs().max() > (
            10 if image.dtype == torch.uint8 else 0.04
        )


def test_p0_is_identity_and_other_inputs_pass_through():
    image = tv_tensors.Image(_float_image())
    boxes = tv_tensors.BoundingBoxes([[1, 2, 10, 12]], format="XYXY", canvas_size=(40, 48))
    extra = torch.arange(5)
    sample = {"image": image, "boxes": boxes, "extra": extra, "name": "part-7", "label": 0}
    out = DefectInject("spot", p=0.0, label=1, seed=0)(sample)
    assert out["image"] is image and out["label"] == 0
    out = DefectInject("spot", p=1.0, label=1, seed=0)(sample)
    assert out["extra"] is extra and out["name"] == "part-7"
    assert out["label"] == 1 and not torch.equal(out["image"], image)
    # Boxes are extended (the defect's box after the existing ones), never rewritten.
    assert isinstance(out["boxes"], tv_tensors.BoundingBoxes) and len(out["boxes"]) == 2
    assert torch.equal(out["boxes"][:1], boxes)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.bool, torch.int64])
def test_binary_mask_is_the_union_and_marks_exactly_the_defect(dtype):
    image = tv_tensors.Image(torch.full((1, 40, 40), 0.8))
    mask = torch.zeros(1, 40, 40, dtype=dtype)
    mask[0, :3, :3] = 1
    transform = DefectInject("disk", p=1.0, generator=HardDisks(), rotation=0, scale=0.4, seed=3)
    out_image, out_mask = transform(image, tv_tensors.Mask(mask))
    assert isinstance(out_mask, tv_tensors.Mask) and out_mask.dtype == dtype
    assert out_mask[0, :3, :3].all(), "what the mask already marked stays marked"
    # The mask holds what visibly changed: the value moved from 0.8 by more than 8/255.
    defect = (out_image[0] - 0.8).abs() > 8 / 255
    expected = defect.clone()
    expected[:3, :3] = True
    assert defect.any() and torch.equal(out_mask[0].bool(), expected)


def test_class_mask_and_label_dict():
    labels = {"disk": 4, "blob": 7}
    transform = DefectInject(
        ["disk", "blob"], p=1.0, generator=HardDisks(), label=labels, mask_mode="class", seed=1
    )
    seen = set()
    for _ in range(12):
        sample = (
            tv_tensors.Image(_float_image()),
            tv_tensors.Mask(torch.zeros(40, 48, dtype=torch.uint8)),
            0,
        )
        image, mask, label = transform(*sample)
        values = set(mask.unique().tolist()) - {0}
        assert values == {label} and label in (4, 7)
        seen.add(label)
    assert seen == {4, 7}
    default_ids = DefectInject(
        ["disk", "blob"], p=1.0, generator=HardDisks(), mask_mode="class", seed=1
    )
    _, mask = default_ids(
        tv_tensors.Image(_float_image()), tv_tensors.Mask(torch.zeros(40, 48, dtype=torch.uint8))
    )
    assert set(mask.unique().tolist()) - {0} <= {1, 2}


@pytest.mark.parametrize(
    "sample",
    [
        lambda image: (image, 0),
        lambda image: (image, torch.tensor(0)),
        lambda image: (image, np.int64(0)),
        lambda image: {"image": image, "label": 0},
        lambda image: (image, {"labels": torch.tensor(0), "id": 0}),
    ],
    ids=["tuple-int", "tuple-tensor", "tuple-numpy", "dict", "tuple-dict"],
)
def test_label_update_keeps_the_label_type(sample):
    built = sample(tv_tensors.Image(_float_image()))
    out = DefectInject("spot", p=1.0, label=3, seed=0)(built)
    flat_in, flat_out = _labels(built), _labels(out)
    assert type(flat_out) is type(flat_in) and int(flat_out) == 3
    if isinstance(flat_in, torch.Tensor):
        assert flat_out.dtype == flat_in.dtype and flat_out.shape == flat_in.shape
    untouched = DefectInject("spot", p=1.0, seed=0)(sample(tv_tensors.Image(_float_image())))
    assert int(_labels(untouched)) == 0


def _labels(sample):
    if isinstance(sample, dict):
        return sample["label"]
    second = sample[1]
    return second["labels"] if isinstance(second, dict) else second


def test_label_errors_and_custom_getter():
    image = tv_tensors.Image(_float_image())
    with pytest.raises(ValueError, match="needs a classification label"):
        DefectInject("spot", p=1.0, label=1)(image)
    with pytest.raises(ValueError, match="no class for defect type"):
        DefectInject(["spot", "pit"], label={"spot": 1})
    getter = DefectInject("spot", p=1.0, label=5, labels_getter=lambda s: s[2]["target"], seed=0)
    out = getter(image, "meta", {"target": torch.tensor(1)})
    assert int(out[2]["target"]) == 5 and out[1] == "meta"


def test_unsupported_mask_shape_is_refused():
    transform = DefectInject("spot", p=1.0, seed=0)
    instance_masks = tv_tensors.Mask(torch.zeros(3, 40, 48, dtype=torch.uint8))
    with pytest.raises(ValueError, match="instance masks"):
        transform(tv_tensors.Image(_float_image()), instance_masks)


def test_one_draw_is_shared_by_every_image_of_a_sample():
    image = _float_image()
    first, second = DefectInject("crack", p=1.0, seed=4)(
        tv_tensors.Image(image), tv_tensors.Image(image.clone())
    )
    assert torch.equal(first, second) and not torch.equal(first, tv_tensors.Image(image))


@pytest.mark.parametrize("flip", [v2.RandomHorizontalFlip(p=1.0), v2.RandomVerticalFlip(p=1.0)])
def test_geometric_transforms_after_it_keep_image_and_mask_aligned(flip):
    pipeline = v2.Compose(
        [
            DefectInject("disk", p=1.0, generator=HardDisks(), scale=(0.3, 0.5), seed=2),
            v2.RandomResizedCrop(32, scale=(0.5, 1.0), interpolation=InterpolationMode.NEAREST),
            flip,
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
    torch.manual_seed(0)
    for _ in range(5):
        image = tv_tensors.Image(torch.full((3, 64, 64), 204, dtype=torch.uint8))
        mask = tv_tensors.Mask(torch.zeros(1, 64, 64, dtype=torch.uint8))
        out_image, out_mask = pipeline(image, mask)
        assert out_image.shape == (3, 32, 32) and out_mask.shape == (1, 32, 32)
        # The mask is what moved by more than 8 levels from 204. Nearest-neighbour crops and flips
        # move image and mask pixels together, so this holds pixel for pixel after them too.
        marked = out_mask[0].bool()
        assert marked.any()
        assert torch.equal(marked, (out_image[0] - 0.8).abs() > 8.5 / 255)


def test_bilinear_crop_with_a_real_generator_stays_aligned():
    pipeline = v2.Compose(
        [
            DefectInject("spot", p=1.0, scale=(0.3, 0.4), seed=5),
            v2.RandomResizedCrop(48, scale=(0.6, 1.0), antialias=True),
            v2.RandomHorizontalFlip(p=1.0),
        ]
    )
    torch.manual_seed(1)
    # The soft rim of a faint spot changes pixels outside its mask, so one draw can score low;
    # the mean over several draws is what tells aligned masks from misplaced ones.
    ious, flipped_ious = [], []
    for _ in range(16):
        background = tv_tensors.Image(torch.full((1, 96, 96), 0.8))
        image, mask = pipeline(
            background, tv_tensors.Mask(torch.zeros(1, 96, 96, dtype=torch.uint8))
        )
        changed = (image[0] - 0.8).abs() > 0.05
        marked = mask[0].bool()
        if not marked.any():  # the crop can miss a small spot altogether
            assert not changed.any()
            continue
        ious.append(float((changed & marked).sum() / (changed | marked).sum()))
        flipped = marked.flip(-1)
        flipped_ious.append(float((changed & flipped).sum() / (changed | flipped).sum()))
    assert len(ious) >= 12
    assert sum(ious) / len(ious) > 0.6 and sum(ious) > sum(flipped_ious)


def test_seed_makes_the_stream_reproducible_and_picklable():
    make = lambda: DefectInject(["scratch", "pit"], p=0.7, seed=11)  # noqa: E731
    first, second = make(), make()
    image = tv_tensors.Image(_float_image())
    outs_first = [first(image) for _ in range(4)]
    outs_second = [second(image) for _ in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(outs_first, outs_second, strict=True))
    assert not all(torch.equal(outs_first[0], other) for other in outs_first[1:])
    clone = pickle.loads(pickle.dumps(first))
    assert torch.equal(clone(image), first(image))


def test_v2_hooks_and_old_names():
    transform = DefectInject("spot", p=1.0, seed=0)
    image = tv_tensors.Image(_float_image())
    params = transform._get_params([image])
    assert transform.defect_mask(params).any()
    out = transform._transform(image, params)
    assert isinstance(out, tv_tensors.Image) and not torch.equal(out, image)
    assert "spot" in repr(transform)


class _Constant(Dataset):
    def __init__(self, transform):
        self.transform = transform

    def __len__(self):
        return 8

    def __getitem__(self, index):
        image = tv_tensors.Image(torch.full((1, 32, 32), 0.7))
        mask = tv_tensors.Mask(torch.zeros(1, 32, 32, dtype=torch.uint8))
        return self.transform(image, mask)


def _load(seed):
    data = _Constant(DefectInject(["spot", "stain"], p=1.0, seed=seed))
    loader = DataLoader(
        data, batch_size=2, num_workers=2, generator=torch.Generator().manual_seed(0)
    )
    images, masks = zip(*loader, strict=True)
    return torch.cat(images), torch.cat(masks)


def test_dataloader_workers_are_reproducible_and_do_not_repeat_each_other():
    images, masks = _load(seed=7)
    again_images, again_masks = _load(seed=7)
    assert torch.equal(images, again_images) and torch.equal(masks, again_masks)
    assert masks.flatten(1).any(1).all()
    # Items 0 and 2 are the first call in worker 0 and worker 1: they must differ.
    assert not torch.equal(masks[0], masks[2])


# ------------------------------------------------------------------------------ per-sample path
def test_per_sample_path_changes_only_the_defect_boxes_and_masks_what_it_changes():
    transform = DefectInject(["spot", "scratch", "pit"], p=1.0, count=(1, 3), seed=21)
    assert transform._reservoir is not None
    masked_draws = 0
    for _ in range(6):
        image = tv_tensors.Image((_float_image(size=(64, 80)) * 255).round().to(torch.uint8))
        params = transform.make_params([image])
        out = transform.transform(image, params)
        inside = torch.zeros(64, 80, dtype=torch.bool)
        for defect in params["plan"].defects:
            inside[
                defect.top : defect.top + defect.height, defect.left : defect.left + defect.width
            ] = True
        assert torch.equal(out[:, ~inside], image[:, ~inside]), "pixels outside the boxes move"
        mask = transform.defect_mask(params)[0]  # [1, H, W] -> [H, W]
        assert not (mask & ~inside).any()
        # A thin scratch resampled small can stay below alpha 0.5 everywhere: no mask pixel.
        masked_draws += bool(mask.any())
        if mask.any():
            assert _changed(image, out)[mask].float().mean() > 0.9
    assert masked_draws >= 4


def test_per_sample_path_float_and_uint8_agree():
    image = _float_image(size=(48, 56))
    as_uint8 = (image * 255).round().to(torch.uint8)
    from_float = DefectInject("stain", p=1.0, seed=8)(image.to(torch.float64))
    from_uint8 = DefectInject("stain", p=1.0, seed=8)(as_uint8)
    assert from_float.dtype == torch.float64 and from_uint8.dtype == torch.uint8
    assert (from_float.float() * 255 - from_uint8.float()).abs().max() <= 2.0


@pytest.mark.parametrize("kind", ["float16", "requires_grad"])
def test_images_outside_the_fast_path_take_the_batched_planner(kind):
    image = _float_image(size=(48, 56))
    image = image.half() if kind == "float16" else image.requires_grad_()
    transform = DefectInject("stain", p=1.0, seed=4)
    params = transform.make_params([image])
    assert not isinstance(params["plan"], SamplePlan)
    out = transform.transform(image, params)
    assert (
        out.dtype == image.dtype
        and _changed(image.detach(), out.detach())[transform.defect_mask(params)[0]].any()
    )
    if kind == "requires_grad":
        out.sum().backward()
        assert image.grad is not None


@pytest.mark.parametrize("blend", ["poisson", "improved_poisson"])
@pytest.mark.parametrize("kind", ["uint8", "float32", "pil"])
def test_poisson_blends_on_cpu_images_take_the_compiled_renderer(blend, kind, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the torch renderer rendered")

    monkeypatch.setattr("defectaug.transforms.render_plan", refuse)
    monkeypatch.setattr("defectaug.batch.render_plan", refuse)
    monkeypatch.setattr("defectaug.transforms.composite_visible", refuse)
    floats = _float_image(size=(48, 56))
    as_uint8 = (floats * 255).round().to(torch.uint8)
    image = {
        "uint8": as_uint8,
        "float32": floats,
        "pil": Image.fromarray(as_uint8.permute(1, 2, 0).numpy(), "RGB"),
    }[kind]
    transform = DefectInject("stain", p=1.0, blend=blend, seed=4)
    params = transform.make_params([image])
    plan = params["plan"]
    assert isinstance(plan, SamplePlan) and plan.blend == blend
    out = transform.transform(image, params)
    assert type(out) is type(image)
    if kind == "pil":
        image, out = (torch.from_numpy(np.array(x)).permute(2, 0, 1) for x in (image, out))
    assert out.dtype == image.dtype
    mask = transform.defect_mask(params)[0]  # [1, H, W] -> [H, W]
    assert mask.any() and _changed(image, out)[mask].float().mean() > 0.9


def test_per_sample_plan_applies_to_a_second_image_outside_the_fast_path():
    image = (_float_image(size=(48, 56)) * 255).round().to(torch.uint8)
    half = image.half() / 255
    inject = DefectInject("pit", p=1.0, seed=2)
    out, out_half = inject(tv_tensors.Image(image), tv_tensors.Image(half))
    assert not torch.equal(out, image)
    assert out_half.dtype == torch.float16
    assert (out_half.float() * 255 - out.float()).abs().max() <= 1.0


def test_per_sample_path_confines_defects_to_the_roi():
    roi = torch.zeros(64, 64, dtype=torch.bool)
    roi[16:48, 20:44] = True
    transform = DefectInject("crack", p=1.0, roi=roi, scale=(0.3, 0.5), seed=3)
    for _ in range(4):
        params = transform.make_params([tv_tensors.Image(torch.full((1, 64, 64), 0.6))])
        mask = transform.defect_mask(params)[0]  # [1, H, W] -> [H, W]
        assert mask.any() and not (mask & ~roi).any()


def test_reservoir_chunks_grow_and_layers_cycle_a_chunk_apart():
    from defectaug.per_sample import USES_PER_LAYER, LayerReservoir, chunk_length

    assert [chunk_length(24, k) for k in range(5)] == [4, 8, 16, 32, 32]
    assert chunk_length(512, 9) == 4
    reservoir = LayerReservoir(DefectInject("spot").generator, seed=5)
    spot = reservoir.generator.defect_types.index("spot")
    first_chunk = 4 * USES_PER_LAYER
    total = first_chunk + 9
    taken = [reservoir.take(spot, 24).planes for _ in range(total)]
    assert reservoir._positions[(spot, 24)] == (1, 9)
    flat = np.stack([planes.ravel() for planes in taken])
    distance = np.linalg.norm(flat[:, None] - flat[None], axis=2)
    same = distance == 0
    # Takes share a layer exactly when they are in the same chunk (4 layers, then 8) at the same
    # position modulo its length: uses of a layer are a chunk apart, chunks never repeat.
    chunk_of = [(0, i % 4) if i < first_chunk else (1, (i - first_chunk) % 8) for i in range(total)]
    for i in range(total):
        expected = [j for j in range(total) if chunk_of[j] == chunk_of[i]]
        assert np.flatnonzero(same[i]).tolist() == expected, i
    again = LayerReservoir(reservoir.generator, seed=5)
    assert np.array_equal(again.take(spot, 24).planes, taken[0])
    clone = pickle.loads(pickle.dumps(reservoir))
    assert not clone._chunks
    assert np.array_equal(clone.take(spot, 24).planes, reservoir.take(spot, 24).planes)


# ------------------------------------------------------------------------------ input checks
@pytest.mark.parametrize("path", ["per_sample", "batched"])
@pytest.mark.parametrize("mistake", ["no_scale", "normalised"])
def test_float_images_outside_the_unit_range_are_refused_with_a_hint(path, mistake):
    uint8 = (torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(0)) * 255).round()
    unit = uint8.to(torch.uint8)
    pipeline = [v2.ToDtype(torch.float32, scale=mistake != "no_scale")]
    if mistake == "normalised":
        pipeline.append(v2.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]))
    image = v2.Compose(pipeline)(tv_tensors.Image(unit))
    generator = "procedural" if path == "per_sample" else HardDisks()
    types = "spot" if path == "per_sample" else None
    transform = DefectInject(types, p=1.0, generator=generator)
    with pytest.raises(ValueError, match=r"image: expected float values in \[0, 1\], found") as e:
        transform(image)
    assert "scale=True" in str(e.value) and "before v2.Normalize" in str(e.value)
    # No defect drawn, nothing to shade: the sample passes untouched.
    assert DefectInject(types, p=0.0, generator=generator)(image) is image


def test_a_second_float_image_outside_the_range_is_refused_too():
    good = tv_tensors.Image(_float_image())
    with pytest.raises(ValueError, match="expected float values"):
        DefectInject("spot", p=1.0, seed=0)(good, tv_tensors.Image(good * 255))
    with pytest.raises(ValueError, match="expected float values"):
        DefectInject("disk", p=1.0, generator=HardDisks(), seed=0)(good, tv_tensors.Image(-good))
    # bfloat16 takes the batched planner and torch's min / max rather than numpy's.
    with pytest.raises(ValueError, match=r"found \[1\d\d"):
        DefectInject("spot", p=1.0, seed=0)(tv_tensors.Image((good * 255).bfloat16()))


@pytest.mark.parametrize("path", ["per_sample", "batched"])
def test_rounding_just_outside_the_unit_range_is_accepted(path):
    image = _float_image()
    image[0, 0, 0], image[0, 0, 1] = 1.0 + 5e-4, -5e-4
    generator = "procedural" if path == "per_sample" else HardDisks()
    transform = DefectInject(None if path == "batched" else "spot", p=1.0, generator=generator)
    assert transform(image).shape == image.shape
    with pytest.raises(ValueError, match="NaN or infinite"):
        transform(torch.full((3, 24, 24), float("nan")))


@pytest.mark.parametrize(
    "mask_dtype, class_id",
    [(torch.uint8, -3), (torch.uint8, 256), (torch.int8, 200), (torch.bool, 2)],
)
def test_class_ids_that_do_not_fit_the_mask_are_refused(mask_dtype, class_id):
    transform = DefectInject("spot", p=1.0, label={"spot": class_id}, mask_mode="class", seed=0)
    mask = tv_tensors.Mask(torch.zeros(1, 40, 48, dtype=mask_dtype))
    with pytest.raises(ValueError, match=f"class id {class_id}"):
        transform(tv_tensors.Image(_float_image()), mask, 0)


def test_class_ids_that_fit_are_written_and_labels_checked():
    transform = DefectInject("spot", p=1.0, label={"spot": -3}, mask_mode="class", seed=0)
    mask = tv_tensors.Mask(torch.zeros(1, 40, 48, dtype=torch.int16))
    _, out_mask, label = transform(tv_tensors.Image(_float_image()), mask, 0)
    assert label == -3 and set(out_mask.unique().tolist()) == {0, -3}
    with pytest.raises(ValueError, match="class id -3 does not fit the sample's label"):
        transform(tv_tensors.Image(_float_image()), mask, torch.tensor(0, dtype=torch.uint8))
    with pytest.raises(ValueError, match="class id -3 does not fit the sample's label"):
        transform(tv_tensors.Image(_float_image()), mask, np.uint8(0))
    with pytest.raises(ValueError, match="label: class id 0 is the background"):
        DefectInject("spot", label={"spot": 0}, mask_mode="class")
    with pytest.raises(TypeError, match="label: expected int classes"):
        DefectInject("spot", label={"spot": "3"})
    assert DefectInject("spot", label={"spot": np.int64(4)}).label == {"spot": 4}


def test_numpy_images_are_refused_alone_and_passed_through_beside_a_tensor():
    array = (_float_image().permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    transform = DefectInject("spot", p=1.0, seed=0)
    for sample in [(array,), (array, 3), ({"image": array, "label": 3},)]:
        with pytest.raises(TypeError, match=r"numpy array of shape \(40, 48, 3\).*v2.ToImage"):
            transform(*sample)
    with pytest.raises(TypeError, match="numpy"):
        DefectInject("spot", p=0.0)(array)  # refused whatever the draw
    image = tv_tensors.Image(_float_image())
    out_image, out_array = transform(image, array)
    assert out_array is array and not torch.equal(out_image, image)


@pytest.mark.parametrize("blend", ["alpha", "poisson", "improved_poisson"])
@pytest.mark.parametrize("size", [(1, 1), (1, 16), (16, 1)])
def test_images_with_a_one_pixel_side_raise_a_clear_error(blend, size):
    transform = DefectInject("spot", p=1.0, blend=blend, min_size=1, seed=0)
    for dtype in (torch.uint8, torch.float32):
        image = torch.full((1, *size), 128 if dtype == torch.uint8 else 0.5, dtype=dtype)
        with pytest.raises(ValueError, match=f"{size[0]}x{size[1]} is too small for a defect"):
            transform(image)


@pytest.mark.parametrize("blend", ["alpha", "poisson", "improved_poisson"])
def test_two_pixel_images_work(blend):
    image = torch.full((3, 2, 2), 0.5)
    out, mask = DefectInject("spot", p=1.0, blend=blend, min_size=1, seed=0)(
        image, tv_tensors.Mask(torch.zeros(2, 2, dtype=torch.uint8))
    )
    assert out.shape == image.shape and not torch.isnan(out).any()
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_defect_types_and_p_are_checked():
    with pytest.raises(TypeError, match="defect_types: expected a type name .* got 3"):
        DefectInject(3)
    with pytest.raises(TypeError, match="defect_types: expected a type name"):
        DefectInject({"spot", "pit"})
    with pytest.raises(TypeError, match="defect_types: expected type names"):
        DefectInject(["spot", 3])
    assert DefectInject(np.array(["spot", "pit"])).defect_types == ("spot", "pit")
    for p in (np.float32(0.5), np.float64(1.0), np.int64(0), 1, 0.25):
        assert DefectInject("spot", p=p).p == float(p)
    for p in (True, "0.5", None, torch.tensor(0.5)):
        with pytest.raises(TypeError, match="p: expected a probability"):
            DefectInject("spot", p=p)
    for p in (float("nan"), np.float32("nan"), -0.1, 1.5):
        with pytest.raises(ValueError, match=r"p: expected a probability in \[0, 1\]"):
            DefectInject("spot", p=p)
