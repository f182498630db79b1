"""Checks of the inputs and of the experiment's layout: schemas, log, run directories, names and output dirs."""

from __future__ import annotations

import os
from collections.abc import Iterator

from .. import confine
from ..engine import EXPERIMENT, RUN, check
from ..engine.context import ExperimentContext, RunContext
from ..engine.expectations import RunRef, item_id
from ..engine.findings import Blocked, finding
from ..errors import Problem
from ..layout import FINE_TUNED, FINETUNE_FILE, LOG_DIR, LOG_NAME, SUMMARY_NAME, TRAINING_FILES


@check("summary_schema", scope=EXPERIMENT, file=SUMMARY_NAME)
def summary_is_valid(exp: ExperimentContext) -> list[Problem]:
    """experiment_summary.yaml loads, its older spellings normalise, and it is valid under its schema."""
    return exp.expectations.summary_problems()


@check("local_config_schema", scope=EXPERIMENT)
def local_config_is_valid(exp: ExperimentContext) -> list[Problem]:
    """The local config is found (--local-config, $SCAFFOLD_LOCAL_CONFIG or upward) and valid under its schema."""
    return exp.expectations.local_problems()


@check("log_exists", scope=EXPERIMENT, file=f"{LOG_DIR}/{LOG_NAME}")
def log_exists(exp: ExperimentContext) -> Iterator[Problem]:
    """The generator's log exists, is not empty, and is no link (scaffold.confine: a cloned experiment's log
    linked elsewhere would have the tool append to that file)."""
    log = exp.expectations.local_dir / LOG_DIR / LOG_NAME
    if (link := confine.leads_out(exp.expectations.local_dir, log, strict=True)) is not None:
        yield link.problem()
        return
    if not log.is_file() or log.stat().st_size == 0:
        yield finding(
            "the generator's log is missing or empty", file=log, fix="run `scaffold generate` (it appends to the log)"
        )


@check("run_names_unique", scope=EXPERIMENT, file=SUMMARY_NAME)
def run_names_are_unique(exp: ExperimentContext) -> list[Problem]:
    """No two runs share a directory (also where the file system ignores case), and none takes a reserved name."""
    try:
        return exp.expectations.plan_problems()
    except Blocked:  # the summary or local config is invalid: compare the raw names at least
        seen: dict[str, str] = {}
        out = []
        for ref in exp.expectations.runs:
            key = ref.name.casefold()
            if key in seen:
                out.append(
                    finding(
                        f"runs '{seen[key]}' and '{ref.name}' differ only by case, so they would share a directory",
                        file=exp.expectations.summary_path,
                        field=f"runs[{ref.index}].name",
                        fix="give every run a distinct name",
                    )
                )
            seen.setdefault(key, ref.name)
        return out


@check("output_dirs_unique", scope=EXPERIMENT, file=FINETUNE_FILE, reads_runs=True)
def output_dirs_are_unique(exp: ExperimentContext) -> Iterator[Problem]:
    """No two runs write to the same output_dir (as their finetune.yaml files resolve it)."""
    owners: dict[str, list[RunRef]] = {}
    for ref in exp.expectations.fine_tuned_runs():
        try:
            out = exp.output_dir(ref)
        except Blocked:
            continue  # reported by that run's own checks
        if isinstance(out, str):
            owners.setdefault(os.path.normpath(out), []).append(ref)
    for out, runs in owners.items():
        for ref in runs[1:]:
            run = exp.run(ref)
            yield run.problem(
                f"output_dir is also the output_dir of run {runs[0].name}: their checkpoints would overwrite "
                "each other",
                key="output_dir",
                found=out,
                fix="give each run its own output_dir ({experiment}/{run}/artifacts)",
            )


@check("run_files", scope=RUN)
def run_has_its_files(run: RunContext) -> Iterator[Problem]:
    """A fine-tuned run has its directory and three files; a control or eval-only run no training files (its
    directory holds nothing generated, so git does not store it: a clone without it passes)."""
    kind = run.ref.type
    if run.ref.fine_tuned:
        if not run.local_dir.is_dir():
            yield finding(
                "the run directory is missing", run=run.name, file=run.local_dir, fix="run `scaffold generate`"
            )
            return
        for name in TRAINING_FILES:
            if not run.path(name).is_file():
                yield finding(
                    f"{name} is missing",
                    run=run.name,
                    file=run.path(name),
                    fix="run `scaffold generate` (or `scaffold setup-finetune` in the run directory)",
                )
            elif why := run.unreadable(name):
                yield finding(
                    f"{name} {why}",
                    run=run.name,
                    file=run.path(name),
                    fix="remove the link and run `scaffold generate`"
                    if "symbolic link" in why
                    else f"make it readable for you (chmod u+r {run.path(name)}), or run `scaffold generate`",
                )
    elif kind in ("control", "eval-only"):
        for name in TRAINING_FILES:
            if run.path(name).exists():
                yield finding(
                    f"a {kind} run has no training files, but {name} is here",
                    run=run.name,
                    file=run.path(name),
                    fix=f"remove it, or make the run fine-tuned in {SUMMARY_NAME}",
                )
    else:
        raise Blocked(f"the run's type {kind!r} is not valid", item_id("summary_schema", run.experiment.name))


@check("run_settings", scope=FINE_TUNED, file=SUMMARY_NAME)
def run_settings_derive(run: RunContext) -> list[Problem]:
    """The run's settings can be derived from the summary, local config and model registry (known model, model path,
    valid time)."""
    rp = run.experiment.run_plan(run.name)
    if rp.setup is not None:
        return []
    problems = [p if p.run else p.with_run(run.name) for p in rp.problems]
    return problems or [finding("the run's settings cannot be derived", run=run.name, file=run.experiment.summary_path)]
