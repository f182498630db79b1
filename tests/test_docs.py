"""The documentation: a short README, docs/ whose relative links all lead to files of this repository, and a checks
table in docs/verification.md that is the one the check registry generates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scaffold.engine.table import generated_section, markdown_table, replace_section

from .conftest import REPO

README = REPO / "README.md"
VERIFICATION = REPO / "docs" / "verification.md"
README_LIMIT = 8192  # bytes: what a user reads before the first run; the rest lives in docs/

FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def markdown_files() -> list[Path]:
    return [README, *sorted((REPO / "docs").glob("*.md"))]


def table_difference(text: str) -> str | None:
    """None when the table between the markers of `text` is the generated one, else what differs."""
    written = generated_section(text).strip("\n").splitlines()
    expected = markdown_table().strip("\n").splitlines()
    if written == expected:
        return None
    missing = [row for row in expected if row not in written]
    extra = [row for row in written if row not in expected]
    return (
        "the checks table of docs/verification.md is not the registry's (fix: python -m scaffold.engine.table "
        "--write docs/verification.md)\nexpected rows missing:\n"
        + "\n".join(missing)
        + "\nrows not generated:\n"
        + "\n".join(extra)
        + ("\n(same rows, other order)" if not missing and not extra else "")
    )


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        name, n = base, 0
        while name in found:
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


def broken_links(path: Path, text: str | None = None) -> list[str]:
    """Relative links of a markdown file that lead nowhere, or out of the repository (external URLs are not
    followed)."""
    text = path.read_text(encoding="utf-8") if text is None else text
    broken = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        where = f"{path.relative_to(REPO)}: ({target})"
        if file.startswith("/") or not dest.is_relative_to(REPO):
            broken.append(f"{where} leads outside the repository")
        elif not dest.exists():
            broken.append(f"{where} names no file of the repository")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{where} names no heading of {dest.relative_to(REPO)}")
    return broken


def test_readme_is_short() -> None:
    size = len(README.read_bytes())
    assert size < README_LIMIT, f"README.md is {size} bytes, over {README_LIMIT}: move details to docs/"


def test_readme_links_every_doc() -> None:
    text = README.read_text(encoding="utf-8")
    unlinked = [p.name for p in markdown_files()[1:] if f"](docs/{p.name})" not in text]
    assert not unlinked, f"README.md does not link {unlinked}"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_lead_to_files_of_the_repository(path: Path) -> None:
    broken = broken_links(path)
    assert not broken, "\n".join(broken)


def test_the_link_check_finds_planted_defects() -> None:
    doc = REPO / "docs" / "slurm.md"
    assert not broken_links(doc, "[ok](summary.md#models) [web](https://example.org) [here](#gpus)")
    assert broken_links(doc, "[gone](no-such-file.md)")
    assert broken_links(doc, "[up](../../outside.md)")
    assert broken_links(doc, "[abs](/etc/hosts)")
    assert broken_links(doc, "[anchor](summary.md#no-such-heading)")
    assert not broken_links(doc, "```\n[in a code block](nowhere)\n```\n")


def test_checks_table_is_the_registrys() -> None:
    difference = table_difference(VERIFICATION.read_text(encoding="utf-8"))
    assert difference is None, difference


def test_the_table_check_finds_a_planted_edit() -> None:
    text = VERIFICATION.read_text(encoding="utf-8")
    row = next(line for line in generated_section(text).splitlines() if line.startswith("| `slurm_job_name`"))
    assert table_difference(text.replace(row, row.replace("run name", "run's name"))) is not None
    assert table_difference(text.replace(row + "\n", "")) is not None  # a row removed
    assert table_difference(replace_section(text)) is None  # regenerating gives back the same text
    assert replace_section(text) == text
