"""Write docs/errors.md: the table of bad inputs and the errors they get, made by
running every case in tests/error_cases.py (the cases tests/test_errors.py runs).

    python scripts/error_table.py            # writes docs/errors.md
    python scripts/error_table.py --check    # exit 1 if docs/errors.md is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.error_cases import render_markdown  # noqa: E402

DOC = ROOT / "docs" / "errors.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that "
                        "docs/errors.md is up to date (exit 1 if not)")
    args = parser.parse_args()
    text = render_markdown()
    if args.check:
        up_to_date = DOC.is_file() and DOC.read_text() == text
        print(f"{DOC}: {'up to date' if up_to_date else 'OUT OF DATE'}")
        return 0 if up_to_date else 1
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
    print(f"wrote {DOC} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
