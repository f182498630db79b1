"""What each run should be, re-derived from the inputs alone: experiment_summary.yaml, the local config and the
model registry, through the generator's own pure planning step. The manifest and the log are never read here:
the suite does not trust what the generator says it wrote."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from .. import plan
from ..errors import InputError, Problem, display_path
from ..inputs import localconfig, summary
from ..inputs.yamlio import load_yaml
from ..layout import FINE_TUNED, SUMMARY_NAME
from ..plan import Plan, RunPlan
from ..rules import recipe_for
from .findings import Blocked


def item_id(check_id: str, target: str) -> str:
    """The test id of one check on one target (a run, or the experiment)."""
    return f"{check_id}[{target}]"


class CollectionError(Exception):
    """The experiment cannot be turned into a stable, unique set of tests (no runs, duplicate run names...)."""


@dataclass(frozen=True)
class Options:
    """What the suite checks and how (the plugin's command-line options)."""

    experiment: Path
    local_config: Path | None = None
    check_paths: bool = True
    golden_dir: Path | None = None
    update_golden: bool = False


@dataclass(frozen=True)
class RunRef:
    """A run as collection sees it: enough to name its tests, read from the summary without validating it."""

    name: str
    type: str | None  # None when the summary gives no usable type (summary_schema reports it)
    index: int
    line: int = 0  # 1-based line of the run's name in the summary (0: unknown)

    @property
    def fine_tuned(self) -> bool:
        return self.type == FINE_TUNED


def _lists_fine_tuned(runs: object) -> bool:
    return isinstance(runs, list) and any(isinstance(r, dict) and r.get("type") == FINE_TUNED for r in runs)


def read_runs(summary_path: Path) -> list[RunRef]:
    """The runs of a summary, for collection. Unreadable summaries, no runs and duplicate names are errors:
    tests need stable, unique ids, and an experiment with nothing to check must never pass."""
    try:
        doc = load_yaml(summary_path)
    except InputError as e:
        raise CollectionError(f"cannot read the runs of the experiment: {e}") from None
    runs = doc.data.get("runs") if isinstance(doc.data, dict) else None
    if isinstance(doc.data, dict) and doc.data.get("variables") and not _lists_fine_tuned(runs):
        # The fine-tuned runs are expanded from `variables`: collect what the generator plans (when the summary
        # is valid; when it is not, summary_schema reports why and the listed runs are collected).
        try:
            expanded = summary.load(summary_path)
            doc, runs = expanded.doc, expanded.data["runs"]
        except InputError:
            pass
    if not isinstance(runs, list) or not runs:
        line = doc.locate(("runs",))[0] if isinstance(doc.data, dict) and "runs" in doc.data else None
        where = f"{doc.name}:{line}" if line else doc.name
        raise CollectionError(f"{where}: the experiment has no runs to check (fix: list the runs under `runs:`)")
    refs: list[RunRef] = []
    seen: dict[str, int] = {}
    errors: list[str] = []
    for i, run in enumerate(runs):
        line = doc.locate(("runs", i))[0]
        name = run.get("name") if isinstance(run, dict) else None
        if not isinstance(name, str) or not name:
            errors.append(f"{doc.name}:{line}: runs[{i}] has no name, so its tests cannot be named")
            continue
        if name in seen:
            errors.append(
                f"{doc.name}:{doc.locate(('runs', i, 'name'))[0]}: runs[{seen[name]}] and runs[{i}] are both named "
                f"'{name}': test ids must be unique (fix: give every run a distinct name)"
            )
            continue
        seen[name] = i
        kind = run.get("type")
        refs.append(RunRef(name, kind if isinstance(kind, str) else None, i, doc.locate(("runs", i, "name"))[0] or 0))
    if errors:
        raise CollectionError("\n".join(errors))
    return refs


@dataclass
class RunExpectation:
    """One fine-tuned run as the inputs define it: its planned settings, registry entry and recipe."""

    plan: RunPlan
    summary: summary.Summary | None  # None for a run checked from its files alone (selfcheck.check_files)
    local: localconfig.LocalConfig | None  # None when no local config was found
    model: dict
    setup: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, plan_: Plan, rp: RunPlan) -> RunExpectation:
        """A planned fine-tuned run's expectation (its settings must be known)."""
        assert rp.setup is not None
        return cls(rp, plan_.summary, plan_.local, plan_.models[rp.setup["model"]], rp.setup)

    @property
    def recipe(self) -> str:
        return recipe_for(self.setup)

    @cached_property
    def run_dir(self) -> Path:
        """The run directory as generated files name it (under experiment.dir)."""
        return Path(self.setup["run_dir"])

    @cached_property
    def model_dir(self) -> Path:
        return Path(self.setup["model_dir"])

    def source(self, param: str) -> str:
        """Where a parameter's value comes from: run, controls, default, 2 x lora_rank..."""
        return self.plan.sources.get(param, "default")

    def summary_field(self, param: str) -> str:
        """The summary field a parameter's value is read from, for messages."""
        src = self.source(param)
        if src == "run":
            return f"runs[{self.plan.index}].parameters.{param}"
        if src == "controls":
            return f"controls.{param}"
        return f"{src} value"


class Expectations:
    """Everything the suite expects of one experiment, derived lazily (each input is read once)."""

    def __init__(self, options: Options):
        self.options = options
        self.summary_path = summary.summary_path(Path(options.experiment)).resolve()
        if not self.summary_path.is_file():
            raise CollectionError(
                f"{display_path(self.summary_path)}: experiment summary not found (fix: pass the experiment "
                f"directory holding {SUMMARY_NAME}, or the summary file, to --experiment)"
            )
        self.local_dir = self.summary_path.parent
        self.name = self.local_dir.name  # the id of experiment-level tests
        self.runs = read_runs(self.summary_path)
        self.golden_dir = Path(options.golden_dir).resolve() if options.golden_dir else self.local_dir / "golden"

    # -- inputs -------------------------------------------------------------------------------------------------

    @cached_property
    def _summary(self) -> summary.Summary | list[Problem]:
        try:
            return summary.load(self.summary_path)
        except InputError as e:
            return e.problems

    @cached_property
    def _local(self) -> localconfig.LocalConfig | list[Problem]:
        try:
            return localconfig.load(localconfig.find(self.local_dir, self.options.local_config))
        except InputError as e:
            return e.problems

    def summary_problems(self) -> list[Problem]:
        return self._summary if isinstance(self._summary, list) else []

    def local_problems(self) -> list[Problem]:
        return self._local if isinstance(self._local, list) else []

    def summary(self) -> summary.Summary:
        if isinstance(self._summary, list):
            raise Blocked(f"{SUMMARY_NAME} is not valid", item_id("summary_schema", self.name))
        return self._summary

    def local(self) -> localconfig.LocalConfig:
        if isinstance(self._local, list):
            raise Blocked("the local config is missing or not valid", item_id("local_config_schema", self.name))
        return self._local

    @cached_property
    def _plan(self) -> Plan | list[Problem]:
        try:
            # Planning is pure; paths are checked by their own checks (and not at all under --no-check-paths).
            # Models in neither registry are recognised from their config.json where paths may be looked at.
            return plan.make_plan(self.summary(), self.local(), check_paths=False, recognise=self.options.check_paths)
        except InputError as e:
            return e.problems

    def plan_problems(self) -> list[Problem]:
        """Problems of the experiment as a whole found by planning (run names that collide or are reserved)."""
        self.summary(), self.local()
        return self._plan if isinstance(self._plan, list) else []

    def plan(self) -> Plan:
        if isinstance(self._plan, list):
            raise Blocked("run names collide", item_id("run_names_unique", self.name))
        return self._plan

    # -- runs ---------------------------------------------------------------------------------------------------

    @cached_property
    def _run_plans(self) -> dict[str, RunPlan]:
        return {rp.name: rp for rp in self.plan().runs}

    def run_plan(self, name: str) -> RunPlan:
        return self._run_plans[name]

    def run(self, name: str) -> RunExpectation:
        """The expectation of one fine-tuned run; Blocked when its settings cannot be derived."""
        rp = self.run_plan(name)
        if rp.setup is None:
            raise Blocked("the run's settings cannot be derived from the summary", item_id("run_settings", name))
        return RunExpectation.of(self.plan(), rp)

    def fine_tuned_runs(self) -> list[RunRef]:
        return [r for r in self.runs if r.fine_tuned]
