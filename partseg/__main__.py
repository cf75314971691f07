"""``python -m partseg`` is the same as the ``partseg`` console script."""

import sys

from partseg.cli import main

sys.exit(main())
