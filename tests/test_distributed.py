"""More than one process: ``torchrun --nproc-per-node 2`` (gloo, CPU) with ``DistributedSampler``.

Each rank builds the same ``SyntheticDefectDataset`` and reads the indices its sampler gives it;
the ranks' indices are disjoint, cover the epoch, and every item equals what a single process
computes for that index (item ``i`` depends only on ``(seed, i)``). Sharded ``defectaug synth``
runs (the other multi-machine path) are tested in ``test_export_formats.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from defectaug import SyntheticDefectDataset

LENGTH = 10
WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader, DistributedSampler
    from defectaug import SyntheticDefectDataset

    torch.set_num_threads(1)
    backgrounds, out, length = sys.argv[1], sys.argv[2], int(sys.argv[3])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    dataset = SyntheticDefectDataset(
        backgrounds, ["spot", "crack"], "procedural", length=length, seed=5, target="mask"
    )
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=1)
    sampler.set_epoch(3)
    indices = list(sampler)
    items = {}
    loader = DataLoader(dataset, batch_size=None, sampler=sampler)
    for index, (image, mask) in zip(indices, loader):
        items[index] = [float(image.double().sum()), int(mask.sum())]
    # The collective proves the process group works; rank 0 writes what every rank read.
    gathered = [None] * world
    dist.all_gather_object(gathered, {"rank": rank, "indices": indices, "items": items})
    if rank == 0:
        with open(out, "w") as handle:
            json.dump(gathered, handle)
    dist.destroy_process_group()
    """
)


def _backgrounds(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        pixels = (100 + 60 * rng.random((32, 36))).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"normal_{index}.png")
    return folder


def test_torchrun_ranks_are_disjoint_cover_the_epoch_and_reproduce(tmp_path):
    backgrounds = _backgrounds(tmp_path / "normals")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "ranks.json"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",  # what the torchrun script runs
        "--standalone",
        "--nproc-per-node",
        "2",
        str(script),
        str(backgrounds),
        str(out),
        str(LENGTH),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.skip("torchrun did not finish within 240 s (launcher or rendezvous stuck)")
    if done.returncode != 0:
        log = done.stdout + done.stderr
        launcher = ("Rendezvous", "EADDRINUSE", "Address already in use", "gloo", "c10d")
        if any(word in log for word in launcher) and "Traceback" not in log.split("worker.py")[-1]:
            pytest.skip(f"torchrun could not start its processes here: {log[-300:]}")
        pytest.fail(f"torchrun failed ({done.returncode}):\n{log[-3000:]}")

    ranks = sorted(json.loads(out.read_text()), key=lambda entry: entry["rank"])
    assert [entry["rank"] for entry in ranks] == [0, 1]
    first, second = (set(entry["indices"]) for entry in ranks)
    assert not first & second, "ranks read the same items"
    assert first | second == set(range(LENGTH)), "the ranks together do not cover the epoch"
    assert len(first) == len(second) == LENGTH // 2

    # The same sampler order in this process (reproducible from seed and epoch) ...
    sampler_indices = []
    for rank in range(2):
        sampler = torch.utils.data.DistributedSampler(
            range(LENGTH), num_replicas=2, rank=rank, shuffle=True, seed=1
        )
        sampler.set_epoch(3)
        sampler_indices.append(list(sampler))
    assert [entry["indices"] for entry in ranks] == sampler_indices
    # ... and the same items: what each rank read equals a single-process computation.
    dataset = SyntheticDefectDataset(
        backgrounds, ["spot", "crack"], "procedural", length=LENGTH, seed=5, target="mask"
    )
    for entry in ranks:
        for index, (image_sum, mask_sum) in entry["items"].items():
            image, mask = dataset[int(index)]
            assert float(image.double().sum()) == pytest.approx(image_sum, rel=1e-6, abs=1e-6)
            assert int(mask.sum()) == mask_sum
