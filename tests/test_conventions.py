"""One convention across DefectInject, inject_defects / DefectInjector and SyntheticDefectDataset
(issue #14, item 3): argument order, seeds, the label space, label_map and mask dtypes."""

import pickle
import warnings

import pytest
import torch
from torchvision import tv_tensors

from defectaug import (
    DefectInject,
    DefectInjector,
    ProceduralGenerator,
    SyntheticDefectDataset,
    inject_defects,
)
from defectaug.labels import NO_DEFECT
from tests._generators import SquareLayers


class Tones(SquareLayers):
    """A dark square for "dark", a bright one for "bright": the type shows in the pixels."""

    defect_types = ("dark", "bright")
    inset = 3
    tones = (0.0, 1.0)


ORDERS = (["dark", "bright"], ["bright", "dark"])
PLACE = dict(rotation=0, scale=(0.4, 0.5))


def _grey(shape=(3, 40, 48), value=0.5):
    return torch.full(shape, value)


def _shown(image, mask, base=0.5):
    """The type a defect shows as: brighter or darker than the grey background."""
    change = image.float()[..., mask].mean() - base
    return "bright" if change > 0 else "dark"


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ----------------------------------------------------------------------------- argument order
def test_defect_inject_legacy_positionals_warn_and_match_the_new_form():
    image = torch.rand(3, 32, 32) * 0.5 + 0.25
    with pytest.warns(FutureWarning, match=r"DefectInject\(defect_types, generator, p=\.\.\., "):
        old = DefectInject(["spot", "scratch"], 1.0, "procedural", "poisson", seed=3)
    new = DefectInject(["spot", "scratch"], "procedural", p=1.0, blend="poisson", seed=3)
    assert (old.p, old.blend, old.defect_types) == (new.p, new.blend, new.defect_types)
    assert torch.equal(old(image), new(image))
    with pytest.warns(FutureWarning, match=r"DefectInject\(defect_types, p=\.\.\.\)"):
        short = DefectInject("scratch", 0.3, seed=1)
    assert short.p == 0.3
    with pytest.raises(TypeError, match="multiple values"):
        DefectInject("scratch", 0.3, p=0.5)
    with pytest.raises(TypeError):
        DefectInject("scratch", "procedural", "alpha")  # neither order


def test_dataset_legacy_positionals_warn_and_match_the_new_form():
    backgrounds = [_grey(value=0.4 + 0.1 * i) for i in range(3)]
    with pytest.warns(FutureWarning, match=r"SyntheticDefectDataset\(backgrounds, defect_types"):
        old = SyntheticDefectDataset(backgrounds, "procedural", ["spot", "scratch"], 4, 5, "alpha")
    new = SyntheticDefectDataset(
        backgrounds, ["spot", "scratch"], "procedural", length=4, seed=5, blend="alpha"
    )
    assert (len(old), old.seed, old.defect_types) == (len(new), new.seed, new.defect_types)
    for index in range(4):
        assert torch.equal(old[index][0], new[index][0]) and old[index][1] == new[index][1]
    with pytest.warns(FutureWarning, match=r"\(backgrounds, defect_types, generator\)"):
        instance = SyntheticDefectDataset(backgrounds, ProceduralGenerator(), "spot", length=2)
    assert instance.defect_types == ("spot",)
    with pytest.warns(FutureWarning):
        named = SyntheticDefectDataset(backgrounds, "procedural", length=2)
    assert named.defect_types == ProceduralGenerator.defect_types


def test_new_forms_do_not_warn(no_warnings):
    DefectInject("scratch", "procedural", p=0.3)
    DefectInject(None, ProceduralGenerator())
    DefectInjector(["spot"], "procedural", p=0.5)
    backgrounds = [_grey()]
    SyntheticDefectDataset(backgrounds, "spot", length=2)
    SyntheticDefectDataset(backgrounds, ["spot"], "procedural", length=2)
    SyntheticDefectDataset(backgrounds, None, ProceduralGenerator(), length=2)
    # A self-supervised generator's one type is named like it: the new order either way.
    SyntheticDefectDataset(backgrounds, "nsa", "nsa", length=2)


def test_defect_inject_pickles_and_shows_its_arguments():
    transform = DefectInject(["spot", "scratch"], p=0.4, label_map={"spot": 3, "scratch": 4})
    copy = pickle.loads(pickle.dumps(transform))
    assert copy.label_map == {"spot": 3, "scratch": 4} and copy.p == 0.4
    text = repr(copy)
    assert "defect_types=['spot', 'scratch'], generator=ProceduralGenerator, p=0.4" in text
    assert "label_map={'spot': 3, 'scratch': 4}" in text


# ----------------------------------------------------------------------------- label space
@pytest.mark.parametrize("order", ORDERS, ids="-".join)
def test_every_entry_point_labels_a_type_by_its_index_in_defect_types(order):
    generator = Tones()
    images = torch.stack([_grey() for _ in range(6)])
    result = inject_defects(images, order, generator, p=1.0, seed=0, **PLACE)
    modules = DefectInjector(order, generator, p=1.0, seed=0, **PLACE)(images)
    for batch in (result, modules):
        assert (batch.labels != NO_DEFECT).all()
        for image, mask, label in zip(batch.images, batch.masks, batch.labels, strict=True):
            assert order[int(label)] == _shown(image, mask[0])

    transform = DefectInject(order, generator, p=1.0, seed=0, mask_mode="class", **PLACE)
    seen = set()
    for _ in range(6):
        image, mask = transform(tv_tensors.Image(_grey()), tv_tensors.Mask(torch.zeros(1, 40, 48)))
        class_id = int(mask.max())
        assert class_id >= 1
        assert order[class_id - 1] == _shown(image, mask[0] > 0)  # class masks: index + 1
        seen.add(class_id)
    data = SyntheticDefectDataset(
        [_grey()], order, generator, length=6, target="dict", seed=0, **PLACE
    )
    assert data.classes == order and data.class_to_idx == {
        name: order.index(name) for name in order
    }
    for index in range(6):
        sample = data[index]
        shown = _shown(sample["image"], sample["mask"][0])
        assert sample["defect_types"][0] == shown and sample["label"] == order.index(shown)


def test_label_map_remaps_on_every_entry_point():
    generator, order = Tones(), ["dark", "bright"]
    label_map = {"dark": 7, "bright": 9}
    images = torch.stack([_grey() for _ in range(6)])
    result = inject_defects(
        images, order, generator, p=0.5, seed=1, label_map=label_map, mask_mode="class", **PLACE
    )
    plain = inject_defects(images, order, generator, p=0.5, seed=1, **PLACE)
    assert (plain.labels == NO_DEFECT).any() and (plain.labels != NO_DEFECT).any()
    expected = torch.tensor([label_map[order[i]] if i >= 0 else -1 for i in plain.labels])
    assert torch.equal(result.labels, expected)
    assert result.masks.dtype == torch.int64
    assert torch.equal(result.masks, torch.where(plain.masks, expected.view(-1, 1, 1, 1), 0))
    injector = DefectInjector(order, generator, p=0.5, seed=1, label_map=label_map, **PLACE)
    assert injector.label_map == label_map
    assert set(injector(images).labels.tolist()) <= {7, 9, -1}

    transform = DefectInject(order, generator, p=1.0, seed=0, label_map=label_map, **PLACE)
    image, label = transform(tv_tensors.Image(_grey()), 0)
    assert label == label_map[_shown(image, (image - 0.5).abs().amax(0) > 0.1)]
    data = SyntheticDefectDataset([_grey()], order, generator, length=4, label_map=label_map)
    assert data.class_to_idx == label_map
    assert {data[i][1] for i in range(4)} <= {7, 9}


def test_label_map_and_label_together_is_an_error():
    with pytest.raises(ValueError, match="label, label_map"):
        DefectInject("spot", label={"spot": 1}, label_map={"spot": 1})
    assert DefectInject("spot", label_map={"spot": 2}).label == {"spot": 2}


# ----------------------------------------------------------------------------- masks
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_mask_dtypes_and_shapes_per_entry_point(dtype):
    grey = _grey(value=0.5)
    images = torch.stack([grey] * 2)
    if dtype == torch.uint8:
        images, grey = (images * 255).to(dtype), (grey * 255).to(dtype)
    binary = inject_defects(images, "spot", p=1.0, seed=0)
    assert binary.images.dtype == dtype
    assert binary.masks.dtype == torch.bool and binary.masks.shape == (2, 1, 40, 48)
    classes = inject_defects(images, "spot", p=1.0, seed=0, mask_mode="class")
    assert classes.masks.dtype == torch.int64 and classes.masks.shape == (2, 1, 40, 48)
    assert torch.equal(classes.masks > 0, binary.masks)

    data = SyntheticDefectDataset([grey], "spot", length=2, target="mask")
    image, mask = data[0]
    assert image.dtype == torch.float32  # the dataset's documented output
    assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.bool
    assert mask.shape == (1, 40, 48)
    image, mask = SyntheticDefectDataset(
        [grey], "spot", length=2, target="mask", mask_mode="class"
    )[0]
    assert mask.dtype == torch.int64 and set(mask.unique().tolist()) == {0, 1}

    transform = DefectInject("spot", p=1.0, seed=0)
    params = transform.make_params([tv_tensors.Image(grey)])
    assert transform.defect_mask(params).shape == (1, 40, 48)
    for existing in (torch.uint8, torch.bool, torch.int64):
        out, written = transform(
            tv_tensors.Image(grey), tv_tensors.Mask(torch.zeros(1, 40, 48, dtype=existing))
        )
        assert out.dtype == dtype and written.dtype == existing and written.any()


# ----------------------------------------------------------------------------- seeds
@pytest.mark.parametrize("kind", ["int", "generator", "none"])
def test_seed_is_an_int_a_generator_or_none_everywhere(kind):
    def seed():
        return {"int": 5, "generator": torch.Generator().manual_seed(5), "none": None}[kind]

    images = torch.rand(4, 3, 32, 32) * 0.5 + 0.25

    def run_all():
        if kind == "none":
            torch.manual_seed(0)
        return (
            inject_defects(images, "spot", seed=seed()),
            DefectInjector("spot", seed=seed())(images),
            DefectInject("spot", p=1.0, seed=seed())(images[0]),
            SyntheticDefectDataset(list(images), "spot", length=2, seed=seed()),
        )

    first, first_module, first_transform, first_data = run_all()
    again, again_module, again_transform, again_data = run_all()
    assert torch.equal(first.images, again.images)
    assert torch.equal(first_module.masks, again_module.masks)
    assert torch.equal(first_transform, again_transform)
    assert isinstance(first_data.seed, int) and first_data.seed == again_data.seed
    assert torch.equal(first_data[1][0], again_data[1][0])
    # The dataset's seed is drawn once: its items stay the same within the object and its copies.
    assert torch.equal(first_data[1][0], pickle.loads(pickle.dumps(first_data))[1][0])
    if kind != "int":
        assert first_data.seed != 5


def test_dataset_seed_default_stays_zero():
    assert SyntheticDefectDataset([_grey()], "spot", length=2).seed == 0


# ----------------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize(
    "bad, error, match",
    [
        (dict(seed="x"), TypeError, "seed: expected an int, a torch.Generator or None"),
        (dict(seed=1.5), TypeError, "seed: expected an int"),
        (dict(label_map={"spot": 1}), ValueError, r"label_map: no class for defect type\(s\)"),
        (dict(label_map={"spot": 1, "scratch": "a"}), TypeError, "label_map: expected int"),
        (dict(label_map=[1, 2]), TypeError, "label_map: expected None or a dict"),
        (dict(mask_mode="rgb"), ValueError, "mask_mode: expected one of"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(bad, error, match):
    types = ["spot", "scratch"]
    images = torch.full((2, 3, 32, 32), 0.5)
    with pytest.raises(error, match=match):
        inject_defects(images, types, **bad)
    with pytest.raises(error, match=match):
        DefectInjector(types, **bad)
    with pytest.raises(error, match=match):
        DefectInject(types, **bad)
    with pytest.raises(error, match=match):
        SyntheticDefectDataset([_grey()], types, **bad)


def test_reserved_classes_are_refused():
    with pytest.raises(ValueError, match="label_map: class id -1 is the 'no defect' label"):
        inject_defects(torch.rand(1, 3, 32, 32), "spot", label_map={"spot": -1})
    with pytest.raises(ValueError, match="label_map: class id 0 is the background"):
        inject_defects(torch.rand(1, 3, 32, 32), "spot", label_map={"spot": 0}, mask_mode="class")
    with pytest.raises(ValueError, match="label_map: class id 0 is the background"):
        SyntheticDefectDataset([_grey()], "spot", label_map={"spot": 0}, mask_mode="class")
    with pytest.raises(ValueError, match="label_map: class id 0 is the background"):
        DefectInject("spot", label_map={"spot": 0}, mask_mode="class")
    # A label of 0 is fine where 0 is not the background.
    assert SyntheticDefectDataset([_grey()], "spot", label_map={"spot": 0}).class_to_idx == {
        "spot": 0
    }
