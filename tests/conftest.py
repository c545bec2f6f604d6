import os
from pathlib import Path

import pytest
import torch

# Each xdist worker gets one thread: two workers on two cores, no oversubscription.
torch.set_num_threads(1)

SHARED_DATA = Path(
    os.environ.get(
        "DEFECTAUG_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real datasets); tests needing it skip when it is absent."""
    if not (SHARED_DATA / "magnetic_tile" / "manifest.csv").is_file():
        pytest.skip(
            f"real data not found at {SHARED_DATA} (set DEFECTAUG_SHARED_DATA to its folder)"
        )
    return SHARED_DATA
