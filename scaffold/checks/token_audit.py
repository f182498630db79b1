"""The pre-flight audit of a fine-tuned run (`preflight`: its data's tokens, its optimizer steps, its budget
estimates and the time limit they set), which `scaffold generate` runs on each run it renders before writing it, and
the same audit as verification checks: data that changed after generation, or a max_seq_len that no longer fits it,
fails `scaffold verify` naming the records (`token_audit`; scaffold.torchtune_ext.audit counts them with the run's
own dataset builder and tokenizer), and an estimated time limit that no longer matches fails
(`slurm_time_estimate`)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import estimates
from ..engine import check
from ..engine.context import RunContext
from ..engine.findings import NotApplicable
from ..errors import Problem
from ..layout import FINE_TUNED, FINETUNE_FILE, SLURM_FILE
from ..plan import RunPlan
from ..steps import StepPlan, plan_for
from ..timeutil import format_time, parse_time
from ..torchtune_ext import audit
from .dataset import dataset_file
from .parity import need_transformers

POLICY_FIX = (
    "set max_seq_len to at least {fit} (the longest record), shorten or remove those records, or accept the loss "
    "explicitly with untrainable_records: drop (train without them) or train (keep them)"
)


def audited_sections(config: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(config key, dataset section, split) of each split a run's config trains or validates on."""
    out = []
    for key in ("dataset", "dataset_val"):
        section = config.get(key)
        if isinstance(section, dict) and isinstance(section.get("_component_"), str):
            out.append((key, section, str(section.get("field") or "train")))
    return out


@dataclass
class RunAudit:
    """What the audit found for one run: per split, and the problems (run.problem keywords) and warnings."""

    splits: dict[str, audit.SplitAudit] = field(default_factory=dict)
    problems: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    train: str | None = None  # the split the run trains on
    dropped: int = 0  # records of it the builder leaves out (untrainable_records: drop)

    def lines(self) -> list[str]:
        return [a.line() for a in self.splits.values()]


def audit_run(setup: dict[str, Any], config: dict[str, Any], data_file: Path, model_dir: Path) -> RunAudit:
    """Audit the splits a run trains and validates on, with the dataset sections of its finetune.yaml (`config`)
    on this machine's paths. NotApplicable where transformers or the model's tokenizer files are not here."""
    need_transformers("the token audit", look_only=True)
    if not (model_dir / "tokenizer_config.json").is_file():
        raise NotApplicable(f"the model's tokenizer files are not here ({model_dir}/tokenizer_config.json)")
    if not data_file.is_file():
        raise NotApplicable(f"the dataset {data_file} is not here (dataset_splits reports it)")
    max_seq_len = (config.get("tokenizer") or {}).get("max_seq_len")
    out = RunAudit()
    for key, section, split in audited_sections(config):
        module, _, name = section["_component_"].rpartition(".")
        try:
            builder = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            raise NotApplicable(f"the dataset builder {section['_component_']} is not importable here") from None
        limit = section.get("max_seq_len", max_seq_len)
        try:
            result = audit.audit_split(
                builder, section, split, str(data_file), str(model_dir), limit, audit.ends_with_end_token(section)
            )
        except Exception as e:  # a record the builder refuses: train_eval_parity and dataset_splits report it
            raise NotApplicable(f"the dataset builder fails on the {split} split: {e}") from None
        out.splits[split] = result
        if key == "dataset":
            out.train = split
            if setup.get("untrainable_records") == "drop":
                out.dropped = len(result.untrainable)
        _judge(out, key, section, setup, result)
    return out


def _judge(out: RunAudit, key: str, section: dict, setup: dict, result: audit.SplitAudit) -> None:
    bad, cut = result.untrainable, result.cut
    named = ", ".join(map(str, bad[: audit.SHOWN])) + (f" and {len(bad) - audit.SHOWN} more" if len(bad) > 5 else "")
    policy = setup.get("untrainable_records", "refuse")
    training = key == "dataset"
    if bad and policy == "refuse" and training:
        out.problems.append(
            dict(
                message=f"{len(bad)} record(s) of the {result.split} split would train on no answer token at "
                f"max_seq_len {result.max_seq_len} (their prompt part fills it): record(s) {named}",
                key="tokenizer.max_seq_len",
                fix=POLICY_FIX.format(fit=result.max_length),
            )
        )
    elif bad and policy == "drop" and not section.get("drop_untrainable"):
        out.problems.append(
            dict(
                message=f"untrainable_records is drop, but the {key} section does not drop the {len(bad)} record(s) "
                f"that would train on nothing ({named})",
                key=f"{key}.drop_untrainable",
                expected=True,
                found=section.get("drop_untrainable"),
                fix="regenerate with `scaffold generate`",
            )
        )
    elif bad:
        what = "left out (untrainable_records: drop)" if policy == "drop" else "kept (untrainable_records: train)"
        out.warnings.append(
            f"{len(bad)} record(s) of the {result.split} split train on no answer token at max_seq_len "
            f"{result.max_seq_len}, {what}: record(s) {named}"
        )
    if cut:
        shown = ", ".join(map(str, cut[: audit.SHOWN])) + (
            f" and {len(cut) - audit.SHOWN} more" if len(cut) > 5 else ""
        )
        out.warnings.append(
            f"{len(cut)} record(s) of the {result.split} split have their answer cut at max_seq_len "
            f"{result.max_seq_len} (they train on part of it): record(s) {shown}; max_seq_len {result.max_length} "
            "fits every record"
        )


@check("token_audit", scope=FINE_TUNED, file=FINETUNE_FILE)
def every_record_trains(run: RunContext) -> Iterator[Problem]:
    """Built with the run's own dataset builder and tokenizer, no record of the train split would train on no
    answer token at the run's max_seq_len (its prompt part filling it), unless setup_finetune.yaml accepts that
    explicitly (`untrainable_records: drop`, which the dataset section must then do, or `train`); records whose
    answer is cut part way are reported by `scaffold generate` as warnings (needs `transformers` and the model's
    tokenizer files, else skipped with the reason)."""
    setup = run.expected().setup
    _, local_data = dataset_file(run)
    # Runs that share the builder's settings, the data and the tokenizer share the built records (cached).
    found = audit_run(setup, run.config().data, local_data, run.to_local(setup["model_dir"]))
    for kwargs in found.problems:
        yield run.problem(**kwargs)


@dataclass
class Preflight:
    """A run's pre-flight audit: the token audit (None, with `skipped` saying why, where it cannot run here), the
    optimizer steps over the records it trains on, the budget estimates, and the time limit they set (`time`, only
    for a run given no time limit anywhere: RunPlan.time_estimated)."""

    audit: RunAudit | None
    steps: StepPlan | None
    estimate: estimates.Estimate | None
    time: str | None = None
    skipped: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[dict[str, Any]]:
        return self.audit.problems if self.audit else []

    def fields(self) -> dict[str, Any]:
        """The report's fields of the run."""
        return {
            "steps": self.steps.as_dict() if self.steps else None,
            "audit": {k: v.as_dict() for k, v in self.audit.splits.items()} if self.audit else None,
            "audit_skipped": self.skipped,
            "estimates": self.estimate.as_dict() if self.estimate else None,
            "time_estimated": self.time,
        }

    def lines(self) -> list[str]:
        """The log's lines of the run."""
        out = [self.steps.line()] if self.steps else []
        out += self.audit.lines() if self.audit else [f"token audit not run: {self.skipped}"]
        if self.estimate:
            out.append(self.estimate.line())
        return out


def preflight(
    rp: RunPlan, config: dict[str, Any], data_file: Path, model_dir: Path, local: Any | None = None
) -> Preflight:
    """The pre-flight audit of a planned fine-tuned run from its finetune.yaml's settings (`config`, as torchtune
    loads it), its data and model directory on this machine, and the local config (the GPU memory and partition
    limit it declares)."""
    setup = dict(rp.setup or {})
    try:
        found: RunAudit | None = audit_run(setup, config, data_file, model_dir)
        skipped = None
    except NotApplicable as e:
        found, skipped = None, str(e)
    train = found.splits.get(found.train or "") if found else None
    steps = rp.steps
    if steps is not None and found is not None and found.dropped:
        steps = plan_for(setup, steps.records - found.dropped)
    arch = estimates.architecture(setup.get("model", ""), model_dir if model_dir.is_dir() else None)
    estimate = None
    if arch is not None:
        estimate = estimates.estimate(
            setup,
            arch,
            train_records=steps.records if steps else None,
            p95_length=train.p95_length if train else None,
            max_length=train.max_length if train else None,
            output_dir=Path(str(setup.get("output_dir", ""))) if setup.get("output_dir") else None,
        )
    out = Preflight(found, steps, estimate, skipped=skipped)
    out.warnings += found.warnings if found else []
    if steps is not None and steps is not rp.steps:  # the plan warned of its own steps: these count fewer records
        out.warnings += [f"{what} ({fix})" for what, fix in steps.warnings()]
    gpu_memory = local.get("gpu_memory_gib") if local is not None else None
    out.warnings += estimate.warnings(gpu_memory) if estimate else []
    if rp.time_estimated and estimate is not None and estimate.seconds is not None:
        seconds = estimate.seconds
        limit_text = local.get("partition_max_time") if local is not None else None
        limit = parse_time(str(limit_text)) if limit_text else None
        if limit and seconds > limit:
            out.warnings.append(
                f"the estimated time {format_time(seconds)} is over the partition limit {format_time(limit)}: asked "
                "for the limit, which the run may not finish in (train fewer epochs or records, or set compute.time "
                "on a partition that allows more)"
            )
            seconds = limit
        out.time = format_time(seconds)
    return out


@check("slurm_time_estimate", scope=FINE_TUNED, file=SLURM_FILE)
def time_is_the_estimate(run: RunContext) -> Iterator[Problem]:
    """A run given no time limit anywhere (compute.time, the registry, the local config's default_time) asks for
    the time the pre-flight estimate sets from its audited tokens: at least the original's 00:15:00, at most the
    partition's limit (needs the token audit, else skipped with the reason; a run given a time limit is
    slurm_resources' concern)."""
    expected = run.expected()
    if not expected.plan.time_estimated:
        raise NotApplicable("the run's time limit is given (slurm_resources compares --time with it)")
    setup = expected.setup
    _, local_data = dataset_file(run)
    local = run.local()
    found = preflight(expected.plan, run.config().data, local_data, run.to_local(setup["model_dir"]), local)
    if found.time is None:
        raise NotApplicable(f"the time estimate needs the token audit: {found.skipped or 'no model shape known'}")
    d = run.slurm().directive("time")
    seconds = parse_time(d.value or "") if d is not None else None
    if d is not None and seconds is not None and seconds != parse_time(found.time):
        yield run.problem(
            "--time is not the time the pre-flight estimate sets for this run (no time limit is given anywhere)",
            file=SLURM_FILE,
            line=d.line,
            field="--time",
            expected=found.time,
            found=d.value,
            fix="regenerate with `scaffold generate --force` (the estimate follows the data and the settings), or "
            "give the run a time limit (compute.time, or default_time in the local config)",
        )
