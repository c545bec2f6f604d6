"""Scores for inspection models trained with synthetic defects: classification and segmentation.

Classification scores come from one confusion matrix (rows = true class, columns = predicted), so
error rate, per-class F1 and macro-F1 always agree with each other. Segmentation scores pool the
pixel counts of a whole evaluation set (micro average): a missed thin crack counts for its few
pixels, a missed large uneven region for its many, which is what "pixel F1" means in the DCDGANc
carpet experiment.

Ranking scores (:func:`average_precision`, :func:`roc_auc`) follow scikit-learn's definitions
without depending on it; :func:`bootstrap_ci` and :func:`effect_verdict` turn per-seed paired
differences between two arms into an interval and a verdict; :func:`stratified_subset` draws the
few-shot training subsets every arm of a seed shares.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "MIN_VERDICT_SEEDS",
    "PixelCounts",
    "average_precision",
    "bootstrap_ci",
    "confusion_matrix",
    "effect_verdict",
    "error_rate",
    "macro_f1",
    "per_class_f1",
    "pixel_counts",
    "relative_error_reduction",
    "roc_auc",
    "stratified_subset",
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


# ----------------------------------------------------------------------------- ranking scores
def _tie_groups(scores: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positives and negatives ``(float64 [G], float64 [G])`` per distinct score, highest first.

    One descending sort of the flattened scores (O(n log n)); equal scores form one group, so every
    threshold sits between two distinct scores, as in scikit-learn. Memory: the sorted scores in
    their own dtype, int64 sort indices, a running count and the per-group counts.
    """
    for name, value in (("scores", scores), ("targets", targets)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if scores.shape != targets.shape:
        raise ValueError(
            f"scores: shape {tuple(scores.shape)} does not match targets {tuple(targets.shape)}"
        )
    if scores.numel() == 0:
        raise ValueError("scores: expected at least one score, got an empty tensor")
    if scores.dtype == torch.bool or scores.is_complex():
        raise ValueError(f"scores: expected real-valued scores, got dtype {scores.dtype}")
    if scores.is_floating_point() and bool(torch.isnan(scores).any()):
        raise ValueError("scores: contains NaN")
    scores = scores.detach().reshape(-1).cpu()
    targets = targets.detach().reshape(-1).cpu()
    if targets.dtype != torch.bool:
        binary = targets == 1
        if not bool((binary | (targets == 0)).all()):
            raise ValueError("targets: expected a bool tensor or values in {0, 1}")
        targets = binary
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()  # the ordering and the ties stay exactly those of the input
    # Sorting in the scores' own dtype keeps order and ties exact and the memory low.
    ordered, order = torch.sort(scores, descending=True, stable=True)
    sorted_targets = targets[order]
    del order
    count = ordered.numel()
    ends = torch.nonzero(ordered[1:] != ordered[:-1]).squeeze(1)
    del ordered
    ends = torch.cat([ends, torch.tensor([count - 1])])
    running = torch.cumsum(sorted_targets, 0, dtype=torch.int32 if count < 2**31 else torch.int64)
    del sorted_targets
    positives_through = running[ends].double()  # positives at or above each threshold
    seen_through = (ends + 1).double()
    positives = torch.diff(positives_through, prepend=positives_through.new_zeros(1))
    negatives = torch.diff(seen_through, prepend=seen_through.new_zeros(1)) - positives
    return positives, negatives


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Average precision of ``scores`` (higher = more likely positive) against binary ``targets``.

    scikit-learn's ``average_precision_score``: ``sum_n (R_n - R_{n-1}) P_n`` over the thresholds
    at each distinct score, highest first (no interpolation). Any matching shapes work, e.g. pixel
    anomaly maps ``[N, 1, H, W]`` against their masks; ``targets`` is bool or 0/1. Raises
    ``ValueError`` when the shapes differ, a score is NaN or no target is positive.
    """
    positives, negatives = _tie_groups(scores, targets)
    total = float(positives.sum())
    if total == 0:
        raise ValueError("targets: holds no positive; average precision is undefined")
    true_through = positives.cumsum(0)
    precision = true_through / (true_through + negatives.cumsum(0))
    return float((positives / total * precision).sum())


def roc_auc(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random
    negative, ties counting one half (the Mann-Whitney U statistic over ``P * N``).

    Same inputs as :func:`average_precision`; raises ``ValueError`` when a class is absent.
    """
    positives, negatives = _tie_groups(scores, targets)
    total_positive, total_negative = float(positives.sum()), float(negatives.sum())
    if total_positive == 0 or total_negative == 0:
        absent = "positive" if total_positive == 0 else "negative"
        raise ValueError(f"targets: holds no {absent}; the ROC AUC is undefined")
    # Groups run from the highest score down: negatives strictly below a group are those not yet
    # seen. The products are exact in float64 up to ~9e15 pairs (~1e8 items per class).
    below = total_negative - negatives.cumsum(0)
    pairs = (positives * (below + 0.5 * negatives)).sum()
    return float(pairs / (total_positive * total_negative))


# ----------------------------------------------------------------------- comparing two arms
def bootstrap_ci(
    values: Sequence[float] | torch.Tensor,
    *,
    confidence: float = 0.95,
    resamples: int = 10000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its percentile-bootstrap interval.

    ``values`` are per-seed paired differences (arm minus baseline, one per seed). Each resample
    draws ``len(values)`` of them with replacement (``torch.randint`` from a generator seeded with
    ``seed``, so the interval is the same on every run and machine); ``low`` and ``high`` are the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the resampled means (linear
    interpolation). With a single value there is no spread to resample: the result is
    ``(value, nan, nan)``, which :func:`effect_verdict` reads as "no evidence".
    """
    data = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    if data.ndim != 1 or data.numel() == 0:
        raise ValueError(
            f"values: expected a non-empty 1-D sequence of numbers, got shape {tuple(data.shape)}"
        )
    if not bool(torch.isfinite(data).all()):
        raise ValueError("values: contains NaN or infinite values")
    if isinstance(confidence, bool) or not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples: expected a positive int, got {resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    count = data.numel()
    mean = float(data.mean())
    if count == 1:
        return mean, math.nan, math.nan
    generator = torch.Generator().manual_seed(seed)
    rows = max(1, 2**20 // count)  # bounded memory for long value lists
    chunks = []
    for start in range(0, resamples, rows):
        picks = torch.randint(0, count, (min(rows, resamples - start), count), generator=generator)
        chunks.append(data[picks].mean(1))
    means = torch.cat(chunks)
    tail = (1.0 - float(confidence)) / 2.0
    low, high = torch.quantile(means, torch.tensor([tail, 1.0 - tail], dtype=torch.float64))
    return mean, float(low), float(high)


#: Fewest paired seeds for a verdict: resampling two differences only spans their range, so
#: both being positive (a 1-in-4 chance with no effect) would read as "helps".
MIN_VERDICT_SEEDS = 3


def effect_verdict(
    low: float, high: float, higher_is_better: bool, *, seeds: int | None = None
) -> str:
    """``"helps"`` / ``"hurts"`` when the interval of (arm - baseline) lies strictly on the good /
    bad side of 0, else ``"no evidence"`` (also for a NaN bound, e.g. a single seed).

    ``seeds``, the number of paired differences behind the interval: below
    ``MIN_VERDICT_SEEDS`` the answer is ``"<seeds> seed(s): no verdict"`` whatever the interval.
    """
    if seeds is not None and seeds < MIN_VERDICT_SEEDS:
        return f"{seeds} seed{'' if seeds == 1 else 's'}: no verdict"
    if low > 0:
        return "helps" if higher_is_better else "hurts"
    if high < 0:
        return "hurts" if higher_is_better else "helps"
    return "no evidence"


# ------------------------------------------------------------------------------ few-shot subsets
def stratified_subset(
    labels: Sequence[int] | torch.Tensor,
    shots: int | None,
    seed: int,
    *,
    keep: Sequence[int] = (),
) -> torch.Tensor:
    """Sorted int64 indices of at most ``shots`` items of every label; labels in ``keep`` whole.

    The choice depends on ``seed``, ``labels`` and ``keep`` only: one generator seeded with
    ``torch.Generator().manual_seed(seed)`` draws ``torch.randperm`` for every label not kept, in
    ascending label order, and the first ``shots`` of each permutation are taken. Every arm of a
    seed thus trains on the same subset, on every machine; as the draws do not depend on
    ``shots``, a smaller subset is contained in a larger one for the same seed. ``shots=None``
    keeps everything.
    """
    data = torch.as_tensor(labels).detach().cpu()
    if data.ndim == 1 and data.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    if data.ndim != 1 or data.is_floating_point() or data.is_complex() or data.dtype == torch.bool:
        raise ValueError(
            f"labels: expected a 1-D sequence of integer labels, got shape {tuple(data.shape)} "
            f"and dtype {data.dtype}"
        )
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 0):
        raise ValueError(f"shots: expected None or an int >= 0, got {shots!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    data = data.long()
    if shots is None:
        return torch.arange(data.numel(), dtype=torch.long)
    kept = {int(label) for label in keep}
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in torch.unique(data).tolist():  # ascending: a fixed class order
        members = torch.nonzero(data == label).squeeze(1)
        if label in kept:
            chosen.append(members)
            continue
        order = torch.randperm(members.numel(), generator=generator)
        chosen.append(members[order[:shots]])
    return torch.sort(torch.cat(chosen)).values
