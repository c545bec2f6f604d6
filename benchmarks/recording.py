"""How committed results record paths and commands: relative to the repository root, the folder
every documented command runs in (``../shared/data/magnetic_tile``), never this machine's layout."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# An absolute POSIX path inside a command line (not the tail of a relative one like a/b).
_ABSOLUTE_IN_COMMAND = re.compile(r"(?<![\w.~-])/[^\s'\"`]+")


def portable_path(path: str | os.PathLike[str]) -> str:
    """``path`` as committed results record it: relative to the repository root, as a user types
    it there (``../shared/data/magnetic_tile``, ``pretrained_cards/<card>``).

    Only paths inside the repository's parent folder (the repository and its sibling ``shared``
    data) are rewritten; anything else, and a name that is not a path (a registered generator or a
    Hub id), is kept as given.
    """
    text = os.fspath(path)
    given = Path(text).expanduser()
    if not given.is_absolute() and not given.exists():
        return text
    resolved = given.resolve()
    workspace = REPO_ROOT.parent
    if resolved != workspace and workspace not in resolved.parents:
        return text
    return Path(os.path.relpath(resolved, REPO_ROOT)).as_posix()


def portable_command(command: str) -> str:
    """A recorded command line with its absolute paths made relative by :func:`portable_path`."""
    return _ABSOLUTE_IN_COMMAND.sub(lambda match: portable_path(match.group()), command)


def git_output(*args: str) -> str | None:
    """``git args...`` run at the repository root: its stdout, or ``None`` where git is missing
    or fails (a copy of the tree without ``.git`` still records results)."""
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None


def git_commit(*, short: bool = False, watched: Sequence[str] = ()) -> str:
    """The commit a result was measured at (``"unknown"`` without git).

    ``watched``: paths whose uncommitted edits would make the commit misdescribe what ran; where
    any differs from it, the commit gets the suffix ``" (benchmark files modified)"``.
    """
    commit = git_output("rev-parse", *(["--short"] if short else []), "HEAD")
    if commit is None:
        return "unknown"
    dirty = git_output("status", "--porcelain", "--", *watched).strip() if watched else ""
    return commit.strip() + (" (benchmark files modified)" if dirty else "")


def joined_commands(commands: Sequence[str]) -> str:
    """The command lines of a result made in parts, as one line: the options every part shares
    once, then what each part set differently (``--first-seed 2 --arms real``); commands that are
    not the same program with other options are joined with `` + ``. A command that is itself
    such a line (a merged report merged again) counts as its parts."""
    unique = list(dict.fromkeys(part for command in commands for part in _split_commands(command)))
    if len(unique) == 1:
        return unique[0]
    parts = [_option_groups(command) for command in unique]
    if len({part[0] for part in parts}) != 1:
        return " + ".join(unique)
    shared = [group for group in parts[0] if all(group in part for part in parts[1:])]
    varied = [" ".join(group for group in part if group not in shared) for part in parts]
    return " ".join(shared) + " — per part: " + "; ".join(varied)


def _split_commands(line: str) -> list[str]:
    """The commands :func:`joined_commands` made ``line`` of (``[line]`` for a single one)."""
    shared, per_part, varied = line.partition(" — per part: ")
    if per_part:
        return [f"{shared} {part}" for part in varied.split("; ")]
    return line.split(" + ")


def _option_groups(command: str) -> list[str]:
    """``command`` cut before each ``--option``: the program first, then each option with its
    values (``--arms real real+bank``)."""
    groups: list[list[str]] = [[]]
    for token in command.split():
        if token.startswith("--") and groups[-1]:
            groups.append([])
        groups[-1].append(token)
    return [" ".join(group) for group in groups]
