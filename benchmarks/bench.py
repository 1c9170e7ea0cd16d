"""Run the benchmark from a checkout: ``python benchmarks/bench.py [--quick]``.

The same as ``scratchnet bench`` (the harness is :mod:`scratchnet.bench`, so the
installed console script has it too); results go to benchmarks/results/NAME.json
and NAME.md. See ``--help`` for the options.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scratchnet.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
