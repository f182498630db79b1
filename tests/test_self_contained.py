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


def test_no_file_refers_to_a_folder_beside_the_clone() -> None:
    found = []
    for path in repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
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
