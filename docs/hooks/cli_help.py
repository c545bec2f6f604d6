"""MkDocs hook: ``<!-- cli-help: COMMAND -->`` in a page becomes that command's ``--help`` text.

``<!-- cli-help: -->`` (no command) is the top-level ``defectaug --help``. The texts come from
``defectaug.cli.build_parser()`` at build time, so the page never lags behind the options and
their defaults. They are made in a child process started with the build: importing the command
line (torch, torchvision) takes seconds, which then overlap with reading the docstrings.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from mkdocs.exceptions import PluginError

_MARKER = re.compile(r"^<!-- cli-help:\s*([\w-]*)\s*-->$", re.MULTILINE)
_SCRIPT = """
import argparse, json, sys
from defectaug.cli import build_parser
parser = build_parser()
commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
texts = {"": parser.format_help()}
texts.update({name: command.format_help() for name, command in commands.choices.items()})
json.dump(texts, sys.stdout)
"""
_state: dict[str, object] = {}


def on_config(config, **kwargs):
    # argparse wraps to the terminal width: a fixed one here, whatever the terminal.
    env = {**os.environ, "COLUMNS": "100"}
    _state["process"] = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=os.path.dirname(config["config_file_path"]),
    )
    _state.pop("texts", None)
    return config


def _texts() -> dict[str, str]:
    if "texts" not in _state:
        process = _state["process"]
        out, err = process.communicate(timeout=300)
        if process.returncode != 0:
            raise PluginError(f"cli_help: defectaug.cli.build_parser() failed:\n{err}")
        _state["texts"] = json.loads(out)
    return _state["texts"]


def _block(command: str) -> str:
    texts = _texts()
    if command not in texts:
        raise PluginError(f"cli_help: no command {command!r}; known: {', '.join(texts)}")
    return f"```text\n{texts[command].rstrip()}\n```"


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    return _MARKER.sub(lambda match: _block(match[1]), markdown)
