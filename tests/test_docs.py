"""docs/backprop.md stays true to the code: every function it points to
(`` `scratchnet/<file>.py: Class.method` `` or `` `...: function` ``) and every
test it cites (``tests/<file>.py::test_name``) exists, and every ``Function`` in
scratchnet/ — every hand-written backward — is derived there.

The names are found by parsing the source (ast), not by importing it, so a
renamed or moved function fails here with the doc line to fix.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "backprop.md"
POINTER = re.compile(r"`(scratchnet/[\w/]+\.py): ([\w.]+)`")
TEST_CITATION = re.compile(r"(tests/\w+\.py)::(\w+)")


def defined_names(path: Path) -> set[str]:
    """Top-level functions and classes of a file, and ``Class.method`` for the
    methods of its classes."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f"{node.name}.{item.name}" for item in node.body
                      if isinstance(item, ast.FunctionDef)}
    return names


def function_classes(path: Path) -> list[str]:
    """Classes in a file that derive from ``Function`` and define ``backward``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        bases = {getattr(base, "id", getattr(base, "attr", None)) for base in node.bases}
        methods = {item.name for item in node.body if isinstance(item, ast.FunctionDef)}
        if "Function" in bases and "backward" in methods:
            found.append(node.name)
    return found


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def pointers() -> list[tuple[str, str]]:
    return POINTER.findall(doc_text())


def test_the_doc_points_to_many_functions():
    # Linear, 6 activations, 2 softmaxes, dropout, batch norm, 3 losses, the
    # tensor ops, the optimizers: far more than 40 pointers
    assert len(pointers()) >= 40


@pytest.mark.parametrize("path, name", sorted(set(pointers())),
                         ids=[f"{p}:{n}" for p, n in sorted(set(pointers()))])
def test_every_pointer_names_an_existing_function(path, name):
    source = ROOT / path
    assert source.is_file(), f"docs/backprop.md points to {path}, which does not exist"
    assert name in defined_names(source), (
        f"docs/backprop.md points to `{path}: {name}`, which {path} does not define")


@pytest.mark.parametrize("path, name", sorted(set(TEST_CITATION.findall(doc_text()))))
def test_every_cited_test_exists(path, name):
    assert name in defined_names(ROOT / path), f"{path}::{name} is cited but missing"


def test_every_backward_in_scratchnet_is_derived_in_the_doc():
    documented = set(pointers())
    missing = []
    for source in sorted((ROOT / "scratchnet").rglob("*.py")):
        relative = source.relative_to(ROOT).as_posix()
        for name in function_classes(source):
            if (relative, f"{name}.backward") not in documented:
                missing.append(f"{relative}: {name}.backward")
    assert not missing, "backwards not derived in docs/backprop.md: " + ", ".join(missing)


def test_the_parser_sees_a_backward_that_is_not_there(tmp_path):
    """The check above can fail: a Function the doc does not name is found."""
    source = tmp_path / "ops.py"
    source.write_text("class Twice(Function):\n"
                      "    def forward(ctx, x):\n        return 2 * x\n"
                      "    def backward(ctx, dout):\n        return 2 * dout\n")
    assert function_classes(source) == ["Twice"]
    assert "Twice.backward" in defined_names(source)
    assert "Thrice.backward" not in defined_names(source)
