"""Hashed draws: reproducible, in range, independent across streams, and near uniform."""

from __future__ import annotations

import numpy as np
import torch

from defectaug._seeding import uniform_draws


def test_uniform_draws_are_reproducible_and_streams_differ():
    first = uniform_draws(123, 19, stream=1)
    assert first == uniform_draws(123, 19, stream=1)
    assert len(first) == 19 and all(0.0 <= value < 1.0 for value in first)
    assert uniform_draws(123, 5, stream=1) == first[:5]  # more draws extend, never reshuffle
    assert uniform_draws(123, 19, stream=2) != first
    assert uniform_draws(124, 19, stream=1) != first


def test_uniform_draws_are_near_uniform():
    values = np.array([value for seed in range(400) for value in uniform_draws(seed, 10)])
    counts, _ = np.histogram(values, bins=10, range=(0.0, 1.0))
    # 4000 draws, 400 expected per bin: a 5-sigma band is +-100.
    assert np.abs(counts - 400).max() < 100


def test_unseeded_draws_follow_torch_global_seed():
    torch.manual_seed(7)
    first = uniform_draws(None, 4)
    torch.manual_seed(7)
    assert uniform_draws(None, 4) == first
