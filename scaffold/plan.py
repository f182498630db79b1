"""Planning: summary + local config + registry -> one RunPlan per run (pure data, nothing written).

The planner reads no file itself: what it needs of the disk (datasets, model files, tokenizers, environments, run
directories that are links, recognised models, the original's dataset resolver) it asks a `Probe`
(scaffold/probe.py), and where each value comes from is the precedence table of scaffold/precedence.py. One run is
planned by scaffold/runplanner.py."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError, Problem
from .inputs import modelrecognition, registry, sweep
from .inputs.localconfig import LocalConfig
from .inputs.summary import Summary
from .layout import (
    ARRAY_DIR,
    FINE_TUNED,
    LOG_DIR,
    MANIFEST,
    RECOGNISED_MODELS,
    SUMMARY_NAME,
)
from .probe import DiskProbe, Probe
from .runplanner import SweepContext, plan_fine_tuned
from .settings import RunSettings
from .steps import StepPlan


@dataclass
class RunPlan:
    """One run: where it goes and, for fine-tuned runs, the settings its setup_finetune.yaml records."""

    name: str
    type: str
    index: int
    local_dir: Path
    setup: RunSettings | None = None  # complete: every key of setup_finetune.schema.json
    sources: Mapping[str, str] = field(default_factory=dict)  # parameter -> "run" | "controls" | "default" | ...
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the run is generated, but something deserves a look
    # The optimizer steps as torchtune's recipes count them over the train split's records (None where the dataset
    # was not read); the pre-flight audit counts them again without the records it drops.
    steps: StepPlan | None = None
    # No time limit was given anywhere: the time is the floor (the original's default) until the pre-flight
    # estimate sets it (scaffold.checks.token_audit.preflight, which needs the token audit).
    time_estimated: bool = False

    @property
    def fine_tuned(self) -> bool:
        return self.type == FINE_TUNED


@dataclass
class Plan:
    summary: Summary
    local: LocalConfig
    models: dict[str, dict]
    runs: list[RunPlan]
    # Models recognised from their config.json by this plan (by name), and whether it looked at model directories
    # at all (then what it recognised is the whole record of RECOGNISED_MODELS).
    recognised: dict[str, modelrecognition.Recognised] = field(default_factory=dict)
    recognition_ran: bool = False


def make_plan(
    summary: Summary,
    local: LocalConfig,
    *,
    check_paths: bool = True,
    recognise: bool | None = None,
    probe: Probe | None = None,
) -> Plan:
    """Plan every run. Problems of the experiment as a whole raise InputError; per-run problems stay on the run.
    `recognise` (default: check_paths): a model in neither registry is recognised from its directory's config.json
    (the verification suite plans without path checks but recognises where it may look at the directory).
    `probe` answers what the plan needs of the disk (default: this machine's, DiskProbe)."""
    models = registry.models(local.get("models"))
    _check_collisions(summary)
    unnamed = {p.run: p for p in sweep.name_problems(summary.data, summary.doc, summary.swept)}
    recognise = check_paths if recognise is None else recognise
    context = SweepContext(summary, local, models, probe or DiskProbe(), check_paths, recognise)
    runs = []
    local_dir = str(summary.local_dir)
    for i, run in enumerate(summary.data["runs"]):
        rp = RunPlan(run["name"], run["type"], i, Path(os.path.join(local_dir, run["name"])))
        if rp.fine_tuned:
            plan_fine_tuned(rp, run, context)
        elif run.get("checkpoint_path"):
            rp.problems += _plan_eval_only(rp, run, context)
        if rp.name in unnamed:
            rp.problems.insert(0, unnamed[rp.name])
        runs.append(rp)
    return Plan(summary, local, models, runs, context.recognised, context.recognise)


def reserved_names(summary: Summary) -> dict[str, str]:
    """Names in the experiment directory that belong to something other than a run (case-folded -> why)."""
    reserved = {
        LOG_DIR: "the tool's log directory",
        ARRAY_DIR: "the job array scripts' directory",
        "golden": "the golden snapshots directory",
        SUMMARY_NAME: "the summary",
        RECOGNISED_MODELS: "the record of recognised models",
        MANIFEST: "the manifest of generated files",
    }
    paths = [summary.data["data"]["training"]["path"]] + [
        r["dataset_path"] for r in summary.data["runs"] if r.get("dataset_path")
    ]
    for path in paths:
        if not Path(path).is_absolute():
            reserved[Path(path).parts[0]] = f"where the dataset {path} is"
    return {fold(k): v for k, v in reserved.items()}


def fold(name: str) -> str:
    """A run name as filesystems may compare it: case-insensitive (macOS, Windows), trailing dots dropped
    (Windows)."""
    return name.casefold().rstrip(".")


def _check_collisions(summary: Summary) -> None:
    """Two runs may not share a directory, also on filesystems that fold case, nor take a reserved name."""
    seen: dict[str, int] = {}
    problems = []
    reserved = reserved_names(summary)
    for i, run in enumerate(summary.data["runs"]):
        key = fold(run["name"])
        if key in reserved:
            problems.append(
                summary.doc.problem(
                    ("runs", i, "name"),
                    f"run name '{run['name']}' is taken: that directory is {reserved[key]}",
                    fix="rename the run",
                )
            )
        elif key in seen:
            j = seen[key]
            other = summary.data["runs"][j]["name"]
            how = (
                "the same name"
                if other == run["name"]
                else "names that a filesystem may fold together (case, trailing dots)"
            )
            problems.append(
                summary.doc.problem(
                    ("runs", i, "name"),
                    f"runs[{j}] '{other}' and runs[{i}] '{run['name']}' have {how}, so they would share a directory",
                    fix="give every run a distinct name",
                )
            )
        else:
            seen[key] = i
    if problems:
        raise InputError(problems)


def _plan_eval_only(rp: RunPlan, run: dict, context: SweepContext) -> list[Problem]:
    """An eval-only run that evaluates an existing checkpoint: its directory only; the checkpoint must exist when
    paths are checked, and the log names it."""
    checkpoint = context.summary.resolve(run["checkpoint_path"])
    rp.notes.append(f"evaluates the existing checkpoint {checkpoint} (nothing to train)")
    if context.check_paths and not context.probe.is_directory(checkpoint):
        return [
            context.doc.problem(
                ("runs", rp.index, "checkpoint_path"),
                f"checkpoint directory not found: {checkpoint}",
                "point checkpoint_path at an existing epoch directory (e.g. .../some_run/artifacts/epoch_0)",
                run=rp.name,
            )
        ]
    return []
