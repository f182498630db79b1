"""Batch scripts as sbatch reads them: the `#SBATCH` directives at the top of a script (`--option=value`,
`--option value` or `-X value`). The job arrays group runs by them; the suite's checks read them in each batch
script."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

# sbatch's short options, by long name (only those a batch script is likely to carry).
SHORT_OPTIONS = {
    "J": "job-name",
    "o": "output",
    "e": "error",
    "t": "time",
    "N": "nodes",
    "n": "ntasks",
    "c": "cpus-per-task",
    "p": "partition",
    "A": "account",
    "q": "qos",
    "C": "constraint",
    "G": "gpus",
    "D": "chdir",
}


@dataclass(frozen=True)
class Directive:
    """One `#SBATCH` line: `--option=value`, `--option value` or `-X value`. Frozen: the scripts of a sweep share
    the objects of the lines they share (parse_directive)."""

    line: int
    text: str
    option: str  # long name without dashes ('job-name'); '' when the line names no option
    value: str | None


_DIRECTIVE = re.compile(r"^#SBATCH(?:\s+(?P<rest>.*?))?\s*$")


@lru_cache(maxsize=4096)
def parse_directive(lineno: int, line: str) -> Directive:
    """One #SBATCH line at its line number. The lines a sweep's scripts share are parsed once: their scripts share
    the (frozen) objects."""
    head = _DIRECTIVE.match(line.strip())
    rest = (head.group("rest") if head else None) or ""
    m = re.match(r"^--(?P<opt>[A-Za-z0-9-]+)(?:=(?P<eq>\S*)|\s+(?P<sp>\S+))?", rest)
    if m:
        value = m.group("eq") if m.group("eq") is not None else m.group("sp")
        return Directive(lineno, line, m.group("opt"), value)
    m = re.match(r"^-(?P<opt>[A-Za-z])(?:\s*(?P<val>\S+))?", rest)
    if m:
        return Directive(lineno, line, SHORT_OPTIONS.get(m.group("opt"), m.group("opt")), m.group("val"))
    return Directive(lineno, line, "", rest or None)


def script_lines(text: str) -> list[str]:
    """A script's lines as bash and sbatch read them: split at newlines only (str.splitlines would also split a
    value at a carriage return, form feed, U+0085 or U+2028, which bash keeps inside the line)."""
    return text.removesuffix("\n").split("\n") if text else []
