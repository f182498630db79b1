"""Checks of the dataset file a run trains on: the declared splits and counts, the record keys, and enough
records for one optimizer step."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ..engine import check
from ..engine.context import RunContext
from ..engine.expectations import item_id
from ..engine.findings import Blocked, NotApplicable, finding
from ..errors import Problem
from ..layout import FINE_TUNED, FINETUNE_FILE
from ..stamps import cached_by_stamp, stamp
from ..steps import plan_for

RECORD_KEYS = (
    "input",
    "output",
)  # every record is {"input", "output"}, as the original's datasets and its evaluation task read them


@cached_by_stamp(maxsize=8)
def load_dataset(local: Path) -> object:
    """The dataset file's JSON, read once per version of the file (keyed by its stamp)."""
    with open(local, encoding="utf-8") as f:
        return json.load(f)


def dataset_file(run: RunContext) -> tuple[Path, Path]:
    """(path as the config names it, where it is on this machine); NotApplicable when this machine cannot see it."""
    named_text = run.expected().setup["dataset_path"]
    memo = run.memo
    if ("dataset_file", named_text) not in memo:
        summary = run.experiment.summary()
        named = Path(named_text)
        memo["dataset_file", named_text] = (named, summary.is_inside(named), summary.to_local(named))
    named, inside, local = memo["dataset_file", named_text]
    if not inside and not run.experiment.options.check_paths:
        raise NotApplicable(f"--no-check-paths: the dataset {named} is outside the experiment and not read")
    return named, local


@check("dataset_splits", scope=FINE_TUNED, file="dataset")
def dataset_has_declared_splits(run: RunContext) -> Iterator[Problem]:
    """The dataset file has the splits the summary declares (data.training.splits), with the declared counts, and
    every record has the keys the dataset builder reads."""
    named, local = dataset_file(run)
    # What this check finds depends on the dataset file alone (and whether it is the summary's): runs that share
    # it (all runs of a sweep, usually) read its records once.
    key = ("dataset_splits", named, local, stamp(local))
    memo = run.memo
    if key not in memo:
        memo[key] = list(_dataset_problems(run, named, local))
    for problem in memo[key]:
        yield problem.with_run(run.name)


def _dataset_problems(run: RunContext, named: Path, local: Path) -> Iterator[Problem]:
    """dataset_has_declared_splits' findings, without the run's name."""
    if not local.is_file():
        yield finding("dataset not found", file=local, fix="check the path, or generate the dataset")
        return
    try:
        data = load_dataset(local)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        line = getattr(e, "lineno", None)
        yield finding(f"the dataset is not readable JSON: {e}", file=local, line=line)
        return
    if not isinstance(data, dict):
        yield finding(
            "the dataset is not a mapping of splits",
            file=local,
            expected='{"train": [...], "validation": [...], "test": [...]}',
            found=type(data).__name__,
        )
        return
    summary = run.experiment.summary()
    training = summary.data["data"]["training"]
    # Declared counts describe data.training.path; a run's own dataset_path must still have the split it reads.
    declared = dict(training.get("splits") or {}) if named == summary.resolve(training["path"]) else {}
    declared.setdefault("train", None)
    for split, count in declared.items():
        records = data.get(split)
        if not isinstance(records, list):
            yield finding(
                f"split '{split}' is missing",
                file=local,
                field=split,
                fix="regenerate the dataset, or fix data.training.splits",
            )
            continue
        if count is not None and len(records) != count:
            yield finding(
                f"split '{split}' does not have the declared number of records (data.training.splits.{split})",
                file=local,
                field=split,
                expected=count,
                found=len(records),
            )
        for i, record in enumerate(records):
            missing = [k for k in RECORD_KEYS if not isinstance(record, dict) or not isinstance(record.get(k), str)]
            if missing:
                yield finding(
                    f"record lacks {', '.join(missing)} (text)",
                    file=local,
                    field=f"{split}[{i}]",
                    fix='every record is {"input": "...", "output": "..."}',
                )
                break  # one example per split is enough to act on


@check("training_steps", scope=FINE_TUNED, file=FINETUNE_FILE)
def train_split_fills_a_step(run: RunContext) -> Iterator[Problem]:
    """The train split fills at least one optimizer step, as torchtune's recipes count them (scaffold.steps: the
    records split over the data-parallel ranks, the last partial batch dropped): fewer would train zero steps."""
    _, local = dataset_file(run)
    blocked = Blocked("the dataset is missing or malformed", item_id("dataset_splits", run.name))
    try:
        data = load_dataset(local)
    except (OSError, ValueError):
        raise blocked from None
    if not isinstance(data, dict) or not isinstance(data.get("train"), list):
        raise blocked
    cfg = run.config().data
    batch, accumulation = cfg.get("batch_size"), cfg.get("gradient_accumulation_steps")
    if not isinstance(batch, int) or not isinstance(accumulation, int) or batch < 1 or accumulation < 1:
        raise Blocked("batch settings are missing", item_id("parameter_values", run.name))
    # The steps exactly as torchtune's recipes count them (scaffold.steps), with the config's batch settings.
    settings = {**run.expected().setup, "batch_size": batch, "gradient_accumulation_steps": accumulation}
    plan = plan_for(settings, len(data["train"]))
    if plan.total_steps == 0:
        ((what, _),) = plan.warnings()
        yield run.problem(
            what,
            key="batch_size",
            expected=f">= {plan.min_records} records",
            found=len(data["train"]),
            fix="lower batch_size or gradient_accumulation_steps, or add training records",
        )
