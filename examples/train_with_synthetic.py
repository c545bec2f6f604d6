"""Train a defect classifier on real + synthetic images with a gradient-reversal source head.

The real images come from an ImageFolder-style tree (``<root>/<split>/<class>/*.jpg``, e.g.
``../shared/data/magnetic_tile``); the synthetic ones are real *normal* images of the same split
(the ``good`` class) with defects composited on the fly by ``SyntheticDefectDataset``. Both are
joined with ``ConcatDataset`` and tagged with their source (0 = real, 1 = synthetic). A torchvision
backbone (built from scratch, nothing is downloaded) keeps its usual classifier; a
``GRLSourceHead`` on its pooled features learns real-vs-synthetic while the reversed gradient
makes the features source-invariant (DT-GAN appendix B, Defect-GAN section 3.2). The loss is
``cross_entropy(class) + source loss`` and the reversal weight follows the DANN ramp, one step per
iteration.

Tiny CPU run (a few seconds)::

    uv run python examples/train_with_synthetic.py --subset 4 --max-steps 5 --image-size 64 \\
        --batch-size 8 --device cpu

See ``examples/README.md`` for the defect-type mapping and the other options.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from defectaug.dataset import SyntheticDefectDataset
from defectaug.heads import SOURCE_REAL, SOURCE_SYNTHETIC, SourceTagged, attach_source_head

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = (
    Path(os.environ.get("DEFECTAUG_SHARED_DATA", REPO_ROOT / ".." / "shared" / "data"))
    / "magnetic_tile"
)

# Magnetic-tile class <- procedural defect type, by look (see examples/README.md):
# blowholes are small dark pits, cracks thin dark lines, fray large dark worn patches (a dark spot),
# uneven large low-contrast regions. ``break`` (chipped tile edges) has no procedural analogue, so
# it gets no synthetic images by default; add e.g. ``break=scratch`` to --defect-map to try one.
MAGNETIC_TILE_MAP = "blowhole=pit,crack=crack,fray=spot,uneven=uneven"

ARCHITECTURES = ("resnet18", "mobilenet_v3_small")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path, default=DEFAULT_DATA, help="ImageFolder-style root")
    data.add_argument("--split", default="train", help="sub-folder of --data to train on")
    data.add_argument("--eval-split", default="test", help="sub-folder to evaluate on ('' = none)")
    data.add_argument("--normal-class", default="good", help="class whose images are backgrounds")
    data.add_argument(
        "--subset", type=int, default=None, help="use at most N real images per class (tiny runs)"
    )
    data.add_argument("--image-size", type=int, default=128, help="images are resized to S x S")
    data.add_argument("--num-workers", type=int, default=0)
    synth = parser.add_argument_group("synthetic data")
    synth.add_argument("--generator", default="procedural", help="defect generator name or path")
    synth.add_argument(
        "--defect-map",
        default=MAGNETIC_TILE_MAP,
        help="CLASS=TYPE,... which generator defect type stands for which real class; 'identity' "
        "when the generator's types are the class names (a bank or learned generator)",
    )
    synth.add_argument(
        "--synthetic-length",
        type=int,
        default=None,
        help="synthetic images per epoch (default: as many as real images)",
    )
    synth.add_argument("--blend", default="alpha", help="alpha | poisson | improved_poisson")
    train = parser.add_argument_group("training")
    train.add_argument("--arch", choices=ARCHITECTURES, default="resnet18")
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--max-steps", type=int, default=500, help="training iterations")
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--weight-decay", type=float, default=1e-4)
    train.add_argument("--schedule", choices=("dann", "constant"), default="dann")
    train.add_argument("--max-weight", type=float, default=1.0, help="final reversal weight")
    train.add_argument("--gamma", type=float, default=10.0, help="DANN ramp steepness")
    train.add_argument("--head-depth", type=int, choices=(2, 3), default=2)
    train.add_argument("--head-hidden", type=int, default=1024)
    train.add_argument("--source-loss-weight", type=float, default=1.0)
    train.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    train.add_argument("--amp", action="store_true", help="bfloat16 autocast")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--log-every", type=int, default=10)
    train.add_argument("--checkpoint", type=Path, default=None, help="save model + head here")
    train.add_argument("--resume", type=Path, default=None, help="continue from a --checkpoint")
    args = parser.parse_args(argv)
    for name in (
        "subset",
        "synthetic_length",
        "max_steps",
        "batch_size",
        "image_size",
        "log_every",
    ):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')}: expected a positive integer, got {value}")
    return args


def parse_defect_map(
    spec: str, class_to_idx: dict[str, int], normal_class: str
) -> tuple[list[str], dict[str, int]]:
    """``"blowhole=pit,crack=crack"`` -> (defect types, label_map type -> class id)."""
    defect_classes = [name for name in class_to_idx if name != normal_class]
    if spec.strip() == "identity":
        return defect_classes, {name: class_to_idx[name] for name in defect_classes}
    label_map: dict[str, int] = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        class_name, sep, defect_type = (piece.strip() for piece in entry.partition("="))
        if not sep or not class_name or not defect_type:
            raise SystemExit(f"--defect-map: expected CLASS=TYPE entries, got {entry!r}")
        if class_name not in defect_classes:
            raise SystemExit(
                f"--defect-map: unknown class {class_name!r}; defect classes: "
                f"{', '.join(defect_classes)}"
            )
        if defect_type in label_map:
            raise SystemExit(f"--defect-map: defect type {defect_type!r} is mapped twice")
        label_map[defect_type] = class_to_idx[class_name]
    if not label_map:
        raise SystemExit("--defect-map: no CLASS=TYPE entries given")
    return list(label_map), label_map


def per_class_subset(dataset: ImageFolder, limit: int | None, seed: int) -> Dataset:
    """At most ``limit`` images of every class, drawn reproducibly."""
    if limit is None:
        return dataset
    by_class: dict[int, list[int]] = defaultdict(list)
    for index, target in enumerate(dataset.targets):
        by_class[target].append(index)
    rng = random.Random(seed)
    chosen = [
        i for indices in by_class.values() for i in rng.sample(indices, min(limit, len(indices)))
    ]
    return Subset(dataset, sorted(chosen))


def cycle(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


def build_model(arch: str, num_classes: int) -> torch.nn.Module:
    # weights=None: trained from scratch, nothing is downloaded.
    return getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)


@torch.no_grad()
def evaluate(model, loader: DataLoader, device: torch.device, amp: bool) -> float:
    model.eval()
    correct = total = 0
    for images, labels in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            class_logits, _ = model(images.to(device))
        correct += int((class_logits.argmax(1).cpu() == labels).sum())
        total += labels.numel()
    model.train()
    return correct / max(total, 1)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    split_root = args.data / args.split
    if not split_root.is_dir():
        raise SystemExit(f"--data/--split: {split_root} is not a folder of class sub-folders")

    size = (args.image_size, args.image_size)
    # ImageFolder opens images as RGB (grayscale tiles replicated): both sources are 3-channel.
    to_tensor = v2.Compose(
        [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Resize(size, antialias=True)]
    )
    real_full = ImageFolder(split_root, transform=to_tensor)
    if args.normal_class not in real_full.class_to_idx:
        raise SystemExit(
            f"--normal-class: {args.normal_class!r} is not a class of {split_root}; classes: "
            f"{', '.join(real_full.classes)}"
        )
    real = per_class_subset(real_full, args.subset, args.seed)

    defect_types, label_map = parse_defect_map(
        args.defect_map, real_full.class_to_idx, args.normal_class
    )
    normal_index = real_full.class_to_idx[args.normal_class]
    background_paths = [path for path, target in real_full.samples if target == normal_index]
    if args.subset is not None:
        background_paths = random.Random(args.seed).sample(
            background_paths, min(args.subset, len(background_paths))
        )
    synthetic = SyntheticDefectDataset(
        background_paths,
        generator=args.generator,
        defect_types=defect_types,
        length=args.synthetic_length or len(real),
        seed=args.seed,
        blend=args.blend,
        transform=v2.Resize(size, antialias=True),
        target="label",
        label_map=label_map,
        to_rgb=True,
    )
    data = ConcatDataset(
        [SourceTagged(real, SOURCE_REAL), SourceTagged(synthetic, SOURCE_SYNTHETIC)]
    )
    loader = DataLoader(
        data,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=len(data) >= args.batch_size,
        num_workers=args.num_workers,
        generator=torch.Generator().manual_seed(args.seed),
        pin_memory=device.type == "cuda",
    )

    model = attach_source_head(
        build_model(args.arch, len(real_full.classes)),
        depth=args.head_depth,
        hidden=args.head_hidden,
        schedule=args.schedule,
        gamma=args.gamma,
        max_weight=args.max_weight,
        total_steps=args.max_steps,
    ).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    if args.resume is not None:
        checkpoint = torch.load(args.resume, map_location=device, weights_only=True)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
    start_step = int(model.head.steps)

    print(
        f"real {len(real)} ({', '.join(real_full.classes)}), synthetic {len(synthetic)} "
        f"(types {', '.join(defect_types)} via {args.generator}), arch {args.arch}, "
        f"device {device}, steps {start_step}->{args.max_steps}",
        flush=True,
    )
    model.train()
    batches = cycle(loader)
    history = []
    started = time.perf_counter()
    for step in range(start_step + 1, args.max_steps + 1):
        images, labels, sources = next(batches)
        images, labels, sources = (
            t.to(device, non_blocking=True) for t in (images, labels, sources)
        )
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            class_logits, source_logits = model(images)
            class_loss = F.cross_entropy(class_logits.float(), labels)
            source_loss = model.head.loss(source_logits, sources)
        loss = class_loss + args.source_loss_weight * source_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        reversal_weight = model.head.step()  # the DANN ramp advances once per iteration
        if step % args.log_every == 0 or step == args.max_steps:
            record = {
                "step": step,
                "class_loss": round(class_loss.item(), 4),
                "source_loss": round(source_loss.item(), 4),
                "source_acc": round((source_logits.argmax(1) == sources).float().mean().item(), 3),
                "lambda": round(reversal_weight, 4),
                "seconds": round(time.perf_counter() - started, 2),
            }
            history.append(record)
            print(json.dumps(record), flush=True)

    summary: dict = {"steps": int(model.head.steps), "lambda": model.head.reversal_weight}
    if args.eval_split:
        eval_root = args.data / args.eval_split
        if not eval_root.is_dir():
            raise SystemExit(f"--eval-split: {eval_root} is not a folder of class sub-folders")
        eval_set = per_class_subset(
            ImageFolder(eval_root, transform=to_tensor), args.subset, args.seed
        )
        eval_loader = DataLoader(eval_set, batch_size=args.batch_size, num_workers=args.num_workers)
        summary["eval_accuracy"] = evaluate(model, eval_loader, device, args.amp)
        summary["eval_images"] = len(eval_set)
    if args.checkpoint is not None:
        args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                # Plain strings and numbers only, so torch.load(weights_only=True) can read it back.
                "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                "classes": real_full.classes,
            },
            args.checkpoint,
        )
        summary["checkpoint"] = str(args.checkpoint)
    print(json.dumps({"summary": summary}, default=str), flush=True)
    return summary


if __name__ == "__main__":
    main()
