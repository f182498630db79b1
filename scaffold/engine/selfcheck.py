"""The generator's own check of what it writes: the verification suite's checks that read nothing but a run's
expectation and the texts of its finetune.yaml and finetune.slurm (registered with `texts=True`,
scaffold.checks), run on the texts generate (and `scaffold setup-finetune`, which generates one run) has just
rendered, before any is written (`check_texts`), or on a run's files on disk (`check_files`). The same functions, with the same ids and the same problems, as the suite runs on the
files on disk; only how the texts are read differs, for speed: the configs of a batch are read incrementally
(scaffold.configread) and the batch's scripts go through `bash -n` together, each distinct script once
(`bash_syntax`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..configread import ConfigLoader, ConfigLoadError, LoadedConfig, load_config
from ..errors import Problem
from ..layout import FINETUNE_FILE, SLURM_FILE
from ..plan import Plan, RunPlan
from . import Skipped, run_check, text_checks
from .context import RenderedRun
from .expectations import RunExpectation
from .shell import bash_n, bash_syntax

Outcomes = dict[str, list[Problem]]  # check id -> its problems (none: passed), for each check that ran

_CONFIGS = ConfigLoader()  # one per process: what it learns from a batch serves every later one


def check_texts(plan: Plan, batch: list[tuple[RunPlan, dict[str, str]]]) -> list[Outcomes]:
    """The self-check of planned runs whose files were rendered with these texts (by file name)."""
    return [outcomes for outcomes, _ in check_batch(plan, batch)]


def check_batch(
    plan: Plan, batch: list[tuple[RunPlan, dict[str, str]]]
) -> list[tuple[Outcomes, dict[str, Any] | None]]:
    """`check_texts`, with each run's finetune.yaml as torchtune loads it (None where it does not load), which the
    pre-flight audit reads."""
    configs = _CONFIGS.load_rendered([(rp.local_dir / FINETUNE_FILE, texts[FINETUNE_FILE]) for rp, texts in batch])
    syntax = bash_syntax([(texts[SLURM_FILE], rp.setup or {}) for rp, texts in batch])
    memo: dict[Any, Any] = {}
    out = []
    for (rp, texts), config, error in zip(batch, configs, syntax, strict=True):
        run = RenderedRun(RunExpectation.of(plan, rp), texts, config, error, memo)
        out.append((run_checks(run), config.data if isinstance(config, LoadedConfig) else None))
    return out


def check_files(expected: RunExpectation, run_dir: Path) -> Outcomes:
    """The self-check of one run's files on disk, finetune.yaml loaded by OmegaConf itself (one run, where the time
    OmegaConf takes does not matter)."""
    texts = {name: (run_dir / name).read_text(encoding="utf-8") for name in (FINETUNE_FILE, SLURM_FILE)}
    try:
        config: LoadedConfig | ConfigLoadError = load_config(run_dir / FINETUNE_FILE, texts[FINETUNE_FILE])
    except ConfigLoadError as e:
        config = e
    return run_checks(RenderedRun(expected, texts, config, bash_n(texts[SLURM_FILE]), {}))


def run_checks(run: RenderedRun) -> Outcomes:
    """Every texts=True check on one run: the problems of each that ran (skipped ones are left out: blocked by a
    failure another check reports, or nothing to check for this run)."""
    out: Outcomes = {}
    for check in text_checks():
        outcome = run_check(check, run)
        if not isinstance(outcome, Skipped):
            out[check.id] = outcome
    return out
