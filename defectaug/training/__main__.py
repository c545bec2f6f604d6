"""``python -m defectaug.training``: the ``defectaug train`` command without the main CLI."""

import argparse
import sys

from defectaug.training.cli import configure_train_parser


def main(argv: list[str] | None = None) -> int:
    parser = configure_train_parser(
        argparse.ArgumentParser(
            prog="python -m defectaug.training", description="Train a learned defect generator."
        )
    )
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
