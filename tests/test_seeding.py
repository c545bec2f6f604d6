"""Hashed draws: reproducible, in range, independent across streams, and near uniform."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

import defectaug._seeding as seeding
from defectaug._seeding import stream_identity, uniform_draws


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


def test_stream_identity_follows_the_worker_it_runs_in(monkeypatch):
    # A worker's identity is kept once computed; a process that becomes another worker (or the
    # main process) must not reuse it.
    first = SimpleNamespace(id=0, seed=1000)
    second = SimpleNamespace(id=1, seed=2001)
    current = [first]
    checks = []
    monkeypatch.setattr(seeding, "get_worker_info", lambda: current[0])
    monkeypatch.setattr(seeding, "_worker_identity", None)
    monkeypatch.setattr(torch.distributed, "is_available", lambda: checks.append(1) or False)
    assert stream_identity() == (0, 1000, 0)
    assert stream_identity() == (0, 1000, 0)
    assert len(checks) == 1  # a worker asks for its rank once
    current[0] = second
    assert stream_identity() == (1, 2000, 0)
    current[0] = None
    assert stream_identity() == (-1, 0, 0)
