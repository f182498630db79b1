"""What a check sees: the experiment's expectations and, per run, a RunView: its generated files read from disk
(RunContext: each read once per session, and shared by every check of the run), or the texts the generator has just
rendered (RenderedRun). Accessors raise Blocked when an input is broken, naming the check that reports it, so a
check never fails for a cause that another check already reports.

What is costly per run is shared across the session by ExperimentContext: loading finetune.yaml (its ConfigLoader,
scaffold.configread, given by the plugin) and `bash -n` over the batch scripts (engine/shell.py: a sweep's scripts
are parsed once). In large sweeps the plugin releases a run's files once its test is done, so memory does not grow
with the number of runs."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import confine
from ..configread import ConfigLoadError, LoadedConfig
from ..errors import Problem
from ..layout import FINETUNE_FILE, SLURM_FILE
from .expectations import Expectations, RunExpectation, RunRef, item_id
from .findings import UNSET, Blocked, finding
from .generated import SlurmScript, parse_slurm_text
from .shell import bash_n, bash_syntax, script_text

if TYPE_CHECKING:
    from ..configread import ConfigLoader


class RunView(ABC):
    """What a check sees of one run: its expectation, its two generated texts (finetune.yaml loaded as torchtune
    loads it, finetune.slurm parsed and through `bash -n`), the site config, and a memo shared with the runs
    checked beside it. Two implementations: RunContext, the run's files on disk (the suite), and RenderedRun, the
    texts the generator has just rendered (the self-check). A check registered with `texts=True` uses nothing
    else, so it runs on either alike; the other checks get a RunContext."""

    def __init__(self, ref: RunRef, local_dir: Path, memo: dict[Any, Any]):
        self.ref = ref
        self.name = ref.name
        self.local_dir = local_dir
        self.memo = memo  # what checks compute once for runs that share an input (the dataset, the components)
        self._paths: dict[str, Path] = {}

    @abstractmethod
    def expected(self) -> RunExpectation:
        """The run's expected settings, re-derived from the inputs."""

    @abstractmethod
    def local(self) -> Any:
        """The site config (a LocalConfig); Blocked (by local_config_schema) when there is none valid."""

    @abstractmethod
    def require(self, file: str) -> Path:
        """The path of a generated file that must be there; Blocked (by run_files) when it is not."""

    @abstractmethod
    def text(self, file: str) -> str | None:
        """A generated file's text; None when it is not utf-8."""

    @abstractmethod
    def _load_config(self) -> LoadedConfig | ConfigLoadError:
        """finetune.yaml as torchtune loads it, or why it does not load (asked once)."""

    @abstractmethod
    def bash_syntax(self) -> str:
        """What `bash -n` says of finetune.slurm ("" when it parses)."""

    def path(self, file: str) -> Path:
        path = self._paths.get(file)
        if path is None:
            path = self._paths[file] = self.local_dir / file
        return path

    @cached_property
    def _config(self) -> LoadedConfig | ConfigLoadError:
        return self._load_config()

    def config_error(self) -> ConfigLoadError | None:
        return self._config if isinstance(self._config, ConfigLoadError) else None

    def config(self) -> LoadedConfig:
        """finetune.yaml as torchtune reads it; Blocked (by finetune_yaml_loads) when it does not load."""
        if isinstance(self._config, ConfigLoadError):
            raise Blocked(f"{FINETUNE_FILE} does not load", item_id("finetune_yaml_loads", self.name))
        return self._config

    @cached_property
    def _slurm(self) -> SlurmScript:
        path = self.require(SLURM_FILE)
        text = self.text(SLURM_FILE)
        return parse_slurm_text(path, text if text is not None else script_text(path))

    def slurm(self) -> SlurmScript:
        return self._slurm

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


class RunContext(RunView):
    """One run of the experiment on disk: its expectation and its files, each read once and shared by every check
    of the run; what is costly per run (loading finetune.yaml, `bash -n`) is shared across the session."""

    def __init__(self, experiment: Expectations, ref: RunRef, session: ExperimentContext):
        super().__init__(ref, experiment.local_dir / ref.name, session.memo)
        self.experiment = experiment
        self.session = session
        self._texts: dict[str, str | None] = {}
        self._readable: dict[str, str | None] = {}

    def expected(self) -> RunExpectation:
        return self._expected

    @cached_property
    def _expected(self) -> RunExpectation:
        return self.experiment.run(self.name)

    def local(self) -> Any:
        return self.experiment.local()

    def require(self, file: str) -> Path:
        """The path of a generated file that must exist and can be read; Blocked (by run_files) when it does not or
        cannot (`unreadable`)."""
        path = self.path(file)
        if file not in self._texts:
            if not os.path.isfile(path):
                raise Blocked(f"{file} is missing", item_id("run_files", self.name))
            if why := self.unreadable(file):
                raise Blocked(f"{file} {why}", item_id("run_files", self.name))
        return path

    def unreadable(self, file: str) -> str | None:
        """Why a run's file that exists is not read (run_files reports it, the other checks are Blocked): a link that
        leads out of the experiment (scaffold.confine: its content is never read or shown), or no permission."""
        if file in self._readable:
            return self._readable[file]
        path = self.path(file)
        link = confine.leads_out(self.experiment.local_dir, path)
        why = None
        if link is not None:
            why = f"is a symbolic link to {link.target}, outside the experiment: not read"
        else:
            try:
                with open(path, "rb"):
                    pass
            except OSError as e:
                why = f"cannot be read: {e.strerror}"
        self._readable[file] = why
        return why

    def text(self, file: str) -> str | None:
        """A generated file's text (utf-8), read once and shared by every check; None when it is not utf-8.
        Blocked (by run_files) when the file is missing."""
        if file not in self._texts:
            path = self.require(file)
            try:
                with open(path, encoding="utf-8") as f:
                    self._texts[file] = f.read()
            except UnicodeDecodeError:
                self._texts[file] = None
            except FileNotFoundError:
                raise Blocked(f"{file} is missing", item_id("run_files", self.name)) from None
            except OSError as e:
                raise Blocked(f"{file} cannot be read: {e.strerror}", item_id("run_files", self.name)) from None
        return self._texts[file]

    def _load_config(self) -> LoadedConfig | ConfigLoadError:
        path = self.require(FINETUNE_FILE)
        try:
            config = self.session.configs.load(path, self.text(FINETUNE_FILE))
        except ConfigLoadError as e:
            self.session.output_dirs[self.name] = e
            return e
        self.session.output_dirs[self.name] = config.data.get("output_dir")
        return config

    def bash_syntax(self) -> str:
        """What `bash -n` says of finetune.slurm ("" when it parses); Blocked (by run_files) when it is missing."""
        return self.session.bash_syntax(self, self.require(SLURM_FILE))

    def to_local(self, path: str | Path) -> Path:
        """Where a path named by a generated file (a cluster path under experiment.dir) is on this machine."""
        return self.experiment.summary().to_local(Path(path))


class RenderedRun(RunView):
    """One run as the generator has just rendered it (or as its files on disk hold it), for the checks registered
    with `texts=True`: its expectation is the plan's, its texts are given (not read from disk), its finetune.yaml
    is loaded by the caller and what `bash -n` says of its batch script is given. Those checks run on it exactly
    as the suite runs them on the files."""

    def __init__(
        self,
        expected: RunExpectation,
        texts: dict[str, str],
        config: LoadedConfig | ConfigLoadError,
        syntax: str,
        memo: dict[Any, Any],
    ):
        plan = expected.plan
        super().__init__(RunRef(plan.name, plan.type, plan.index), plan.local_dir, memo)
        self._expected = expected
        self._texts = dict(texts)
        self._loaded = config
        self._syntax = syntax

    def expected(self) -> RunExpectation:
        return self._expected

    def local(self) -> Any:
        if self._expected.local is None:
            raise Blocked("no local config was found", "local_config_schema")
        return self._expected.local

    def require(self, file: str) -> Path:
        return self.path(file)  # given

    def text(self, file: str) -> str | None:
        return self._texts[file]

    def _load_config(self) -> LoadedConfig | ConfigLoadError:
        return self._loaded

    def bash_syntax(self) -> str:
        return self._syntax


class ExperimentContext:
    """The experiment and its runs, shared by every item of one pytest session."""

    def __init__(self, expectations: Expectations, configs: ConfigLoader):
        self.expectations = expectations
        self._runs: dict[str, RunContext] = {}
        self.removed_golden: list[Path] = []  # stale golden files removed under --snapshot-update
        self.configs = configs  # how finetune.yaml is loaded (scaffold.configread: by OmegaConf, or by shape)
        # output_dir of each run whose finetune.yaml was loaded (output_dirs_unique), or why it does not load
        self.output_dirs: dict[str, Any] = {}
        self.selected: set[str] | None = None  # runs whose tests were selected (None: all)
        self._bash: dict[str, str] | None = None  # run -> bash -n's message ("": parses), until asked for
        self.release_runs = False  # large sweeps: a run's files are forgotten once its test is done
        self.partial_skips: Counter[tuple[str, str]] = Counter()  # (check, reason) skipped inside grouped tests
        self.memo: dict[Any, Any] = {}  # what checks compute once for runs that share an input (the dataset)

    @property
    def name(self) -> str:
        return self.expectations.name

    def run(self, ref: RunRef) -> RunContext:
        run = self._runs.get(ref.name)
        if run is None:
            run = self._runs[ref.name] = RunContext(self.expectations, ref, self)
        return run

    def release(self, ref: RunRef) -> None:
        """Forget a run's files (its test is done); what the experiment-level checks need is kept."""
        self._runs.pop(ref.name, None)

    def runs(self) -> list[RunContext]:
        return [self.run(ref) for ref in self.expectations.runs]

    def fine_tuned(self) -> list[RunContext]:
        return [self.run(ref) for ref in self.expectations.fine_tuned_runs()]

    def output_dir(self, ref: RunRef) -> Any:
        """The output_dir of a run's finetune.yaml as torchtune resolves it (recorded when its test loaded it);
        Blocked when it does not load."""
        if ref.name not in self.output_dirs:
            run = self.run(ref)
            run.config()
            if self.release_runs:
                self.release(ref)
        found = self.output_dirs[ref.name]
        if isinstance(found, ConfigLoadError):
            raise Blocked(f"{FINETUNE_FILE} does not load", item_id("finetune_yaml_loads", ref.name))
        return found

    def _selected_fine_tuned(self) -> list[RunRef]:
        return [r for r in self.expectations.fine_tuned_runs() if self.selected is None or r.name in self.selected]

    def bash_syntax(self, run: RunContext, path: Path) -> str:
        """What `bash -n` says of one run's batch script ("" when it parses). The first call parses the scripts of
        every selected fine-tuned run together (scaffold.engine.shell.bash_syntax: a sweep's scripts are parsed
        once)."""
        if self._bash is None:
            self._bash = self._parse_scripts()
        error = self._bash.pop(run.name, None)
        return bash_n(script_text(path)) if error is None else error  # None: not among them (its file appeared since)

    def _parse_scripts(self) -> dict[str, str]:
        names, scripts = [], []
        for ref in self._selected_fine_tuned():
            try:
                text = script_text(self.expectations.local_dir / ref.name / SLURM_FILE)
            except OSError:
                continue  # run_files reports it
            try:
                setup: dict[str, Any] = dict(self.expectations.run(ref.name).setup)
            except (Blocked, KeyError):
                setup = {}  # nothing to mask: the script is parsed as it is
            names.append(ref.name)
            scripts.append((text, setup))
        return dict(zip(names, bash_syntax(scripts), strict=True))

    def close(self) -> None:
        self._bash = None


def inside(path: str | Path, parent: str | Path) -> bool:
    """Whether a path is `parent` or below it, comparing normalised paths (no file system access)."""
    p, q = os.path.normpath(str(path)), os.path.normpath(str(parent))
    return p == q or p.startswith(q.rstrip("/") + "/")
