"""``defectaug synth --format mvtec|coco|yolo`` and ``--shard``, each read back by a reader.

- mvtec: anomalib's own MVTec-AD parser (``make_mvtec_ad_dataset``) lists the folder.
- coco: torchvision's ``CocoDetection`` reads it. It needs pycocotools' ``COCO`` index, which is not
  installed here; the test then gives it a minimal stand-in index (same methods, no decoding), and
  decodes RLE / polygons itself, checking them against the mask PNGs. With pycocotools installed,
  the real ``COCO`` class and its ``annToMask`` are used instead.
- yolo: a parser of the segmentation label format (``class x1 y1 ...`` normalised) and data.yaml
  read with PyYAML.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from defectaug.cli import main

TYPES = ("spot", "crack")


def _backgrounds(folder: Path, count: int = 5) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = (110 + 60 * rng.random((40, 48, 3))).astype(np.uint8)
        Image.fromarray(pixels, mode="RGB").save(folder / f"part_{index}.png")
    return folder


def _synth(backgrounds: Path, out: Path, n: int, *extra: str) -> int:
    return main(
        [
            "synth",
            "--backgrounds",
            str(backgrounds),
            "--out",
            str(out),
            "--n",
            str(n),
            "--types",
            *TYPES,
            "--count",
            "1-2",
            "--no-progress",
            *extra,
        ]
    )


def _manifest(folder: Path) -> list[dict[str, str]]:
    with (folder / "manifest.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def _mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L")) > 127


@pytest.fixture(scope="module")
def normals(tmp_path_factory) -> Path:
    return _backgrounds(tmp_path_factory.mktemp("data") / "normals")


# ------------------------------------------------------------------------------------- mvtec
def test_mvtec_layout_is_read_by_anomalib(normals, tmp_path, capsys):
    out = tmp_path / "bottle"
    assert _synth(normals, out, 6, "--format", "mvtec", "--test-good", "0.4") == 0
    assert "5 good image(s)" in capsys.readouterr().out  # 5 backgrounds: 2 test, 3 train
    train_good = sorted((out / "train" / "good").iterdir())
    test_good = sorted((out / "test" / "good").iterdir())
    assert [p.name for p in test_good] == ["000000.png", "000001.png"]
    assert len(train_good) == 3
    # The good images are the backgrounds themselves (8-bit RGB in, same pixels out), each once.
    sources = {p.read_bytes(): p for p in normals.iterdir()}
    originals = {np.asarray(Image.open(p)).tobytes() for p in sources.values()}
    written = {np.asarray(Image.open(p)).tobytes() for p in [*train_good, *test_good]}
    assert written == originals

    from anomalib.data.datasets.image.mvtecad import make_mvtec_ad_dataset

    samples = make_mvtec_ad_dataset(out)
    train = samples[samples.split == "train"]
    test = samples[samples.split == "test"]
    assert len(train) == 3 and set(train.label) == {"good"}
    assert len(test) == 2 + 6
    defective = test[test.label != "good"]
    assert set(defective.label) <= set(TYPES) and len(defective) == 6
    for image_path, mask_path in zip(defective.image_path, defective.mask_path, strict=True):
        stem = Path(image_path).stem
        assert Path(mask_path).name == f"{stem}_mask.png"
        mask = np.asarray(Image.open(mask_path))
        assert set(np.unique(mask)) <= {0, 255} and mask.any()
    assert not test[test.label == "good"].mask_path.astype(bool).any()  # None or "": no mask

    # Rerun: nothing rewritten; a changed --test-good is another dataset.
    capsys.readouterr()
    assert _synth(normals, out, 6, "--format", "mvtec", "--test-good", "0.4") == 0
    assert "wrote 0 image(s) (6 already there; 0 good image(s))" in capsys.readouterr().out
    assert _synth(normals, out, 6, "--format", "mvtec", "--test-good", "0.2") == 2
    assert "other settings (test_good)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--format", "mvtec", "--split", "train"], "--split: the mvtec format keeps defects"),
        (["--format", "coco", "--split", "test"], "--split: the coco format keeps every image"),
        (["--test-good", "0.3"], "--test-good: only the mvtec format"),
        (["--format", "mvtec", "--test-good", "1"], "--test-good: expected a fraction"),
        (["--format", "yolo", "--coco-segmentation", "rle"], "--coco-segmentation: only for"),
    ],
)
def test_format_options_are_checked_in_one_line(normals, tmp_path, capsys, extra, message):
    assert _synth(normals, tmp_path / "out", 2, *extra) == 2
    error = capsys.readouterr().err
    assert error.startswith("defectaug synth: error: ") and error.count("\n") == 1
    assert message in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("shard", ["2/2", "-1/2", "1", "a/b", "0/0"])
def test_bad_shard_is_an_argparse_error(normals, tmp_path, capsys, shard):
    with pytest.raises(SystemExit) as raised:
        _synth(normals, tmp_path / "out", 2, "--shard", shard)
    assert raised.value.code == 2
    assert "--shard" in capsys.readouterr().err


# -------------------------------------------------------------------------------------- coco
def _decode_rle(segmentation: dict) -> np.ndarray:
    height, width = segmentation["size"]
    values = np.zeros(height * width, dtype=bool)
    position, value = 0, False
    for run in segmentation["counts"]:
        values[position : position + run] = value
        position, value = position + run, not value
    assert position == height * width
    return values.reshape(width, height).T  # column-major


def _decode_polygons(polygons: list, height: int, width: int) -> np.ndarray:
    canvas = np.zeros((height, width), np.uint8)
    for polygon in polygons:
        # Pixel-edge coordinates -> the pixel-centre grid cv2 rasterises on.
        points = np.asarray(polygon, np.float64).reshape(-1, 2) - 0.5
        cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)
    return canvas > 0


def _coco_class(annotation_file: Path):
    """pycocotools' ``COCO`` when installed, else a stand-in index with the methods torchvision's
    ``CocoDetection`` calls (``imgs``, ``loadImgs``, ``getAnnIds``, ``loadAnns``)."""
    if importlib.util.find_spec("pycocotools") is not None:
        from pycocotools.coco import COCO

        return COCO

    class IndexOnlyCOCO:
        def __init__(self, path):
            data = json.loads(Path(path).read_text())
            self.dataset = data
            self.imgs = {image["id"]: image for image in data["images"]}
            self.anns = {ann["id"]: ann for ann in data["annotations"]}
            self.cats = {cat["id"]: cat for cat in data["categories"]}

        def loadImgs(self, ids):  # noqa: N802 (pycocotools' name)
            return [self.imgs[i] for i in (ids if isinstance(ids, list) else [ids])]

        def getAnnIds(self, imgIds):  # noqa: N802, N803
            ids = imgIds if isinstance(imgIds, list) else [imgIds]
            return [a["id"] for a in self.anns.values() if a["image_id"] in ids]

        def loadAnns(self, ids):  # noqa: N802
            return [self.anns[i] for i in ids]

    return IndexOnlyCOCO


def _coco_detection(root: Path, annotation_file: Path, monkeypatch):
    from torchvision.datasets import CocoDetection

    if importlib.util.find_spec("pycocotools") is None:
        module = types.ModuleType("pycocotools.coco")
        module.COCO = _coco_class(annotation_file)
        monkeypatch.setitem(sys.modules, "pycocotools", types.ModuleType("pycocotools"))
        monkeypatch.setitem(sys.modules, "pycocotools.coco", module)
    return CocoDetection(str(root), str(annotation_file))


@pytest.mark.parametrize("segmentation", ["rle", "polygon"])
def test_coco_is_read_by_torchvision_and_matches_the_masks(
    normals, tmp_path, monkeypatch, segmentation
):
    out = tmp_path / "coco"
    # Seed 1: with seed 0 the one-plan draws leave item 5 a 2-pixel fragment, whose polygon
    # outline rasterises to 3 x 3 pixels, mostly outside it (outlines cannot follow 1 px shapes).
    extra = ["--format", "coco", "--coco-segmentation", segmentation, "--seed", "1"]
    assert _synth(normals, out, 6, *extra) == 0
    data = json.loads((out / "annotations.json").read_text())
    assert {c["name"]: c["id"] for c in data["categories"]} == {"spot": 1, "crack": 2}
    assert [image["id"] for image in data["images"]] == list(range(6))
    for annotation in data["annotations"]:
        assert set(annotation) == {
            "id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd"
        }  # fmt: skip
        assert annotation["iscrowd"] == 0 and annotation["area"] > 0
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
    rows = {int(row["index"]): row for row in _manifest(out)}

    dataset = _coco_detection(out / "images", out / "annotations.json", monkeypatch)
    assert len(dataset) == 6
    for position in range(len(dataset)):
        image, targets = dataset[position]
        index = dataset.ids[position]
        row = rows[index]
        assert image.size == (48, 40)
        assert np.array_equal(np.asarray(image), np.asarray(Image.open(out / row["image"])))
        mask = _mask(out / row["mask"])
        assert targets, f"item {index} has no instance"
        # One instance per placed defect that shows (never more; pieces of one defect merge).
        assert 1 <= len(targets) <= int(row["n_defects"])
        union = np.zeros_like(mask)
        for target in targets:
            assert target["category_id"] - 1 == TYPES.index(row["label"])
            if segmentation == "rle":
                instance = _decode_rle(target["segmentation"])
                assert not (instance & union).any()  # instances do not overlap
                assert target["area"] == int(instance.sum())
                x, y, w, h = target["bbox"]
                rows_, cols = np.nonzero(instance)
                assert (x, y, x + w, y + h) == (
                    cols.min(), rows_.min(), cols.max() + 1, rows_.max() + 1
                )  # fmt: skip
            else:
                instance = _decode_polygons(target["segmentation"], *mask.shape)
            union |= instance
        if segmentation == "rle":
            assert np.array_equal(union, mask)  # exact
        else:
            # Outlines approximate the mask: most of it, little outside it.
            overlap = (union & mask).sum()
            assert overlap / mask.sum() > 0.6 and overlap / union.sum() > 0.6


# -------------------------------------------------------------------------------------- yolo
def test_yolo_labels_and_data_yaml(normals, tmp_path):
    out = tmp_path / "yolo"
    assert _synth(normals, out, 6, "--format", "yolo") == 0
    config = yaml.safe_load((out / "data.yaml").read_text())
    assert config["names"] == {0: "spot", 1: "crack"}  # the order of --types
    assert (out / config["train"]).is_dir() and "path" not in config
    images = sorted((out / "images").iterdir())
    labels = sorted((out / "labels").iterdir())
    assert [p.stem for p in images] == [p.stem for p in labels] == [f"{i:06d}" for i in range(6)]
    rows = {row["image"]: row for row in _manifest(out)}
    for image_path, label_path in zip(images, labels, strict=True):
        row = rows[f"images/{image_path.name}"]
        assert row["mask"] == f"labels/{label_path.name}"
        width, height = Image.open(image_path).size
        lines = label_path.read_text().splitlines()
        assert lines
        canvas = np.zeros((height, width), np.uint8)
        for line in lines:
            values = line.split()
            assert int(values[0]) == {"spot": 0, "crack": 1}[row["label"]]
            coords = np.asarray(values[1:], dtype=np.float64)
            assert len(coords) >= 6 and len(coords) % 2 == 0
            assert (coords >= 0).all() and (coords <= 1).all()
            points = coords.reshape(-1, 2) * (width, height) - 0.5
            cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)
        assert canvas.any()
    # Determinism: the same command into another folder writes the same labels.
    assert _synth(normals, tmp_path / "again", 6, "--format", "yolo") == 0
    assert _files(tmp_path / "again") == _files(out)


def test_yolo_folder_from_before_recorded_class_ids_resumes_only_with_the_same_ids(
    normals, tmp_path, capsys
):
    # Folders written before class ids followed --types numbered the sorted types; their
    # settings file has no class_ids. Resuming one must not mix ids.
    out = tmp_path / "yolo"
    assert _synth(normals, out, 2, "--format", "yolo") == 0
    config = out / "synth_config.json"
    settings = json.loads(config.read_text())
    assert settings["class_ids"] == {"spot": 0, "crack": 1}
    del settings["class_ids"]
    config.write_text(json.dumps(settings))
    capsys.readouterr()
    assert _synth(normals, out, 3, "--format", "yolo") == 2  # spot, crack: not sorted
    assert "other settings (class_ids)" in capsys.readouterr().err
    settings["types"] = sorted(settings["types"])
    config.write_text(json.dumps(settings))
    sorted_types = ["--types", *sorted(TYPES)]
    assert main(
        ["synth", "--backgrounds", str(normals), "--out", str(out), "--n", "3", "--count", "1-2",
         "--no-progress", "--format", "yolo", *sorted_types]
    ) == 0  # fmt: skip


def test_yolo_polygons_cover_the_mask(normals, tmp_path):
    """Same items in folder and yolo formats: the YOLO outlines rasterise close to the mask."""
    assert _synth(normals, tmp_path / "folder", 4) == 0
    assert _synth(normals, tmp_path / "yolo", 4, "--format", "yolo") == 0
    for row in _manifest(tmp_path / "folder"):
        mask = _mask(tmp_path / "folder" / row["mask"])
        height, width = mask.shape
        canvas = np.zeros((height, width), np.uint8)
        label = (tmp_path / "yolo" / "labels" / f"{int(row['index']):06d}.txt").read_text()
        for line in label.splitlines():
            coords = np.asarray(line.split()[1:], dtype=np.float64).reshape(-1, 2)
            points = coords * (width, height) - 0.5
            cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)
        overlap = ((canvas > 0) & mask).sum()
        assert overlap / mask.sum() > 0.6 and overlap / (canvas > 0).sum() > 0.6


# ------------------------------------------------------------------------------------ shards
@pytest.mark.parametrize("fmt", ["folder", "mvtec", "coco", "yolo"])
def test_shards_merge_into_the_single_machine_result(normals, tmp_path, capsys, fmt):
    n, count = 7, 3
    single = tmp_path / "single"
    assert _synth(normals, single, n, "--format", fmt) == 0
    expected = _files(single)

    # Shards written apart (three machines), then copied into one folder and merged.
    parts = []
    for index in range(count):
        part = tmp_path / f"part{index}"
        assert _synth(normals, part, n, "--format", fmt, "--shard", f"{index}/{count}") == 0
        parts.append(_files(part))
    names = [set(part) - {"synth_config.json", "data.yaml"} for part in parts]
    for a in range(count):
        for b in range(a + 1, count):
            assert not names[a] & names[b], "shards wrote the same file"
    assert not any("manifest.csv" in part or "annotations.json" in part for part in parts)
    merged = tmp_path / "merged"
    for index in range(count):
        shutil.copytree(tmp_path / f"part{index}", merged, dirs_exist_ok=True)
    capsys.readouterr()
    assert _synth(normals, merged, n, "--format", fmt) == 0
    output = capsys.readouterr().out
    assert f"wrote 0 image(s) ({n} already there" in output and "merged 3 shard" in output
    assert _files(merged) == expected

    # Shards sharing one folder (a shared file system): the same result.
    shared = tmp_path / "shared"
    for index in reversed(range(count)):
        assert _synth(normals, shared, n, "--format", fmt, "--shard", f"{index}/{count}") == 0
    assert _synth(normals, shared, n, "--format", fmt) == 0
    assert _files(shared) == expected


def test_a_missing_shard_is_filled_in_by_the_merge(normals, tmp_path, capsys):
    n = 5
    assert _synth(normals, tmp_path / "single", n, "--format", "coco") == 0
    out = tmp_path / "out"
    assert _synth(normals, out, n, "--format", "coco", "--shard", "0/2") == 0
    capsys.readouterr()
    # Shard 1 never ran: the merge writes its items itself.
    assert _synth(normals, out, n, "--format", "coco") == 0
    assert "wrote 2 image(s) (3 already there" in capsys.readouterr().out
    assert _files(out) == _files(tmp_path / "single")
    # A shard rerun after the merge resumes from the merged manifest: nothing to write.
    assert _synth(normals, out, n, "--format", "coco", "--shard", "1/2") == 0
    assert "shard 1/2: wrote 0 image(s) (2 already there" in capsys.readouterr().out
