"""Mask fidelity: does the label mask cover exactly the pixels that visibly changed?

    uv run python -m benchmarks.mask_fidelity            # table on stdout and in benchmarks/README

For every procedural type and blend, defects are injected (``inject_defects``, p=1) on flat grey
and on smooth random-texture 128 px images, 20 seeds each. Recall is the share of the pixels that
visibly changed (some channel by more than ``VISIBILITY`` = 8/255) that the mask covers;
precision is the share of the mask's pixels that visibly changed. A second column group does the
same through ``DefectInject`` (the per-sample path of data-loader workers, alpha blend only).
The rule the library enforces (and ``tests/test_mask_fidelity.py`` asserts) is >= 0.9 for both.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision import tv_tensors

from defectaug import DefectInject, inject_defects
from defectaug.batch import BLEND_MODES
from defectaug.generators.procedural import DEFECT_TYPES
from defectaug.layer import VISIBILITY

SIZE = 128


def backgrounds(kind: str, seeds: int) -> torch.Tensor:
    if kind == "flat":
        return torch.full((seeds, 1, SIZE, SIZE), 0.5)
    noise = torch.rand(seeds, 1, SIZE + 6, SIZE + 6, generator=torch.Generator().manual_seed(0))
    return F.avg_pool2d(noise, 7, 1) * 0.5 + 0.25


def recall_precision(before: torch.Tensor, after: torch.Tensor, masks: torch.Tensor):
    changed = (after - before).abs().amax(dim=1, keepdim=True) > VISIBILITY
    masks = masks.bool()
    covered = float((changed & masks).sum())
    return covered / max(float(changed.sum()), 1.0), covered / max(float(masks.sum()), 1.0)


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    header = " | ".join(
        f"{kind} {blend}" for kind in ("flat", "texture") for blend in (*BLEND_MODES, "per-sample")
    )
    lines = [f"| type | {header} |", "| --- |" + " ---: |" * (2 * (len(BLEND_MODES) + 1))]
    for defect_type in DEFECT_TYPES:
        cells = []
        for kind in ("flat", "texture"):
            images = backgrounds(kind, args.seeds)
            for blend in BLEND_MODES:
                out, masks, _ = inject_defects(images, defect_type, blend=blend, seed=0)
                cells.append("{:.2f} / {:.2f}".format(*recall_precision(images, out, masks)))
            transform = DefectInject(defect_type, p=1.0, seed=0)
            outs, masks = [], []
            for image in images:
                out, mask = transform(image, tv_tensors.Mask(torch.zeros(1, SIZE, SIZE)))
                outs.append(out)
                masks.append(mask)
            cells.append(
                "{:.2f} / {:.2f}".format(
                    *recall_precision(images, torch.stack(outs), torch.stack(masks))
                )
            )
        lines.append(f"| {defect_type} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print("Cells: recall / precision of the label mask against the pixels that changed > 8/255.")
    print(table)
    return table


if __name__ == "__main__":
    main()
