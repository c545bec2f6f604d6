"""``python -m defectaug``: the same command line as the ``defectaug`` script."""

import sys

from defectaug.cli import main

sys.exit(main())
