"""Seeding: every random draw takes a seed or a ``torch.Generator``, so samples are reproducible."""

from __future__ import annotations

import struct
from hashlib import blake2b
from typing import Any

import torch
from torch.utils.data import get_worker_info

from defectaug._checks import is_int

SeedLike = int | torch.Generator | None

# uniform_draws runs for every transformed sample: its formats are compiled once.
_KEY = struct.Struct("<QII")
_WORDS = struct.Struct("<8Q")
_UNIT = 2.0**-53


def as_generator(seed: SeedLike, device: torch.device | str | None = None) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` for an int seed, an existing generator or ``None``.

    ``None`` draws a fresh seed from torch's global generator, so global seeding still works.
    An existing generator on another device is re-seeded from one draw of it, keeping determinism.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    if isinstance(seed, torch.Generator):
        if seed.device.type == device.type:
            return seed
        derived = int(torch.randint(0, 2**62, (1,), generator=seed).item())
        return torch.Generator(device=device).manual_seed(derived)
    return torch.Generator(device=device).manual_seed(as_seed(seed))


def check_seed(seed: object, name: str = "seed") -> SeedLike:
    """``seed`` if it is an int (numpy ints too, as ``int``), a ``torch.Generator`` or ``None``;
    else ``TypeError`` naming ``name``. Draws nothing."""
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    if not is_int(seed):
        raise TypeError(
            f"{name}: expected an int, a torch.Generator or None, got {seed!r} "
            f"({type(seed).__name__})"
        )
    return int(seed)


def as_seed(seed: SeedLike) -> int:
    """An int key for counter-based draws (:func:`uniform_draws`) from an int seed, a
    ``torch.Generator`` (one 62-bit draw of it, so it advances) or ``None`` (one draw of torch's
    global generator, so global seeding still works)."""
    if type(seed) is int:  # the per-sample case, ahead of the slower isinstance checks
        return seed
    if isinstance(seed, torch.Generator):
        return child_seed(seed)
    if seed is None:
        return int(torch.randint(0, 2**62, (1,)).item())
    return check_seed(seed)


def child_seed(generator: torch.Generator) -> int:
    """One 62-bit seed drawn from ``generator``, for seeding a sub-generator deterministically."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())


def uniform_draws(seed: int | None, count: int, stream: int = 0) -> list[float]:
    """``count`` uniform floats in ``[0, 1)``, hashed from ``(seed, stream)``.

    A per-sample transform needs a dozen numbers per call; hashing them (BLAKE2b, 8 doubles of 53
    bits per digest) costs a few microseconds, where seeding a ``torch.Generator`` and drawing
    costs several times that. Stable across processes and platforms; different ``stream`` values
    give independent draws from one seed. ``seed=None`` draws from torch's global generator.
    """
    if seed is None:
        return torch.rand(count, dtype=torch.float64).tolist()
    draws: list[float] = []
    block = 0
    seed &= 2**64 - 1
    while len(draws) < count:
        digest = blake2b(_KEY.pack(seed, stream, block), digest_size=64).digest()
        draws += [(word >> 11) * _UNIT for word in _WORDS.unpack(digest)]
        block += 1
    return draws[:count]


def mix_seed(*values: int) -> int:
    """A 62-bit seed hashed from integers; stable across processes, platforms and Python runs."""
    digest = blake2b(repr(tuple(map(int, values))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2


#: A worker's identity, computed once: ``(its WorkerInfo, identity)``. A worker process has one
#: WorkerInfo for its life, and the distributed check costs microseconds a call.
_worker_identity: tuple[Any, tuple[int, int, int]] | None = None


def stream_identity() -> tuple[int, int, int]:
    """``(DataLoader worker id or -1, the loader's base seed or 0, distributed rank or 0)``.

    Mixed into seeds so that workers and ranks never repeat each other's draws.
    """
    global _worker_identity
    info = get_worker_info()
    if info is not None and _worker_identity is not None and _worker_identity[0] is info:
        return _worker_identity[1]
    worker_id, base_seed = (info.id, info.seed - info.id) if info is not None else (-1, 0)
    rank = (
        torch.distributed.get_rank()
        if torch.distributed.is_available() and torch.distributed.is_initialized()
        else 0
    )
    if info is not None:
        _worker_identity = (info, (worker_id, base_seed, rank))
    return worker_id, base_seed, rank
