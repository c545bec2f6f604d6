"""Scores for inspection models trained with synthetic defects: classification and segmentation.

Classification scores come from one confusion matrix (rows = true class, columns = predicted), so
error rate, per-class F1 and macro-F1 always agree with each other. Segmentation scores pool the
pixel counts of a whole evaluation set (micro average): a missed thin crack counts for its few
pixels, a missed large uneven region for its many, which is what "pixel F1" means in the DCDGANc
carpet experiment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = [
    "PixelCounts",
    "confusion_matrix",
    "error_rate",
    "macro_f1",
    "per_class_f1",
    "pixel_counts",
    "relative_error_reduction",
]


def _check_labels(values: torch.Tensor, name: str, num_classes: int) -> torch.Tensor:
    values = torch.as_tensor(values)
    if values.ndim != 1 or values.is_floating_point() or values.dtype == torch.bool:
        raise ValueError(
            f"{name}: expected a 1-D integer tensor of class indices, got shape "
            f"{tuple(values.shape)} and dtype {values.dtype}"
        )
    if values.numel() and (int(values.min()) < 0 or int(values.max()) >= num_classes):
        raise ValueError(
            f"{name}: expected class indices in [0, {num_classes - 1}], got values in "
            f"[{int(values.min())}, {int(values.max())}]"
        )
    return values.long().cpu()


def confusion_matrix(
    predictions: torch.Tensor, targets: torch.Tensor, num_classes: int
) -> torch.Tensor:
    """``[num_classes, num_classes]`` int64 counts: entry ``[t, p]`` = items of true class ``t``
    predicted as ``p``."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
    predictions = _check_labels(predictions, "predictions", num_classes)
    targets = _check_labels(targets, "targets", num_classes)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"predictions: expected shape {tuple(targets.shape)} like targets, got "
            f"{tuple(predictions.shape)}"
        )
    flat = targets * num_classes + predictions
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def _check_confusion(matrix: torch.Tensor) -> torch.Tensor:
    matrix = torch.as_tensor(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 1:
        raise ValueError(f"matrix: expected a square confusion matrix, got {tuple(matrix.shape)}")
    if bool((matrix < 0).any()):
        raise ValueError("matrix: counts must be >= 0")
    return matrix.double()


def error_rate(matrix: torch.Tensor) -> float:
    """Fraction of items off the diagonal."""
    matrix = _check_confusion(matrix)
    total = float(matrix.sum())
    if total == 0:
        raise ValueError("matrix: holds no items; the error rate is undefined")
    return 1.0 - float(matrix.diagonal().sum()) / total


def per_class_f1(matrix: torch.Tensor) -> torch.Tensor:
    """F1 of every class (one-vs-rest), float64 ``[num_classes]``.

    A class that is neither present nor predicted gets NaN (it has no F1); a class that is present
    but never predicted, or predicted but absent, gets 0.
    """
    matrix = _check_confusion(matrix)
    true_positive = matrix.diagonal()
    predicted = matrix.sum(dim=0)
    actual = matrix.sum(dim=1)
    denominator = predicted + actual
    scores = 2.0 * true_positive / denominator
    return torch.where(denominator > 0, scores, torch.full_like(scores, math.nan))


def macro_f1(matrix: torch.Tensor) -> float:
    """Unweighted mean of the per-class F1 over the classes present in the evaluation set.

    Classes absent from the targets are left out of the mean (predicting them is still penalised
    through the precision of the classes the wrongly predicted items belong to).
    """
    matrix = _check_confusion(matrix)
    present = matrix.sum(dim=1) > 0
    if not bool(present.any()):
        raise ValueError("matrix: holds no items; macro-F1 is undefined")
    return float(per_class_f1(matrix)[present].mean())


def relative_error_reduction(baseline_error: float, error: float) -> float:
    """``(baseline - error) / baseline``: 0.2 means 20 % fewer errors than the baseline; negative
    means more errors. NaN when the baseline makes no error."""
    if baseline_error < 0 or error < 0:
        raise ValueError(
            f"baseline_error, error: expected rates >= 0, got {baseline_error!r}, {error!r}"
        )
    if baseline_error == 0:
        return math.nan
    return (baseline_error - error) / baseline_error


@dataclass(frozen=True)
class PixelCounts:
    """Pooled pixel counts of a binary segmentation: true positives, false positives, false
    negatives. Add counts of several batches with ``+``."""

    true_positive: int = 0
    false_positive: int = 0
    false_negative: int = 0

    def __add__(self, other: PixelCounts) -> PixelCounts:
        return PixelCounts(
            self.true_positive + other.true_positive,
            self.false_positive + other.false_positive,
            self.false_negative + other.false_negative,
        )

    @property
    def f1(self) -> float:
        """Dice / F1 ``2 TP / (2 TP + FP + FN)``; 1.0 when both masks are empty everywhere."""
        denominator = 2 * self.true_positive + self.false_positive + self.false_negative
        return 1.0 if denominator == 0 else 2 * self.true_positive / denominator

    @property
    def iou(self) -> float:
        """Intersection over union ``TP / (TP + FP + FN)``; 1.0 when both masks are empty."""
        denominator = self.true_positive + self.false_positive + self.false_negative
        return 1.0 if denominator == 0 else self.true_positive / denominator


def pixel_counts(predicted: torch.Tensor, target: torch.Tensor) -> PixelCounts:
    """Pixel counts of a predicted mask against the target mask (bool, or float ``>= 0.5``).

    Any shapes work as long as the two match (e.g. ``[B, 1, H, W]``).
    """
    for name, value in (("predicted", predicted), ("target", target)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor mask, got {type(value).__name__}")
    if predicted.shape != target.shape:
        raise ValueError(
            f"predicted: shape {tuple(predicted.shape)} does not match target {tuple(target.shape)}"
        )
    predicted = predicted if predicted.dtype == torch.bool else predicted >= 0.5
    target = target if target.dtype == torch.bool else target >= 0.5
    return PixelCounts(
        int((predicted & target).sum()),
        int((predicted & ~target).sum()),
        int((~predicted & target).sum()),
    )
