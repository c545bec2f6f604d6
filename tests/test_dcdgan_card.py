"""The shipped ``dcdgan-magnetic-tile-64`` card: loads offline by name and samples every type."""

from pathlib import Path

import pytest
import torch
import yaml

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
    assert torch.equal(layer.content, again.content)


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
