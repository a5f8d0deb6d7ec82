"""``python -m gsa.viz``: the figures command (the same as ``gsa figures``)."""

import sys

from .command import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
