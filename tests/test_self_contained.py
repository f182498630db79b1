"""The repository is self-contained: no code, test, template, example or CI step reads a folder beside the clone
(a user's clone has nothing beside it). `.ci/run` also runs the whole suite from a copy of the tree in an empty
temporary directory; this test catches a new reference early, with the file and line."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import REPO

# A path that leaves the repository for a sibling folder: "../shared", Path(...).parent / "shared", and the like.
OUTSIDE = re.compile(r"""\.\./(shared|\.library)\b|parent\s*/\s*["'](shared|\.library)["']|shared/reference""")
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
    for line in ('REFERENCE = REPO.parent / "shared" / "x"', "cp ../shared/reference/a b", "see shared/reference/"):
        assert OUTSIDE.search(line), line
    assert not OUTSIDE.search("settings shared by all runs")
