"""Hub format for learned generators: ``config.json`` + ``model.safetensors`` + a model card.

A learned generator subclasses :class:`PretrainedDefectGenerator`, names its ``architecture`` and
registers it with :func:`register_architecture`. ``save_pretrained(folder)`` writes

- ``config.json``: ``{"architecture": <name>, "format": "defectaug-generator", "format_version": 1,
  "defectaug_version": ..., "kwargs": <constructor arguments>}``;
- ``model.safetensors``: the ``state_dict`` (never a pickle);
- ``README.md``: a model card with YAML front matter (license, library_name: defectaug, tags,
  datasets, metrics).

``from_pretrained(name_or_path)`` rebuilds the registered class from the config and loads the
weights with strict key and shape checking. It resolves ``name_or_path`` in this order:

1. an existing local folder;
2. a card shipped with defectaug: ``pretrained_cards/<name>/`` in a source checkout, or
   ``defectaug/_pretrained_cards/<name>/`` in an installed wheel;
3. the local Hugging Face cache (names shaped ``owner/repo`` only);
4. the Hugging Face Hub (``owner/repo`` only; skipped when ``HF_HUB_OFFLINE=1``), with a short
   connection timeout (``DEFECTAUG_HUB_TIMEOUT`` seconds, default 5) so a machine without network
   fails fast with a message listing everything that was tried.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

import torch
from huggingface_hub import ModelCard, ModelCardData
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

import defectaug
from defectaug.generators.base import DefectGenerator, check_device

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FORMAT_NAME = "defectaug-generator"
FORMAT_VERSION = 1
#: Keys the model card's YAML front matter must carry.
REQUIRED_CARD_FIELDS = ("license", "library_name", "tags", "datasets", "metrics")

# Modules defining the architectures defectaug ships, imported on first need so that loading a
# config never requires the caller to import them first (``import defectaug`` is lazy, so not
# even the package import registers them).
_BUILTIN_ARCHITECTURE_MODULES = (
    "defectaug.generators.dcdgan",
    "defectaug.generators.defectgan",
    "defectaug.generators.dfmgan",
    "defectaug.fitting",
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# A shipped card's name is one folder name: no separator, so ``root / name`` stays inside ``root``.
_CARD_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*$")
#: Elements a model may hold outside its saved weights (non-persistent buffers), checked before it
#: is built for real: the weights file bounds everything else.
MAX_UNSAVED_ELEMENTS = 2**26
_ARCHITECTURES: dict[str, type[PretrainedDefectGenerator]] = {}


class CardConfig:
    """Base of the frozen dataclass configs of learned cards: their ``config.json`` round trip.

    A subclass is a ``@dataclass(frozen=True)`` with a ``defect_types`` tuple field, plus
    ``channels`` and ``layer_size`` (what :meth:`PretrainedDefectGenerator.adopt_config` reads).
    """

    defect_types: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)  # type: ignore[call-overload]
        values["defect_types"] = list(self.defect_types)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Any:
        unknown = set(values) - set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
        if unknown:
            name = cls.__name__.removesuffix("Config")
            raise ValueError(f"config: unknown {name} fields {sorted(unknown)}")
        return cls(**values)


class PretrainedDefectGenerator(DefectGenerator):
    """Base of learned generators saved and loaded in the Hub format.

    Subclasses set ``architecture`` (the name written to ``config.json``), implement
    ``get_config()`` returning the JSON-serialisable keyword arguments that rebuild the module
    (``cls(**get_config())``), and are registered with :func:`register_architecture`. Those
    built from one :class:`CardConfig` set ``config_class`` instead and call
    :meth:`adopt_config` first in ``__init__``: ``get_config`` / ``from_config`` then round-trip
    it. ``card_defaults`` seeds the model card's front matter (license, datasets, metrics, tags).
    """

    architecture: ClassVar[str] = ""
    card_defaults: ClassVar[Mapping[str, Any]] = {}
    config_class: ClassVar[type[CardConfig] | None] = None

    def adopt_config(self, config: CardConfig | Mapping[str, Any]) -> Any:
        """``config`` (or its dict) as ``config_class``, kept as ``self.config``; sets
        ``defect_types``, ``channels`` and the square ``layer_size`` from it."""
        if self.config_class is None:
            raise TypeError(f"{type(self).__name__} has no config_class")
        if not isinstance(config, self.config_class):
            config = self.config_class.from_dict(config)
        self.config = config
        self.defect_types = tuple(config.defect_types)
        self.channels = config.channels  # type: ignore[attr-defined]
        self.layer_size = (config.layer_size, config.layer_size)  # type: ignore[attr-defined]
        return config

    def _place_on(self, device: torch.device) -> None:
        """Move the weights to ``device`` only when they live elsewhere: ``.to()`` walks every
        submodule, a good part of a small batch's time on the reservoir's path."""
        weights = next(self.parameters(), None)
        if weights is not None and weights.device != torch.device(device):
            self.to(device)

    @contextlib.contextmanager
    def _inference(self) -> Any:
        """Eval mode for one pass, the caller's mode restored after; no switch when already in
        eval mode (loaded cards are), since a switch also walks every submodule."""
        was_training = self.training
        if was_training:
            self.eval()
        try:
            yield
        finally:
            if was_training:
                self.train()

    def get_config(self) -> dict[str, Any]:
        """Constructor keyword arguments (JSON types only) that rebuild this generator's layout."""
        if self.config_class is not None:
            return self.config.to_dict()
        raise NotImplementedError(f"{type(self).__name__}.get_config is not implemented")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PretrainedDefectGenerator:
        """Build an untrained instance from ``get_config()`` output."""
        if cls.config_class is not None:
            return cls(cls.config_class.from_dict(config))
        return cls(**config)

    # ------------------------------------------------------------------ saving
    def model_card(
        self,
        *,
        license: str | None = None,
        datasets: Sequence[str] | None = None,
        metrics: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        description: str | None = None,
        results: Mapping[str, float] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ModelCard:
        """A model card: front matter from the arguments (else ``card_defaults``) and a short body.

        ``results`` (metric name -> value) is written as a table in the body and as
        ``defectaug_results`` in the front matter; ``extra`` adds further front matter keys.
        """
        defaults = dict(self.card_defaults)
        tag_list = ["defectaug", "defect-synthesis", "image-generation", self.architecture]
        tag_list += [
            t for t in (tags if tags is not None else defaults.get("tags", [])) if t not in tag_list
        ]
        fields: dict[str, Any] = {
            "license": license or defaults.get("license", "apache-2.0"),
            "library_name": "defectaug",
            "tags": tag_list,
            "datasets": list(datasets if datasets is not None else defaults.get("datasets", [])),
            "metrics": list(metrics if metrics is not None else defaults.get("metrics", [])),
        }
        if results:
            fields["defectaug_results"] = {str(k): float(v) for k, v in results.items()}
        fields.update(extra or {})
        data = ModelCardData(**fields)
        lines = [
            f"# {self.architecture} defect generator",
            "",
            description or defaults.get("description", "A learned defect generator for defectaug."),
            "",
            f"Defect types: {', '.join(self.defect_types)}. Channels: {self.channels}. "
            f"Native layer size: {tuple(self.layer_size)}.",
            "",
            "```python",
            "import defectaug",
            'generator = defectaug.load_generator("<this folder or hub id>")',
            "layers = generator.sample(8, generator=0)  # DefectLayer: content + alpha",
            "```",
        ]
        if results:
            lines += ["", "| metric | value |", "|---|---|"]
            lines += [
                f"| {name} | {value:.6g} |" for name, value in fields["defectaug_results"].items()
            ]
        return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")

    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        *,
        card: ModelCard | None = None,
        **card_fields: Any,
    ) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``README.md`` into ``save_directory``.

        ``card`` replaces the generated model card (its front matter must still hold
        ``REQUIRED_CARD_FIELDS``); otherwise ``card_fields`` go to :meth:`model_card`.
        Returns the folder.
        """
        if not self.architecture or _ARCHITECTURES.get(self.architecture) is not type(self):
            raise ValueError(
                f"architecture: {type(self).__name__} must set a class attribute 'architecture' "
                "and be "
                "registered with defectaug.generators.hub.register_architecture before saving, so "
                "from_pretrained can rebuild it"
            )
        config = self.get_config()
        try:
            config_text = json.dumps(
                {
                    "architecture": self.architecture,
                    "format": FORMAT_NAME,
                    "format_version": FORMAT_VERSION,
                    "defectaug_version": defectaug.__version__,
                    "kwargs": config,
                },
                indent=2,
                sort_keys=True,
            )
        except TypeError as error:
            raise TypeError(
                f"{type(self).__name__}.get_config must return JSON types only: {error}"
            ) from None
        card = card if card is not None else self.model_card(**card_fields)
        missing = [key for key in REQUIRED_CARD_FIELDS if key not in card.data.to_dict()]
        if missing:
            raise ValueError(f"card: the model card's front matter lacks {', '.join(missing)}")

        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        # Clone so that tied or viewed tensors become independent storage, which safetensors needs.
        tensors = {
            name: t.detach().to("cpu").contiguous().clone() for name, t in self.state_dict().items()
        }
        save_file(
            tensors,
            folder / WEIGHTS_NAME,
            metadata={"format": "pt", "architecture": self.architecture},
        )
        (folder / CONFIG_NAME).write_text(config_text + "\n", encoding="utf-8")
        card.save(folder / CARD_NAME)
        return folder

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """Save this generator and upload it to the Hub as ``repo_id``: see :func:`push_to_hub`."""
        return push_to_hub(self, repo_id, **kwargs)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        device: torch.device | str | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        **overrides: Any,
    ) -> PretrainedDefectGenerator:
        """Load a generator from a folder, a shipped card, the HF cache or the Hub (in that order).

        ``overrides`` replace constructor arguments from ``config.json`` (an override that changes
        the weights' shapes fails the strict check). The model is returned in eval mode on
        ``device``.
        """
        folder = resolve_pretrained(
            name_or_path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
        )
        return load_pretrained_folder(folder, expected_class=cls, device=device, **overrides)


def lift_alpha_floor(alpha: torch.Tensor, alpha_floor: float) -> torch.Tensor:
    """``alpha`` with values up to ``alpha_floor`` set to 0 and the rest stretched back to [0, 1].

    A sigmoid alpha never reaches exactly 0; composited, its faint haze would draw the layer's
    square outline.
    """
    if not 0.0 <= float(alpha_floor) < 1.0:
        raise ValueError(f"alpha_floor: expected a value in [0, 1), got {alpha_floor!r}")
    return ((alpha - alpha_floor) / (1.0 - alpha_floor)).clamp(0.0, 1.0)


def register_architecture(cls: type[PretrainedDefectGenerator]) -> type[PretrainedDefectGenerator]:
    """Class decorator: make ``cls.architecture`` loadable from ``config.json``."""
    if not (isinstance(cls, type) and issubclass(cls, PretrainedDefectGenerator)):
        raise TypeError(f"cls: expected a PretrainedDefectGenerator subclass, got {cls!r}")
    name = cls.architecture
    if not isinstance(name, str) or not name:
        raise ValueError(f"cls: {cls.__name__} must set a non-empty class attribute 'architecture'")
    known = _ARCHITECTURES.get(name)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise ValueError(
            f"architecture: {name!r} is already registered to "
            f"{known.__module__}.{known.__qualname__}"
        )
    _ARCHITECTURES[name] = cls
    return cls


def list_architectures() -> list[str]:
    """Registered architecture names (built-in ones are imported first)."""
    _import_builtin_architectures()
    return sorted(_ARCHITECTURES)


def get_architecture(name: str) -> type[PretrainedDefectGenerator]:
    """The class registered for ``name``, or a ``KeyError`` listing the registered ones."""
    if name not in _ARCHITECTURES:
        _import_builtin_architectures()
    try:
        return _ARCHITECTURES[name]
    except KeyError:
        raise KeyError(
            f"architecture: {name!r} is not registered; registered: "
            f"{', '.join(sorted(_ARCHITECTURES)) or '(none)'}. Import the module that defines it "
            "(its class must be decorated with defectaug.generators.hub.register_architecture)"
        ) from None


def _import_builtin_architectures() -> None:
    for module in _BUILTIN_ARCHITECTURE_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise


# ---------------------------------------------------------------------- resolution
def shipped_card_roots() -> list[Path]:
    """Folders holding the cards shipped with defectaug (wheel install first, then checkout)."""
    package = Path(defectaug.__file__).resolve().parent
    roots = [package / "_pretrained_cards", package.parent / "pretrained_cards"]
    return [root for root in roots if root.is_dir()]


def list_pretrained() -> list[str]:
    """Names of the cards shipped with defectaug (folders holding a ``config.json``)."""
    names = {
        card.name
        for root in shipped_card_roots()
        for card in root.iterdir()
        if (card / CONFIG_NAME).is_file()
    }
    return sorted(names)


def is_hub_id(name: str) -> bool:
    """Whether ``name`` is shaped like a Hub model id ``owner/repo``."""
    return bool(_HUB_ID.match(name)) and ".." not in name


def is_card_name(name: str) -> bool:
    """Whether ``name`` can name a shipped card: one folder name, never a path that climbs out."""
    return bool(_CARD_NAME.match(name)) and ".." not in name


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) set to a true value."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_timeout() -> float:
    raw = os.environ.get("DEFECTAUG_HUB_TIMEOUT", "5")
    try:
        return float(raw)
    except ValueError:
        raise ValueError(
            f"DEFECTAUG_HUB_TIMEOUT: expected a number of seconds, got {raw!r}"
        ) from None


def resolve_pretrained(
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
) -> Path:
    """The local folder holding ``name_or_path``'s files, searched in the documented order."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path: expected a str or path, got {type(name_or_path).__name__}")
    name = os.fspath(name_or_path)
    tried: list[str] = []

    local = Path(name).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ValueError(
                f"name_or_path: {name!r} is a file; expected a folder holding {CONFIG_NAME} "
                f"and {WEIGHTS_NAME}"
            )
        return local
    tried.append(f"local folder {str(local.resolve())!r}: does not exist")

    roots = shipped_card_roots()
    if is_card_name(name):
        for root in roots:
            card = root / name
            if (card / CONFIG_NAME).is_file():
                return card
        tried.append(
            f"shipped cards in {', '.join(str(r) for r in roots) or '(no card folder installed)'}: "
            f"no card {name!r} (shipped: {', '.join(list_pretrained()) or 'none'})"
        )
    else:
        # A path such as "../../x" that is not a folder here must not be looked up relative to
        # the card folders: it would reach whatever lies outside them.
        tried.append(
            f"shipped cards: skipped, {name!r} is not a card name (one folder name such as "
            f"{', '.join(list_pretrained()[:2]) or 'dcdgan-magnetic-tile-64'})"
        )

    if not is_hub_id(name):
        raise FileNotFoundError(_not_found_message(name, tried, hub_shaped=False))

    cached = _from_hf_cache(name, revision, cache_dir)
    if cached is not None:
        return cached
    tried.append(f"Hugging Face cache {cache_dir or _hf_cache_dir()}: {name!r} not cached")

    if local_files_only or hub_offline():
        reason = "local_files_only=True" if local_files_only else "HF_HUB_OFFLINE is set"
        tried.append(f"Hugging Face Hub: not contacted ({reason})")
        raise FileNotFoundError(_not_found_message(name, tried, hub_shaped=True))
    try:
        return _from_hub(name, revision, cache_dir)
    except Exception as error:  # network, auth, missing repo: all end the search the same way
        tried.append(f"Hugging Face Hub: {type(error).__name__}: {_first_line(error)}")
        raise FileNotFoundError(_not_found_message(name, tried, hub_shaped=True)) from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else ""


def _hf_cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _not_found_message(name: str, tried: list[str], *, hub_shaped: bool) -> str:
    lines = [f"name_or_path: could not find pretrained generator {name!r}. Looked in:"]
    lines += [f"  - {entry}" for entry in tried]
    if not hub_shaped:
        lines.append(
            "  - Hugging Face cache / Hub: skipped, the name is not shaped like 'owner/repo'"
        )
    lines.append(
        f"Provide it as a local folder holding {CONFIG_NAME} + {WEIGHTS_NAME} (+ {CARD_NAME}), "
        "as a card folder under pretrained_cards/, or as a Hub id 'owner/repo' already in the "
        "Hugging Face cache "
        "(download it on a connected machine with `hf download owner/repo` and copy "
        "~/.cache/huggingface/hub, or point HF_HUB_CACHE at it)."
    )
    return "\n".join(lines)


def _from_hf_cache(repo_id: str, revision: str | None, cache_dir: Any) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = {
        filename: try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
        for filename in (CONFIG_NAME, WEIGHTS_NAME)
    }
    paths = [Path(p) for p in found.values() if isinstance(p, str)]
    if len(paths) != 2 or paths[0].parent != paths[1].parent:
        return None
    return paths[0].parent


def _from_hub(repo_id: str, revision: str | None, cache_dir: Any) -> Path:
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    timeout = _hub_timeout()
    # One short metadata call first: without network it fails within `timeout`, and with network
    # it pins the commit so the files below come from one snapshot.
    commit = HfApi().model_info(repo_id, revision=revision, timeout=timeout).sha
    config = hf_hub_download(
        repo_id, CONFIG_NAME, revision=commit, cache_dir=cache_dir, etag_timeout=timeout
    )
    hf_hub_download(
        repo_id, WEIGHTS_NAME, revision=commit, cache_dir=cache_dir, etag_timeout=timeout
    )
    with contextlib.suppress(EntryNotFoundError):
        hf_hub_download(
            repo_id, CARD_NAME, revision=commit, cache_dir=cache_dir, etag_timeout=timeout
        )
    return Path(config).parent


# ---------------------------------------------------------------------- reading a folder
def read_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and validate ``folder/config.json``."""
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"name_or_path: {str(folder)!r} has no {CONFIG_NAME}; a pretrained generator folder "
            "holds "
            f"{CONFIG_NAME}, {WEIGHTS_NAME} and {CARD_NAME}"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(config).__name__}")
    architecture = config.get("architecture")
    if not isinstance(architecture, str) or not architecture:
        raise ValueError(f"{path}: missing the 'architecture' entry naming the generator class")
    if config.get("format", FORMAT_NAME) != FORMAT_NAME:
        raise ValueError(f"{path}: format {config.get('format')!r} is not {FORMAT_NAME!r}")
    version = config.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {version!r} is newer than this defectaug reads "
            f"({FORMAT_VERSION}); "
            "upgrade defectaug"
        )
    kwargs = config.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ValueError(f"{path}: 'kwargs' must be a JSON object of constructor arguments")
    return config


def _check_weights_file(path: Path) -> None:
    if not path.is_file():
        pickles = [p.name for p in path.parent.glob("*.bin")] + [
            p.name for p in path.parent.glob("*.pt*")
        ]
        hint = f" ({', '.join(pickles)} found: pickle files are never loaded)" if pickles else ""
        raise FileNotFoundError(f"weights: {str(path)!r} does not exist{hint}")


def _unreadable(path: Path, error: BaseException) -> ValueError:
    return ValueError(
        f"weights: {str(path)!r} is not a readable safetensors file (corrupt or "
        f"truncated?): {error}"
    )


def load_weights(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file to CPU tensors, with a clear error for a damaged file."""
    path = Path(path)
    _check_weights_file(path)
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise _unreadable(path, error) from None


def read_weight_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a ``.safetensors`` header, without reading any tensor data."""
    path = Path(path)
    _check_weights_file(path)
    try:
        with safe_open(path, framework="pt", device="cpu") as handle:
            names = list(handle.keys())  # a safe_open handle is not iterable like a dict
            return {name: tuple(handle.get_slice(name).get_shape()) for name in names}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise _unreadable(path, error) from None


def check_state_dict(
    module: torch.nn.Module,
    weights: Mapping[str, torch.Tensor | Sequence[int]],
    source: str,
    *,
    hint: str = "",
) -> None:
    """Raise a ``ValueError`` naming every missing, unexpected or mis-shaped key.

    ``weights`` maps names to tensors or to shapes (as :func:`read_weight_shapes` gives them);
    ``hint`` is appended to the message (e.g. which config entries set the model's shapes).
    """
    expected = {key: tuple(value.shape) for key, value in module.state_dict().items()}
    given = {key: tuple(getattr(value, "shape", value)) for key, value in weights.items()}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    mismatched = [
        f"{key}: weights {given[key]} vs model {expected[key]}"
        for key in sorted(set(expected) & set(given))
        if given[key] != expected[key]
    ]
    if not (missing or unexpected or mismatched):
        return

    def listing(items: list[str]) -> str:
        shown = ", ".join(items[:8])
        return shown + (f", ... ({len(items)} in all)" if len(items) > 8 else "")

    problems = []
    if missing:
        problems.append(f"missing keys: {listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {listing(mismatched)}")
    raise ValueError(
        f"weights: {source} does not match the model built from {CONFIG_NAME} "
        f"({type(module).__name__}); " + "; ".join(problems) + hint
    )


def load_pretrained_folder(
    folder: str | os.PathLike[str],
    *,
    expected_class: type[PretrainedDefectGenerator] = PretrainedDefectGenerator,
    device: torch.device | str | None = None,
    **overrides: Any,
) -> PretrainedDefectGenerator:
    """Build the generator that ``folder/config.json`` describes, with its safetensors weights."""
    folder = Path(folder)
    config = read_config(folder)
    cls = get_architecture(config["architecture"])
    if not issubclass(cls, expected_class):
        raise TypeError(
            f"name_or_path: {str(folder)!r} holds a {config['architecture']!r} ({cls.__name__}), "
            f"not a {expected_class.__name__}"
        )
    if device is not None:
        device = check_device(device)
    kwargs = {**config.get("kwargs", {}), **overrides}
    weights_path = folder / WEIGHTS_NAME
    source = repr(str(weights_path))
    hint = f"; the model's shapes come from the 'kwargs' of {folder / CONFIG_NAME}" + (
        f" and the overrides {', '.join(sorted(overrides))}" if overrides else ""
    )
    # The config is checked against the weights' header before anything real is built: a config
    # asking for e.g. width 20000 would otherwise allocate gigabytes before a 2 MB weights file is
    # read. On the meta device a module has shapes but no storage, so this costs next to nothing.
    shapes = read_weight_shapes(weights_path)
    skeleton = _build_on_meta(cls, kwargs, folder)
    if skeleton is not None:
        check_state_dict(skeleton, shapes, source, hint=hint)
        saved = set(skeleton.state_dict())
        unsaved = sum(
            tensor.numel()
            for name, tensor in [*skeleton.named_parameters(), *skeleton.named_buffers()]
            if name not in saved
        )
        if unsaved > MAX_UNSAVED_ELEMENTS:
            raise ValueError(
                f"{folder / CONFIG_NAME}: its kwargs ask for {unsaved:,} elements of buffers that "
                f"are not in the weights (at most {MAX_UNSAVED_ELEMENTS:,} are accepted)"
            )
    model = _build(cls, kwargs, folder)
    weights = load_weights(weights_path)
    check_state_dict(model, weights, source, hint=hint)
    model.load_state_dict(weights, strict=True)
    model.eval()
    if device is not None:
        model.to(device)
    return model


def _build(
    cls: type[PretrainedDefectGenerator], kwargs: dict[str, Any], folder: Path
) -> PretrainedDefectGenerator:
    try:
        return cls.from_config(kwargs)
    except TypeError as error:
        raise ValueError(
            f"{folder / CONFIG_NAME}: its kwargs do not fit {cls.__name__}: {error}"
        ) from None


def _build_on_meta(
    cls: type[PretrainedDefectGenerator], kwargs: dict[str, Any], folder: Path
) -> PretrainedDefectGenerator | None:
    """The model with shapes but no storage, or ``None`` for a class whose constructor cannot run
    on the meta device (one that reads tensor values); its shapes are then checked after the real
    build, as before."""
    try:
        with torch.device("meta"):
            return _build(cls, kwargs, folder)
    except (NotImplementedError, RuntimeError):
        return None


# ---------------------------------------------------------------------- publishing
#: Front-matter keys :func:`push_to_hub` may set on a card folder's README (``card_fields``).
CARD_FIELD_KEYS = ("license", "datasets", "metrics", "tags", "base_model", "pipeline_tag")


def stage_for_hub(
    source: str | os.PathLike[str] | PretrainedDefectGenerator,
    folder: str | os.PathLike[str],
    **card_fields: Any,
) -> Path:
    """Write into ``folder`` exactly what :func:`push_to_hub` uploads, and check it loads.

    ``source`` is a generator (saved with ``save_pretrained(folder, **card_fields)``), a card
    folder, or the name of a card shipped with defectaug. A folder's files are copied (hidden
    files and ``*.partial`` left out) and its README's front matter is completed:
    ``library_name: defectaug``, the ``defectaug`` tag, and any ``card_fields``
    (:data:`CARD_FIELD_KEYS`). The staged folder must hold ``config.json``,
    ``model.safetensors`` and a README whose front matter has :data:`REQUIRED_CARD_FIELDS`,
    and must load with :func:`load_pretrained_folder`; otherwise ``ValueError`` names the problem.
    """
    target = Path(folder)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ValueError(f"folder: {str(target)!r} must be a new or empty folder to stage into")
    target.mkdir(parents=True, exist_ok=True)
    if isinstance(source, PretrainedDefectGenerator):
        source.save_pretrained(target, **card_fields)
    elif isinstance(source, (str, os.PathLike)):
        origin = Path(source)
        if not origin.is_dir():
            shipped = [root / str(source) for root in shipped_card_roots()]
            found = [p for p in shipped if is_card_name(str(source)) and p.is_dir()]
            if not found:
                raise FileNotFoundError(
                    f"source: {str(source)!r} is neither a card folder nor a shipped card "
                    f"({', '.join(list_pretrained()) or 'none shipped'})"
                )
            origin = found[0]
        unknown = sorted(set(card_fields) - set(CARD_FIELD_KEYS))
        if unknown:
            raise TypeError(
                f"card_fields: {', '.join(unknown)} cannot be set on a card folder; accepted: "
                f"{', '.join(CARD_FIELD_KEYS)}"
            )
        # copytree follows links: one in a downloaded card folder could pull a file from
        # anywhere (a token, a key) into the upload.
        links = [
            path.relative_to(origin).as_posix()
            for path in origin.rglob("*")
            if path.is_symlink()
            and not any(part.startswith(".") for part in path.relative_to(origin).parts)
        ]
        if links:
            raise ValueError(
                f"source: {str(origin)!r} holds symbolic links ({', '.join(sorted(links)[:5])}); "
                "a card folder is uploaded as plain files, so links are refused"
            )
        shutil.copytree(
            origin,
            target,
            dirs_exist_ok=True,
            ignore=lambda _, names: [
                n for n in names if n.startswith(".") or n.endswith(".partial")
            ],
        )
        _complete_card(target / CARD_NAME, card_fields)
    else:
        raise TypeError(
            "source: expected a PretrainedDefectGenerator, a card folder or a shipped card name, "
            f"got {type(source).__name__}"
        )
    _check_staged(target)
    return target


def _complete_card(path: Path, card_fields: Mapping[str, Any]) -> None:
    if not path.is_file():
        raise ValueError(f"source: the card folder has no {CARD_NAME} (the model card)")
    card = ModelCard.load(path)
    data = card.data.to_dict()
    data["library_name"] = "defectaug"
    data.update({key: value for key, value in card_fields.items() if key != "tags"})
    tags = list(data.get("tags") or [])
    extra = card_fields.get("tags", [])
    # A lone string is one tag, not a sequence of one-letter tags.
    extra = [extra] if isinstance(extra, str) else list(extra)
    for tag in ["defectaug", *extra]:
        if tag not in tags:
            tags.append(tag)
    data["tags"] = tags
    card.data = ModelCardData(**data)
    card.save(path)


def _check_staged(folder: Path) -> None:
    for name in (CONFIG_NAME, WEIGHTS_NAME, CARD_NAME):
        if not (folder / name).is_file():
            raise ValueError(f"source: the staged folder has no {name}")
    metadata = ModelCard.load(folder / CARD_NAME).data.to_dict()
    missing = [key for key in REQUIRED_CARD_FIELDS if key not in metadata]
    if missing:
        raise ValueError(
            f"source: the model card's front matter lacks {', '.join(missing)}; pass them as "
            "card_fields (e.g. license='apache-2.0', datasets=[...], metrics=[])"
        )
    if metadata.get("library_name") != "defectaug":
        raise ValueError("source: the model card's library_name must be 'defectaug'")
    # What is pushed must load: the same strict checks from_pretrained runs on a download.
    load_pretrained_folder(folder)


def push_to_hub(
    source: str | os.PathLike[str] | PretrainedDefectGenerator,
    repo_id: str,
    *,
    dry_run_dir: str | os.PathLike[str] | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    **card_fields: Any,
) -> Any:
    """Upload a generator card (``README.md``, ``config.json``, ``model.safetensors``, and a
    card folder's other files) to the Hugging Face Hub model repository ``repo_id``.

    The folder is staged and checked by :func:`stage_for_hub` first (it loads as
    ``from_pretrained`` would load the download). With ``dry_run_dir`` the staged folder is left
    there and nothing touches the network: the return value is its path. Otherwise the repository
    is created if needed (``huggingface_hub.create_repo(exist_ok=True)``), the staged folder is
    uploaded in one commit (``huggingface_hub.upload_folder``) and its ``CommitInfo`` returned.
    ``token`` and ``private`` are passed on; without a token huggingface_hub uses the login of
    ``hf auth login`` or ``HF_TOKEN``.
    """
    if not isinstance(repo_id, str) or not is_hub_id(repo_id):
        raise ValueError(f"repo_id: expected a Hub model id 'owner/name', got {repo_id!r}")
    if dry_run_dir is not None:
        return stage_for_hub(source, dry_run_dir, **card_fields)
    import huggingface_hub

    with tempfile.TemporaryDirectory(prefix="defectaug-push-") as staging:
        folder = stage_for_hub(source, Path(staging) / "card", **card_fields)
        huggingface_hub.create_repo(
            repo_id, token=token, private=private, repo_type="model", exist_ok=True
        )
        return huggingface_hub.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            token=token,
            revision=revision,
            commit_message=commit_message
            or f"Upload defectaug generator ({read_config(folder)['architecture']})",
            create_pr=create_pr,
        )
