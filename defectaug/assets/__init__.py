"""Small defect-free sample surfaces shipped for ``defectaug demo``.

They are drawn procedurally by ``make_backgrounds.py`` (rebuild with
``uv run python -m defectaug.assets.make_backgrounds``); no third-party images are shipped.
"""

from pathlib import Path

BACKGROUNDS_FOLDER = Path(__file__).resolve().parent / "backgrounds"


def sample_backgrounds() -> list[Path]:
    """The shipped background images, sorted by name."""
    return sorted(path for path in BACKGROUNDS_FOLDER.iterdir() if path.suffix in (".jpg", ".png"))
