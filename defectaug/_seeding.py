"""Seeding: every random draw takes a ``torch.Generator``, so samples are reproducible."""

from __future__ import annotations

import torch

SeedLike = int | torch.Generator | None


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
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(
            f"seed: expected an int, a torch.Generator or None, got {type(seed).__name__}"
        )
    return torch.Generator(device=device).manual_seed(seed)


def child_seed(generator: torch.Generator) -> int:
    """One 62-bit seed drawn from ``generator``, for seeding a sub-generator deterministically."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
