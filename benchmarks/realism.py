"""Defect-local realism: do synthetic defects look like the real ones, class by class?

    uv run python -m benchmarks.realism                     # test split -> benchmarks/results/
    uv run python -m benchmarks.realism --split train       # for choices (never the test split)

For each defect class, a window around every real defect of the split (``defect_windows``: the
defect's box with as much context again, 64 px) is compared with windows around synthetic
defects of each generator, placed on the training split's normal images:

- **two-sample AUC** (``two_sample_auc``): a small CNN learns to tell real from synthetic windows;
  the cross-validated AUC is 0.5 when it cannot, 1.0 when it always can. Differences of a few
  hundredths near 0.5 are noise (the test's own spread on identical sets is about +-0.08).
- **window KID** (``kid`` on Inception features of the windows; x 1000).

Generators: ``procedural`` at its defaults with the class -> type map of the downstream
benchmark (``break`` has no type there), the fitted card ``procedural-magnetic-tile`` with its own
placement per class, and ``bank`` (the training split's own defects, each class placed by the
bank's location prior: ``bank.placement(class)``, edge classes on an image edge, as the fitted
placement puts them). A class with fewer than 5 real windows is cross-validated with one fold
per window (its AUC rests on those few windows); one with a single window gets no AUC.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from benchmarks import downstream_data as data_lib
from benchmarks.recording import git_commit, portable_command, portable_path
from defectaug import inject_defects, load_generator
from defectaug.datasets import GOOD_LABEL
from defectaug.metrics import (
    InceptionFeatures,
    defect_windows,
    extract_features,
    kid,
    two_sample_auc,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "magnetic_tile"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results"
FITTED_CARD = "procedural-magnetic-tile"
FOLDS = 5


def synthetic_windows(
    generator: Any,
    defect_type: str,
    normals: torch.Tensor,
    count: int,
    seed: int,
    placement: dict[str, Any],
) -> torch.Tensor:
    """Up to ``count`` windows around visible synthetic defects of one type on normal images
    (fewer when the generator's defects of that type rarely show at this image size)."""
    windows, attempt = [], 0
    while sum(len(w) for w in windows) < count and attempt < 8:
        pick = torch.randint(
            len(normals), (count,), generator=torch.Generator().manual_seed(seed + attempt)
        )
        result = inject_defects(
            normals[pick], defect_type, generator, seed=seed + attempt, **placement
        )
        windows.append(defect_windows(result.images, result.masks))
        attempt += 1
    return torch.cat(windows)[:count]


def auc_and_folds(
    real: torch.Tensor, synthetic: torch.Tensor, seed: int, epochs: int
) -> tuple[float | None, int]:
    """``two_sample_auc`` with as many folds as both sides allow (at most ``FOLDS``: a class of
    few real windows gets one fold per window) and that fold count; ``None`` for the AUC when a
    side has fewer than 2 windows."""
    folds = min(FOLDS, len(real), len(synthetic))
    if folds < 2:
        return None, folds
    return two_sample_auc(real, synthetic, folds=folds, seed=seed, epochs=epochs), folds


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--split", default="test", help="the split whose real defects are judged")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--synthetic", type=int, default=60, help="synthetic windows per class")
    parser.add_argument("--epochs", type=int, default=30, help="two-sample CNN epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--stem", default="realism")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    # The commit the run starts from: others may commit while it runs.
    commit = git_commit(short=True)
    train_records = data_lib.read_split(args.data, "train")
    classes = data_lib.class_names(train_records)
    train = data_lib.load_image_set(train_records, classes, args.image_size)
    judged_records = data_lib.read_split(args.data, args.split)
    judged = data_lib.load_image_set(judged_records, classes, args.image_size)
    normals = train.images[train.labels == classes.index(GOOD_LABEL)]
    fitted = load_generator(FITTED_CARD)
    bank, bank_placements = data_lib.bank_generator(train_records, source="training split")
    extractor = InceptionFeatures()
    rows: dict[str, dict[str, Any]] = {}
    for label, name in enumerate(classes):
        if name == GOOD_LABEL:
            continue
        members = (judged.labels == label) & judged.has_mask
        real = defect_windows(judged.images[members], judged.masks[members])
        sources: dict[str, tuple[Any, str, dict[str, Any]]] = {}
        if name in data_lib.PROCEDURAL_CLASS_MAP:
            sources["procedural"] = ("procedural", data_lib.PROCEDURAL_CLASS_MAP[name], {})
        if name in fitted.defect_types:
            sources["fitted"] = (fitted, name, fitted.placement(name))
        if name in bank.defect_types:
            sources["bank"] = (bank, name, bank_placements[name])
        real_features = extract_features(real, extractor) if len(real) >= 2 else None
        row: dict[str, Any] = {"real_windows": len(real)}
        for source, (generator, defect_type, placement) in sources.items():
            windows = synthetic_windows(
                generator, defect_type, normals, args.synthetic, args.seed, placement
            )
            entry: dict[str, Any] = {"synthetic_windows": len(windows)}
            auc, folds = auc_and_folds(real, windows, args.seed, args.epochs)
            if auc is not None:
                entry["two_sample_auc"], entry["auc_folds"] = auc, folds
            if real_features is not None and len(windows) >= 2:
                mean, std = kid(real_features, extract_features(windows, extractor), subsets=50)
                entry["kid_x1000"] = 1000 * mean
                entry["kid_std_x1000"] = 1000 * std
            row[source] = entry
            print(f"{name} {source}: {entry}", flush=True)
        rows[name] = row
    result = {
        "data": portable_path(args.data),
        "split": args.split,
        "command": portable_command(
            " ".join(["uv run python -m benchmarks.realism", *(argv or [])])
        ),
        "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        "commit": commit,
        "settings": {k: v for k, v in vars(args).items() if k not in ("data", "out")},
        "rows": rows,
        "wall_s": time.perf_counter() - started,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.stem}.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / f"{args.stem}.md").write_text(table(result) + "\n")
    print(table(result))
    return result


def table(result: dict[str, Any]) -> str:
    sources = ("procedural", "fitted", "bank")
    lines = [
        f"Defect-window realism on {result['data']}:{result['split']} — {result['date']}, "
        f"commit {result['commit']}. Cells: two-sample AUC (0.5 = indistinguishable) / window "
        "KID x 1000.",
        "",
        "| class | real windows | " + " | ".join(sources) + " |",
        "| --- | ---: |" + " ---: |" * len(sources),
    ]
    for name, row in result["rows"].items():
        cells = []
        for source in sources:
            entry = row.get(source)
            if entry is None:
                cells.append("—")
                continue
            auc = entry.get("two_sample_auc")
            score = entry.get("kid_x1000")
            folds = entry.get("auc_folds", FOLDS)
            fewer = f" ({folds}-fold)" if folds < FOLDS else ""
            cells.append(
                f"{'n/a' if auc is None else f'{auc:.2f}{fewer}'} / "
                f"{'n/a' if score is None else f'{score:.1f}'}"
            )
        lines.append(f"| {name} | {row['real_windows']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
