"""Memory a training run will need, and memory the machine has, so a run that cannot fit is
refused before it allocates instead of swapping or being killed part way.

The estimates are deliberately a little high: refusing a run that would just have fitted costs a
retry with a smaller setting; starting one that does not fit costs the machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

GIB = float(1 << 30)


class TrainingResourceError(ValueError):
    """A setting asks for more memory than the device has; the message names it and the estimate."""


def format_bytes(count: float) -> str:
    if count >= 0.1 * GIB:
        return f"{count / GIB:.1f} GiB"
    return f"{count / (1 << 20):.1f} MiB"


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cgroup_headroom() -> int | None:
    """Bytes left under this process's cgroup memory limit; ``None`` when there is no limit.

    Inside a container ``/proc/meminfo`` reports the host, so the cgroup limit is the real bound.
    """
    v2 = Path("/sys/fs/cgroup")
    limit, usage = _read_int(v2 / "memory.max"), _read_int(v2 / "memory.current")
    if limit is None:
        v1 = v2 / "memory"
        limit = _read_int(v1 / "memory.limit_in_bytes")
        usage = _read_int(v1 / "memory.usage_in_bytes")
        # cgroup v1 reports "no limit" as a number near 2**63.
        if limit is not None and limit >= 1 << 60:
            limit = None
    if limit is None:
        return None
    return max(0, limit - (usage or 0))


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_bytes(device: torch.device | str) -> int | None:
    """Memory free for a new allocation on ``device``; ``None`` where it cannot be told."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type != "cpu":
        return None
    known = [value for value in (_meminfo_available(), _cgroup_headroom()) if value is not None]
    if not known:
        try:
            known.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return min(known)


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes of one training step: ``fixed`` (weights, gradients, optimiser moments, data
    on the device) plus ``per_item`` for every item of the batch (activations kept for backward).
    """

    per_item: int
    fixed: int

    def total(self, batch_size: int) -> int:
        return self.fixed + self.per_item * batch_size

    def max_batch(self, available: int) -> int:
        return max(0, (available - self.fixed) // max(1, self.per_item))


def check_fits(
    estimate: MemoryEstimate, batch_size: int, layer_size: int, device: torch.device | str
) -> None:
    """Raise ``TrainingResourceError`` when ``batch_size`` items cannot fit on ``device``."""
    device = torch.device(device)
    available = available_bytes(device)
    needed = estimate.total(batch_size)
    if available is None or needed <= available:
        return
    fits = estimate.max_batch(available)
    breakdown = (
        f"{format_bytes(estimate.per_item)} per batch item + {format_bytes(estimate.fixed)} of "
        "weights and optimiser state"
    )
    if fits < 1:
        raise TrainingResourceError(
            f"layer_size (--layer-size) {layer_size}: one training step needs about "
            f"{format_bytes(estimate.total(1))} even with one item per batch ({breakdown}), but "
            f"{device} has {format_bytes(available)} available; lower --layer-size, --width or "
            "--max-width"
        )
    raise TrainingResourceError(
        f"batch_size (--batch-size) {batch_size}: one training step at layer_size {layer_size} "
        f"needs about {format_bytes(needed)} ({breakdown}), but {device} has "
        f"{format_bytes(available)} available; at most {fits} items per batch fit"
    )
