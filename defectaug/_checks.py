"""Argument checks: each returns the checked value or raises an error that names the argument.

In the manner of kornia's ``KORNIA_CHECK``, every public entry point checks its arguments up front
with these small functions instead of writing its own guard: a ``TypeError`` when an argument is
of the wrong kind, a ``ValueError`` when it is of the right kind but out of bounds, and always a
message ``"<name>: expected <what>, got <value>"``. Checks on images (their form, finiteness and
range) live beside the image conversions in :mod:`defectaug._io`; checks that need a module's own
vocabulary (placement ranges, blend options) live in that module and are built from these.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def describe(value: Any) -> str:
    """A short description of ``value`` for error messages: its type, shape and dtype."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, np.ndarray):
        return f"a numpy array of shape {value.shape} and dtype {value.dtype}"
    return f"a {type(value).__name__}"


def _got(value: Any) -> str:
    """``value`` in a ``TypeError``: its repr and type (a tensor or an array by its shape)."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return describe(value)
    return f"{value!r} ({type(value).__name__})"


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer (Python or numpy), a bool not counting as one."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_number(value: Any) -> bool:
    """Whether ``value`` is a real number (Python or numpy), a bool not counting as one."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _int_bounds(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"an int in [{low}, {high}]"
    if low == 1:
        return "a positive int"
    return "an int" if low is None else f"an int >= {low}"


def check_int(
    value: Any, name: str, low: int | None = None, high: int | None = None, *, what: str = ""
) -> int:
    """``value`` as an int in ``[low, high]`` (either bound optional).

    ``what`` replaces the expectation in the messages (default: the bounds, e.g. "a positive
    int" or "an int in [1, 8]").
    """
    what = what or _int_bounds(low, high)
    if not is_int(value):
        raise TypeError(f"{name}: expected {what}, got {_got(value)}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return int(value)


def _number_bounds(
    low: float | None, high: float | None, low_open: bool, high_open: bool, finite: bool
) -> str:
    kind = "a finite number" if finite and (low is None or high is None) else "a number"
    if low is not None and high is not None:
        return f"{kind} in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{kind} {'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{kind} {'<' if high_open else '<='} {high}"
    return kind


def check_number(
    value: Any,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
    what: str = "",
) -> float:
    """``value`` as a float between ``low`` and ``high`` (either optional; ``*_open`` excludes
    the bound itself), and finite unless ``finite=False``. ``what`` replaces the expectation in
    the messages (default: the bounds, e.g. "a number in [0, 1)")."""
    what = what or _number_bounds(low, high, low_open, high_open, finite)
    if not is_number(value):
        raise TypeError(f"{name}: expected {what}, got {_got(value)}")
    number = float(value)
    inside = (
        (low is None or (number > low if low_open else number >= low))
        and (high is None or (number < high if high_open else number <= high))
        and (math.isfinite(number) or not finite)
    )
    if not inside:  # NaN fails this too
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return number


def check_probability(value: Any, name: str = "p") -> float:
    """``value`` as a float in [0, 1]: any real number type (numpy scalars too), not a bool.

    A bool is an int to Python, and ``p=True`` is far more likely a slip than "always".
    """
    return check_number(value, name, 0, 1, what="a probability in [0, 1]")


def check_choice(value: Any, choices: Sequence[str], name: str) -> str:
    """``value`` if it is one of the names ``choices``."""
    what = f"one of {', '.join(map(repr, choices))}"
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected {what}, got {_got(value)}")
    if value not in choices:
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return value


def check_range(
    value: Any,
    name: str,
    low: float,
    high: float,
    *,
    integer: bool = False,
    strict_order: bool = False,
) -> tuple[float, float]:
    """A ``(lo, hi)`` pair with ``low <= lo <= hi <= high`` (``lo < hi`` with ``strict_order``),
    as floats, or as ints with ``integer``."""
    kind = is_int if integer else is_number
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(map(kind, value)):
        what = "ints" if integer else "numbers"
        raise TypeError(f"{name}: expected a (low, high) pair of {what}, got {value!r}")
    lo, hi = value
    ordered = lo < hi if strict_order else lo <= hi
    if not (low <= lo and hi <= high and ordered):  # NaN fails this too
        relation = "<" if strict_order else "<="
        raise ValueError(
            f"{name}: expected a (low, high) pair with {low} <= low {relation} high <= {high}, "
            f"got {tuple(value)!r}"
        )
    return (int(lo), int(hi)) if integer else (float(lo), float(hi))


def as_range(
    value: Any, name: str, *, low: float | None = None, high: float | None = None
) -> tuple[float, float]:
    """A ``(min, max)`` pair from a number or a pair, checked against optional bounds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        pair = (float(value), float(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        pair = (float(value[0]), float(value[1]))
    else:
        raise TypeError(f"{name}: expected a number or a (min, max) pair, got {value!r}")
    if not all(math.isfinite(v) for v in pair) or pair[0] > pair[1]:
        raise ValueError(f"{name}: expected finite (min, max) with min <= max, got {value!r}")
    if (low is not None and pair[0] < low) or (high is not None and pair[1] > high):
        raise ValueError(f"{name}: expected values in [{low}, {high}], got {value!r}")
    return pair


def check_size(
    value: Any, name: str = "size", minimum: int = 1, maximum: int | None = None
) -> tuple[int, int]:
    """``(h, w)`` from one int or a pair of ints, each side in ``[minimum, maximum]``."""
    bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    what = f"an int or an (h, w) pair of ints {bounds}"
    pair = (value, value) if is_int(value) else value
    if not isinstance(pair, (tuple, list, torch.Size)) or not all(map(is_int, pair)):
        raise TypeError(f"{name}: expected {what}, got {value!r}")
    if len(pair) != 2 or not all(
        minimum <= side and (maximum is None or side <= maximum) for side in pair
    ):
        raise ValueError(f"{name}: expected {what}, got {value!r}")
    return int(pair[0]), int(pair[1])


def check_generator(value: Any, name: str = "generator") -> torch.Generator:
    """``value`` if it is a ``torch.Generator``."""
    if not isinstance(value, torch.Generator):
        raise TypeError(f"{name}: expected a torch.Generator, got {type(value).__name__}")
    return value


def _either(kinds: Sequence[str]) -> str:
    named = [f"{kind}, {kind}:N" if kind == "cuda" else kind for kind in kinds]
    return named[0] if len(named) == 1 else f"{', '.join(named[:-1])} or {named[-1]}"


def check_device(
    device: torch.device | str | int, name: str = "device", *, kinds: Sequence[str] = ()
) -> torch.device:
    """``device`` as a ``torch.device`` that exists here, or a ``ValueError`` naming ``name``.

    torch accepts ``"cuda"`` on a machine without CUDA and fails only at the first allocation,
    with an error that names neither the argument nor the way out; this checks up front.
    ``kinds``, when given, are the only device types accepted (e.g. ``("cpu", "cuda")``).
    """
    shown = repr(str(device)) if isinstance(device, torch.device) else repr(device)
    expected = _either(kinds) if kinds else "a torch device such as 'cpu', 'cuda' or 'cuda:1'"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{name}: expected {expected}, got {shown}") from None
    if kinds and resolved.type not in kinds:
        raise ValueError(f"{name}: expected {expected}, got {shown}")
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(
                f"{name}: {shown} asks for CUDA, but no CUDA device is available here "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); "
                "use 'cpu'"
            )
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"{name}: {shown} asks for CUDA device {resolved.index}, but there are "
                f"{count} (0 to {count - 1})"
            )
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}: {shown} asks for MPS, which is not available here; use 'cpu'")
    return resolved
