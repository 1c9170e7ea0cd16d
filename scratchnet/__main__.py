"""``python -m scratchnet``: the same as the ``scratchnet`` command."""

import sys

from scratchnet.cli import main

if __name__ == "__main__":
    sys.exit(main())
