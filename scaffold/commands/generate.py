"""`scaffold generate`: load and validate -> plan -> render -> write -> self-check, with a log and a report."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from .. import __version__, confine
from ..errors import InputError, Problem, display_path
from ..inputs import localconfig, modelrecognition, original_setup, schemas
from ..inputs import summary as summary_mod
from ..layout import (
    ARTIFACTS_DIR,
    FINE_TUNED,
    JOURNAL,
    LOG_DIR,
    LOG_NAME,
    RECOGNISED_MODELS,
    REJECTED_DIR,
    SETUP_FILE,
    SLURM_FILE,
    SUMMARY_NAME,
    TRAINING_FILES,
)
from ..output.lock import DEFAULT_TIMEOUT, LockTimeout, lock_where_writable
from ..output.outcome import Report, RunOutcome, failures
from ..output.report import as_json, as_text, plan_text
from ..output.runlog import RunLog, describe, shared_settings
from ..output.writer import (
    FORCED,
    KEPT,
    NOT_WRITTEN,
    UNCHANGED,
    FileResult,
    Manifest,
    atomic_write,
    backup,
    cannot_write,
    commit_write,
    keep_in_git,
    plan_write,
    remove_stale_temporaries,
    run_files,
    sha256,
    write_new,
)
from ..plan import Plan, RunPlan, make_plan
from ..render import fingerprint, model_json, sbatch_site
from ..rules import recipe_for
from ..slurm import arrays
from .pipeline import Renderer, Row
from .reply import Reply, errors


@dataclass(frozen=True)
class RunChange:
    """A change to one run, made in its entry of the summary (`scaffold setup-finetune`): generate plans the
    experiment from `summary_text` (the summary with the change), renders and checks that run alone, and only when it
    passes writes the summary (if the file still holds `summary_was`) and then the run's files. `absorbed`: files of
    the run edited by hand whose edits are in the change (overwritten, with a backup). `lines`: the change, for the
    log."""

    run: str
    summary_text: str
    summary_was: str
    absorbed: frozenset[str] = frozenset()
    lines: tuple[str, ...] = ()


def generate(
    target: Path,
    *,
    local_config: Path | None = None,
    dry_run: bool = False,
    force: bool = False,
    check_paths: bool = True,
    lock_timeout: float = DEFAULT_TIMEOUT,
    change: RunChange | None = None,
) -> Report:
    """Generate every run of an experiment (with `change`: that run alone, from the changed summary). Never raises
    for bad input: problems end up in the report."""
    started = time.perf_counter()
    summary_file = summary_mod.summary_path(Path(target))
    report = Report(summary=display_path(summary_file), dry_run=dry_run)
    # Links planted in the experiment that lead out of it: refused before anything is read or written.
    if hostile := confine.summary_problems(summary_file):
        report.input_errors = hostile
        report.seconds = time.perf_counter() - started
        return report
    log = RunLog(None)
    if not dry_run and summary_file.is_file():
        log = RunLog(summary_file.resolve().parent / LOG_DIR / LOG_NAME, keep_open=True)
        report.log = display_path(log.path)
    command = f"setup-finetune {change.run}" if change else "generate"
    try:
        plan = plan_summary(summary_file, local_config, check_paths, change.summary_text if change else None)
        summary = plan.summary
        report.experiment = summary.name
    except InputError as e:
        report.input_errors = e.problems
        if log.path is not None:
            log.heading(f"scaffold-torchtune {__version__} {command} {report.summary}: input invalid, nothing written")
            for line in change.lines if change else ():
                log.info(f"the change (not made): {line}")
            for p in e.problems:
                log.error_line(p.format())
            log.close()
            report.log_error = log.error
        report.seconds = time.perf_counter() - started
        return report

    try:
        with _lock(summary.local_dir, dry_run, lock_timeout):
            try:
                _generate_all(plan, report, log, force=force, dry_run=dry_run, check_paths=check_paths, change=change)
            finally:
                log.close()
    except LockTimeout as e:
        report.errors.append(Problem(str(e), display_path(summary.local_dir), fix="wait for the other process"))
    report.seconds = time.perf_counter() - started
    return report


@contextmanager
def _lock(directory: Path, dry_run: bool, timeout: float) -> Iterator[None]:
    """The experiment's lock around writing (a dry run writes nothing and takes none)."""
    if dry_run:
        yield
        return
    with lock_where_writable(directory, "generate", timeout):
        yield


def _generate_all(
    plan: Plan,
    report: Report,
    log: RunLog,
    *,
    force: bool,
    dry_run: bool,
    check_paths: bool,
    change: RunChange | None = None,
) -> None:
    summary, local = plan.summary, plan.local
    command = f"setup-finetune {change.run}" if change else "generate"
    log.heading(
        f"scaffold-torchtune {__version__} {command} {report.summary} (experiment {summary.name}; "
        f"local config {local.path.resolve()}; {local.found}; force={force}; check_paths={check_paths})"
    )
    for line in change.lines if change else ():
        log.info(f"the change: {line}")
    notes = summary.notes + local.notes
    if summary.root != summary.local_dir:
        notes.append(
            f"experiment.dir is {summary.root}: generated files name paths there; files are written to "
            f"{summary.local_dir}"
        )
    for note in notes:
        log.info(note)
    log.flush()

    report.wandb_offline = [
        rp.setup["output_dir"]
        for rp in plan.runs
        if rp.setup
        and not rp.problems
        and rp.setup.get("metric_logger") == "wandb"
        and rp.setup.get("wandb_mode") == "offline"
    ]
    mail_off = job_mail_off(plan)
    if mail_off:
        report.notes.append(mail_off)
        log.info(mail_off)
    shared = shared_settings(plan.runs)
    if shared:
        first = next(rp for rp in plan.runs if rp.setup)
        log.info(
            "settings of every fine-tuned run (value and where it came from; each run's section lists the "
            "others):\n" + describe(first, only=shared)
        )
    log.flush()

    if not dry_run and plan.recognition_ran:
        _write_recognised(plan, log)
    manifest = Manifest(summary.local_dir)
    if manifest.damaged:
        what = f"the manifest {display_path(manifest.path)} {manifest.damaged}"
        if manifest.unreadable:  # nothing generated could be recorded: write nothing
            problem = Problem(
                f"{what}: nothing is written without it",
                display_path(manifest.path),
                fix=f"remove it (`rm -r {display_path(manifest.path)}`): the next generate rebuilds it (a run whose "
                "files differ from what the summary gives is then kept as edited by hand, until --force)",
            )
            report.errors.append(problem)
            log.error_line(problem.format())
            return
        note = (
            f"{what} (damaged): it is rebuilt from this generation; a run whose files on disk differ from what the "
            "summary gives now cannot be told apart from a hand edit, so it is kept (re-run with --force to regenerate "
            "such runs; a backup of each file is kept)"
        )
        report.notes.append(note)
        log.warning(note)
    # Which runs have something to render: a fine-tuned run is skipped when its settings, the templates and its
    # files on disk are all as when it was last generated and checked. (A run never generated before needs no
    # fingerprint to say so: the renderer works it out with the rest.)
    unchanged: set[str] = set()
    to_render = []
    model_texts = {name: model_json(model) for name, model in plan.models.items()}
    selected = [(i, rp) for i, rp in enumerate(plan.runs) if change is None or rp.name == change.run]
    # A run whose own files lead out of the experiment through a link fails before any of them is read.
    real = os.path.realpath(summary.local_dir)
    leading_out = {
        rp.name: problem
        for _, rp in selected
        if not rp.problems and (problem := confine.run_problem(summary.local_dir, rp.local_dir, rp.name, real))
    }
    for i, rp in selected:
        if rp.name in leading_out:
            continue
        if rp.fine_tuned and not rp.problems and rp.setup is not None:
            if not force and manifest.source(rp.name) is not None and not (change and change.absorbed):
                model = rp.setup["model"]
                fp = fingerprint(rp.setup, plan.models[model], model_texts[model])
                if manifest.checked(rp.name, fp, run_files(rp.local_dir)):
                    unchanged.add(rp.name)
                    continue
            to_render.append(i)
    # The others are rendered and self-checked, a batch at a time, and each run's files are written (committed) only
    # when its checks pass.
    renderer = Renderer(
        plan, to_render, check=not dry_run, model_texts=model_texts, shared=shared, check_paths=check_paths
    )
    rejected = Rejected(summary.local_dir, dry_run)
    before_write = _summary_writer(summary.path, change) if change else None
    try:
        for i, rp in selected:
            out = _generate_run(
                i,
                rp,
                manifest,
                log,
                force=force,
                dry_run=dry_run,
                shared=shared,
                unchanged=rp.name in unchanged,
                renderer=renderer,
                rejected=rejected,
                before_write=before_write,
                absorbed=change.absorbed if change else frozenset(),
                leads_out=leading_out.get(rp.name),
            )
            report.runs.append(out)
            log.flush_some()
    except BaseException:
        renderer.close()
        # Interrupted (Ctrl-C, SIGTERM): fold what was written into the manifest now. (After a SIGKILL, which runs
        # nothing, the next process folds the manifest's journal in: scaffold.output.writer.Manifest.)
        if not dry_run:
            with contextlib.suppress(OSError):
                manifest.save()
        raise
    renderer.close()
    if not dry_run:
        _write_arrays(plan, report, log, manifest, force=force, alone=change is not None)
    if not dry_run:
        try:
            manifest.save()
        except OSError as e:
            problem = cannot_write(e)
            problem = replace(
                problem,
                message=f"cannot write the manifest: {e.strerror} (what was written is in its journal, "
                f"{JOURNAL}, folded in by the next generate)",
                file=problem.file or display_path(manifest.path),
            )
            log.error_line(problem.format())
            report.errors.append(problem)
    failed = [r.name for r in report.runs if r.status != "ok"]
    log.info(
        f"done: {sum(r.type == 'fine-tuned' and r.status == 'ok' for r in report.runs)} fine-tuned runs configured, "
        f"{sum(r.type != 'fine-tuned' and r.status == 'ok' for r in report.runs)} control/eval-only runs created"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    log.flush()
    report.log_error = report.log_error or log.error


def _write_recognised(plan: Plan, log: RunLog) -> None:
    """The record of the models this plan recognised from their config.json (RECOGNISED_MODELS), for the runs that
    do not look at model directories (--no-check-paths, CI); removed when no model needs recognising any more."""
    path = plan.summary.local_dir / RECOGNISED_MODELS
    try:
        if plan.recognised:
            text = modelrecognition.record_text(plan.recognised)
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                atomic_write(path, text)
                log.info(f"recorded the recognised models ({', '.join(sorted(plan.recognised))}) in {path}")
        elif path.is_file():
            path.unlink()
            log.info(f"removed {path}: no model of the experiment is recognised from its config.json any more")
    except OSError as e:
        log.error_line(f"cannot write {path}: {e.strerror}")


def job_mail_off(plan: Plan) -> str | None:
    """Said once when a fine-tuned run's job sends no mail: the original mails at begin and end (to an address it
    makes from the username and its university's domain); here the address comes from the local config, and
    without one mail is off."""
    silent = [rp.name for rp in plan.runs if rp.setup and not sbatch_site(rp.setup)["mail_user"]]
    if not silent:
        return None
    how = (
        'add the bullet "- **Email**: `you@your.org`" under SLURM Defaults in'
        if ".md" in plan.local.path.suffixes
        else "add `mail_user: you@your.org` to"
    )
    which = (
        "every fine-tuned run" if len(silent) == sum(bool(rp.setup) for rp in plan.runs) else f"{len(silent)} run(s)"
    )
    return (
        f"job mail is off for {which}: the local config names no address (the original mails at begin and end); "
        f"to turn it on, {how} {display_path(plan.local.path)} (mail goes at BEGIN,END unless mail_type says otherwise)"
    )


def _write_arrays(plan: Plan, report: Report, log: RunLog, manifest: Manifest, *, force: bool, alone: bool) -> None:
    """The job array scripts (scaffold.slurm.arrays), only when every fine-tuned run was generated and checked: else
    they stay as they are, like the failed runs' files. (`alone`: one run was generated, the others are as they are
    on disk: the arrays follow when each has its batch script.)"""
    failed = [r.name for r in report.runs if r.type == FINE_TUNED and r.status != "ok"]
    if failed:
        log.info(f"job arrays: not updated ({len(failed)} fine-tuned run(s) failed)")
        return
    fine_tuned = [rp.name for rp in plan.runs if rp.fine_tuned]
    missing = [name for name in fine_tuned if alone and not (plan.summary.local_dir / name / SLURM_FILE).is_file()]
    if missing:
        note = f"job arrays not updated: {len(missing)} run(s) not generated yet (run `scaffold generate`)"
        log.info(note)
        report.notes.append(note)
        return
    outcomes, problems = arrays.update(
        plan.summary.local_dir,
        fine_tuned,
        experiment=plan.summary.name,
        root=plan.summary.root,
        manifest=manifest,
        force=force,
        log=log,
    )
    report.arrays += outcomes
    report.errors += problems


def plan_summary(summary_file: Path, local_config: Path | None, check_paths: bool, text: str | None = None) -> Plan:
    """The plan of a summary file (read from `text` where given), with the site config found for it (or
    `local_config`); InputError for invalid input."""
    summary = summary_mod.load(summary_file, text)
    path, found = localconfig.locate(summary.local_dir, local_config)
    local = localconfig.load(path)
    local.found = found
    _check_shell_safe_root(summary)
    return make_plan(summary, local, check_paths=check_paths)


def reply(report: Report, *, json_out: bool = False) -> Reply:
    """What generate prints: its report as JSON (`--json`) or as text, the text on stderr when the input is
    invalid (nothing was written)."""
    if json_out:
        return Reply(report.exit_status, out=as_json(report) + "\n")
    if report.input_errors:
        return Reply(report.exit_status, err=as_text(report))
    return Reply(report.exit_status, out=as_text(report))


def plan_reply(plan: Plan | list[Problem]) -> Reply:
    """What `generate --print-plan` prints: the runs and their settings, or the input problems."""
    if isinstance(plan, list):
        return Reply(2, err=errors(plan))
    return Reply(0, out=plan_text(plan))


def load_plan(target: Path, *, local_config: Path | None = None, check_paths: bool = True) -> Plan | list[Problem]:
    """The validated plan of an experiment (nothing written), or the input problems."""
    try:
        return plan_summary(summary_mod.summary_path(Path(target)), local_config, check_paths)
    except InputError as e:
        return e.problems


def _check_shell_safe_root(summary) -> None:
    """Run directories reach #SBATCH lines, which cannot be quoted: the experiment path must be plain."""
    pattern = schemas.schema(schemas.SUMMARY)["$defs"]["shell_safe_path"]
    if not re.fullmatch(pattern["pattern"], str(summary.root)):
        where = ("experiment", "dir") if summary.data["experiment"].get("dir") else ()
        raise InputError(
            [
                summary.doc.problem(
                    where,
                    f"the experiment directory {summary.root} contains characters that #SBATCH lines cannot carry",
                    pattern["x-fix"] + "; move the experiment or set experiment.dir",
                )
            ]
        )


def _generate_run(
    index: int,
    rp: RunPlan,
    manifest: Manifest,
    log: RunLog,
    *,
    force: bool,
    dry_run: bool,
    shared: frozenset[str],
    unchanged: bool,
    renderer: Renderer,
    rejected: Rejected,
    before_write: Callable[[], None] | None = None,
    absorbed: frozenset[str] = frozenset(),
    leads_out: Problem | None = None,
) -> RunOutcome:
    """One run: rendered, self-checked, and its files written only when every check passed (`before_write` is
    called first: the summary of a `RunChange`). `leads_out`: its directory or a file of it is a link out of the
    experiment (scaffold.confine): it fails, nothing of it read or written."""
    out = RunOutcome(rp.name, rp.type, directory=display_path(rp.local_dir))
    log.heading(f"run {rp.name} ({rp.type})")
    for note in rp.notes:
        log.info(note, rp.name)
    if rp.problems:
        return _fail(out, rp.problems, log)
    if leads_out is not None:
        out.files = dict.fromkeys(TRAINING_FILES, NOT_WRITTEN) if rp.fine_tuned else {}
        return _fail(out, [leads_out], log)
    for warning in rp.warnings:
        log.warning(warning, rp.name)
    out.warnings = list(rp.warnings)
    texts: dict[str, str] = {}
    row = None
    if rp.fine_tuned:
        assert rp.setup is not None
        out.recipe = recipe_for(rp.setup)
        if rp.steps is not None:
            out.preflight = {"steps": rp.steps.as_dict()}
        if unchanged:
            # Same settings, same generator, files as written (and checked) then: nothing to render or write.
            if before_write is not None:
                try:
                    before_write()
                except OSError as e:
                    return _fail(out, [_cannot_write(e, rp)], log)
            out.files = dict.fromkeys(TRAINING_FILES, UNCHANGED)
            out.checked_earlier = True
            if not dry_run:  # generated before artifacts/ was kept in git: one stat when it is
                try:
                    keep_in_git(rp.local_dir / ARTIFACTS_DIR)
                except OSError as e:
                    return _fail(out, [_cannot_write(e, rp)], log)
            log.info("unchanged since generated and checked (settings, generator and files all as then)", rp.name)
            return out
        row = renderer.get(index)
        out.fingerprint = row.fingerprint
        own = row.settings
        log.info("settings (value and where it came from):\n" + own if own else "settings: as every run", rp.name)
        if row.error is not None:
            message, file = row.error
            problem = Problem(
                f"rendering failed: {message}",
                display_path(rp.local_dir / file),
                fix="a template needs a setting this run does not have: check the run's parameters and the model "
                "registry entry, or report a bug in the template",
                run=rp.name,
            )
            return _fail(out, [problem], log)
        assert row.texts is not None
        texts = row.texts
        if row.checks is not None:
            out.checks = row.checks
            bad = failures(row.checks)
            passed = sum(not problems for problems in row.checks.values())
            log.info(f"self-check: {passed}/{len(row.checks)} passed", rp.name)
            if bad:
                return _reject(out, rp, texts, bad, rejected, log)
        if row.preflight is not None:
            problems = _preflight(out, rp, row, log, renderer.plan.summary)
            if problems:
                out.files = dict.fromkeys(TRAINING_FILES, NOT_WRITTEN)
                return _fail(out, problems, log)
    try:
        created = False if dry_run else _make_dir(rp.local_dir)
        if not rp.fine_tuned:
            present = [] if created else [n for n in TRAINING_FILES if (rp.local_dir / n).exists()]
            if present:
                log.info(f"note: training files present in a {rp.type} run directory: {', '.join(present)}", rp.name)
            log.info(f"{rp.type} run: directory only ({out.directory})", rp.name)
            return out
        assert row is not None
        if created:
            if before_write is not None:
                before_write()
            problems = _write_new_run_files(rp, texts, row.fingerprint, out, manifest, log)
        else:
            if not dry_run:
                remove_stale_temporaries(rp.local_dir, TRAINING_FILES)
            problems = _write_run_files(
                rp,
                texts,
                row.fingerprint,
                out,
                manifest,
                log,
                force=force,
                dry_run=dry_run,
                before_write=before_write,
                absorbed=absorbed,
            )
        if not problems and not dry_run:
            rejected.clear(rp.name)
    except PermissionError as e:
        target = Path(e.filename or rp.local_dir)
        where = target if target.is_dir() else target.parent
        problems = [
            Problem(
                f"permission denied: {e.filename}",
                display_path(target),
                fix=f"make {display_path(where)} writable for you (chmod u+w), or generate elsewhere",
                run=rp.name,
            )
        ]
    except OSError as e:
        problems = [_cannot_write(e, rp)]
    return _fail(out, problems, log) if problems else out


def _preflight(out: RunOutcome, rp: RunPlan, row: Row, log: RunLog, summary: summary_mod.Summary) -> list[Problem]:
    """The pre-flight audit of a run that passed its self-check, into the log and the report: its lines, its
    warnings, the time limit the estimate set; the problems that refuse the run (nothing of it is written)."""
    found = row.preflight
    out.preflight = found.fields()
    for line in found.lines():
        log.info(line, rp.name)
    if row.time_from:
        log.info(f"time limit {row.time_from}: set by the estimate (no time limit given anywhere)", rp.name)
    for warning in found.warnings:
        log.warning(warning, rp.name)
        out.warnings.append(warning)
    # Named at the summary's line that sets max_seq_len for the run (its entry, where the value is a default).
    source = rp.sources.get("max_seq_len")
    where: tuple = (
        ("runs", rp.index, "parameters", "max_seq_len")
        if source == "run"
        else ("controls", "max_seq_len")
        if source == "controls"
        else ("runs", rp.index)
    )
    data = rp.setup["dataset_path"] if rp.setup else "the dataset"
    return [summary.doc.problem(where, f"{p['message']} (in {data})", p.get("fix"), rp.name) for p in found.problems]


def _cannot_write(e: OSError, rp: RunPlan) -> Problem:
    if isinstance(e, SummaryChanged):
        return Problem(str(e), e.filename, fix="run `scaffold setup-finetune` again", run=rp.name)
    return cannot_write(e, rp.name)


def read_summary_text(path: Path) -> str:
    """The summary's text as the YAML reader reads it (UTF-8, universal newlines), the text a change is made to."""
    return path.read_bytes().decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


class SummaryChanged(OSError):
    """The summary file is no longer the text a change was made to (another process wrote it meanwhile)."""


def _summary_writer(path: Path, change: RunChange) -> Callable[[], None]:
    """Write the changed summary (once), if the file still holds the text the change was made to. Called under the
    experiment's lock, once the run has passed its checks, before its files are written."""
    done = []

    def write_summary() -> None:
        if done:
            return
        try:
            current = read_summary_text(path)
        except UnicodeDecodeError:
            current = None
        if current != change.summary_was:
            raise SummaryChanged(
                f"{SUMMARY_NAME} changed while the run was being generated: the change was not made",
                display_path(path),
            )
        if change.summary_text != change.summary_was:
            atomic_write(path, change.summary_text, mode=path.stat().st_mode & 0o7777)
        done.append(True)

    return write_summary


class Rejected:
    """Where the texts of a run that failed its self-check are kept for the user to read (`logs/rejected/RUN/`,
    never the run's own directory, whose files stay as they were), and removed once the run passes."""

    def __init__(self, experiment_dir: Path, dry_run: bool):
        self.dir = experiment_dir / LOG_DIR / REJECTED_DIR
        self._present: set[str] = set()
        if not dry_run:
            with contextlib.suppress(OSError):
                self._present = set(os.listdir(self.dir))

    def keep(self, run: str, texts: dict[str, str]) -> Path:
        directory = self.dir / run
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            atomic_write(directory / name, text)
        self._present.add(run)
        return directory

    def clear(self, run: str) -> None:
        if run in self._present:
            shutil.rmtree(self.dir / run, ignore_errors=True)
            self._present.discard(run)


def _reject(
    out: RunOutcome, rp: RunPlan, texts: dict[str, str], problems: list[Problem], rejected: Rejected, log: RunLog
) -> RunOutcome:
    """A run whose texts failed their self-check: nothing of it is written (its files, if any, stay as they were,
    and are not taken as checked: its fingerprint is not recorded), and the texts are kept in logs/rejected/."""
    out.files = dict.fromkeys(TRAINING_FILES, NOT_WRITTEN)
    try:
        kept = rejected.keep(rp.name, texts)
        where = display_path(kept)
        note = f"not written: the run's files were left as they are; the texts that failed are in {where}/"
        # Each problem names the line of the text that failed, which is there (not in the run's own file).
        own = {display_path(rp.local_dir / name): display_path(kept / name) for name in texts}
        problems = [replace(p, file=own.get(p.file or "", p.file)) for p in problems]
        out.checks = {c: [replace(p, file=own.get(p.file or "", p.file)) for p in ps] for c, ps in out.checks.items()}
    except OSError as e:
        note = f"not written: the run's files were left as they are (the texts that failed could not be kept: {e})"
    out.notes.append(note)
    log.info(note, rp.name)
    return _fail(out, problems, log)


def _make_dir(path: Path) -> bool:
    """Create a run directory; True when this call created it (so nothing in it can need keeping)."""
    try:
        os.mkdir(path)
        return True
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return False
    except FileNotFoundError:  # the experiment directory itself went away: create it again, as before
        os.makedirs(path, exist_ok=True)
        return True


def _write_new_run_files(
    rp: RunPlan, texts: dict[str, str], fp: str, out: RunOutcome, manifest: Manifest, log: RunLog
) -> list[Problem]:
    """The three files of a fine-tuned run in its new directory (the common case of a first generation), committed
    to the manifest's journal before the first is written."""
    # --output of the batch script points here; SLURM does not create it (the job would fail with no log).
    run_dir = str(rp.local_dir)
    keep_in_git(os.path.join(run_dir, ARTIFACTS_DIR))
    data = {os.path.join(run_dir, name): texts[name].encode("utf-8") for name in TRAINING_FILES}
    digests = {path: sha256(content) for path, content in data.items()}
    manifest.commit(digests, run=rp.name, source=fp)
    for (path, content), name in zip(data.items(), TRAINING_FILES, strict=True):
        out.files[name] = write_new(path, content, manifest, digests[path])
    manifest.record_source(rp.name, fp)
    log.info(", ".join(f"{name}: {status}" for name, status in out.files.items()), rp.name)
    return []


def _write_run_files(
    rp: RunPlan,
    texts: dict[str, str],
    fp: str,
    out: RunOutcome,
    manifest: Manifest,
    log: RunLog,
    *,
    force: bool,
    dry_run: bool,
    before_write: Callable[[], None] | None = None,
    absorbed: frozenset[str] = frozenset(),
) -> list[Problem]:
    """Write the three files of a fine-tuned run, all or none: a file edited by hand keeps the whole run as it is
    (reported, with its diff) unless forced (or `absorbed`: its edits are in the summary). The files to write are committed to the manifest's
    journal first, after `before_write`."""
    results: list[FileResult] = []
    for name in TRAINING_FILES:
        res = plan_write(rp.local_dir / name, texts[name], manifest, force or name in absorbed)
        results.append(res)
        if name == SETUP_FILE and res.status == KEPT:
            break  # the setup file decides: a hand-edited setup keeps the whole run as it is
    kept = [r for r in results if r.status == KEPT]
    for res in results:
        status = NOT_WRITTEN if kept and res.status not in (KEPT, UNCHANGED) else res.status
        out.files[res.path.name] = status
        if res.diff:
            out.diffs[res.path.name] = res.diff
    if kept:
        for res in results:
            log.info(f"{res.path.name}: {out.files[res.path.name]}", rp.name)
        log.info("diff:\n" + "".join(r.diff for r in kept), rp.name)
        names = ", ".join(r.path.name for r in kept)
        if kept[0].path.name == SETUP_FILE and (keys := original_setup.original_keys_of(kept[0].path)):
            return [
                Problem(
                    f"{SETUP_FILE} is in {original_setup.describe(keys)}, not one this tool generated; kept (so the "
                    "run's other files were left as they are)",
                    display_path(kept[0].path),
                    fix="re-run with --force to write this run's files in this tool's format from the summary (the "
                    "original's file is kept as a .bak backup)",
                    run=rp.name,
                )
            ]
        return [
            Problem(
                f"{names} edited by hand since it was generated; kept (so the run's other files were left as they are)"
                + (
                    f"; the manifest was damaged ({manifest.damaged}), so this may be the tool's own earlier write"
                    if manifest.damaged
                    else ""
                ),
                display_path(kept[0].path),
                fix="re-run with --force to regenerate (a backup is kept), or carry your edit into the summary with "
                "`scaffold setup-finetune` in the run directory",
                run=rp.name,
            )
        ]
    if dry_run:
        return []
    if before_write is not None:
        before_write()
    # --output of the batch script points here; SLURM does not create it (the job would fail with no log).
    keep_in_git(rp.local_dir / ARTIFACTS_DIR)
    changing = [r for r in results if r.status != UNCHANGED]
    data = {os.fspath(r.path): texts[r.path.name].encode("utf-8") for r in changing}
    if changing:
        manifest.commit({path: sha256(content) for path, content in data.items()}, run=rp.name, source=fp)
    for res in results:
        if res.status == FORCED:
            res.backup = backup(res.path)
            out.backups.append(display_path(res.backup))
            why = "its edits are in the summary" if res.path.name in absorbed and not force else "--force"
            log.info(f"{res.path.name}: edited by hand, overwritten ({why}); backup {res.backup}", rp.name)
        commit_write(res, texts[res.path.name], manifest)
        log.info(f"{res.path.name}: {res.status}", rp.name)
    manifest.record_source(rp.name, fp)
    return []


def _fail(out: RunOutcome, problems: list[Problem], log: RunLog) -> RunOutcome:
    out.status = "failed"
    out.errors = list(problems)
    for p in problems:
        log.error_line(p.format(), out.name)
    return out
