"""Registry: list_generators / load_generator / register_generator and their error messages."""

from __future__ import annotations

import warnings

import pytest
import torch
from test_datasets import write_manifest, write_mvtec
from test_registry_hub import TinyTestGenerator, _trained

import defectaug.generators.registry as registry
from defectaug.generators import (
    DefectBank,
    DefectGenerator,
    ProceduralGenerator,
    hub,
    list_generators,
    load_generator,
    register_generator,
)


@pytest.fixture
def clean_registry(monkeypatch):
    """Registrations made by a test vanish after it."""
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))


def test_builtin_names():
    names = list_generators()
    # Registered names first, sorted, then the shipped cards (other generators may register too).
    registered = names[: len(registry._FACTORIES)]
    assert registered == sorted(registry._FACTORIES) and {"bank", "procedural"} <= set(registered)
    assert names[len(registered) :] == [n for n in hub.list_pretrained() if n not in registered]


def test_procedural_needs_no_files():
    generator = load_generator("procedural")
    assert isinstance(generator, ProceduralGenerator)
    assert load_generator("procedural", layer_size=32, device="cpu").layer_size == (32, 32)


def test_overrides_are_checked_against_the_factory():
    with pytest.raises(
        TypeError, match=r"load_generator\('procedural'\): got an unexpected keyword.*colour"
    ):
        load_generator("procedural", colour="red")
    with pytest.raises(
        TypeError, match=r"load_generator\('bank'\): missing a required argument: 'root'"
    ):
        load_generator("bank")


def test_bank_by_name_and_by_folder(tmp_path):
    root = write_mvtec(tmp_path / "mvtec")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        named = load_generator("bank", root=root, types="hole", layer_size=32)
        by_path = load_generator(str(root), split="test")
    assert isinstance(named, DefectBank) and named.defect_types == ("hole",)
    assert isinstance(by_path, DefectBank) and by_path.defect_types == ("hole", "scratch")
    from_manifest = load_generator(write_manifest(tmp_path / "manifest"))
    assert isinstance(from_manifest, DefectBank) and from_manifest.channels == 3


def test_folder_that_is_neither(tmp_path):
    with pytest.raises(
        FileNotFoundError, match="holds neither a pretrained generator .* nor a defect dataset"
    ):
        load_generator(tmp_path)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        load_generator("procedurall")
    message = str(info.value)
    assert "unknown generator 'procedurall'" in message
    known = message.split("known: ", 1)[1].split(". ", 1)[0].split(", ")
    assert known == list_generators() and {"bank", "procedural"} <= set(known)


def test_missing_path_and_hub_id_say_what_was_tried(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="could not find pretrained generator"):
        load_generator(str(tmp_path / "absent" / "model"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="not contacted \\(HF_HUB_OFFLINE is set\\)"):
        load_generator("someone/absent-generator")


def test_pretrained_folder_and_shipped_card(tmp_path, monkeypatch):
    model = _trained()
    folder = model.save_pretrained(tmp_path / "cards" / "tiny-card")
    loaded = load_generator(folder)
    assert isinstance(loaded, TinyTestGenerator)
    assert torch.equal(loaded.head.weight, model.head.weight)  # safetensors stores values exactly
    monkeypatch.setattr(hub, "shipped_card_roots", lambda: [tmp_path / "cards"])
    assert "tiny-card" in list_generators()
    assert isinstance(load_generator("tiny-card"), TinyTestGenerator)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_generator("tiny-card", hidden=7)


def test_register_generator(clean_registry):
    @register_generator("always-spots")
    def spots(layer_size: int = 16) -> DefectGenerator:
        return ProceduralGenerator(layer_size=layer_size)

    assert "always-spots" in list_generators()
    assert load_generator("always-spots", layer_size=24).layer_size == (24, 24)
    register_generator("procedural-copy", ProceduralGenerator)
    assert isinstance(load_generator("procedural-copy"), ProceduralGenerator)
    with pytest.raises(
        ValueError, match="'always-spots' is already registered; pass overwrite=True"
    ):
        register_generator("always-spots", ProceduralGenerator)
    register_generator("always-spots", ProceduralGenerator, overwrite=True)
    assert load_generator("always-spots").layer_size == (64, 64)


def test_register_generator_errors(clean_registry):
    with pytest.raises(ValueError, match="name: expected a non-empty name without '/'"):
        register_generator("owner/name", ProceduralGenerator)
    with pytest.raises(
        TypeError, match="factory: expected a DefectGenerator subclass or a callable"
    ):
        register_generator("thing", 42)
    register_generator("not-a-generator", lambda: torch.nn.Linear(1, 1))
    with pytest.raises(TypeError, match="returned Linear, not a DefectGenerator"):
        load_generator("not-a-generator")


def test_name_must_be_a_string_or_path():
    with pytest.raises(TypeError, match="name_or_path_or_hub_id: expected a generator name"):
        load_generator(3)


def test_device_moves_the_generator():
    generator = load_generator("procedural", device="cpu")
    assert next(generator.buffers()).device.type == "cpu"


@pytest.mark.parametrize("name", ["procedural", "tiny-card"])
def test_bad_devices_are_named(name, tmp_path, monkeypatch):
    _trained().save_pretrained(tmp_path / "cards" / "tiny-card")
    monkeypatch.setattr(hub, "shipped_card_roots", lambda: [tmp_path / "cards"])
    with pytest.raises(ValueError, match="device: expected a torch device such as 'cpu'"):
        load_generator(name, device="nonsense")
    with pytest.raises(ValueError, match="device: 'cuda:99' asks for CUDA"):
        load_generator(name, device="cuda:99")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device: 'cuda' asks for CUDA, but no CUDA device"):
            load_generator(name, device="cuda")
    generator = load_generator(name)
    with pytest.raises(ValueError, match="device: expected a torch device"):
        generator.sample(1, device="nonsense")


def test_a_name_that_climbs_out_of_the_card_folders_is_not_looked_up(tmp_path, monkeypatch):
    _trained().save_pretrained(tmp_path / "outside" / "evil")
    (tmp_path / "install" / "cards").mkdir(parents=True)
    monkeypatch.setattr(hub, "shipped_card_roots", lambda: [tmp_path / "install" / "cards"])
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    with pytest.raises(FileNotFoundError, match="'../../outside/evil' is not a card name"):
        load_generator("../../outside/evil")
    assert isinstance(load_generator(tmp_path / "outside" / "evil"), TinyTestGenerator)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_sets_the_sampling_default_on_cuda(tmp_path):
    assert load_generator("procedural", device="cuda").sample(2, generator=0).content.is_cuda
    root = write_mvtec(tmp_path / "mvtec")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bank = load_generator("bank", root=root, device="cuda")
    layer = bank.sample(3, generator=0)
    assert layer.content.is_cuda and bool(layer.mask().flatten(1).any(1).all())
    model = load_generator(_trained().save_pretrained(tmp_path / "tiny"), device="cuda")
    assert model.sample(2, generator=0).alpha.is_cuda
