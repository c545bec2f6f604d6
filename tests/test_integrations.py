"""Adapters for albumentations, kornia and anomalib (defectaug.integrations)."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import torch

from defectaug.layer import VISIBILITY


def _image(height=64, width=72, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (100 + 60 * rng.random((height, width, 3))).astype(np.uint8)


def _near(mask: np.ndarray, reach: int = 2) -> np.ndarray:
    """``mask`` grown by ``reach`` px (chessboard): where defectaug may touch pixels."""
    grown = mask.copy()
    for _ in range(reach):
        padded = np.pad(grown, 1)
        grown = np.zeros_like(grown)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                grown |= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]]
    return grown


# ------------------------------------------------------------------------------ albumentations
def test_albumentations_updates_image_mask_and_boxes_from_one_draw():
    A = pytest.importorskip("albumentations")
    from defectaug.integrations.albumentations import DefectInjectA

    pipeline = A.Compose(
        [DefectInjectA(["spot", "scratch"], count=(1, 2), p=1.0)],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]),
        seed=7,
    )
    image, mask = _image(), np.zeros((64, 72), np.uint8)
    old_boxes = [[1.0, 2.0, 20.0, 30.0], [40.0, 10.0, 60.0, 25.0]]
    for _ in range(3):
        out = pipeline(image=image, mask=mask, bboxes=old_boxes, labels=["part", "part"])
        defect = out["mask"] == 1
        assert out["image"].dtype == np.uint8 and out["image"].shape == image.shape
        assert defect.any() and set(np.unique(out["mask"])) <= {0, 1}
        change = np.abs(out["image"].astype(int) - image.astype(int)).max(-1)
        # The mask is what visibly changed (plus filled one-pixel holes, whose neighbours all
        # changed); nothing changes farther than 2 px from it.
        visible = change > 255 * VISIBILITY + 1e-6
        assert (defect | ~visible).all()
        assert (_near(visible, 1) | ~defect).all()
        assert (change[~_near(defect)] == 0).all()
        # Existing boxes and labels are kept, the new ones appended with their class.
        boxes, labels = np.asarray(out["bboxes"]), list(out["labels"])
        assert np.allclose(boxes[:2], old_boxes, atol=1e-4) and labels[:2] == ["part", "part"]
        assert 1 <= len(boxes) - 2 <= 2
        assert labels[2] in ("spot", "scratch") and len(set(labels[2:])) == 1
        covered = np.zeros_like(defect)
        for x0, y0, x1, y1 in np.round(boxes[2:]).astype(int):
            assert 0 <= x0 < x1 <= 72 and 0 <= y0 < y1 <= 64
            covered[y0:y1, x0:x1] = True
        assert (covered | ~defect).all(), "a defect pixel lies outside every new box"


def test_albumentations_seeded_compose_repeats_and_float_images_work():
    A = pytest.importorskip("albumentations")
    from defectaug.integrations.albumentations import DefectInjectA

    def run(seed):
        pipeline = A.Compose(
            [DefectInjectA("spot", p=1.0, box_labels={"spot": 5}, mask_value="class")],
            bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]),
            seed=seed,
        )
        image = _image().astype(np.float32) / 255
        return pipeline(image=image, mask=np.zeros((64, 72), np.uint8), bboxes=[], labels=[])

    first, again, other = run(1), run(1), run(2)
    assert first["image"].dtype == np.float32
    assert np.array_equal(first["image"], again["image"])  # same computation, same seed
    assert not np.array_equal(first["image"], other["image"])
    assert set(np.unique(first["mask"])) == {0, 5}
    assert list(first["labels"]) == [5] * len(first["bboxes"]) and len(first["bboxes"]) == 1


def test_albumentations_numeric_label_field_needs_numeric_box_labels():
    A = pytest.importorskip("albumentations")
    from defectaug.integrations.albumentations import DefectInjectA

    pipeline = A.Compose(
        [DefectInjectA("spot", p=1.0)],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]),
    )
    with pytest.raises(ValueError, match="box_labels: label field 'labels' holds numbers"):
        pipeline(image=_image(), bboxes=[[1, 2, 20, 30]], labels=[3])
    with pytest.raises(ValueError, match="box_labels: no label for defect type"):
        DefectInjectA(["spot", "crack"], box_labels={"spot": 1})


def test_missing_optional_library_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "albumentations", None)  # import albumentations fails
    monkeypatch.delitem(sys.modules, "defectaug.integrations.albumentations", raising=False)
    with pytest.raises(ImportError, match=r"pip install defectaug\[albumentations\]"):
        importlib.import_module("defectaug.integrations.albumentations")


# ------------------------------------------------------------------------------------- kornia
def test_kornia_sequential_writes_the_defects_into_the_mask():
    K = pytest.importorskip("kornia.augmentation")
    from defectaug.integrations.kornia import DefectInjectK

    torch.manual_seed(0)
    images = 0.3 + 0.4 * torch.rand(4, 3, 48, 56)
    masks = torch.zeros(4, 1, 48, 56)
    masks[:, :, :4, :4] = 2.0  # an existing label, kept
    augment = K.AugmentationSequential(
        DefectInjectK(["spot", "scratch"], p=1.0, mask_value=1.0), data_keys=["input", "mask"]
    )
    out, out_masks = augment(images, masks)
    assert out.shape == images.shape and out_masks.shape == masks.shape
    changed = (out - images).abs().amax(1, keepdim=True) > VISIBILITY + 1e-6
    defect = out_masks == 1.0
    kept = masks == 2.0
    assert defect.flatten(1).any(1).all()
    # Every visible change is in the mask (or under the kept label, which a defect may cover);
    # mask pixels that did not visibly change are filled one-pixel holes, next to changes.
    assert not (changed & ~defect & ~kept).any()
    grown = torch.nn.functional.max_pool2d(changed.float(), 3, 1, 1) > 0
    assert not (defect & ~grown).any()
    assert ((out_masks == 2.0) | defect)[kept].all()

    # A geometric augmentation after it moves image and mask together.
    flip = K.AugmentationSequential(
        DefectInjectK("spot", p=1.0), K.RandomHorizontalFlip(p=1.0), data_keys=["input", "mask"]
    )
    out, out_masks = flip(images, torch.zeros(4, 1, 48, 56))
    changed = (out - images.flip(-1)).abs().amax(1, keepdim=True) > VISIBILITY + 1e-6
    grown = torch.nn.functional.max_pool2d(changed.float(), 3, 1, 1) > 0
    assert changed.any() and not (changed & (out_masks != 1.0)).any()
    assert not ((out_masks == 1.0) & ~grown).any()


def test_kornia_probability_leaves_skipped_samples_and_masks_alone():
    K = pytest.importorskip("kornia.augmentation")
    from defectaug.integrations.kornia import DefectInjectK

    torch.manual_seed(3)
    images = 0.3 + 0.4 * torch.rand(8, 1, 40, 40)
    augment = K.AugmentationSequential(DefectInjectK("spot", p=0.5), data_keys=["input", "mask"])
    out, masks = augment(images, torch.zeros(8, 1, 40, 40))
    touched = (out != images).flatten(1).any(1)
    assert torch.equal(touched, masks.flatten(1).any(1))
    assert 0 < int(touched.sum()) < 8


# ------------------------------------------------------------------------------------ anomalib
def test_anomaly_generator_matches_perlin_call_shapes():
    from defectaug.integrations.anomalib import DefectAnomalyGenerator

    images = 0.3 + 0.4 * torch.rand(6, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    generator = DefectAnomalyGenerator(probability=0.5, seed=0)
    augmented, mask = generator(images)
    assert augmented.shape == images.shape and mask.shape == (6, 1, 48, 48)
    assert mask.dtype == images.dtype and set(mask.unique().tolist()) <= {0.0, 1.0}
    with_defect = mask.flatten(1).any(1)
    assert 0 < int(with_defect.sum()) < 6
    assert torch.equal((augmented != images).flatten(1).any(1), with_defect)
    single, single_mask = generator(images[0])
    assert single.shape == (3, 48, 48) and single_mask.shape == (1, 48, 48)
    always = DefectAnomalyGenerator("procedural", probability=1.0, seed=1)(images)[1]
    assert always.flatten(1).any(1).all()
    with pytest.raises(ValueError, match=r"probability: expected a probability in \[0, 1\]"):
        DefectAnomalyGenerator(probability=1.5)
    with pytest.raises(ValueError, match=r"img: expected values in \[0, 1\]"):
        generator(images * 2 - 1)


def test_anomaly_generator_accepts_other_generator_names():
    from defectaug.generators import list_generators
    from defectaug.integrations.anomalib import DefectAnomalyGenerator

    images = 0.3 + 0.4 * torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    names = ("cutpaste", "nsa", "texture")
    # All three are registered by ``import defectaug.generators``: none may silently drop out.
    assert set(names) <= set(list_generators())
    for name in names:
        generator = DefectAnomalyGenerator(name, probability=1.0, seed=0)
        augmented, mask = generator(images)
        assert augmented.shape == images.shape and mask.shape == (2, 1, 48, 48)


def test_draem_trains_with_the_defect_generator_in_place_of_perlin():
    """anomalib's DRAEM (its torch model and loss) for two optimisation steps on 64 px images,
    with DefectAnomalyGenerator doing what DRAEM's PerlinAnomalyGenerator does in training_step.
    The sub-networks are built narrower than DRAEM's defaults to keep a CPU test short."""
    pytest.importorskip("anomalib")
    from anomalib.models.image.draem.loss import DraemLoss
    from anomalib.models.image.draem.torch_model import (
        DiscriminativeSubNetwork,
        DraemModel,
        ReconstructiveSubNetwork,
    )

    from defectaug.integrations.anomalib import DefectAnomalyGenerator

    torch.manual_seed(0)
    model = DraemModel()
    model.reconstructive_subnetwork = ReconstructiveSubNetwork(base_width=8)
    model.discriminative_subnetwork = DiscriminativeSubNetwork(
        in_channels=6, out_channels=2, base_width=8
    )
    model.train()
    criterion = DraemLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    augmenter = DefectAnomalyGenerator("procedural", probability=1.0, seed=0)
    images = 0.3 + 0.4 * torch.rand(2, 3, 64, 64)
    before = [p.detach().clone() for p in model.parameters()]
    losses = []
    for _ in range(2):
        augmented, anomaly_mask = augmenter(images)
        assert anomaly_mask.flatten(1).any(1).all()
        reconstruction, prediction = model(augmented)
        loss = criterion(images, reconstruction, anomaly_mask, prediction)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert all(np.isfinite(losses))
    moved = sum(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert moved > 0


# ------------------------------------------------------------------------- lazy package import
def test_import_defectaug_loads_no_heavy_dependency():
    """``import defectaug`` (and ``defectaug.integrations``) imports nothing heavy: the names load
    on first use. Checked in a fresh interpreter, whose ``sys.modules`` starts empty."""
    import json
    import subprocess

    heavy = ["numba", "kornia", "scipy", "cv2", "defectaug.training", "albumentations", "anomalib"]
    code = (
        "import json, sys, defectaug, defectaug.integrations; "
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_lazy_names_are_complete_and_resolve():
    import defectaug
    import defectaug.integrations

    assert sorted(defectaug.__all__) == sorted(defectaug._LAZY)
    assert set(defectaug.__all__) <= set(dir(defectaug))
    for name in defectaug.__all__:
        value = getattr(defectaug, name)
        assert value is not None
        module = importlib.import_module(defectaug._LAZY[name])
        assert getattr(module, name) is value
    from defectaug import DefectInject, inject_defects  # noqa: F401 (the import is the test)

    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        defectaug.nope  # noqa: B018
    assert set(defectaug.integrations.__all__) <= set(dir(defectaug.integrations))
    assert defectaug.integrations.DefectAnomalyGenerator.__name__ == "DefectAnomalyGenerator"
