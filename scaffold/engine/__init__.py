"""The engine of verification: the registry of checks, and what runs them on a run or the experiment.

A check (scaffold.checks) is registered with `@check(id, scope=..., file=...)` and returns (or yields) the Problems
it finds; none means it passes. Scopes: `experiment` (one test for the experiment), `run` (one per run of any
type), `fine-tuned` (one per fine-tuned run). Checks with `requires_torchtune=True` need torchtune importable and
are skipped, with the reason printed, where it is not (the deeper component checks live there).

Checks registered with `texts=True` read nothing but the run's expectation and the texts of its finetune.yaml and
finetune.slurm: the generator runs them too, on the texts it has just rendered, before it writes them
(`scaffold.engine.selfcheck`); the suite runs them on the files on disk. One rule, one place, two moments.

A check of each of several files (`files=...`) has one target per file, named in its test id (golden[RUN-FILE]);
with `snapshot=True` it compares with golden copies and is called with syrupy's fixture too: the golden
comparisons are checks like the others. The engine names no check: `all_checks` imports the modules
scaffold.checks lists.

Beside the registry: `expectations` (what each run should be, from the inputs alone), `context` (what a check sees
of a run: its files on disk, or the texts just rendered; and the experiment, each file read once and shared by the
checks), `generated` (the batch scripts as bash and sbatch read them; finetune.yaml as torchtune reads it is
scaffold.configread's), `shell` (`bash -n` over many scripts, a
sweep's scripts parsed once), `findings` (how a failure is reported, in one place), `golden` and `snapshots`
(golden copies as readable single files, compared with syrupy), `selfcheck` (the generator's run of the
`texts=True` checks), `table` (the checks table of docs/verification.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache

from ..errors import Problem
from ..layout import FINE_TUNED, FINETUNE_FILE, SLURM_FILE
from .findings import Blocked, NotApplicable

EXPERIMENT = "experiment"
RUN = "run"
SCOPES = (EXPERIMENT, RUN, FINE_TUNED)
TEXT_FILES = (FINETUNE_FILE, SLURM_FILE)  # the files whose texts the self-check hands to texts=True checks

CHECKS = "scaffold.checks"  # the package of the check modules (its MODULES: their collection order)


@dataclass(frozen=True)
class Check:
    id: str
    func: Callable[..., Iterable[Problem] | None]
    scope: str
    file: str | None  # the file it reads (for the report), None for inputs spread over several
    requires_torchtune: bool = False
    reads_runs: bool = False  # an experiment check that reads every run's files (collected after the runs' tests)
    texts: bool = False  # reads only the expectation and the texts of the run's two files: the self-check runs it
    # One target per file (the test id names it: golden[RUN-finetune.yaml]); the function is called with the file.
    files: tuple[str, ...] = ()
    # Compares with golden copies: called with syrupy's snapshot fixture too (scaffold.engine.snapshots.Snapshot).
    # Collected after every other check, and not counted among the checks in the suite's report.
    snapshot: bool = False

    @property
    def description(self) -> str:
        """The docstring's first paragraph, on one line."""
        paragraph = (self.func.__doc__ or self.id).strip().split("\n\n")[0]
        return " ".join(line.strip() for line in paragraph.splitlines())


# By id and scope: one id names the checks of one concern at two scopes (golden: a run's files, the job arrays).
_REGISTRY: dict[tuple[str, str], Check] = {}


def check(
    id: str,
    *,
    scope: str,
    file: str | None = None,
    requires_torchtune: bool = False,
    reads_runs: bool = False,
    texts: bool = False,
    files: tuple[str, ...] = (),
    snapshot: bool = False,
) -> Callable[[Callable], Callable]:
    """Register a check function under a stable id (the test id's prefix)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    if reads_runs and scope != EXPERIMENT:
        raise ValueError("reads_runs is for experiment checks")
    if texts and (scope != FINE_TUNED or file not in TEXT_FILES or requires_torchtune or files):
        raise ValueError("texts=True is for fine-tuned checks of finetune.yaml or finetune.slurm alone")
    if snapshot and not files:
        raise ValueError("snapshot=True is for checks of each of their files (files=...)")

    def register(func: Callable) -> Callable:
        key = (id, scope)
        if key in _REGISTRY and _REGISTRY[key].func.__qualname__ != func.__qualname__:
            raise ValueError(f"two checks share the id {id!r}")
        _REGISTRY[key] = Check(id, func, scope, file, requires_torchtune, reads_runs, texts, tuple(files), snapshot)
        return func

    return register


@cache
def all_checks() -> tuple[Check, ...]:
    """Every registered check, in collection order: the golden comparisons last; by module in
    scaffold.checks.MODULES, then as registered (whichever module a caller happened to import first)."""
    modules = importlib.import_module(CHECKS).MODULES
    for name in modules:
        importlib.import_module(f"{CHECKS}.{name}")
    rank = {f"{CHECKS}.{name}": i for i, name in enumerate(modules)}
    order = {key: i for i, key in enumerate(_REGISTRY)}
    return tuple(
        sorted(
            _REGISTRY.values(),
            key=lambda c: (c.snapshot, rank.get(c.func.__module__, len(rank)), order[c.id, c.scope]),
        )
    )


@cache
def text_checks() -> tuple[Check, ...]:
    """The checks the generator runs on the texts it renders (`texts=True`), in collection order."""
    return tuple(c for c in all_checks() if c.texts)


@dataclass(frozen=True)
class Skipped:
    """A check that did not run on this target, and why."""

    reason: str
    blocked: str | None = None  # when blocked: the broken input alone, without the check that reports it


def run_check(
    check: Check, subject: object, file: str | None = None, snapshot: object = None
) -> list[Problem] | Skipped:
    """Run one check on its subject (a RunView, or the ExperimentContext), and for a check of each of its files
    (`files`) on one of them, with syrupy's fixture where it compares golden copies (`snapshot`): the problems it
    finds (none: it passed), or why it was skipped: blocked by a broken input another check reports, or nothing to
    check here. (Whether torchtune is importable is the caller's question: the plugin asks it once per session.)"""
    args = (subject, file) if check.files else (subject,)
    try:
        found = check.func(*args, snapshot) if check.snapshot else check.func(*args)
        return list(found or ())
    except Blocked as e:
        return Skipped(f"blocked: {e.reason}; {e.by} reports it", blocked=e.reason)
    except NotApplicable as e:
        return Skipped(str(e))
