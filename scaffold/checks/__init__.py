"""The registry of verification checks: small named functions, one concern each.

A check is registered with `@check(id, scope=..., file=...)` and returns (or yields) the Problems it finds;
none means it passes. Scopes: `experiment` (one test for the experiment), `run` (one per run of any type),
`fine-tuned` (one per fine-tuned run). Checks with `requires_torchtune=True` need torchtune importable and are
skipped, with the reason printed, where it is not (the deeper component checks live there).

Checks registered with `texts=True` read nothing but the run's expectation and the texts of its finetune.yaml and
finetune.slurm: the generator runs them too, on the texts it has just rendered, before it writes them
(`scaffold.checks.selfcheck`); the suite runs them on the files on disk. One rule, one place, two moments.

Beside the checks: `expectations` (what each run should be, from the inputs alone), `generated` (the files as
torchtune, bash and sbatch read them), `findings` (how a failure is reported, in one place), `selfcheck` (the
generator's own check of what it writes), `torchtune_bind` (deep checks with the real torchtune installed),
`table` (the checks table of docs/verification.md). For large sweeps: `context` (each file read once, shared by the
checks), `shapes` (finetune.yaml as OmegaConf loads it, without OmegaConf's cost for every config), `shell`
(`bash -n` over many scripts, a sweep's scripts parsed once), `yamlread` (many nearly identical configs read fast).
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

# Modules holding checks, in the order their tests are collected.
MODULES = ("inputs", "finetune", "dataset", "parity", "audit", "slurm", "cluster", "arrays", "golden", "torchtune")


@dataclass(frozen=True)
class Check:
    id: str
    func: Callable[..., Iterable[Problem] | None]
    scope: str
    file: str | None  # the file it reads (for the report), None for inputs spread over several
    requires_torchtune: bool = False
    reads_runs: bool = False  # an experiment check that reads every run's files (collected after the runs' tests)
    texts: bool = False  # reads only the expectation and the texts of the run's two files: the self-check runs it

    @property
    def description(self) -> str:
        """The docstring's first paragraph, on one line."""
        paragraph = (self.func.__doc__ or self.id).strip().split("\n\n")[0]
        return " ".join(line.strip() for line in paragraph.splitlines())


_REGISTRY: dict[str, Check] = {}


def check(
    id: str,
    *,
    scope: str,
    file: str | None = None,
    requires_torchtune: bool = False,
    reads_runs: bool = False,
    texts: bool = False,
) -> Callable[[Callable], Callable]:
    """Register a check function under a stable id (the test id's prefix)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    if reads_runs and scope != EXPERIMENT:
        raise ValueError("reads_runs is for experiment checks")
    if texts and (scope != FINE_TUNED or file not in TEXT_FILES or requires_torchtune):
        raise ValueError("texts=True is for fine-tuned checks of finetune.yaml or finetune.slurm alone")

    def register(func: Callable) -> Callable:
        if id in _REGISTRY and _REGISTRY[id].func.__qualname__ != func.__qualname__:
            raise ValueError(f"two checks share the id {id!r}")
        _REGISTRY[id] = Check(id, func, scope, file, requires_torchtune, reads_runs, texts)
        return func

    return register


@cache
def all_checks() -> tuple[Check, ...]:
    """Every registered check, in collection order: by module in MODULES, then as registered (whichever module a
    caller happened to import first)."""
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")
    rank = {f"{__name__}.{name}": i for i, name in enumerate(MODULES)}
    order = {c.id: i for i, c in enumerate(_REGISTRY.values())}
    return tuple(sorted(_REGISTRY.values(), key=lambda c: (rank.get(c.func.__module__, len(rank)), order[c.id])))


def by_id(check_id: str) -> Check:
    return {c.id: c for c in all_checks()}[check_id]


@cache
def text_checks() -> tuple[Check, ...]:
    """The checks the generator runs on the texts it renders (`texts=True`), in collection order."""
    return tuple(c for c in all_checks() if c.texts)


@dataclass(frozen=True)
class Skipped:
    """A check that did not run on this target, and why."""

    reason: str


def run_check(check: Check, subject: object) -> list[Problem] | Skipped:
    """Run one check on its subject (a RunContext, or the ExperimentContext): the problems it finds (none: it
    passed), or why it was skipped: blocked by a broken input another check reports, or nothing to check here.
    (Whether torchtune is importable is the caller's question: the plugin asks it once per session.)"""
    try:
        return list(check.func(subject) or ())
    except Blocked as e:
        return Skipped(f"blocked: {e.reason}; {e.by} reports it")
    except NotApplicable as e:
        return Skipped(str(e))
