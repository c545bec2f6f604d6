"""The shipped ``dcdgan-magnetic-tile-64`` card: loads offline by name and samples every type."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from test_registry_hub import _record_build_devices

from defectaug.generators import hub
from defectaug.generators.dcdgan import DCDGAN
from defectaug.generators.hub import REQUIRED_CARD_FIELDS
from defectaug.generators.registry import list_generators, load_generator

CARD = Path(__file__).resolve().parents[1] / "pretrained_cards" / "dcdgan-magnetic-tile-64"
TYPES = ("blowhole", "break", "crack", "fray", "uneven")

pytestmark = pytest.mark.skipif(
    not (CARD / "model.safetensors").is_file(),
    reason=f"card not trained yet: {CARD} has no weights",
)


@pytest.fixture(scope="module")
def generator(monkeypatch_module) -> DCDGAN:
    return load_generator("dcdgan-magnetic-tile-64")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        # Offline: a Hub lookup would fail loudly instead of silently downloading.
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield patch


def test_card_is_listed_and_loads_offline_by_name(generator):
    assert "dcdgan-magnetic-tile-64" in list_generators()
    assert isinstance(generator, DCDGAN)
    assert generator.defect_types == TYPES and generator.channels == 1
    assert generator.layer_size == (64, 64)
    assert set(generator.config.native_sizes) == set(TYPES)


def test_card_samples_every_type_with_a_visible_mask(generator):
    layer = generator.sample(2 * len(TYPES), [t for t in TYPES for _ in range(2)], generator=0)
    assert layer.content.shape == (10, 1, 64, 64)
    assert bool(torch.isfinite(layer.content).all()) and bool(torch.isfinite(layer.alpha).all())
    covered = layer.mask().flatten(1).float().mean(dim=1)
    # Every sample carries a defect, and none fills the whole layer.
    assert bool((covered > 0.001).all()) and bool((covered < 0.95).all())
    again = generator.sample(2 * len(TYPES), [t for t in TYPES for _ in range(2)], generator=0)
    assert torch.equal(layer.content, again.content)  # the identical computation, run twice


def test_card_readme_front_matter_and_terms():
    text = (CARD / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    for key in REQUIRED_CARD_FIELDS:
        assert key in front, key
    assert front["library_name"] == "defectaug"
    assert "Surface defect saliency of magnetic tile" in text
    assert "train split only" in text or "**train split only**" in text
    assert (CARD / "samples_per_class.png").is_file()
    assert (CARD / "model.safetensors").stat().st_size < 5 * 2**20


def test_a_card_asking_for_width_20000_is_refused_before_anything_is_built(tmp_path, monkeypatch):
    """The card's 1.9 MB weights against a config asking for ~65e9 parameters (about 260 GB)."""
    crafted = tmp_path / "wide"
    crafted.mkdir()
    shutil.copy(CARD / "model.safetensors", crafted / "model.safetensors")
    config = json.loads((CARD / "config.json").read_text(encoding="utf-8"))
    config["kwargs"].update(width=20000, max_width=20000)
    (crafted / "config.json").write_text(json.dumps(config), encoding="utf-8")

    devices = _record_build_devices(monkeypatch, DCDGAN)
    monkeypatch.setattr(hub, "load_weights", lambda path: pytest.fail("weights were read"))
    with pytest.raises(ValueError) as info:
        load_generator(crafted)
    message = str(info.value)
    assert "shape mismatches: " in message and "vs model (20000," in message
    assert f"'kwargs' of {crafted / 'config.json'}" in message
    # The only build ran on the meta device: shapes without storage, nothing allocated.
    assert devices == ["meta"]


# ------------------------------------------------------------------------ recorded paths
REPO = Path(__file__).resolve().parents[1]
# An absolute path of a machine's layout (the tail of a relative path such as a/work/x does not
# count).
ABSOLUTE = re.compile(r"(?<![\w.~-])/(?:work|root|home|tmp|Users|mnt|opt|data)/")


def test_generator_card_records_paths_relative_to_the_repository(tmp_path, monkeypatch):
    from benchmarks.recording import portable_command, portable_path

    shared = REPO.parent / "shared" / "data" / "magnetic_tile"
    assert portable_path(shared) == "../shared/data/magnetic_tile"
    assert portable_path(REPO / "pretrained_cards" / "x") == "pretrained_cards/x"
    monkeypatch.chdir(REPO / "benchmarks")  # a relative path is read from the current folder
    assert portable_path("../pretrained_cards") == "pretrained_cards"
    # Names that are not paths, and paths outside the workspace, are kept as given.
    assert portable_path("dcdgan-magnetic-tile-64") == "dcdgan-magnetic-tile-64"
    outside = "/nonexistent-root-folder/data"
    assert portable_path(outside) == outside
    command = f"defectaug train --data {shared} --out runs/x --log={REPO / 'a.log'}"
    assert portable_command(command) == (
        "defectaug train --data ../shared/data/magnetic_tile --out runs/x --log=a.log"
    )


def test_committed_card_and_results_hold_no_absolute_paths():
    from benchmarks.generator_card import measuring_command

    metrics = json.loads((CARD / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["data"] == "../shared/data/magnetic_tile"
    readme = (CARD / "README.md").read_text(encoding="utf-8")
    assert f"Produced by `{measuring_command(metrics)}`" in readme
    committed = [CARD / "metrics.json", CARD / "README.md"] + [
        path
        for path in sorted((REPO / "benchmarks" / "results").rglob("*"))
        if path.suffix in (".json", ".md", ".log", ".txt", ".csv")
    ]
    found = [
        f"{path.relative_to(REPO)}:{number}"
        for path in committed
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if ABSOLUTE.search(line)
    ]
    assert not found, found
