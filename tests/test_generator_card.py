"""The pure measures of ``benchmarks.generator_card``: clustered diversity and mask agreement."""

import math

import pytest
import torch

from benchmarks.generator_card import (
    change_inside_mask,
    clustered_diversity,
    format_tables,
    visible_share_of_mask,
)


def test_identical_samples_have_no_clustered_diversity():
    generated = torch.ones(6, 4)
    real = torch.tensor([[1.0, 1.0, 1.0, 1.0], [5.0, 5.0, 5.0, 5.0]])
    assert clustered_diversity(generated, real) == pytest.approx(0.0, abs=1e-9)


def test_clustered_diversity_is_the_mean_over_clusters_of_their_mean_pairwise_distance():
    real = torch.tensor([[0.0, 0.0], [100.0, 0.0]])
    # Near the first centre: a pair 2 apart. Near the second: a 3-4-5 triangle.
    generated = torch.tensor([[0.0, 1.0], [0.0, -1.0], [100.0, 0.0], [103.0, 0.0], [100.0, 4.0]])
    first = 2.0
    second = (3.0 + 4.0 + 5.0) / 3
    assert clustered_diversity(generated, real) == pytest.approx((first + second) / 2)


def test_clusters_of_one_are_left_out_and_all_singletons_score_zero():
    real = torch.tensor([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
    singletons = torch.tensor([[0.5, 0.0], [10.5, 0.0], [20.5, 0.0]])
    assert clustered_diversity(singletons, real) == 0.0
    with_a_pair = torch.cat([singletons, torch.tensor([[0.0, 3.0]])])
    assert clustered_diversity(with_a_pair, real) == pytest.approx(math.hypot(0.5, 3.0))


def test_clustered_diversity_names_the_bad_argument():
    with pytest.raises(ValueError, match="real"):
        clustered_diversity(torch.zeros(3, 2), torch.zeros(0, 2))
    with pytest.raises(ValueError, match="generated"):
        clustered_diversity(torch.zeros(3, 5), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="generated"):
        clustered_diversity(torch.zeros(3), torch.zeros(2, 2))


def _pair() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    normal = torch.full((2, 3, 4, 4), 0.5)
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    mask[:, :, :2] = True  # the top half
    return normal, normal.clone(), mask


def test_change_all_inside_the_mask_scores_one():
    normal, defective, mask = _pair()
    defective[:, :, :2] += 0.3
    assert change_inside_mask(normal, defective, mask) == pytest.approx(1.0)


def test_change_half_inside_the_mask_scores_a_half():
    normal, defective, mask = _pair()
    defective[:, :, 1:3] -= 0.2  # one row inside the mask, one outside
    assert change_inside_mask(normal, defective, mask) == pytest.approx(0.5)


def test_identical_pairs_have_no_share():
    normal, defective, mask = _pair()
    assert change_inside_mask(normal, defective, mask) is None


def test_visible_share_counts_mask_pixels_that_changed_by_more_than_eight_levels():
    normal = torch.zeros(1, 3, 2, 4)
    defective = normal.clone()
    defective[0, 2, 0, 0] = 0.5  # visible in one channel
    defective[0, :, 0, 1] = 4 / 255  # a change below the visibility floor
    mask = torch.zeros(1, 1, 2, 4, dtype=torch.bool)
    mask[0, 0, 0, :] = True
    assert visible_share_of_mask(normal, defective, mask) == pytest.approx(0.25)
    assert visible_share_of_mask(normal, defective, torch.zeros_like(mask)) is None


def test_change_inside_mask_names_the_bad_argument():
    normal, defective, mask = _pair()
    with pytest.raises(ValueError, match="defective"):
        change_inside_mask(normal, defective[:, :1], mask)
    with pytest.raises(ValueError, match="mask"):
        change_inside_mask(normal, defective, mask[:, :, :2])


def test_tables_show_clustered_diversity_and_mask_agreement_with_gaps_marked():
    types = ["crack", "fray"]
    cells = {"crack": 1.0, "fray": 2.0}
    result = {
        "types": types,
        "distribution": [
            {
                "source": "dfmgan (this card)",
                **{
                    f"{metric}_{view}": None
                    for metric in ("kid", "fid")
                    for view in ("images", "windows")
                },
                "kid_images_std": None,
                "kid_windows_std": None,
            }
        ],
        "class_control": {"generated layers": {**cells, "mean": 1.5}},
        "diversity": {
            name: {"real train": 3.0, "n_real": 4, "generated": 2.5, "real test": None}
            for name in [*types, "all"]
        },
        "clustered_diversity": {
            "crack": {"generated": 0.25, "real test": None},
            "fray": {"generated": 0.75, "real test": 1.0},
            "mean": {"generated": 0.5, "real test": 1.0},
        },
        "mask_agreement": {
            "dfmgan (this card)": {
                "change inside": {"crack": 1.0, "fray": None, "mean": 1.0},
                "visible": {"crack": 0.5, "fray": 0.25, "mean": 0.375},
            },
            "procedural (stand-in types)": None,
        },
    }
    lines = format_tables(result).splitlines()
    assert "| dfmgan (this card) | - | - | - | - |" in lines
    assert "| real test | - | - | - |" in lines
    assert "| generated | 0.25 | 0.75 | 0.50 |" in lines
    assert "| real test | - | 1.00 | 1.00 |" in lines
    assert "| dfmgan (this card) | 1.000 | - | 1.000 |" in lines
    assert "| dfmgan (this card) | 0.500 | 0.250 | 0.375 |" in lines
    assert "| procedural (stand-in types) | n/a | n/a | n/a |" in lines
