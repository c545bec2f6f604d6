"""Old positional calls of the entry points, kept working for a while with a ``FutureWarning``.

The entry points take ``(data, defect_types, generator)`` positionally and everything else by
keyword (see :mod:`defectaug.labels` for the rest of the convention). Before that,
``DefectInject`` took ``(defect_types, p, generator, blend)`` and ``SyntheticDefectDataset``
``(backgrounds, generator, defect_types, length, seed, blend)``. :func:`legacy_positional` wraps
such an ``__init__``: when a call is recognised as the old order, its positionals are passed on
by name, after a ``FutureWarning`` that shows the new form.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

Function = TypeVar("Function", bound=Callable[..., Any])


def legacy_positional(
    entry: str,
    positional: Sequence[str],
    legacy_order: Callable[[tuple[Any, ...]], Sequence[str] | None],
) -> Callable[[Function], Function]:
    """Decorate an ``__init__`` whose positional parameters after ``self`` are ``positional``.

    ``legacy_order(args)`` (``args`` without ``self``) returns the parameter names of the old
    order when the call uses it, else ``None`` (the call then goes through untouched, so Python
    itself refuses extra positionals). The signature seen by ``help()`` / ``inspect`` stays the
    wrapped function's.
    """

    def decorate(function: Function) -> Function:
        @functools.wraps(function)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            names = legacy_order(args)
            if names is None:
                return function(self, *args, **kwargs)
            if len(args) > len(names):
                raise TypeError(
                    f"{entry}() takes at most {len(names)} positional arguments in the old order "
                    f"({', '.join(names)}), got {len(args)}"
                )
            moved = dict(zip(names, args, strict=False))
            twice = sorted(set(moved) & set(kwargs))
            if twice:
                raise TypeError(f"{entry}() got multiple values for argument(s) {twice}")
            keep = [name for name in positional if name in moved]
            keywords = [f"{name}=..." for name in names if name in moved and name not in keep]
            new_form = f"{entry}({', '.join([*keep, *keywords])})"
            old_form = f"{entry}({', '.join(names[: len(args)])})"
            warnings.warn(
                f"{entry}: the positional order {old_form} is deprecated and will be removed; "
                f"write {new_form} (after the data argument, only defect_types and generator "
                "are positional)",
                FutureWarning,
                stacklevel=2,
            )
            return function(self, **moved, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
