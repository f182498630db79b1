"""The repository is self-contained: no code, test, template, example or CI step reads a folder beside the clone
(a user's clone has nothing beside it). `.ci/run` also runs the whole suite from a copy of the tree in an empty
temporary directory; this test catches a new reference early, with the file and line."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import REPO

# A path that leaves the repository for a sibling folder (the parent directory, then one of these names, as a path
# or as `Path(...).parent / "name"`). The names are joined here, so that this file does not itself name the path.
SIBLINGS = "|".join(re.escape(name) for name in ("shared", ".library"))
UP = re.escape("..") + "/"
OUTSIDE = re.compile(rf"""{UP}({SIBLINGS})\b|parent\s*/\s*["']({SIBLINGS})["']|shared/reference""")
SKIP_DIRS = {".git", ".nox", ".venv", "__pycache__", ".hypothesis", ".pytest_cache", ".ruff_cache", "build", "dist"}


def repository_files() -> list[Path]:
    files = []
    for path in REPO.rglob("*"):
        rel = path.relative_to(REPO)
        if path.is_file() and not SKIP_DIRS.intersection(rel.parts) and path != Path(__file__):
            files.append(path)
    return files


def repository_texts() -> list[tuple[Path, str]]:
    """(path, text) of every text file of the repository."""
    out = []
    for path in repository_files():
        try:
            out.append((path, path.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, OSError):
            continue
    return out


def test_no_file_refers_to_a_folder_beside_the_clone() -> None:
    found = []
    for path, text in repository_texts():
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "files that read outside the repository:\n" + "\n".join(found)


def test_the_check_finds_a_planted_reference(tmp_path: Path) -> None:
    up = ".." + "/"
    for line in (
        'REFERENCE = REPO.parent / "shared" / "x"',
        f"cp {up}shared/reference/a b",
        f"cat {up}shared/SPEC.md",
        "see shared/reference/",
    ):
        assert OUTSIDE.search(line), line
    assert not OUTSIDE.search("settings shared by all runs")


# A pointer to a document or an issue that is not in the repository: the product specification by its section, or
# an issue by its number (a user's clone has neither; say the fact itself, or name a file of the repository).
# The words are joined here, so that this file does not itself hold one.
POINTER = re.compile(r"\bSPEC(\.md| section|:|-style|\))|\(SPEC\b|\b[Ii]ssue #?[0-9]+|\(issue\b")


def pointer_lines(text: str) -> list[int]:
    """The lines of `text` that point outside the repository (`--package SPEC`, a metavariable, is not one)."""
    return [n for n, line in enumerate(text.splitlines(), 1) if POINTER.search(line)]


def test_no_file_points_at_a_document_or_issue_outside_the_repository() -> None:
    found = [f"{path.relative_to(REPO)}:{n}" for path, text in repository_texts() for n in pointer_lines(text)]
    assert not found, "files that point at a document or issue outside the repository:\n" + "\n".join(found)


def test_the_pointer_check_finds_planted_pointers() -> None:
    spec, issue = "SP" + "EC", "iss" + "ue"
    for line in (
        f"# as {spec} section 3 says",
        f"(see {spec}: dataset shape)",
        f"the fix of {issue} 25",
        f"({issue} 23)",
    ):
        assert pointer_lines(line) == [1], line
    for line in ("scaffold init-ci --package SPEC", 'metavar="SPEC"', "an issue with the data", "LLAMA3_SPECIAL"):
        assert pointer_lines(line) == [], line


def test_conftest_imports_only_what_the_package_installs() -> None:
    """`nox -s verify` installs the package alone (no test extras) and runs pytest in this repository, which reads
    tests/conftest.py: its module-level imports must be the package's own dependencies or the standard library
    (test-only packages are imported inside fixtures or behind `try`)."""
    import ast
    import sys
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    modules = {"pyyaml": "yaml"}  # distribution name -> module name, where they differ
    allowed = {modules.get(n, n) for n in (re.split(r"[<>=!~ \[]", d, maxsplit=1)[0].lower() for d in deps)}
    allowed |= {"scaffold", "__future__"}
    tree = ast.parse((REPO / "tests" / "conftest.py").read_text())
    names = []
    for node in tree.body:  # module level only: `try:` blocks and functions are allowed to import more
        if isinstance(node, ast.Import):
            names += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.append(node.module.split(".")[0])
    outside = [n for n in names if n.lower() not in allowed and n not in sys.stdlib_module_names]
    assert not outside, f"tests/conftest.py imports {outside} at module level"
