"""Write docs/errors.md and the README's error table: the bad inputs and the
errors they get, made by running every case in tests/error_cases.py (the cases
tests/test_errors.py runs).

    python scripts/error_table.py            # writes docs/errors.md and README.md's table
    python scripts/error_table.py --check    # exit 1 if either is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.error_cases import (  # noqa: E402
    render_markdown,
    render_readme_section,
    with_readme_section,
    without_digests,
)

DOC = ROOT / "docs" / "errors.md"
README = ROOT / "README.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that "
                        "docs/errors.md is up to date (exit 1 if not)")
    args = parser.parse_args()
    text = render_markdown()
    readme = with_readme_section(README.read_text(), render_readme_section())
    if args.check:
        stale = [str(path) for path, wanted in ((DOC, text), (README, readme))
                 if not path.is_file()
                 or without_digests(path.read_text()) != without_digests(wanted)]
        print("OUT OF DATE: " + ", ".join(stale) if stale else "up to date")
        return 1 if stale else 0
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
    README.write_text(readme)
    print(f"wrote {DOC} ({text.count(chr(10))} lines) and the table in {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
