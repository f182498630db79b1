"""The generated files as their consumers read them: the components of finetune.yaml (the config itself is read by
scaffold.configread), and finetune.slurm as sbatch and bash read it (directives, commands)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from ..slurm.directives import Directive, parse_directive, script_lines


def components(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Every `_component_` in a config, as (dotted path of its section, component path), in the config's order."""
    out: list[tuple[str, str]] = []
    _components(data, prefix, out)
    return out


def _components(data: Any, prefix: str, out: list[tuple[str, str]]) -> None:
    if isinstance(data, dict):
        if "_component_" in data:
            out.append((prefix, str(data["_component_"])))
        for key, value in data.items():
            if key != "_component_" and isinstance(value, (dict, list)):  # a scalar holds no component
                _components(value, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            if isinstance(value, (dict, list)):
                _components(value, f"{prefix}.{i}", out)


# -- finetune.slurm -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One shell line that is not a comment, split as the shell would split its words. Frozen, and its words a
    tuple: the scripts of a sweep share the objects of the lines they share (_command)."""

    line: int
    text: str
    words: tuple[str, ...]


@dataclass
class SlurmScript:
    path: Path
    text: str
    directives: list[Directive] = field(default_factory=list)  # every #SBATCH line sbatch reads
    late_directives: list[Directive] = field(default_factory=list)  # #SBATCH lines after the first command
    commands: list[Command] = field(default_factory=list)

    @cached_property
    def launches(self) -> tuple[Launch, ...]:
        """Every `tune run` command (normally exactly one): found once (the script's commands never change), for
        the several checks that read it."""
        return tuple(_launches(self.commands))

    @property
    def first_command(self) -> Command | None:
        return self.commands[0] if self.commands else None

    def directive(self, option: str) -> Directive | None:
        """The directive sbatch uses for an option (the last one read)."""
        found = [d for d in self.directives if d.option == option]
        return found[-1] if found else None

    def commands_starting(self, *words: str) -> list[Command]:
        """Commands whose first words are `words` (`conda activate`), also after `srun` or `exec`."""
        out = []
        for c in self.commands:
            w = c.words
            while w and w[0] in ("srun", "exec", "command"):
                w = w[1:]
            if w[: len(words)] == words:
                out.append(c)
        return out


def parse_slurm(path: Path) -> SlurmScript:
    """Directives are read as sbatch reads them: from the top, up to the first line that is a command."""
    return parse_slurm_text(path, path.read_text(encoding="utf-8", errors="replace"))


def parse_slurm_text(path: Path, text: str) -> SlurmScript:
    """parse_slurm of a script's text (read by the caller)."""
    script = SlurmScript(path, text)
    for lineno, line in enumerate(script_lines(text), start=1):
        parsed = _parse_line(lineno, line)
        if type(parsed) is Directive:
            (script.late_directives if script.commands else script.directives).append(parsed)
        elif parsed is not None:
            script.commands.append(parsed)
    return script


def _parse_line(lineno: int, line: str) -> Directive | Command | None:
    """One line of a script: an #SBATCH line, a command, or None (blank, a comment)."""
    stripped = line.strip()
    if stripped.startswith("#SBATCH"):
        return parse_directive(lineno, line)
    if not stripped or stripped.startswith("#"):
        return None
    return _command(lineno, line, stripped)


@lru_cache(maxsize=4096)
def _command(lineno: int, line: str, stripped: str) -> Command:
    """A command line at its line number. The lines a sweep's scripts share are split once: their scripts share
    the (frozen) objects."""
    return Command(lineno, line, tuple(shell_words(stripped)))


# Lines made of words of these characters and of quoted parts without escapes ("..." without a backslash, '...')
# are split by shlex (posix, comments) exactly where they have spaces or tabs outside the quotes, each word
# without its quotes: no escapes, comment signs or other whitespace outside quotes.
_UNQUOTED = r"[A-Za-z0-9_./:=,@%+\-${}()\[\]<>|&;!*?~^]"
_QUOTED = r"\"[^\"\\]*\"|'[^']*'"
_SIMPLE_LINE = re.compile(rf"(?:{_UNQUOTED}|[ \t]|{_QUOTED})*")
_WORD = re.compile(rf"(?:{_UNQUOTED}|{_QUOTED})+")
_QUOTES = re.compile(r"\"([^\"\\]*)\"|'([^']*)'")


@lru_cache(maxsize=4096)
def shell_words(line: str) -> tuple[str, ...]:
    """A stripped shell line split as the shell splits its words (shlex, posix, comments); the lines a sweep's
    scripts share are split once."""
    if _SIMPLE_LINE.fullmatch(line):
        return tuple(_QUOTES.sub(r"\1\2", w) if "'" in w or '"' in w else w for w in _WORD.findall(line))
    try:
        return tuple(shlex.split(line, comments=True))
    except ValueError:
        return tuple(line.split())


@dataclass
class Launch:
    """The `tune run` command of a batch script."""

    line: int
    recipe: str | None
    config: str | None
    launcher_options: dict[str, str]  # torchrun options given before the recipe (--nproc_per_node ...)


def _launches(commands: list[Command]) -> Iterator[Launch]:
    for cmd in commands:
        words = cmd.words
        for i in range(len(words) - 1):
            if words[i] == "tune" and words[i + 1] == "run":
                yield _parse_launch(cmd.line, words[i + 2 :])
                break


_SHELL_OPERATORS = {"||", "&&", ";", "|", "&"}


def _parse_launch(line: int, words: tuple[str, ...]) -> Launch:
    options: dict[str, str] = {}
    i = 0
    while i < len(words) and words[i].startswith("--"):
        key, eq, value = words[i][2:].partition("=")
        if eq:
            options[key] = value
            i += 1
        else:
            options[key] = words[i + 1] if i + 1 < len(words) else ""
            i += 2
    recipe = words[i] if i < len(words) and words[i] not in _SHELL_OPERATORS else None
    config = None
    rest = words[i + 1 :]
    for j, w in enumerate(rest):
        if w in _SHELL_OPERATORS:
            break
        if w == "--config" and j + 1 < len(rest):
            config = rest[j + 1]
        elif w.startswith("--config="):
            config = w.partition("=")[2]
    return Launch(line, recipe, config, options)
