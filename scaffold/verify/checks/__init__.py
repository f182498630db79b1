"""The registry of verification checks: small named functions, one concern each.

A check is registered with `@check(id, scope=..., file=...)` and returns (or yields) the Problems it finds;
none means it passes. Scopes: `experiment` (one test for the experiment), `run` (one per run of any type),
`fine-tuned` (one per fine-tuned run). Checks with `requires_torchtune=True` need torchtune importable and are
skipped, with the reason printed, where it is not (the deeper component checks live there).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache

from ...errors import Problem

EXPERIMENT = "experiment"
RUN = "run"
FINE_TUNED = "fine-tuned"
SCOPES = (EXPERIMENT, RUN, FINE_TUNED)

# Modules holding checks, in the order their tests are collected.
MODULES = ("inputs", "finetune", "dataset", "parity", "slurm", "cluster", "arrays", "golden", "torchtune")


@dataclass(frozen=True)
class Check:
    id: str
    func: Callable[..., Iterable[Problem] | None]
    scope: str
    file: str | None  # the file it reads (for the report), None for inputs spread over several
    requires_torchtune: bool = False
    reads_runs: bool = False  # an experiment check that reads every run's files (collected after the runs' tests)

    @property
    def description(self) -> str:
        """The docstring's first paragraph, on one line."""
        paragraph = (self.func.__doc__ or self.id).strip().split("\n\n")[0]
        return " ".join(line.strip() for line in paragraph.splitlines())


_REGISTRY: dict[str, Check] = {}


def check(
    id: str, *, scope: str, file: str | None = None, requires_torchtune: bool = False, reads_runs: bool = False
) -> Callable[[Callable], Callable]:
    """Register a check function under a stable id (the test id's prefix)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    if reads_runs and scope != EXPERIMENT:
        raise ValueError("reads_runs is for experiment checks")

    def register(func: Callable) -> Callable:
        if id in _REGISTRY and _REGISTRY[id].func.__qualname__ != func.__qualname__:
            raise ValueError(f"two checks share the id {id!r}")
        _REGISTRY[id] = Check(id, func, scope, file, requires_torchtune, reads_runs)
        return func

    return register


@cache
def all_checks() -> tuple[Check, ...]:
    """Every registered check, in collection order."""
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}")
    return tuple(_REGISTRY.values())


def by_id(check_id: str) -> Check:
    return {c.id: c for c in all_checks()}[check_id]
