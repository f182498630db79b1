"""What a check sees: the experiment's expectations and, per run, its generated files read from disk (each read
once). Accessors raise Blocked when an input is broken, naming the check that reports it, so a check never fails
for a cause that another check already reports."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import Problem
from ..plan import FINETUNE_FILE, SLURM_FILE
from .expectations import Expectations, RunExpectation, RunRef, item_id
from .findings import UNSET, Blocked, finding
from .generated import ConfigLoadError, LoadedConfig, SlurmScript, load_config, parse_slurm


class RunContext:
    """One run: its expectation and its files."""

    def __init__(self, experiment: Expectations, ref: RunRef):
        self.experiment = experiment
        self.ref = ref
        self.name = ref.name
        self.local_dir = experiment.local_dir / ref.name

    def expected(self) -> RunExpectation:
        return self.experiment.run(self.name)

    def path(self, file: str) -> Path:
        return self.local_dir / file

    def require(self, file: str) -> Path:
        """The path of a generated file that must exist; Blocked (by run_files) when it does not."""
        path = self.path(file)
        if not path.is_file():
            raise Blocked(f"{file} is missing", item_id("run_files", self.name))
        return path

    @cached_property
    def _config(self) -> LoadedConfig | ConfigLoadError:
        try:
            return load_config(self.require(FINETUNE_FILE))
        except ConfigLoadError as e:
            return e

    def config_error(self) -> ConfigLoadError | None:
        return self._config if isinstance(self._config, ConfigLoadError) else None

    def config(self) -> LoadedConfig:
        """finetune.yaml as torchtune reads it; Blocked (by finetune_yaml_loads) when it does not load."""
        if isinstance(self._config, ConfigLoadError):
            raise Blocked(f"{FINETUNE_FILE} does not load", item_id("finetune_yaml_loads", self.name))
        return self._config

    @cached_property
    def _slurm(self) -> SlurmScript:
        return parse_slurm(self.require(SLURM_FILE))

    def slurm(self) -> SlurmScript:
        return self._slurm

    def to_local(self, path: str | Path) -> Path:
        """Where a path named by a generated file (a cluster path under experiment.dir) is on this machine."""
        return self.experiment.summary().to_local(Path(path))

    def problem(
        self,
        message: str,
        *,
        file: str = FINETUNE_FILE,
        key: str | None = None,
        line: int | None = None,
        field: str | None = None,
        expected: Any = UNSET,
        found: Any = UNSET,
        fix: str | None = None,
    ) -> Problem:
        """A finding in one of this run's files; `key` (finetune.yaml) gives the line and the field."""
        if line is None and key and file == FINETUNE_FILE and isinstance(self._config, LoadedConfig):
            line = self._config.line(key)
        return finding(
            message,
            run=self.name,
            file=self.path(file),
            line=line,
            field=field or key,
            expected=expected,
            found=found,
            fix=fix,
        )


class ExperimentContext:
    """The experiment and its runs, shared by every item of one pytest session."""

    def __init__(self, expectations: Expectations):
        self.expectations = expectations
        self._runs: dict[str, RunContext] = {}
        self.removed_golden: list[Path] = []  # stale golden files removed under --snapshot-update

    @property
    def name(self) -> str:
        return self.expectations.name

    def run(self, ref: RunRef) -> RunContext:
        if ref.name not in self._runs:
            self._runs[ref.name] = RunContext(self.expectations, ref)
        return self._runs[ref.name]

    def runs(self) -> list[RunContext]:
        return [self.run(ref) for ref in self.expectations.runs]

    def fine_tuned(self) -> list[RunContext]:
        return [self.run(ref) for ref in self.expectations.fine_tuned_runs()]


def inside(path: str | Path, parent: str | Path) -> bool:
    """Whether a path is `parent` or below it, comparing normalised paths (no file system access)."""
    p, q = os.path.normpath(str(path)), os.path.normpath(str(parent))
    return p == q or p.startswith(q.rstrip("/") + "/")
