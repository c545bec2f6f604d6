"""Ranking scores, bootstrap intervals, verdicts and few-shot subsets against hand-made values."""

from __future__ import annotations

import math

import pytest
import torch

from defectaug.evaluation import (
    MIN_VERDICT_SEEDS,
    average_precision,
    bootstrap_ci,
    effect_verdict,
    roc_auc,
    stratified_subset,
)


def reference_ap_auc(scores: list[float], targets: list[int]) -> tuple[float, float]:
    """The definitions spelled out, O(n^2): a threshold at every distinct score (scikit-learn's
    ``average_precision_score``), and the AUC as the fraction of (positive, negative) pairs ranked
    correctly, ties counting 1/2."""
    total_positive = sum(targets)
    ap, previous_recall = 0.0, 0.0
    for threshold in sorted(set(scores), reverse=True):
        selected = [t for s, t in zip(scores, targets, strict=True) if s >= threshold]
        recall = sum(selected) / total_positive
        ap += (recall - previous_recall) * sum(selected) / len(selected)
        previous_recall = recall
    positive = [s for s, t in zip(scores, targets, strict=True) if t]
    negative = [s for s, t in zip(scores, targets, strict=True) if not t]
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return ap, wins / (len(positive) * len(negative))


# ----------------------------------------------------------------------------- ranking scores
def test_ap_and_auc_of_a_small_ranking_by_hand():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    targets = torch.tensor([1, 0, 1, 0, 0])
    # Positives at ranks 1 and 3: precision 1/1 and 2/3, each gaining recall 1/2.
    assert average_precision(scores, targets) == pytest.approx((1 + 2 / 3) / 2)
    # Positive 0.9 beats all 3 negatives, positive 0.7 beats 2 of 3: 5 of 6 pairs.
    assert roc_auc(scores, targets) == pytest.approx(5 / 6)


def test_ties_are_one_threshold_and_count_half_in_the_auc():
    scores = torch.tensor([0.9, 0.8, 0.8, 0.5])
    targets = torch.tensor([True, False, True, False])
    # Thresholds 0.9 (P 1, R 1/2) and 0.8 (P 2/3, R 1): AP = 1/2 * 1 + 1/2 * 2/3.
    assert average_precision(scores, targets) == pytest.approx(0.5 + 1 / 3)
    # Pairs: 0.9 beats both negatives (2), 0.8 ties 0.8 (1/2) and beats 0.5 (1): 3.5 of 4.
    assert roc_auc(scores, targets) == pytest.approx(3.5 / 4)
    # All scores tied: one threshold with precision 1/2; the AUC is 1/2.
    flat = torch.full((4,), 0.3)
    assert average_precision(flat, torch.tensor([1, 0, 0, 1])) == pytest.approx(0.5)
    assert roc_auc(flat, torch.tensor([1, 0, 0, 1])) == pytest.approx(0.5)


def test_perfect_and_reversed_rankings():
    targets = torch.tensor([1, 1, 0, 0, 0])
    scores = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0])
    assert average_precision(scores, targets) == pytest.approx(1.0)
    assert roc_auc(scores, targets) == pytest.approx(1.0)
    assert roc_auc(-scores, targets) == pytest.approx(0.0)
    # Reversed: the positives come last, at precision 1/4 and 2/5.
    assert average_precision(-scores, targets) == pytest.approx((1 / 4 + 2 / 5) / 2)


@pytest.mark.parametrize("seed", range(5))
def test_ap_and_auc_match_the_definitions_on_random_tied_scores(seed):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 6, (40,), generator=generator).float() / 5  # many ties
    targets = torch.rand(40, generator=generator) < 0.3
    targets[0], targets[1] = True, False
    expected_ap, expected_auc = reference_ap_auc(scores.tolist(), targets.int().tolist())
    assert average_precision(scores, targets) == pytest.approx(expected_ap, abs=1e-12)
    assert roc_auc(scores, targets) == pytest.approx(expected_auc, abs=1e-12)


def test_pixel_maps_of_any_shape_and_dtype():
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 1, 20, 30, generator=generator, dtype=torch.float64)
    masks = maps + 0.3 * torch.randn(maps.shape, generator=generator, dtype=torch.float64) > 0.7
    flat_ap = average_precision(maps.flatten(), masks.flatten())
    assert average_precision(maps, masks) == pytest.approx(flat_ap)
    assert average_precision(maps.half(), masks.float()) == pytest.approx(
        average_precision(maps.half().flatten(), masks.flatten())
    )
    # Ranks are all that count: a monotone map of the scores changes nothing.
    assert roc_auc(maps.exp() * 3, masks.long()) == pytest.approx(roc_auc(maps, masks))
    assert 0.5 < roc_auc(maps, masks) <= 1.0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda f: f(torch.rand(4), torch.zeros(4)), "targets: holds no positive"),
        (lambda f: f(torch.rand(4), torch.zeros(5)), "scores: shape"),
        (lambda f: f(torch.tensor([0.1, math.nan]), torch.tensor([1, 0])), "scores: contains NaN"),
        (lambda f: f(torch.rand(2), torch.tensor([2, 0])), r"targets: expected .* \{0, 1\}"),
        (lambda f: f(torch.rand(0), torch.zeros(0)), "scores: expected at least one"),
        (lambda f: f([0.1, 0.2], torch.tensor([1, 0])), "scores: expected a torch.Tensor"),
    ],
)
@pytest.mark.parametrize("function", [average_precision, roc_auc])
def test_ranking_scores_refuse_bad_inputs(function, call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call(function)


def test_auc_needs_both_classes():
    with pytest.raises(ValueError, match="targets: holds no negative"):
        roc_auc(torch.rand(3), torch.ones(3))
    # AP is defined without negatives.
    assert average_precision(torch.rand(3), torch.ones(3)) == pytest.approx(1.0)


# ----------------------------------------------------------------------- bootstrap and verdict
def test_bootstrap_of_constant_values_is_a_point():
    mean, low, high = bootstrap_ci([0.25] * 6)
    assert mean == pytest.approx(0.25) and low == pytest.approx(0.25)
    assert high == pytest.approx(0.25)


def test_bootstrap_of_two_values_by_enumeration():
    # Resampled means of [0, 1]: 0 (p 1/4), 0.5 (p 1/2), 1 (p 1/4).
    mean, low, high = bootstrap_ci([0.0, 1.0], resamples=4000)
    assert (mean, low, high) == pytest.approx((0.5, 0.0, 1.0))
    # A 40 % interval (quantiles 0.3 and 0.7) falls inside the middle mass.
    assert bootstrap_ci([0.0, 1.0], confidence=0.4, resamples=4000) == pytest.approx(
        (0.5, 0.5, 0.5)
    )


def test_bootstrap_is_deterministic_symmetric_and_narrows_with_confidence():
    values = torch.tensor([-0.3, -0.1, 0.0, 0.1, 0.3, 0.05, -0.05])
    mean, low, high = bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) == (mean, low, high)
    assert bootstrap_ci(values.tolist(), seed=3) == pytest.approx((mean, low, high))
    assert bootstrap_ci(values, seed=4) != (mean, low, high)
    assert low < mean < high and mean == pytest.approx(0.0, abs=1e-12)
    assert low == pytest.approx(-high, abs=0.03)  # symmetric values, symmetric interval
    _, narrow_low, narrow_high = bootstrap_ci(values, confidence=0.5, seed=3)
    assert low < narrow_low < narrow_high < high
    # The normal approximation of the mean's spread agrees roughly.
    half_width = 1.96 * float(values.std(unbiased=False)) / math.sqrt(len(values))
    assert high == pytest.approx(half_width, rel=0.2)


def test_bootstrap_of_one_value_has_no_interval():
    mean, low, high = bootstrap_ci([0.7])
    assert mean == pytest.approx(0.7) and math.isnan(low) and math.isnan(high)
    assert effect_verdict(low, high, higher_is_better=True) == "no evidence"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"values": []}, "values: expected a non-empty"),
        ({"values": [1.0, math.nan]}, "values: contains NaN"),
        ({"values": [1.0, 2.0], "confidence": 1.0}, "confidence"),
        ({"values": [1.0, 2.0], "resamples": 0}, "resamples"),
    ],
)
def test_bootstrap_refuses_bad_inputs(kwargs, message):
    values = kwargs.pop("values")
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(values, **kwargs)
    with pytest.raises(TypeError, match="seed: expected an int"):
        bootstrap_ci([1.0, 2.0], seed="0")


@pytest.mark.parametrize(
    "low, high, higher_is_better, verdict",
    [
        (0.01, 0.2, True, "helps"),
        (0.01, 0.2, False, "hurts"),
        (-0.2, -0.01, True, "hurts"),
        (-0.2, -0.01, False, "helps"),
        (-0.1, 0.1, True, "no evidence"),
        (0.0, 0.1, True, "no evidence"),  # touching 0 does not exclude it
        (math.nan, math.nan, False, "no evidence"),
    ],
)
def test_effect_verdict(low, high, higher_is_better, verdict):
    assert effect_verdict(low, high, higher_is_better) == verdict
    assert effect_verdict(low, high, higher_is_better, seeds=MIN_VERDICT_SEEDS) == verdict


@pytest.mark.parametrize("seeds, verdict", [(1, "1 seed: no verdict"), (2, "2 seeds: no verdict")])
def test_effect_verdict_needs_enough_seeds(seeds, verdict):
    assert effect_verdict(0.01, 0.2, True, seeds=seeds) == verdict


# ----------------------------------------------------------------------------- few-shot subsets
LABELS = torch.tensor([0] * 30 + [1] * 12 + [2] * 3 + [1] * 8 + [3] * 40)


def test_stratified_subset_caps_every_class_but_the_kept_ones():
    subset = stratified_subset(LABELS, 5, seed=0, keep=[0])
    assert subset.dtype == torch.long
    assert torch.equal(subset, torch.sort(subset).values)
    assert len(set(subset.tolist())) == len(subset)
    counts = torch.bincount(LABELS[subset], minlength=4).tolist()
    assert counts == [30, 5, 3, 5]  # good kept whole, a class smaller than shots kept whole
    assert torch.equal(stratified_subset(LABELS, None, seed=0), torch.arange(len(LABELS)))
    assert torch.bincount(LABELS[stratified_subset(LABELS, 0, 0, keep=(0,))]).tolist() == [30]


def test_stratified_subset_is_stable_per_seed_and_nested_across_shots():
    first = stratified_subset(LABELS.tolist(), 4, seed=7, keep=[0])
    assert torch.equal(first, stratified_subset(LABELS, 4, seed=7, keep=[0]))
    assert not torch.equal(first, stratified_subset(LABELS, 4, seed=8, keep=[0]))
    larger = stratified_subset(LABELS, 10, seed=7, keep=[0])
    assert set(first.tolist()) <= set(larger.tolist())
    # Nothing but the seed draws: torch's global generator neither matters nor moves.
    state = torch.random.get_rng_state()
    torch.manual_seed(123)
    assert torch.equal(first, stratified_subset(LABELS, 4, seed=7, keep=[0]))
    torch.random.set_rng_state(state)


@pytest.mark.parametrize(
    "labels, shots, message",
    [
        (torch.tensor([0.0, 1.0]), 2, "labels"),
        (torch.zeros(2, 2, dtype=torch.long), 2, "labels"),
        (torch.tensor([0, 1]), -1, "shots"),
    ],
)
def test_stratified_subset_refuses_bad_inputs(labels, shots, message):
    with pytest.raises(ValueError, match=message):
        stratified_subset(labels, shots, seed=0)
