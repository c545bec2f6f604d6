"""Pipeline benchmark: its tables on a tiny run, and the issues' bars judged on hand-made numbers.

No timing is asserted: only which rows exist, where they sit and how their bars are judged.
"""

from __future__ import annotations

import argparse

import pytest
import torch

from benchmarks import pipeline
from benchmarks.pipeline import Bar, CallRow, LoaderResult, LoaderRow, Sources

# The benchmark decodes its JPEGs with torchvision.io, as the pipeline it measures does.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def test_bars_are_judged_at_their_edges():
    at_most = Bar(1.10)
    assert at_most.met(1.10) and at_most.met(0.95) and not at_most.met(1.11)
    assert at_most.verdict(1.05) == "<= 1.10x: met"
    assert at_most.verdict(1.2) == "<= 1.10x: not met"
    assert at_most.verdict(None) == "<= 1.10x: not measured"
    at_least = Bar(10.0, at_most=False)
    assert at_least.met(10.0) and not at_least.met(9.99)
    assert at_least.verdict(12.0) == ">= 10.00x: met"


def test_bars_with_an_interval_are_met_or_missed_only_by_the_whole_interval():
    at_most = Bar(1.10)
    assert at_most.verdict(1.05, (1.01, 1.10)) == "<= 1.10x: met"
    assert at_most.verdict(1.12, (1.11, 1.15)) == "<= 1.10x: not met"
    assert at_most.verdict(1.08, (1.03, 1.13)) == "<= 1.10x: undecided"
    assert at_most.verdict(1.12, (1.09, 1.15)) == "<= 1.10x: undecided"
    at_least = Bar(3.0, at_most=False)
    assert at_least.verdict(3.5, (3.1, 3.9)) == ">= 3.00x: met"
    assert at_least.verdict(3.1, (2.9, 3.3)) == ">= 3.00x: undecided"


def test_median_interval_is_the_binomial_order_statistics():
    # n = 24: P(B(24, 1/2) <= 6) = 0.0113 <= 0.025 < P(<= 7) = 0.0320, so k = 7: the 7th and
    # the 18th smallest values.
    values = [float(v) for v in range(24, 0, -1)]
    assert pipeline.median_interval(values) == (7.0, 18.0)
    # n = 8: P(<= 0) = 0.0039 <= 0.025 < P(<= 1) = 0.0352: the smallest and the largest.
    assert pipeline.median_interval([float(v) for v in range(8)]) == (0.0, 7.0)
    # n = 100: k = 40 (P(<= 39) = 0.0176, P(<= 40) = 0.0284).
    assert pipeline.median_interval([float(v) for v in range(100)]) == (39.0, 60.0)
    # Under 6 values no interval reaches 95 %: the whole range.
    assert pipeline.median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)
    assert pipeline.median_interval([5.0]) == (5.0, 5.0)


def test_the_issues_bars():
    assert {name: bar.describe() for name, bar in pipeline.LOADER_BARS.items()} == {
        "procedural alpha": "<= 1.10x",
        "bank alpha": "<= 1.15x",
        "dcdgan alpha": "<= 1.15x",
        "poisson": "<= 1.30x",
        "improved_poisson": "<= 1.50x",
    }
    assert {name: bar.describe() for name, bar in pipeline.CALL_BARS.items()} == {
        "alpha": ">= 10.00x",
        "poisson": ">= 3.00x",
    }


def test_row_groups_base_first_and_unavailable_rows_say_why():
    sources = Sources(peer=None, peer_status="not installed", bank_status="data not found")
    sources.card_status = "could not be loaded: OSError"
    groups = pipeline.row_groups(sources)
    assert len(groups) == len(pipeline.LOADER_GROUPS)
    for rows in groups:
        assert rows[0].name == pipeline.BASE_ROW and rows[0].step is None
    target, generators, blends, peer = groups
    assert target[1].bar == pipeline.LOADER_BARS["procedural alpha"]
    assert target[2].step is None  # the identical base row
    assert [row.missing for row in generators[1:]] == [
        "data not found",
        "could not be loaded: OSError",
    ]
    assert [row.bar for row in generators[1:]] == [
        pipeline.LOADER_BARS["bank alpha"],
        pipeline.LOADER_BARS["dcdgan alpha"],
    ]
    assert [row.bar for row in blends[1:]] == [
        None,  # alpha at p=0.3: no bar
        pipeline.LOADER_BARS["poisson"],
        pipeline.LOADER_BARS["improved_poisson"],
    ]
    assert peer[1].reported and peer[1].missing == "not installed"
    # A subset keeps the canonical order.
    chosen = pipeline.row_groups(sources, ["blends", "target"])
    assert [rows[1].name for rows in chosen] == [target[1].name, blends[1].name]


def test_group_results_take_round_ratios_against_the_base_and_keep_missing_rows():
    rows = [
        LoaderRow("base", None),
        LoaderRow("missing", None, Bar(1.15), missing="data not found"),
        LoaderRow("slow", None, Bar(1.3)),
    ]
    rounds = [[1.0, 1.2], [2.0, 2.6], [1.0, 1.4]]  # per round: base, slow seconds per sample
    results = pipeline.group_results(rows, [100.0, 80.0], rounds)
    assert [result.row.name for result in results] == ["base", "missing", "slow"]
    assert results[1].speed is None
    assert results[2].ratio == pytest.approx(1.3)  # median of 1.2, 1.3, 1.4
    assert (results[2].lowest, results[2].highest) == pytest.approx((1.2, 1.4))
    # Three rounds: the interval is the whole range, which straddles the bar.
    assert results[2].interval == pytest.approx((1.2, 1.4))
    lines = pipeline.loader_table(results, workers=2)
    assert lines[2].startswith("| base | 100.0 | 20.00 | 1.00x | 1.00-1.00x | 1.00-1.00x | - |")
    assert lines[3] == "| missing | data not found | - | - | - | - | <= 1.15x: not measured |"
    assert lines[4].endswith("| 1.30x | 1.20-1.40x | 1.20-1.40x | <= 1.30x: undecided |")
    assert pipeline.unmet(lines) == [] and pipeline.unmet(lines, "undecided") == ["slow"]


def test_loader_table_marks_unmet_bars_and_the_peer_as_reported():
    results = [
        LoaderResult(LoaderRow("base", None), 1000.0, 1.0, 1.0, 1.0),
        LoaderResult(LoaderRow("alpha", None, Bar(1.10)), 900.0, 1.12, 1.05, 1.2, (1.11, 1.14)),
        LoaderResult(LoaderRow("peer", None, reported=True), 100.0, 9.0, 8.0, 10.0),
    ]
    lines = pipeline.loader_table(results, workers=2)
    assert lines[3].endswith("| <= 1.10x: not met |")
    assert lines[4].endswith("| reported (peer) |")
    assert pipeline.unmet(lines) == ["alpha"]


def test_call_table_speedups_against_the_peer():
    rows = [
        CallRow("peer", None, peer=True),
        CallRow("cutpaste alpha", None, pipeline.CALL_BARS["alpha"]),
        CallRow("cutpaste poisson", None, pipeline.CALL_BARS["poisson"]),
        CallRow("cutpaste improved_poisson", None),
    ]
    lines = pipeline.call_table(rows, [7.3, 0.7, 2.5, 3.0])
    assert lines[2] == "| peer | 7.300 | 1.00x | reported (peer) |"
    assert lines[3] == "| cutpaste alpha | 0.700 | 10.4x | >= 10.00x: met |"
    assert lines[4] == "| cutpaste poisson | 2.500 | 2.9x | >= 3.00x: not met |"
    assert lines[5] == "| cutpaste improved_poisson | 3.000 | 2.4x | reported |"
    assert pipeline.unmet(lines) == ["cutpaste poisson"]
    # Without the peer nothing can be judged.
    rows[0].missing = "not installed"
    lines = pipeline.call_table(rows, [None, 0.7, 2.5, 3.0])
    assert lines[2] == "| peer | not installed | - | - |"
    assert lines[3] == "| cutpaste alpha | 0.700 | - (no peer) | >= 10.00x: not measured |"


def test_call_rows_run_once_each(tmp_path):
    paths = pipeline.make_jpegs(tmp_path, 2)
    rows = pipeline.call_rows(None, "not installed", tmp_path)
    assert rows[0].peer and rows[0].missing == "not installed"
    names = [row.name for row in rows[1:]]
    assert len(names) == 2 * len(pipeline.BLEND_MODES)
    assert all(name.startswith(("DefectInject cutpaste", "DefectInject nsa")) for name in names)
    image = pipeline.call_image(paths[0])
    assert image.shape == (3, pipeline.CROP, pipeline.CROP) and image.dtype == torch.float32
    milliseconds = pipeline.measure_calls(rows, image, count=1, warmup=1, rounds=1)
    assert milliseconds[0] is None
    assert all(ms is not None and ms > 0 for ms in milliseconds[1:])


def test_main_on_a_tiny_config(tmp_path, capsys):
    printed = pipeline.main(
        ["--samples", "4", "--repeats", "1", "--workers", "0", "--batch-size", "4",
         "--jpegs", "2", "--sections", "target,generators,blends",
         "--bank-data", str(tmp_path / "absent")]
    )  # fmt: skip
    assert printed == capsys.readouterr().out.rstrip("\n").split("\n")
    rows = [line for line in printed if line.startswith("| ") and "|---" not in line]
    names = [line.split(" | ")[0].lstrip("| ") for line in rows]
    assert names[1:] == [
        pipeline.BASE_ROW,
        "+ DefectInject procedural alpha, p=1",
        "base pipeline again (identical row: the run's spread)",
        pipeline.BASE_ROW,
        "+ DefectInject DefectBank (train-split defects) alpha, p=1",
        f"+ DefectInject {pipeline.LEARNED_CARD} alpha, p=1",
        pipeline.BASE_ROW,
        "+ DefectInject procedural alpha, p=0.3",
        "+ DefectInject procedural poisson, p=1",
        "+ DefectInject procedural improved_poisson, p=1",
    ]
    bank_row = rows[5]
    assert "| data not found |" in bank_row and bank_row.endswith("<= 1.15x: not measured |")
    assert rows[6].endswith(("<= 1.15x: met |", "<= 1.15x: not met |"))  # the card ran
    assert printed[-1].startswith("bars not met: ")


def test_stages_take_the_base_and_each_barred_row_apart(tmp_path, capsys):
    printed = pipeline.main(
        ["--samples", "4", "--repeats", "2", "--jpegs", "2", "--sections", "stages",
         "--bank-data", str(tmp_path / "absent")]
    )  # fmt: skip
    rows = [line for line in printed if line.startswith("| ") and "|---" not in line]
    cells = [line.strip("| ").split(" | ") for line in rows[1:]]
    assert [row[0] for row in cells] == [
        pipeline.BASE_ROW,
        "+ DefectInject procedural alpha, p=1",
        "+ DefectInject DefectBank (train-split defects) alpha, p=1",
        f"+ DefectInject {pipeline.LEARNED_CARD} alpha, p=1",
    ]
    base, procedural, bank, card = cells
    assert base[4] == "1.00x" and base[5] == "-"
    assert bank[1:] == ["data not found", "-", "-", "-", "-"]
    for row in (procedural, card):
        before, step, after, alone = (float(row[i]) for i in (1, 2, 3, 5))
        assert min(before, step, after, alone) > 0
        assert row[4].endswith("x")
    # The base pipeline has no defect step: its stage is the clock's cost alone.
    assert float(base[2]) < float(procedural[2])


def test_sections_are_checked():
    assert pipeline.parse_sections("calls, peer") == ["calls", "peer"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown section"):
        pipeline.parse_sections("target,gpu")
