"""Every bad input in tests/error_cases.py gets its documented exception, with a
message that names where (layer path or function) and what (shapes, values);
and docs/errors.md is the table those same cases generate.
"""

from pathlib import Path

import pytest

from scratchnet.errors import ScratchnetError
from tests.error_cases import (
    AREAS,
    CASES,
    CliExit,
    render_markdown,
    render_readme_section,
    run_case,
    with_readme_section,
    without_digests,
)

ROOT = Path(__file__).resolve().parents[1]


def test_the_table_covers_every_area_with_40_distinct_cases():
    assert len(CASES) >= 40
    assert len({(case.area, case.name) for case in CASES}) == len(CASES), "duplicate"
    assert len({case.input for case in CASES}) == len(CASES), "duplicate input"
    for area in AREAS:
        assert sum(case.area == area for case in CASES) >= 5, area


@pytest.mark.parametrize("case", CASES, ids=[f"{c.area}: {c.name}" for c in CASES])
def test_bad_input_raises_the_documented_error_naming_where_and_what(case):
    error, message = run_case(case)
    assert error is not None, f"{case.input}: nothing was raised"
    assert type(error) is case.error, f"{case.input}: {type(error).__name__}"
    if isinstance(error, CliExit):
        assert error.code == 2, f"{case.input}: exit code {error.code}"
        assert message.startswith("scratchnet: error: "), message
        assert message.count("\n") == 1 and "Traceback" not in message, message
    else:
        assert isinstance(error, ScratchnetError), type(error).__mro__
    for word in case.names:
        assert word in message, f"{case.input}: {word!r} not in {message!r}"


def test_docs_errors_md_is_up_to_date():
    """Regenerate with: python scripts/error_table.py"""
    expected = render_markdown()
    path = ROOT / "docs" / "errors.md"
    assert path.is_file(), "docs/errors.md missing: run python scripts/error_table.py"
    assert without_digests(path.read_text()) == without_digests(expected), (
        "docs/errors.md is out of date: run python scripts/error_table.py")


def test_readme_error_table_is_up_to_date():
    """The README's copy of the table (between the error-table markers).
    Regenerate with: python scripts/error_table.py"""
    readme = (ROOT / "README.md").read_text()
    expected = with_readme_section(readme, render_readme_section())
    assert without_digests(readme) == without_digests(expected), (
        "README.md's error table is out of date: run python scripts/error_table.py")
