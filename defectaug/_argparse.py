"""The ``--help`` layout shared by every ``defectaug`` command."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` that shows each option's default: ``(default: 192)`` after its help text.

    Left out where there is nothing to show (a default of ``None`` or ``False``: the option is
    off unless given) and where the help text already states the default in its own words.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        if not text or action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)
