"""Griffe extension for the API reference: the library's docstring habits, read as meant.

The docstrings are Google style with reST touches: ``:class:`DefectLayer```,
``:func:`~defectaug.batch.inject_defects```, ``Typical use::`` before an indented example. This
turns each role into an *optional* autorefs link (a link where the target is documented, plain
code otherwise, never a warning) and ``::`` before a literal block into ``:``, and puts the first
paragraph on one line (summary tables show only a docstring's first line). Only the rendered
text changes; the sources stay as they are. An attribute documented by ``#:`` comment lines
right above it (Sphinx's convention, used for the module constants) gets them as its docstring.

``Args:`` entries may describe several parameters at once (``count, scale, rotation: ...``,
``to_grayscale / to_rgb: ...``), which griffe's own check would call unknown parameters; so
mkdocs.yml turns that check off and this one takes its place: every name of every entry must be
a parameter of the function (of ``__init__`` for a class), else a warning, which ``--strict``
makes an error.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_logger = griffe.logger

# :class:`X`, :func:`~a.b.f`, :meth:`C.m`, :mod:`a.b`, :attr:, :data:, :obj:, :exc:, :py:class:.
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|obj|exc|const):`(~?)([^`<>]+?)`")
# "Text::" ending a paragraph that an indented literal block follows.
_LITERAL = re.compile(r"::(\n\s*\n)")


def _target(obj: griffe.Object, name: str) -> str:
    """The full path of ``name`` as seen from ``obj`` (``name`` itself if it cannot be found)."""
    head, dot, rest = name.partition(".")
    try:
        resolved = obj.resolve(head)
    except (griffe.NameResolutionError, AttributeError, KeyError):
        return name
    return f"{resolved}{dot}{rest}"


def _rewrite(obj: griffe.Object, text: str) -> str:
    def link(match: re.Match[str]) -> str:
        short, name = match[1], match[2].strip().removesuffix("()")
        shown = name.rsplit(".", 1)[-1] if short else name
        suffix = "()" if match[0].startswith((":func:", ":meth:", ":py:func:", ":py:meth:")) else ""
        return (
            f'<autoref identifier="{_target(obj, name)}" optional>'
            f"<code>{shown}{suffix}</code></autoref>"
        )

    return _one_line_summary(_LITERAL.sub(r":\1", _ROLE.sub(link, text)))


def _one_line_summary(text: str) -> str:
    """The first paragraph on one line: summary tables show a docstring's first line only, and a
    wrapped first sentence would be cut there. (Markdown renders the paragraph the same.)"""
    first, blank, rest = text.partition("\n\n")
    lines = first.split("\n")
    if len(lines) == 1 or any(re.match(r"\s|[-*+|>#]|\d+\.\s|```", line) for line in lines):
        return text
    return " ".join(lines) + blank + rest


def _check_parameters(obj: griffe.Object) -> None:
    """Warn about ``Args:`` names that are not parameters of ``obj`` (groups split)."""
    if not (obj.is_function or obj.is_class) or obj.docstring is None:
        return
    if any(part.startswith("_") and part != "__init__" for part in obj.path.split(".")):
        return  # private: not in the reference
    try:
        known = {parameter.name for parameter in obj.parameters}
    except (AttributeError, KeyError, griffe.AliasResolutionError):
        return
    sections = griffe.parse_google(
        obj.docstring, warn_unknown_params=False, warn_missing_types=False
    )
    for section in sections:
        if section.kind is not griffe.DocstringSectionKind.parameters:
            continue
        for entry in section.value:
            for name in re.split(r"\s*[,/]\s*", entry.name):
                if name.lstrip("*") not in known:
                    group = f" (in {entry.name!r})" if name != entry.name else ""
                    _logger.warning(
                        f"{obj.relative_filepath}:{obj.docstring.lineno}: Parameter {name!r}"
                        f"{group} does not appear in the signature of {obj.path}"
                    )


def _comment_docstring(attribute: griffe.Object) -> griffe.Docstring | None:
    """The ``#:`` comment lines right above an attribute (Sphinx's convention), as a docstring."""
    filepath = attribute.filepath
    if (
        not attribute.lineno
        or isinstance(filepath, list)
        or filepath not in attribute.lines_collection
    ):
        return None
    lines = attribute.lines_collection[filepath]
    comment: list[str] = []
    index = attribute.lineno - 2  # the line above the assignment, 0-based
    while index >= 0 and lines[index].lstrip().startswith("#:"):
        comment.insert(0, lines[index].lstrip().removeprefix("#:").removeprefix(" "))
        index -= 1
    if not comment:
        return None
    return griffe.Docstring(
        "\n".join(comment), lineno=index + 2, endlineno=attribute.lineno - 1, parent=attribute
    )


class LibraryDocstrings(griffe.Extension):
    """Check and rewrite every docstring of a package once it is completely loaded."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        pending: list[griffe.Object] = [pkg]
        while pending:
            obj = pending.pop()
            if obj.is_attribute and obj.docstring is None:
                obj.docstring = _comment_docstring(obj)
            if obj.docstring is not None:
                obj.docstring.value = _rewrite(obj, obj.docstring.value)
                _check_parameters(obj)
            pending.extend(member for member in obj.members.values() if not member.is_alias)
