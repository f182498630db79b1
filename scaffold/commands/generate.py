"""`scaffold generate`: load and validate -> plan -> render -> write -> self-check, with a log and a report."""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import __version__
from ..errors import InputError, Problem, display_path
from ..inputs import localconfig, original_setup, schemas
from ..inputs import summary as summary_mod
from ..output.lock import DEFAULT_TIMEOUT, LockTimeout, experiment_lock
from ..output.outcome import Report, RunOutcome, failures
from ..output.runlog import LOG_DIR, LOG_NAME, RunLog
from ..output.writer import KEPT, UNCHANGED, FileResult, Manifest, remove_stale_temporaries, write, write_new
from ..plan import SETUP_FILE, TRAINING_FILES, Plan, RunPlan, describe, make_plan, shared_settings
from ..render import fingerprint, model_json, sbatch_site
from ..rules import recipe_for
from ..slurm import arrays
from .pipeline import Renderer, Row


def generate(
    target: Path,
    *,
    local_config: Path | None = None,
    dry_run: bool = False,
    force: bool = False,
    check_paths: bool = True,
    lock_timeout: float = DEFAULT_TIMEOUT,
) -> Report:
    """Generate every run of an experiment. Never raises for bad input: problems end up in the report."""
    started = time.perf_counter()
    summary_file = summary_mod.summary_path(Path(target))
    report = Report(summary=display_path(summary_file), dry_run=dry_run)
    log = RunLog(None)
    if not dry_run and summary_file.is_file():
        log = RunLog(summary_file.resolve().parent / LOG_DIR / LOG_NAME, keep_open=True)
        report.log = display_path(log.path)
    try:
        plan = _load_plan(summary_file, local_config, check_paths)
        summary = plan.summary
        report.experiment = summary.name
    except InputError as e:
        report.input_errors = e.problems
        if log.path is not None:
            log.heading(f"scaffold-torchtune {__version__} generate {report.summary}: input invalid, nothing written")
            for p in e.problems:
                log.error_line(p.format())
            log.close()
            report.log_error = log.error
        report.seconds = time.perf_counter() - started
        return report

    try:
        with _lock(summary.local_dir, dry_run, lock_timeout):
            try:
                _generate_all(plan, report, log, force=force, dry_run=dry_run, check_paths=check_paths)
            finally:
                log.close()
    except LockTimeout as e:
        report.errors.append(Problem(str(e), display_path(summary.local_dir), fix="wait for the other process"))
    report.seconds = time.perf_counter() - started
    return report


@contextmanager
def _lock(directory: Path, dry_run: bool, timeout: float) -> Iterator[None]:
    """The experiment's lock around writing (a dry run writes nothing and takes none). Where the lock file
    cannot even be created, nothing can be written either: each run then reports why."""
    if dry_run:
        yield
        return
    try:
        lock = experiment_lock(directory, "generate", timeout)
        lock.__enter__()
    except PermissionError:
        yield
        return
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def _generate_all(plan: Plan, report: Report, log: RunLog, *, force: bool, dry_run: bool, check_paths: bool) -> None:
    summary, local = plan.summary, plan.local
    log.heading(
        f"scaffold-torchtune {__version__} generate {report.summary} (experiment {summary.name}; "
        f"local config {local.path.resolve()}; {local.found}; force={force}; check_paths={check_paths})"
    )
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

    manifest = Manifest(summary.local_dir)
    # Which runs have something to render: a fine-tuned run is skipped when its settings, the templates and its
    # files on disk are all as when it was last generated and checked. (A run never generated before needs no
    # fingerprint to say so: the renderer works it out with the rest.)
    unchanged: set[str] = set()
    to_render = []
    model_texts = {name: model_json(model) for name, model in plan.models.items()}
    for i, rp in enumerate(plan.runs):
        if rp.fine_tuned and not rp.problems and rp.setup is not None:
            if not force and manifest.source(rp.name) is not None:
                model = rp.setup["model"]
                fp = fingerprint(rp.setup, plan.models[model], model_texts[model])
                run_dir = str(rp.local_dir)
                if manifest.source(rp.name) == fp and manifest.unchanged(
                    [os.path.join(run_dir, name) for name in TRAINING_FILES]
                ):
                    unchanged.add(rp.name)
                    continue
            to_render.append(i)
    # The others are rendered and self-checked, a batch at a time, as they are written.
    renderer = Renderer(plan, to_render, check=not dry_run, model_texts=model_texts, shared=shared)
    checks: dict[str, dict[str, list[Problem]]] = {}
    try:
        for i, rp in enumerate(plan.runs):
            out, row = _generate_run(
                i,
                rp,
                manifest,
                log,
                force=force,
                dry_run=dry_run,
                shared=shared,
                unchanged=rp.name in unchanged,
                renderer=renderer,
            )
            report.runs.append(out)
            if not dry_run and out.status == "ok" and row is not None and row.checks is not None:
                checks[rp.name] = row.checks
            log.flush_some()
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM): record what was written, so the next run does not take this run's own
        # files for hand edits. (After a SIGKILL nothing can run: tests/test_interrupt.py holds that case as an xfail.)
        if not dry_run:
            with contextlib.suppress(OSError):
                manifest.save()
        raise
    if not dry_run:
        _self_check(report, log, checks, manifest)
        _write_arrays(plan, report, log, manifest, force=force)
    if not dry_run:
        try:
            manifest.save()
        except OSError as e:
            log.error_line(f"cannot write the manifest {manifest.path}: {e.strerror}")
            report.log_error = f"cannot write the manifest: {e.strerror}"
    failed = [r.name for r in report.runs if r.status != "ok"]
    log.info(
        f"done: {sum(r.type == 'fine-tuned' and r.status == 'ok' for r in report.runs)} fine-tuned runs configured, "
        f"{sum(r.type != 'fine-tuned' and r.status == 'ok' for r in report.runs)} control/eval-only runs created"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    log.flush()
    report.log_error = report.log_error or log.error


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


def _write_arrays(plan: Plan, report: Report, log: RunLog, manifest: Manifest, *, force: bool) -> None:
    """The job array scripts (scaffold.slurm.arrays), only when every fine-tuned run was generated and checked: else
    they stay as they are, like the failed runs' files."""
    failed = [r.name for r in report.runs if r.type == "fine-tuned" and r.status != "ok"]
    if failed:
        log.info(f"job arrays: not updated ({len(failed)} fine-tuned run(s) failed)")
        return
    fine_tuned = [rp.name for rp in plan.runs if rp.fine_tuned]
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


def _load_plan(summary_file: Path, local_config: Path | None, check_paths: bool) -> Plan:
    summary = summary_mod.load(summary_file)
    path, found = localconfig.locate(summary.local_dir, local_config)
    local = localconfig.load(path)
    local.found = found
    _check_shell_safe_root(summary)
    return make_plan(summary, local, check_paths=check_paths)


def load_plan(target: Path, *, local_config: Path | None = None, check_paths: bool = True) -> Plan | list[Problem]:
    """The validated plan of an experiment (nothing written), or the input problems."""
    try:
        return _load_plan(summary_mod.summary_path(Path(target)), local_config, check_paths)
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
) -> tuple[RunOutcome, Row | None]:
    """One run: its outcome, and what the renderer gave for it (texts and self-checks), if anything."""
    out = RunOutcome(rp.name, rp.type, directory=display_path(rp.local_dir))
    log.heading(f"run {rp.name} ({rp.type})")
    for note in rp.notes:
        log.info(note, rp.name)
    if rp.problems:
        return _fail(out, rp.problems, log), None
    for warning in rp.warnings:
        log.warning(warning, rp.name)
    out.warnings = list(rp.warnings)
    texts: dict[str, str] = {}
    row = None
    if rp.fine_tuned:
        assert rp.setup is not None
        out.recipe = recipe_for(rp.setup)
        if unchanged:
            # Same settings, same templates, files as written (and checked) then: nothing to render or write.
            out.files = dict.fromkeys(TRAINING_FILES, UNCHANGED)
            out.checked_earlier = True
            log.info("unchanged since generated (settings, templates and files all as then)", rp.name)
            return out, None
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
            return _fail(out, [problem], log), None
        assert row.texts is not None
        texts = row.texts
    try:
        created = False if dry_run else _make_dir(rp.local_dir)
        if not rp.fine_tuned:
            present = [] if created else [n for n in TRAINING_FILES if (rp.local_dir / n).exists()]
            if present:
                log.info(f"note: training files present in a {rp.type} run directory: {', '.join(present)}", rp.name)
            log.info(f"{rp.type} run: directory only ({out.directory})", rp.name)
            return out, None
        if created:
            problems = _write_new_run_files(rp, texts, out, manifest, log)
        else:
            if not dry_run:
                remove_stale_temporaries(rp.local_dir, TRAINING_FILES)
            problems = _write_run_files(rp, texts, out, manifest, log, force=force, dry_run=dry_run)
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
        problems = [Problem(f"cannot write: {e.strerror} ({e.filename})", run=rp.name)]
    return (_fail(out, problems, log), None) if problems else (out, row)


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
    rp: RunPlan, texts: dict[str, str], out: RunOutcome, manifest: Manifest, log: RunLog
) -> list[Problem]:
    """The three files of a fine-tuned run in its new directory (the common case of a first generation)."""
    # --output of the batch script points here; SLURM does not create it (the job would fail with no log).
    run_dir = str(rp.local_dir)
    os.mkdir(os.path.join(run_dir, "artifacts"))
    for name in TRAINING_FILES:
        out.files[name] = write_new(os.path.join(run_dir, name), texts[name], manifest)
    log.info(", ".join(f"{name}: {status}" for name, status in out.files.items()), rp.name)
    return []


def _self_check(report: Report, log: RunLog, checks: dict[str, dict[str, list[Problem]]], manifest: Manifest) -> None:
    """Take the checks of what was written; a failed check fails its run."""
    outcomes = {o.name: o for o in report.runs}
    log.heading(f"self-check of {len(checks)} fine-tuned runs")
    for name, results in checks.items():
        out = outcomes[name]
        out.checks = results
        bad = failures(results)
        passed = sum(not problems for problems in results.values())
        log.info(f"self-check: {passed}/{len(results)} passed", name)
        if bad:
            _fail(out, bad, log)
        elif out.fingerprint:
            manifest.record_source(name, out.fingerprint)  # only checked runs can be skipped next time
    log.flush()


def _write_run_files(
    rp: RunPlan, texts: dict[str, str], out: RunOutcome, manifest: Manifest, log: RunLog, *, force: bool, dry_run: bool
) -> list[Problem]:
    """Write the three files of a fine-tuned run; hand-edited files are kept (and reported) unless forced."""
    if not dry_run:
        # --output of the batch script points here; SLURM does not create it (the job would fail with no log).
        (rp.local_dir / "artifacts").mkdir(exist_ok=True)
    results: list[FileResult] = []
    for name in TRAINING_FILES:
        res = write(rp.local_dir / name, texts[name], manifest, force, dry_run)
        results.append(res)
        if name == SETUP_FILE and res.status == KEPT:
            break  # the setup file decides: a hand-edited setup keeps the whole run as it is
    for res in results:
        out.files[res.path.name] = res.status
        if res.diff:
            out.diffs[res.path.name] = res.diff
        if res.backup:
            out.backups.append(display_path(res.backup))
            log.info(f"{res.path.name}: edited by hand, overwritten (--force); backup {res.backup}", rp.name)
        log.info(f"{res.path.name}: {res.status}", rp.name)
    kept = [r for r in results if r.status == KEPT]
    if not kept:
        return []
    extra = " (so the run's other files were left as they are)" if kept[0].path.name == SETUP_FILE else ""
    log.info("diff:\n" + "".join(r.diff for r in kept), rp.name)
    if kept[0].path.name == SETUP_FILE and (keys := original_setup.original_keys_of(kept[0].path)):
        return [
            Problem(
                f"{SETUP_FILE} is in {original_setup.describe(keys)}, not one this tool generated; kept{extra}",
                display_path(kept[0].path),
                fix="re-run with --force to write this run's files in this tool's format from the summary (the "
                "original's file is kept as a .bak backup)",
                run=rp.name,
            )
        ]
    return [
        Problem(
            f"{', '.join(r.path.name for r in kept)} edited by hand since it was generated; kept{extra}",
            display_path(kept[0].path),
            fix="re-run with --force to regenerate (a backup is kept), or run `scaffold setup-finetune` "
            "in the run directory to render from your edited setup_finetune.yaml",
            run=rp.name,
        )
    ]


def _fail(out: RunOutcome, problems: list[Problem], log: RunLog) -> RunOutcome:
    out.status = "failed"
    out.errors = list(problems)
    for p in problems:
        log.error_line(p.format(), out.name)
    return out
