"""The API reference (docs/, built by ``make docs``; ``make test`` builds it with --strict)."""

import re
from pathlib import Path

import defectaug
from defectaug import _LAZY

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_the_api_overview_links_every_top_level_name_to_its_module():
    # The strict build fails on a link whose target is not documented; this test fails when a
    # new public name is missing from the overview (or a link points into the wrong module).
    text = (DOCS / "api" / "index.md").read_text(encoding="utf-8")
    links = dict(re.findall(r"\[`([A-Za-z_]\w*)`\]\[([\w.]+)\]", text))
    assert set(links) == set(defectaug.__all__)
    for name, target in links.items():
        assert target == f"{_LAZY[name]}.{name}", name
