"""What a generate did, as data: the report's runs and checks."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import Problem


@dataclass
class RunOutcome:
    name: str
    type: str
    status: str = "ok"  # ok | failed
    directory: str = ""
    files: dict[str, str] = field(default_factory=dict)
    backups: list[str] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    checks: dict[str, list[Problem]] = field(default_factory=dict)  # self-check: check id -> its problems
    diffs: dict[str, str] = field(default_factory=dict)
    recipe: str | None = None
    fingerprint: str | None = None
    checked_earlier: bool = False  # unchanged since a generate that wrote and checked its files
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the report says of the run besides its errors
    # The pre-flight audit's fields (scaffold.checks.token_audit.Preflight.fields: steps, audit, estimates), where known.
    preflight: dict = field(default_factory=dict)


def failures(checks: dict[str, list[Problem]]) -> list[Problem]:
    """The problems of the checks that failed, each with the check's id in front of its message."""
    return [
        replace(p, message=f"self-check {check}: {p.message}") for check, problems in checks.items() for p in problems
    ]


@dataclass
class ArrayOutcome:
    file: str  # relative to the experiment directory: arrays/array_K.slurm
    runs: int
    status: str


@dataclass
class Report:
    summary: str
    experiment: str | None = None
    runs: list[RunOutcome] = field(default_factory=list)
    input_errors: list[Problem] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)  # not about one run: e.g. the experiment is locked
    log: str | None = None
    log_error: str | None = None
    dry_run: bool = False
    seconds: float = 0.0
    wandb_offline: list[str] = field(default_factory=list)  # output_dir of each run that logs to W&B offline
    arrays: list[ArrayOutcome] = field(default_factory=list)  # the job array scripts (scaffold.slurm.arrays)
    notes: list[str] = field(default_factory=list)  # said once for the whole experiment (e.g. job mail is off)

    @property
    def exit_status(self) -> int:
        if self.input_errors:
            return 2
        return 1 if any(r.status != "ok" for r in self.runs) or self.log_error or self.errors else 0
