"""The one rule of where this tool reads and writes its own files: inside the experiment, never through a symbolic
link (or a `..`) that leads out of it.

Experiment directories arrive by `git clone` from other people. A link planted in one (`logs -> ../elsewhere`,
`logs/scaffold-torchtune.log -> ../../victim.txt`, a run's `finetune.slurm -> ../../secret.txt`) would make every
command append to, overwrite, back up or print a file outside the experiment. Every path the tool reads or writes as
its own (the log, the lock, the manifest and its journal, the submission record, the job arrays, the rejected texts,
each run's directory and generated files, the summary) is checked with `leads_out` before it is touched. A link
that stays inside the experiment is allowed for the summary, the logs/ and arrays/ folders and a run's files (a file
linked to another run's is a hand edit, kept); the state files themselves (log, lock, manifest, journal, record, the
entries of arrays/ and logs/rejected/) may be no link at all: a log linked to the summary would append to it. (The run's model and dataset paths are inputs the summary names, not
the tool's own files: they may be anywhere.)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .errors import Problem, display_path
from .layout import (
    ARRAY_DIR,
    ARTIFACTS_DIR,
    JOURNAL,
    LOCK_NAME,
    LOG_DIR,
    LOG_NAME,
    MANIFEST,
    REJECTED_DIR,
    SUBMISSIONS,
    SUMMARY_NAME,
    TRAINING_FILES,
)

# The experiment's own files and folders, relative to its directory, checked before a command touches any of them.
EXPERIMENT_PATHS = (
    SUMMARY_NAME,
    MANIFEST,
    JOURNAL,
    LOG_DIR,
    f"{LOG_DIR}/{LOG_NAME}",
    f"{LOG_DIR}/{LOCK_NAME}",
    f"{LOG_DIR}/{SUBMISSIONS}",
    f"{LOG_DIR}/{REJECTED_DIR}",
    ARRAY_DIR,
)
# Under these folders every entry (and, under logs/rejected/, every run's entries) is the tool's own.
LISTED_DIRS = (ARRAY_DIR, f"{LOG_DIR}/{REJECTED_DIR}")
RUN_PATHS = (*TRAINING_FILES, ARTIFACTS_DIR)


class LeadsOut(OSError):
    """A path the tool would read or write leads out of the experiment through a symbolic link (or `..`)."""

    def __init__(self, link: str, target: str, root: str, inside: bool = False):
        super().__init__(f"{link} leads out of the experiment to {target}")
        self.link, self.target, self.root, self.inside = link, target, root, inside
        self.filename = link

    def problem(self, run: str | None = None) -> Problem:
        where = (
            "inside the experiment, but this tool's own state files are never links"
            if self.inside
            else f"outside the experiment {display_path(self.root)}"
        )
        return Problem(
            f"a symbolic link to {self.target}, {where}: not read or written through",
            display_path(self.link),
            fix=f"remove the link (`rm {display_path(self.link)}`): the tool writes its own files inside the "
            "experiment (and check what else the experiment's author planted)",
            run=run,
        )


def _climbs(rel: str) -> bool:
    return rel == os.pardir or rel.startswith(os.pardir + os.sep)


def _inside(real: str, root_real: str) -> bool:
    return real == root_real or real.startswith(root_real + os.sep)


def leads_out(
    root: Path | str, path: Path | str, strict: bool = False, root_real: str | None = None
) -> LeadsOut | None:
    """Why `path` (under the experiment directory `root`) leads out of it: the first component on the way from
    `root` that is a symbolic link whose target is outside (dangling ones included), or a `..` that climbs out; else
    None. `strict`: any link on the way, inside or not (the tool's state files: a log linked to the summary would
    append to it). Costs one lstat per component below `root` (two for a run's file)."""
    root_abs = os.path.abspath(root)
    path_abs = os.path.abspath(os.path.join(root_abs, path))
    root_real = root_real or os.path.realpath(root_abs)
    base = root_abs
    rel = os.path.relpath(path_abs, base)
    if _climbs(rel):  # (the same place named through the root's real path?)
        base = root_real
        rel = os.path.relpath(path_abs, base)
        if _climbs(rel):
            return LeadsOut(os.fspath(path), path_abs, root_abs)
    current = base
    for part in rel.split(os.sep):
        if part in ("", os.curdir):
            continue
        current = os.path.join(current, part)
        if os.path.islink(current):
            target = os.path.realpath(current)
            if not _inside(target, root_real):
                return LeadsOut(current, target, root_abs)
            if strict:
                return LeadsOut(current, target, root_abs, inside=True)
        elif not os.path.lexists(current):
            return None  # nothing below a missing component can be a link
    return None


def check(root: Path | str, paths: Iterable[Path | str]) -> None:
    """Raise LeadsOut for the first of `paths` that leads out of `root`."""
    for path in paths:
        why = leads_out(root, path)
        if why is not None:
            raise why


def experiment_problems(root: Path | str) -> list[Problem]:
    """Every link among the experiment's own files and folders (`EXPERIMENT_PATHS`, and the entries of
    `LISTED_DIRS`) that leads out of it: checked before a command writes (or reads) any of them."""
    problems = []
    for rel in EXPERIMENT_PATHS:
        why = leads_out(root, rel, strict=rel not in (SUMMARY_NAME, LOG_DIR, ARRAY_DIR))
        if why is not None:
            problems.append(why.problem())
    for rel in LISTED_DIRS:
        directory = os.path.join(root, rel)
        if os.path.islink(directory):
            continue  # reported above, or a link inside
        for entry in _entries(directory):
            why = leads_out(root, os.path.join(rel, entry), strict=True)
            if why is not None:
                problems.append(why.problem())
            elif rel != ARRAY_DIR and os.path.isdir(os.path.join(directory, entry)):
                for inner in _entries(os.path.join(directory, entry)):
                    why = leads_out(root, os.path.join(rel, entry, inner), strict=True)
                    if why is not None:
                        problems.append(why.problem())
    return problems


def summary_problems(summary_file: Path | str) -> list[Problem]:
    """`experiment_problems` of the experiment whose summary is `summary_file` (its directory, with its own links
    resolved: the experiment directory may itself be a link), the summary file included."""
    root = os.path.realpath(os.path.dirname(os.path.abspath(summary_file)))
    if not os.path.isdir(root):
        return []
    problems = experiment_problems(root)
    name = os.path.basename(summary_file)
    if name != SUMMARY_NAME and (why := leads_out(root, name)) is not None:
        problems.insert(0, why.problem())
    return problems


def run_problem(
    root: Path | str, run_dir: Path | str, run: str | None = None, root_real: str | None = None
) -> Problem | None:
    """The problem of a run whose directory or own files (`RUN_PATHS`) lead out of the experiment, else None.
    (`root_real`: the experiment's real path, computed once by a caller that checks many runs: then a run costs one
    lstat per file.)"""
    root_real = root_real or os.path.realpath(root)
    why = leads_out(root, run_dir, root_real=root_real)
    if why is None:
        for name in RUN_PATHS:
            path = os.path.join(run_dir, name)
            if os.path.islink(path) and not _inside(target := os.path.realpath(path), root_real):
                why = LeadsOut(path, target, os.path.abspath(root))
                break
    return None if why is None else why.problem(run)


def _entries(directory: str) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []
