"""The token audit as a verification check: data that changed after generation, or a max_seq_len that no longer
fits it, fails `scaffold verify`, naming the records (scaffold.torchtune_ext.audit counts them with the run's own
dataset builder and tokenizer). `audit_run` is also what `scaffold generate` runs for each fine-tuned run."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import Problem
from ..plan import FINETUNE_FILE
from ..torchtune_ext import audit
from . import FINE_TUNED, check
from .context import RunContext
from .dataset import dataset_file
from .findings import NotApplicable
from .parity import need_transformers

POLICY_FIX = (
    "set max_seq_len to at least {fit} (the longest record), shorten or remove those records, or accept the loss "
    "explicitly with untrainable_records: drop (train without them) or train (keep them)"
)


@dataclass
class RunAudit:
    """What the audit found for one run: per split, and the problems (run.problem keywords) and warnings."""

    splits: dict[str, audit.SplitAudit] = field(default_factory=dict)
    problems: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [a.line() for a in self.splits.values()]


def audit_run(setup: dict[str, Any], config: dict[str, Any], data_file: Path, model_dir: Path) -> RunAudit:
    """Audit the splits a run trains and validates on, with the dataset sections of its finetune.yaml (`config`)
    on this machine's paths. NotApplicable where transformers or the model's tokenizer files are not here."""
    need_transformers("the token audit")
    if not (model_dir / "tokenizer_config.json").is_file():
        raise NotApplicable(f"the model's tokenizer files are not here ({model_dir}/tokenizer_config.json)")
    if not data_file.is_file():
        raise NotApplicable(f"the dataset {data_file} is not here (dataset_splits reports it)")
    max_seq_len = (config.get("tokenizer") or {}).get("max_seq_len")
    out = RunAudit()
    sections = [("dataset", config.get("dataset"))]
    if isinstance(config.get("dataset_val"), dict):
        sections.append(("dataset_val", config["dataset_val"]))
    for key, section in sections:
        if not isinstance(section, dict) or not isinstance(section.get("_component_"), str):
            continue
        module, _, name = section["_component_"].rpartition(".")
        try:
            builder = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            raise NotApplicable(f"the dataset builder {section['_component_']} is not importable here") from None
        split = str(section.get("field") or "train")
        limit = section.get("max_seq_len", max_seq_len)
        try:
            result = audit.audit_split(
                builder, section, split, str(data_file), str(model_dir), limit, audit.ends_with_end_token(section)
            )
        except Exception as e:  # a record the builder refuses: train_eval_parity and dataset_splits report it
            raise NotApplicable(f"the dataset builder fails on the {split} split: {e}") from None
        out.splits[split] = result
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
