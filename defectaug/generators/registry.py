"""timm-style access to generators: ``list_generators``, ``load_generator``, ``register_generator``.

``load_generator(name_or_path_or_hub_id, device=None, **overrides)`` resolves, in order:

1. a registered name (``list_generators()``): ``"procedural"`` needs no files, ``"bank"`` needs
   ``root=`` (a dataset folder); ``overrides`` are the factory's keyword arguments;
2. an existing local folder: a pretrained generator (``config.json`` + ``model.safetensors``) or,
   without ``config.json``, a defect dataset (MVTec-AD layout or ``manifest.csv``) read into a
   :class:`~defectaug.generators.bank.DefectBank`;
3. a card shipped with defectaug (``pretrained_cards/<name>/``), the local Hugging Face cache, then
   the Hub (``owner/repo`` ids only), as described in :mod:`defectaug.generators.hub`.

Names of the form ``"procedural:<type>"`` are not provided: choose types with ``defect_type`` at
sampling time (or ``defect_types=`` of the dataset / transform).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from defectaug.datasets import MANIFEST, MASK_DIR
from defectaug.generators.bank import DefectBank
from defectaug.generators.base import DefectGenerator, check_device
from defectaug.generators.hub import (
    CONFIG_NAME,
    is_hub_id,
    list_pretrained,
    load_pretrained_folder,
    resolve_pretrained,
)
from defectaug.generators.procedural import ProceduralGenerator

GeneratorFactory = Callable[..., DefectGenerator]
_FACTORIES: dict[str, GeneratorFactory] = {}


def register_generator(
    name: str, factory: GeneratorFactory | None = None, *, overwrite: bool = False
) -> Any:
    """Register ``factory`` (a ``DefectGenerator`` subclass or a callable making one) as ``name``.

    Usable as a decorator: ``@register_generator("mine")``. Registering an existing name raises
    unless ``overwrite=True``. Returns ``factory``.
    """
    if not isinstance(name, str) or not name or name != name.strip() or "/" in name:
        raise ValueError(
            f"name: expected a non-empty name without '/' or outer spaces, got {name!r}"
        )
    if factory is None:
        return lambda decorated: register_generator(name, decorated, overwrite=overwrite)
    if not callable(factory):
        raise TypeError(
            f"factory: expected a DefectGenerator subclass or a callable, got {factory!r}"
        )
    if name in _FACTORIES and not overwrite and _FACTORIES[name] is not factory:
        raise ValueError(f"name: {name!r} is already registered; pass overwrite=True to replace it")
    _FACTORIES[name] = factory
    return factory


def list_generators() -> list[str]:
    """Registered generator names, then the names of the pretrained cards shipped with defectaug."""
    shipped = [name for name in list_pretrained() if name not in _FACTORIES]
    return sorted(_FACTORIES) + shipped


def load_generator(
    name_or_path_or_hub_id: str | os.PathLike[str],
    device: torch.device | str | None = None,
    **overrides: Any,
) -> DefectGenerator:
    """A ready generator from a registered name, a local folder, a shipped card or a Hub id.

    ``overrides`` go to the factory (registered names), to ``DefectBank.from_folder`` (dataset
    folders) or replace ``config.json`` entries (pretrained generators). The generator is moved to
    ``device`` when given, so ``sample`` defaults to it; a device that does not exist here (e.g.
    ``"cuda"`` without CUDA) is a ``ValueError`` naming ``device``.

    An existing folder is always taken as given (any path works); a name that is not a folder is
    looked up among the registered generators and the shipped cards only when it is one folder
    name, so ``"../../x"`` never reaches outside the card folders.
    """
    key = name_or_path_or_hub_id
    if not isinstance(key, (str, os.PathLike)):
        raise TypeError(
            "name_or_path_or_hub_id: expected a generator name, a folder or a Hub id, got "
            f"{type(key).__name__}"
        )
    name = os.fspath(key)
    if device is not None:
        # Checked before anything is built or read, so a bad device fails in a moment.
        device = check_device(device)
    if isinstance(key, str) and name in _FACTORIES:
        generator = _build(name, _FACTORIES[name], overrides)
    elif Path(name).expanduser().is_dir() and not (Path(name).expanduser() / CONFIG_NAME).is_file():
        generator = _bank_from_folder(Path(name).expanduser(), overrides)
    else:
        try:
            folder = resolve_pretrained(name)
        except FileNotFoundError as error:
            if is_hub_id(name) or os.sep in name or Path(name).suffix:
                raise
            raise ValueError(
                f"name_or_path_or_hub_id: unknown generator {name!r}; known: "
                f"{', '.join(list_generators())}. A folder or an 'owner/repo' Hub id also works."
            ) from error
        generator = load_pretrained_folder(folder, **overrides)
    if device is not None:
        generator = generator.to(device)
    return generator


def _build(name: str, factory: GeneratorFactory, overrides: dict[str, Any]) -> DefectGenerator:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        try:
            signature.bind(**overrides)
        except TypeError as error:
            raise TypeError(
                f"load_generator({name!r}): {error}; the factory's signature is {name}{signature}"
            ) from None
    generator = factory(**overrides)
    if not isinstance(generator, DefectGenerator):
        raise TypeError(
            f"load_generator({name!r}): the registered factory returned "
            f"{type(generator).__name__}, "
            "not a DefectGenerator"
        )
    return generator


def _bank_from_folder(folder: Path, overrides: dict[str, Any]) -> DefectBank:
    has_layout = (folder / MANIFEST).is_file() or (folder / MASK_DIR).is_dir()
    if not has_layout:
        raise FileNotFoundError(
            f"name_or_path_or_hub_id: folder {str(folder)!r} holds neither a pretrained generator "
            f"({CONFIG_NAME} + model.safetensors) nor a defect dataset ({MANIFEST}, or "
            f"{MASK_DIR}/ next to <split>/<type>/ image folders)"
        )
    return DefectBank.from_folder(folder, **overrides)


def _bank_factory(
    root: str | os.PathLike[str],
    split: str | None = None,
    types: str | list[str] | None = None,
    **options: Any,
) -> DefectBank:
    return DefectBank.from_folder(root, split=split, types=types, **options)


register_generator("procedural", ProceduralGenerator)
register_generator("bank", _bank_factory)
