"""MkDocs hook: the repository's README.md as the site's ``readme.md`` page, built at every build.

The README stays the one source of the guide. Its links are written for the repository: a link
into ``docs/`` (the pictures) is pointed at the same file in the site, and a link to any other
repository file (benchmark reports, model cards) keeps only its text, which names the path.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def _fix_link(match: re.Match[str]) -> str:
    bang, text, target = match[1], match[2], match[3]
    if re.match(r"[a-z][a-z0-9+.-]*:|#", target):  # a URL or an anchor of the README itself
        return match[0]
    if target.startswith("docs/"):
        return f"{bang}[{text}]({target.removeprefix('docs/')})"
    return text


def on_files(files: Files, config, **kwargs) -> Files:
    readme = Path(config["config_file_path"]).parent / "README.md"
    content = _LINK.sub(_fix_link, readme.read_text(encoding="utf-8"))
    files.append(File.generated(config, "readme.md", content=content))
    return files
