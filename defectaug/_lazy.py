"""Imports deferred to first use: PEP 562 lazy exports of a package's public names, and the
compiled kernel modules (numba takes half a second or more to import, scipy more: only code that
renders with them pays it)."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any


def lazy_exports(
    package: str, table: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package``, whose name ``n`` lives in
    module ``table[n]``; ``namespace`` is the package's ``globals()``."""

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        # Cached in the package namespace: later lookups are plain attribute reads.
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *table})

    return __getattr__, __dir__


# Cached: an import statement per call costs a microsecond, several per rendered sample.
@functools.cache
def compiled_kernels() -> ModuleType:
    """:mod:`defectaug._kernels` (numba), imported on first use."""
    return importlib.import_module("defectaug._kernels")


@functools.cache
def poisson_kernels() -> ModuleType:
    """:mod:`defectaug._poisson_kernels` (numba and scipy), imported on first use."""
    return importlib.import_module("defectaug._poisson_kernels")


@functools.cache
def painting_kernels() -> ModuleType:
    """:mod:`defectaug.generators._paint_kernels` (numba), imported on first use."""
    return importlib.import_module("defectaug.generators._paint_kernels")
