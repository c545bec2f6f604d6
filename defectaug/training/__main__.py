"""``python -m defectaug.training``: the ``defectaug train`` command without the main CLI."""

import argparse
import os
import sys

from defectaug._argparse import HelpFormatter
from defectaug.training.cli import configure_train_parser


def main(argv: list[str] | None = None) -> int:
    parser = configure_train_parser(
        argparse.ArgumentParser(
            prog="python -m defectaug.training",
            description="Train a learned defect generator.",
            formatter_class=HelpFormatter,
        )
    )
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        return args.func(args)
    # The same user-facing errors the main CLI turns into one line (DEFECTAUG_DEBUG: traceback).
    except (
        OSError,  # unreadable data, unwritable run folder, disk full
        ValueError,
        KeyError,
        RuntimeError,  # torch: devices, out of memory
        MemoryError,
        FloatingPointError,  # training diverged (its checkpoint is kept)
    ) as error:
        if os.environ.get("DEFECTAUG_DEBUG"):
            raise
        text = str(error.args[0] if isinstance(error, KeyError) and error.args else error)
        print(
            f"{parser.prog}: error: {text.splitlines()[0] if text else type(error).__name__}",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    sys.exit(main())
