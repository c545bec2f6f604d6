"""Hub format: save_pretrained / from_pretrained round trip, resolution order and damaged inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import save_file
from torch import nn

from defectaug.generators import hub
from defectaug.generators.hub import (
    CARD_NAME,
    CONFIG_NAME,
    REQUIRED_CARD_FIELDS,
    WEIGHTS_NAME,
    PretrainedDefectGenerator,
    register_architecture,
)
from defectaug.layer import DefectLayer


@register_architecture
class TinyTestGenerator(PretrainedDefectGenerator):
    """A few-parameter learned generator, only for exercising the Hub format."""

    architecture = "defectaug-test-tiny"
    defect_types = ("blob", "line")
    channels = 1
    card_defaults = {"datasets": ["magnetic_tile"], "metrics": ["kid"]}

    def __init__(self, hidden: int = 4, layer_size: tuple[int, int] | list[int] = (6, 5)) -> None:
        super().__init__()
        self.hidden = hidden
        self.layer_size = (int(layer_size[0]), int(layer_size[1]))
        self.embed = nn.Embedding(len(self.defect_types), hidden)
        self.head = nn.Linear(hidden, 2 * self.layer_size[0] * self.layer_size[1])
        self.register_buffer("temperature", torch.tensor([1.5]))

    def get_config(self) -> dict:
        return {"hidden": self.hidden, "layer_size": list(self.layer_size)}

    def _generate(self, labels, *, generator, device, dtype, channels, **_):
        noise = torch.randn(len(labels), self.hidden, generator=generator, device=device)
        out = torch.sigmoid(self.head(self.embed(labels) + noise) / self.temperature)
        out = out.view(len(labels), 2, *self.layer_size)
        return DefectLayer(out[:, :1], out[:, 1:], labels, self.defect_types)


def _trained(seed: int = 3) -> TinyTestGenerator:
    torch.manual_seed(seed)
    model = TinyTestGenerator()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter))
    return model


@pytest.fixture
def saved(tmp_path: Path) -> tuple[TinyTestGenerator, Path]:
    model = _trained()
    folder = model.save_pretrained(tmp_path / "tiny", results={"kid": 0.0123})
    return model, folder


def test_round_trip_is_bit_exact(saved):
    model, folder = saved
    assert {p.name for p in folder.iterdir()} == {CONFIG_NAME, WEIGHTS_NAME, CARD_NAME}
    loaded = PretrainedDefectGenerator.from_pretrained(folder)
    assert type(loaded) is TinyTestGenerator and not loaded.training
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key, value in original.items():
        assert restored[key].dtype == value.dtype
        assert torch.equal(restored[key], value), key
    # The same weights and seed: the identical computation, so bit-equal layers.
    a = model.sample(4, generator=7)
    b = loaded.sample(4, generator=7)
    assert torch.equal(a.content, b.content) and torch.equal(a.alpha, b.alpha)
    assert torch.equal(a.labels, b.labels)


def test_config_and_card_contents(saved):
    model, folder = saved
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["architecture"] == "defectaug-test-tiny"
    assert config["kwargs"] == model.get_config()
    card = ModelCard.load(folder / CARD_NAME)
    data = card.data.to_dict()
    for key in REQUIRED_CARD_FIELDS:
        assert key in data
    assert data["library_name"] == "defectaug"
    assert data["datasets"] == ["magnetic_tile"] and data["metrics"] == ["kid"]
    assert "defectaug-test-tiny" in data["tags"]
    assert data["defectaug_results"] == {"kid": 0.0123}
    assert "| kid | 0.0123 |" in card.text


def test_subclass_from_pretrained_and_overrides(saved, tmp_path):
    _, folder = saved
    loaded = TinyTestGenerator.from_pretrained(str(folder), device="cpu")
    assert loaded.layer_size == (6, 5)
    with pytest.raises(ValueError, match=r"shape mismatches: embed\.weight"):
        TinyTestGenerator.from_pretrained(folder, hidden=5)


def test_load_into_wrong_class_is_refused(saved):
    _, folder = saved

    class Other(PretrainedDefectGenerator):
        architecture = "defectaug-test-other"

    with pytest.raises(TypeError, match="not a Other"):
        Other.from_pretrained(folder)


def test_truncated_weights(saved):
    _, folder = saved
    weights = folder / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        PretrainedDefectGenerator.from_pretrained(folder)


def test_garbage_weights(saved):
    _, folder = saved
    (folder / WEIGHTS_NAME).write_bytes(b"\x00\x01not a safetensors file at all")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        PretrainedDefectGenerator.from_pretrained(folder)


def test_missing_and_unexpected_keys(saved):
    model, folder = saved
    state = {k: v.clone() for k, v in model.state_dict().items()}
    del state["head.bias"]
    state["extra.weight"] = torch.zeros(2)
    save_file(state, folder / WEIGHTS_NAME)
    with pytest.raises(ValueError) as info:
        PretrainedDefectGenerator.from_pretrained(folder)
    message = str(info.value)
    assert "does not match the model built from config.json" in message
    assert "missing keys: head.bias" in message and "unexpected keys: extra.weight" in message


def test_config_not_matching_weights(saved):
    _, folder = saved
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["kwargs"]["layer_size"] = [4, 4]
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"shape mismatches: head\.bias: weights \(60,\) vs model \(32,\)"
    ):
        PretrainedDefectGenerator.from_pretrained(folder)


def test_config_kwargs_not_accepted_by_class(saved):
    _, folder = saved
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["kwargs"]["depth"] = 3
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="kwargs do not fit TinyTestGenerator"):
        PretrainedDefectGenerator.from_pretrained(folder)


def test_unregistered_architecture(saved):
    _, folder = saved
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["architecture"] = "no-such-arch"
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(
        KeyError, match="'no-such-arch' is not registered; registered: .*defectaug-test-tiny"
    ):
        PretrainedDefectGenerator.from_pretrained(folder)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"kwargs": {}}', "missing the 'architecture' entry"),
        (
            '{"architecture": "defectaug-test-tiny", "format_version": 99}',
            "newer than this defectaug",
        ),
    ],
)
def test_bad_config(saved, text, message):
    _, folder = saved
    (folder / CONFIG_NAME).write_text(text)
    with pytest.raises(ValueError, match=message):
        PretrainedDefectGenerator.from_pretrained(folder)


def test_folder_without_config_and_pickles_are_not_read(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        PretrainedDefectGenerator.from_pretrained(tmp_path)
    (tmp_path / CONFIG_NAME).write_text('{"architecture": "defectaug-test-tiny"}')
    with pytest.raises(
        FileNotFoundError, match="pytorch_model.bin found: pickle files are never loaded"
    ):
        PretrainedDefectGenerator.from_pretrained(tmp_path)


def test_file_instead_of_folder(saved):
    _, folder = saved
    with pytest.raises(ValueError, match="is a file; expected a folder"):
        PretrainedDefectGenerator.from_pretrained(folder / WEIGHTS_NAME)


def test_save_requires_registration_and_json_config(tmp_path):
    class Unregistered(TinyTestGenerator):
        architecture = "defectaug-test-unregistered"

    with pytest.raises(
        ValueError, match="registered with defectaug.generators.hub.register_architecture"
    ):
        Unregistered().save_pretrained(tmp_path / "x")

    @register_architecture
    class NotJson(TinyTestGenerator):
        architecture = "defectaug-test-not-json"

        def get_config(self):
            return {"hidden": torch.tensor(4)}

    with pytest.raises(TypeError, match="must return JSON types only"):
        NotJson().save_pretrained(tmp_path / "y")


def test_card_without_required_fields_is_refused(tmp_path):
    card = ModelCard("---\nlicense: mit\n---\n\n# card\n")
    with pytest.raises(
        ValueError, match="front matter lacks library_name, tags, datasets, metrics"
    ):
        _trained().save_pretrained(tmp_path / "z", card=card)


def test_register_architecture_errors():
    with pytest.raises(TypeError, match="expected a PretrainedDefectGenerator subclass"):
        register_architecture(nn.Linear)

    class Nameless(PretrainedDefectGenerator):
        pass

    with pytest.raises(ValueError, match="non-empty class attribute 'architecture'"):
        register_architecture(Nameless)

    class Clash(PretrainedDefectGenerator):
        architecture = "defectaug-test-tiny"

    with pytest.raises(ValueError, match="already registered to"):
        register_architecture(Clash)


def test_shipped_card_is_found_by_name(saved, tmp_path, monkeypatch):
    _, folder = saved
    cards = tmp_path / "cards"
    cards.mkdir()
    folder.rename(cards / "tiny-card")
    monkeypatch.setattr(hub, "shipped_card_roots", lambda: [cards])
    assert hub.list_pretrained() == ["tiny-card"]
    loaded = PretrainedDefectGenerator.from_pretrained("tiny-card")
    assert isinstance(loaded, TinyTestGenerator)


def test_real_shipped_card_folders_are_found():
    roots = hub.shipped_card_roots()
    repo_cards = Path(__file__).resolve().parents[1] / "pretrained_cards"
    assert repo_cards.resolve() in [r.resolve() for r in roots]


def test_hf_cache_is_used_offline(saved, tmp_path, monkeypatch):
    model, folder = saved
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf-cache" / "models--someone--tiny"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = PretrainedDefectGenerator.from_pretrained(
        "someone/tiny", cache_dir=tmp_path / "hf-cache"
    )
    assert torch.equal(loaded.head.weight, model.head.weight)


def test_unknown_name_is_not_sent_to_the_hub(monkeypatch):
    monkeypatch.setattr(
        hub, "_from_hub", lambda *a: pytest.fail("a plain name must not reach the Hub")
    )
    with pytest.raises(FileNotFoundError) as info:
        PretrainedDefectGenerator.from_pretrained("no-such-generator")
    message = str(info.value)
    assert "could not find pretrained generator 'no-such-generator'" in message
    assert "local folder" in message and "shipped cards" in message
    assert "not shaped like 'owner/repo'" in message


def test_offline_hub_id_fails_with_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(
        hub, "_from_hub", lambda *a: pytest.fail("HF_HUB_OFFLINE must keep off the Hub")
    )
    with pytest.raises(FileNotFoundError) as info:
        PretrainedDefectGenerator.from_pretrained("someone/absent", cache_dir=tmp_path)
    message = str(info.value)
    assert "Hugging Face cache" in message and "not cached" in message
    assert "not contacted (HF_HUB_OFFLINE is set)" in message
    assert "hf download owner/repo" in message


def test_unreachable_hub_reports_the_error(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)

    def no_network(*_):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(hub, "_from_hub", no_network)
    with pytest.raises(
        FileNotFoundError, match="Hugging Face Hub: ConnectionError: Name or service not known"
    ):
        PretrainedDefectGenerator.from_pretrained("someone/absent", cache_dir=tmp_path)


def test_bad_hub_timeout(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("DEFECTAUG_HUB_TIMEOUT", "soon")
    with pytest.raises(
        FileNotFoundError, match="DEFECTAUG_HUB_TIMEOUT: expected a number of seconds"
    ):
        PretrainedDefectGenerator.from_pretrained("someone/absent", cache_dir=tmp_path)


# ------------------------------------------------------- config checked before building
def _record_build_devices(monkeypatch, cls) -> list[str]:
    """Patch ``cls.from_config`` to note the default device each build runs under."""
    devices: list[str] = []
    original = cls.from_config.__func__

    def recording(klass, config):
        devices.append(torch.empty(0).device.type)
        return original(klass, config)

    monkeypatch.setattr(cls, "from_config", classmethod(recording))
    return devices


def test_oversized_config_is_refused_from_the_weights_header(saved, monkeypatch):
    _, folder = saved
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["kwargs"]["hidden"] = 20000
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    devices = _record_build_devices(monkeypatch, TinyTestGenerator)
    monkeypatch.setattr(hub, "load_weights", lambda path: pytest.fail("weights were read"))
    with pytest.raises(ValueError) as info:
        PretrainedDefectGenerator.from_pretrained(folder)
    message = str(info.value)
    assert "embed.weight: weights (2, 4) vs model (2, 20000)" in message
    assert f"'kwargs' of {folder / CONFIG_NAME}" in message
    # Built only on the meta device (shapes, no storage): nothing of the config's size exists.
    assert devices == ["meta"]


def test_a_matching_config_is_checked_on_meta_then_built(saved, monkeypatch):
    model, folder = saved
    devices = _record_build_devices(monkeypatch, TinyTestGenerator)
    loaded = PretrainedDefectGenerator.from_pretrained(folder, hidden=4)
    assert devices == ["meta", "cpu"]
    assert next(loaded.parameters()).device.type == "cpu"
    # A safetensors round trip restores the saved values exactly.
    assert torch.equal(loaded.head.weight, model.head.weight)
    with pytest.raises(ValueError, match=r"and the overrides hidden"):
        PretrainedDefectGenerator.from_pretrained(folder, hidden=5)


def test_weight_shapes_come_from_the_header(saved):
    model, folder = saved
    shapes = hub.read_weight_shapes(folder / WEIGHTS_NAME)
    assert shapes == {key: tuple(value.shape) for key, value in model.state_dict().items()}


@register_architecture
class ValueReadingGenerator(TinyTestGenerator):
    """A constructor that reads a tensor value, which the meta device cannot give."""

    architecture = "defectaug-test-value-reading"

    def __init__(self, hidden: int = 4, layer_size: tuple[int, int] | list[int] = (6, 5)) -> None:
        super().__init__(hidden, layer_size)
        self.scale = float(torch.ones(1).sum().item())


@register_architecture
class ScratchBufferGenerator(TinyTestGenerator):
    """Holds a non-persistent buffer sized by its config (not in the weights file)."""

    architecture = "defectaug-test-scratch"

    def __init__(
        self, hidden: int = 4, layer_size: tuple[int, int] | list[int] = (6, 5), scratch: int = 8
    ) -> None:
        super().__init__(hidden, layer_size)
        self.scratch = scratch
        self.register_buffer("workspace", torch.zeros(scratch), persistent=False)

    def get_config(self) -> dict:
        return {**super().get_config(), "scratch": self.scratch}


def test_a_class_that_cannot_build_on_meta_still_loads(tmp_path):
    torch.manual_seed(0)
    folder = ValueReadingGenerator().save_pretrained(tmp_path / "reads")
    assert isinstance(PretrainedDefectGenerator.from_pretrained(folder), ValueReadingGenerator)
    # Its shapes are still checked, after the real build.
    with pytest.raises(ValueError, match=r"shape mismatches: embed\.weight"):
        PretrainedDefectGenerator.from_pretrained(folder, hidden=5)


def test_buffers_outside_the_weights_are_bounded(tmp_path, monkeypatch):
    torch.manual_seed(0)
    folder = ScratchBufferGenerator().save_pretrained(tmp_path / "scratch")
    assert PretrainedDefectGenerator.from_pretrained(folder).workspace.shape == (8,)
    devices = _record_build_devices(monkeypatch, ScratchBufferGenerator)
    with pytest.raises(ValueError, match=r"elements of buffers that are not in the weights"):
        PretrainedDefectGenerator.from_pretrained(folder, scratch=hub.MAX_UNSAVED_ELEMENTS + 1)
    assert devices == ["meta"]


# ------------------------------------------------------------- card names and devices
def test_a_card_name_cannot_climb_out_of_the_card_folders(saved, tmp_path, monkeypatch):
    _, folder = saved
    root = tmp_path / "install" / "cards"
    root.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    folder.rename(outside / "evil")
    monkeypatch.setattr(hub, "shipped_card_roots", lambda: [root])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    # root / "../../outside/evil" is a card folder, but the name is not a card name.
    assert (root / "../../outside/evil" / CONFIG_NAME).is_file()
    for name in ("../../outside/evil", "../../outside/evil/", "sub/../../../outside/evil"):
        with pytest.raises(FileNotFoundError, match="is not a card name"):
            hub.resolve_pretrained(name)
    # A path the user passes explicitly is taken as given, relative or absolute.
    assert hub.resolve_pretrained(str(outside / "evil")) == outside / "evil"
    monkeypatch.chdir(root)
    assert isinstance(
        PretrainedDefectGenerator.from_pretrained("../../outside/evil"), TinyTestGenerator
    )


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("nonsense", "device: expected a torch device such as 'cpu'"),
        ("cuda:99", "device: 'cuda:99' asks for CUDA"),
    ],
)
def test_bad_device_is_named_before_building(saved, monkeypatch, device, message):
    _, folder = saved
    devices = _record_build_devices(monkeypatch, TinyTestGenerator)
    with pytest.raises(ValueError, match=message):
        PretrainedDefectGenerator.from_pretrained(folder, device=device)
    assert devices == []


# ---------------------------------------------------------------------- push_to_hub (issue #15)
def _fake_hub(monkeypatch) -> list[tuple[str, dict]]:
    """Replace huggingface_hub's network calls; record each call and what the upload held."""
    import huggingface_hub

    calls: list[tuple[str, dict]] = []

    def create_repo(repo_id, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def upload_folder(**kwargs):
        folder = Path(kwargs["folder_path"])
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")}
        calls.append(("upload_folder", {**kwargs, "files": files}))
        return "commit-info"

    monkeypatch.setattr(huggingface_hub, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
    return calls


def test_push_to_hub_uploads_exactly_the_staged_card(monkeypatch, tmp_path):
    calls = _fake_hub(monkeypatch)
    model = _trained()
    result = model.push_to_hub("someone/tiny-defects", private=True, license="mit")
    assert result == "commit-info"
    assert [name for name, _ in calls] == ["create_repo", "upload_folder"]
    created, uploaded = calls[0][1], calls[1][1]
    assert created["repo_id"] == "someone/tiny-defects" and created["exist_ok"] is True
    assert created["private"] is True and created["repo_type"] == "model"
    assert uploaded["repo_id"] == "someone/tiny-defects" and uploaded["repo_type"] == "model"
    files = uploaded["files"]
    assert set(files) == {CARD_NAME, CONFIG_NAME, WEIGHTS_NAME}
    # The uploaded bytes load back into the same model.
    (tmp_path / "download").mkdir()
    for name, data in files.items():
        (tmp_path / "download" / name).write_bytes(data)
    loaded = PretrainedDefectGenerator.from_pretrained(tmp_path / "download")
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    data = ModelCard.load(tmp_path / "download" / CARD_NAME).data.to_dict()
    assert data["library_name"] == "defectaug" and data["license"] == "mit"
    assert "defectaug" in data["tags"] and data["datasets"] == ["magnetic_tile"]
    assert json.loads(files[CONFIG_NAME])["architecture"] == "defectaug-test-tiny"


def test_push_to_hub_dry_run_stages_a_shipped_card(monkeypatch, tmp_path):
    calls = _fake_hub(monkeypatch)
    staged = hub.push_to_hub(
        "procedural-magnetic-tile",
        "someone/magnetic-tile",
        dry_run_dir=tmp_path / "staged",
        tags=["magnetic-tile"],
    )
    assert calls == []  # a dry run touches nothing remote
    assert {p.name for p in staged.iterdir()} == {CARD_NAME, CONFIG_NAME, WEIGHTS_NAME}
    data = ModelCard.load(staged / CARD_NAME).data.to_dict()
    assert data["library_name"] == "defectaug" and data["license"] == "other"
    assert data["tags"][0] == "defectaug" and data["tags"][-1] == "magnetic-tile"
    assert data["datasets"] and "metrics" in data
    shipped = next(root for root in hub.shipped_card_roots()) / "procedural-magnetic-tile"
    assert (staged / CONFIG_NAME).read_bytes() == (shipped / CONFIG_NAME).read_bytes()
    assert PretrainedDefectGenerator.from_pretrained(staged).defect_types


def test_push_to_hub_refuses_what_would_not_load(monkeypatch, saved, tmp_path):
    calls = _fake_hub(monkeypatch)
    _, folder = saved
    with pytest.raises(ValueError, match="repo_id: expected a Hub model id"):
        hub.push_to_hub(folder, "no-owner")
    card = folder / CARD_NAME
    card.write_text("---\nlibrary_name: defectaug\n---\n\n# no metadata\n")
    with pytest.raises(ValueError, match="front matter lacks license, datasets, metrics"):
        hub.push_to_hub(folder, "someone/tiny")
    (folder / WEIGHTS_NAME).unlink()
    with pytest.raises(ValueError, match=f"has no {WEIGHTS_NAME}"):
        hub.push_to_hub(folder, "someone/tiny", license="mit", datasets=[], metrics=[])
    with pytest.raises(FileNotFoundError, match="neither a card folder nor a shipped card"):
        hub.push_to_hub(tmp_path / "missing", "someone/tiny")
    with pytest.raises(TypeError, match="card_fields: colour cannot be set"):
        hub.push_to_hub(folder, "someone/tiny", colour="red")
    assert calls == []


def test_push_to_hub_refuses_a_card_folder_with_links(monkeypatch, saved, tmp_path):
    """A link in the folder would upload whatever it points at (e.g. a token outside it)."""
    calls = _fake_hub(monkeypatch)
    _, folder = saved
    secret = tmp_path / "token.txt"
    secret.write_text("hf_secret")
    (folder / "notes.txt").symlink_to(secret)
    with pytest.raises(ValueError, match=r"source: .* holds symbolic links \(notes\.txt\)"):
        hub.push_to_hub(folder, "someone/tiny", dry_run_dir=tmp_path / "staged")
    assert calls == [] and not (tmp_path / "staged" / "notes.txt").exists()
