"""`scaffold submit`: sbatch every generated fine-tuned run that has not been submitted, and record the job ids.

Submissions are recorded in `{experiment}/logs/submissions.json` (run -> job id, time, hash of the script
submitted, earlier job ids), so a second `submit` does not queue a run twice: runs already submitted are
skipped, and one named with `--run` is refused, unless `--resubmit`. The experiment's lock is held while
submitting, so two submits at once cannot both queue a run.

Each run's line is reported as it is queued (`progress`). When the cluster refuses a job for a limit (its job
count, the user's or account's submit limit), submit stops at once: what was queued is recorded, and the report
says how many runs were not queued, why, and what to do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import confine
from ..errors import InputError, Problem, did_you_mean, display_path
from ..inputs import localconfig
from ..inputs.summary import Summary, summary_path
from ..layout import (
    ARRAY_DIR,
    ARTIFACTS_DIR,
    FINE_TUNED,
    LOG_DIR,
    LOG_NAME,
    MANIFEST,
    SLURM_FILE,
    SUBMISSIONS,
    SUMMARY_NAME,
    TRAINING_FILES,
)
from ..output.lock import LockTimeout, lock_where_writable
from ..output.runlog import RunLog
from ..output.writer import Manifest, cannot_write, run_files, sha256
from ..plan import Plan, make_plan
from ..render import fingerprint, model_json
from ..slurm import arrays, sbatch, submissions
from .reply import Reply

SUBMITTED = "submitted"
ALREADY = "already submitted"  # skipped: submitted before (not named with --run)
REFUSED = "refused"  # named with --run, submitted before, no --resubmit
NOT_CHECKED = "not checked"  # refused: its files on disk are not the ones generate checked (edited, failed, stale)
WOULD = "would submit"  # --dry-run
FAILED = "failed"
NOT_QUEUED = "not queued"  # the cluster refused it for a limit (or sbatch hung): submit stopped there
MAYBE = "may be queued"  # sbatch exited 0 without a job id we can read, or hung: recorded, never queued again unasked
_OUTPUT = re.compile(r"^#SBATCH\s+(?:--output[= ]|-o\s*)(\S+)", re.MULTILINE)


@dataclass
class Submission:
    run: str
    status: str
    job_id: str | None = None
    command: str = ""
    note: str = ""
    error: Problem | None = None
    array: str | None = None  # the array script it was (or would have been) queued with (--array)


@dataclass
class ArraySubmission:
    """One `sbatch --array` call: the tasks `spec` of an array script, whose task I runs run `offset + I` of it."""

    file: str  # arrays/array_K.slurm
    spec: str
    offset: int
    runs: list[str]
    status: str
    job_id: str | None = None
    command: str = ""
    error: Problem | None = None


@dataclass
class SubmitReport:
    experiment: str
    record: str = ""
    submissions: list[Submission] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    width: int = 0  # of the run names, for aligned lines
    arrays: list[ArraySubmission] = field(default_factory=list)  # --array: each sbatch --array call
    stopped: Problem | None = None  # the cluster's limit stopped the submission
    remaining: int = 0  # runs not queued because of it (the refused run included)
    record_error: Problem | None = None  # the record could not be written

    @property
    def exit_status(self) -> int:
        """2: nothing was looked at (bad input, no controller); 1: some run failed or was refused (its files not
        the checked ones among them), or a limit stopped the submission; else 0."""
        if self.problems:
            return 2
        bad = (FAILED, REFUSED, NOT_CHECKED, MAYBE)
        return 1 if self.stopped or self.record_error or any(s.status in bad for s in self.submissions) else 0


def _submit_arrays(
    s: Summary,
    gate: Gate,
    exp_dir: Path,
    names: list[str],
    todo: list[str],
    record: dict,
    record_path: Path,
    report: SubmitReport,
    log: RunLog,
    *,
    explicit: bool,
    dry_run: bool,
    resubmit: bool,
    max_running: int | None,
    env: Mapping[str, str] | None,
    progress: Callable[[SubmitReport, Submission | ArraySubmission], None] | None,
) -> None:
    """--array: the runs to queue, by array script; each script's runs in as few `sbatch --array` calls as the
    cluster's MaxArraySize allows. Stops at the first limit, as submit does."""
    ready: dict[str, _Ready] = {}
    for name in todo:
        got = _prepare(s, gate, exp_dir, name, record, explicit=explicit, resubmit=resubmit)
        if isinstance(got, _Ready):
            ready[name] = got
            continue
        _done(report, log, got, progress if got.status != ALREADY else None)
    if not ready:
        return
    places, stale = arrays.queued_tasks(exp_dir, names, experiment=s.name, root=s.root)
    for name in list(ready):
        if name not in places:
            err = stale.get(name) or Problem(
                "in no job array script", display_path(exp_dir / ARRAY_DIR), fix="run `scaffold generate`", run=name
            )
            _done(report, log, Submission(name, FAILED, error=err), progress)
            del ready[name]
    size = arrays.max_array_size(env) if not dry_run else arrays.DEFAULT_MAX_ARRAY_SIZE
    by_file: dict[Path, list[tuple[int, str]]] = {}
    for name in ready:
        path, position, _ = places[name]
        by_file.setdefault(path, []).append((position, name))
    calls = []
    for path, members in by_file.items():
        listed = places[members[0][1]][2]
        for chunk in arrays.plan_chunks(sorted(p for p, _ in members), size):
            calls.append((path, chunk, [listed[chunk.offset + i] for i in chunk.indices]))
    for n, (path, chunk, runs) in enumerate(calls):
        spec = arrays.array_spec(chunk.indices, max_running)
        command = f"sbatch --parsable --array={spec} {path} {chunk.offset}"
        rel = f"{ARRAY_DIR}/{path.name}"
        if dry_run:
            _array_done(report, log, ArraySubmission(rel, spec, chunk.offset, runs, WOULD, command=command), progress)
            for run in runs:
                report.submissions.append(Submission(run, WOULD, command=command, array=rel))
            continue
        result = sbatch.submit(path, env, options=[f"--array={spec}"], args=[str(chunk.offset)])
        if result.uncertain:
            err = _maybe_problem(result.why, path, runs, array=True)
            for run in runs:
                _add(record, ready[run], None, rel, sbatch_said=result.why)
                report.submissions.append(Submission(run, MAYBE, command=command, error=err, array=rel))
            _save_record(record_path, record, report, log)
            _array_done(
                report, log, ArraySubmission(rel, spec, chunk.offset, runs, MAYBE, None, command, err), progress
            )
            rest = [r for _, _, later in calls[n + 1 :] for r in later]
            if result.hung and rest:  # the next call would hang too
                report.submissions += [Submission(r, NOT_QUEUED, array=rel) for r in rest]
                report.remaining = len(rest)
                report.stopped = _stopped(report, rest[0], array=True, cause=result.why)
                log.error_line(report.stopped.format())
                return
            continue
        if result.limit:
            err = Problem(f"the cluster refused the array for a limit: {result.why}", display_path(path))
            _array_done(
                report, log, ArraySubmission(rel, spec, chunk.offset, runs, NOT_QUEUED, None, command, err), progress
            )
            rest = [r for _, _, later in calls[n:] for r in later]
            report.submissions += [Submission(r, NOT_QUEUED, array=rel) for r in rest]
            report.remaining = len(rest)
            report.stopped = _stopped(report, rest[0], array=True)
            log.error_line(report.stopped.format())
            return
        if result.job_id is None:
            err = Problem(
                f"sbatch refused the array: {result.why}",
                display_path(path),
                fix="check its #SBATCH lines (`scaffold verify` runs sbatch --test-only on every array script)",
            )
            _array_done(
                report, log, ArraySubmission(rel, spec, chunk.offset, runs, FAILED, None, command, err), progress
            )
            for run in runs:
                report.submissions.append(Submission(run, FAILED, command=command, error=err, array=rel))
            continue
        for i, run in zip(chunk.indices, runs, strict=True):
            task = f"{result.job_id}_{i}"
            history = _add(record, ready[run], task, rel)
            note = f"(earlier: {', '.join(history)})" if history else ""
            report.submissions.append(Submission(run, SUBMITTED, task, command, note=note, array=rel))
            log.info(f"submitted as array task {task} ({rel}){' ' + note if note else ''}", run)
        _save_record(record_path, record, report, log)
        _array_done(
            report, log, ArraySubmission(rel, spec, chunk.offset, runs, SUBMITTED, result.job_id, command), progress
        )


def _done(report: SubmitReport, log: RunLog, sub: Submission, progress) -> None:
    report.submissions.append(sub)
    if sub.error:
        log.error_line(sub.error.format(), sub.run)
    else:
        log.info(f"{sub.status}{' as job ' + sub.job_id if sub.job_id else ''}", sub.run)
    if progress:
        progress(report, sub)


def _array_done(report: SubmitReport, log: RunLog, a: ArraySubmission, progress) -> None:
    report.arrays.append(a)
    text = f"{a.file} --array={a.spec} (first run at {a.offset}, {len(a.runs)} runs): {a.status}"
    if a.error:
        log.error_line(f"{text}: {a.error.format()}")
    else:
        log.info(text + (f" as job {a.job_id}" if a.job_id else ""))
    log.flush()
    if progress:
        progress(report, a)


def submit(
    target: Path,
    *,
    dry_run: bool = False,
    resubmit: bool = False,
    runs: list[str] | None = None,
    env: Mapping[str, str] | None = None,
    progress: Callable[[SubmitReport, Submission | ArraySubmission], None] | None = None,
    array: bool = False,
    max_running: int | None = None,
    local_config: Path | None = None,
) -> SubmitReport:
    """Queue the experiment's generated batch scripts with sbatch (`env` is added to sbatch's environment), each
    run alone or, with `array`, the runs of each job array script as one array (at most `max_running` of its
    tasks running at once); `progress` is called with each run's submission (each array's, with `array`) as soon
    as it is done. Only runs whose files are those generate wrote and checked for the summary's settings now are
    queued (`Gate`); the others are refused by name. `local_config`: the site config (default: as for generate)."""
    from ..inputs import summary

    exp_dir = summary_path(Path(target)).absolute().parent.resolve()  # (not the summary's own link: see confine)
    report = SubmitReport(display_path(exp_dir))
    if hostile := confine.summary_problems(exp_dir / SUMMARY_NAME):  # before the summary, the record or the log
        report.problems = hostile
        return report
    try:
        s = summary.load(exp_dir)
        local = localconfig.load(localconfig.find(exp_dir, local_config))
        plan = make_plan(s, local, check_paths=False, recognise=True)
    except InputError as e:
        report.problems = e.problems
        return report
    names = [r["name"] for r in s.data["runs"] if r["type"] == FINE_TUNED]
    for name in dict.fromkeys(runs or []):
        if name not in names:
            report.problems.append(
                Problem(f"no fine-tuned run named '{name}'", display_path(s.path), fix=did_you_mean(name, names))
            )
    if report.problems:
        return report
    if not dry_run and (why := sbatch.controller_unreachable(env)):
        report.problems = [
            Problem(
                f"no SLURM controller reachable: {why}",
                fix="run this on a login node of the cluster (or export SLURM_CONF), or use --dry-run",
            )
        ]
        return report
    record_path = exp_dir / LOG_DIR / SUBMISSIONS
    report.record = display_path(record_path)
    log = RunLog(exp_dir / LOG_DIR / LOG_NAME)
    try:
        with lock_where_writable(exp_dir, "submit"):
            gate = Gate(plan, Manifest(exp_dir))
            try:
                record = submissions.read(record_path)
            except (OSError, ValueError) as e:
                # Never start afresh over a record we cannot read: every run would be queued a second time.
                report.problems = [
                    Problem(
                        f"the submission record cannot be read ({e})",
                        report.record,
                        fix="repair or remove it (removing it lets every run be submitted again)",
                    )
                ]
                return report
            log.heading(
                f"submit {report.experiment} (dry_run={dry_run}, resubmit={resubmit}, array={array}, "
                f"max_running={max_running})"
            )
            todo = list(dict.fromkeys(runs) if runs else names)
            report.width = max(map(len, todo), default=0)
            if array:
                _submit_arrays(
                    s,
                    gate,
                    exp_dir,
                    names,
                    todo,
                    record,
                    record_path,
                    report,
                    log,
                    explicit=bool(runs),
                    dry_run=dry_run,
                    resubmit=resubmit,
                    max_running=max_running,
                    env=env,
                    progress=progress,
                )
                log.flush()
                return report
            for i, name in enumerate(todo):
                ready = _prepare(s, gate, exp_dir, name, record, explicit=bool(runs), resubmit=resubmit)
                sub = ready if isinstance(ready, Submission) else _submit_run(ready, record, dry_run=dry_run, env=env)
                report.submissions.append(sub)
                if sub.status == NOT_QUEUED:
                    report.remaining = 1 + sum(resubmit or n not in record for n in todo[i + 1 :])
                    report.stopped = _stopped(report, sub.run)
                    log.error_line(sub.error.format() if sub.error else sub.status, name)
                    log.error_line(report.stopped.format())
                    if progress:
                        progress(report, sub)
                    break
                if sub.status in (SUBMITTED, MAYBE):
                    _save_record(record_path, record, report, log)
                if sub.status == MAYBE and record[name]["may_be_queued"].startswith("sbatch --parsable did not answer"):
                    # A client that hangs hangs for the next run too: stop here, as at a limit.
                    log.error_line(sub.error.format() if sub.error else sub.status, name)
                    if progress:
                        progress(report, sub)
                    rest = [n for n in todo[i + 1 :] if resubmit or n not in record]
                    report.submissions += [Submission(n, NOT_QUEUED) for n in rest]
                    report.remaining = len(rest)
                    if rest:
                        report.stopped = _stopped(report, rest[0], cause=record[name]["may_be_queued"])
                        log.error_line(report.stopped.format())
                    break
                if sub.error:
                    log.error_line(sub.error.format(), name)
                else:
                    log.info(
                        f"{sub.status}{' as job ' + sub.job_id if sub.job_id else ''}{' ' + sub.note if sub.note else ''}",
                        name,
                    )
                if progress:
                    progress(report, sub)
            log.flush()
    except LockTimeout as e:
        report.problems = [Problem(str(e), report.experiment, fix="wait for the other process, then submit again")]
    return report


def _save_record(path: Path, record: dict, report: SubmitReport, log: RunLog) -> None:
    """Write the record after each queued job. Where it cannot be written (a full disk), the job ids are at least in
    the log and the report, and the failure is reported with its fix (said once)."""
    try:
        submissions.write(path, record)
    except OSError as e:
        problem = cannot_write(e)
        problem = replace(
            problem,
            message=f"{problem.message}: the job ids queued are in this report and the log, not in the record",
            fix=f"{problem.fix}; then add them to {display_path(path)} by hand, or the next submit queues them again",
        )
        if report.record_error is None:
            report.record_error = problem
            log.error_line(problem.format())


def _stopped(report: SubmitReport, first: str, array: bool = False, cause: str | None = None) -> Problem:
    queued = sum(s.status == SUBMITTED for s in report.submissions)
    again = "`scaffold submit --array` again" if array else "`scaffold submit` again"
    if cause is not None:  # sbatch hung
        return Problem(
            f"stopped: {cause}, so the other runs were not tried ({queued} queued now, {report.remaining} "
            f"run{'s' if report.remaining != 1 else ''} not queued: {first}"
            f"{f' and {report.remaining - 1} after it' if report.remaining > 1 else ''})",
            report.record,
            fix="check that the controller answers (`sinfo`, `squeue --me`), then run "
            f"{again}: it queues only the runs not queued yet",
        )
    return Problem(
        f"stopped at the cluster's limit: {queued} queued now, {report.remaining} "
        f"run{'s' if report.remaining != 1 else ''} not queued ({first}"
        f"{f' and {report.remaining - 1} after it' if report.remaining > 1 else ''})",
        report.record,
        fix=f"wait until some of your jobs have finished (`squeue --me`), then run {again}: it queues only the "
        "runs not queued yet"
        + ("" if array else "; or queue them as job arrays (`scaffold submit --array`), one queue entry per array")
        + "; your limits: `sacctmgr show assoc user=$USER`, `sacctmgr show qos`",
    )


class Gate:
    """Which runs may be queued: those whose three files on disk are byte-for-byte what generate wrote, and were
    generated and checked from the settings the summary, the site config and this version of scaffold-torchtune
    give the run now (`Manifest.checked`: the rule generate skips unchanged runs by). A run edited by hand, whose
    last generate failed, or never checked is refused by name, with why and the fix."""

    def __init__(self, plan: Plan, manifest: Manifest):
        self.plan, self.manifest = plan, manifest
        self.runs = {rp.name: rp for rp in plan.runs if rp.fine_tuned}
        self._model_texts: dict[str, str] = {}

    def why_not(self, name: str) -> Problem | None:
        rp = self.runs[name]
        files = run_files(rp.local_dir)
        fix_generate = "run `scaffold generate`, then submit"
        if rp.problems or rp.setup is None:
            first = rp.problems[0] if rp.problems else None
            return Problem(
                "not checked: the summary gives this run settings it cannot be generated with"
                + (f" ({first.message})" if first else ""),
                first.file if first else display_path(rp.local_dir),
                first.line if first else None,
                fix=(first.fix + "; then `scaffold generate`") if first and first.fix else fix_generate,
                run=name,
            )
        edited = [Path(f).name for f in files if not self.manifest.unchanged_file(f)]
        if edited and any(self.manifest.generated_hash(Path(f)) is None for f in files):
            return Problem(
                "not checked: no generate wrote and checked these files (never generated, or its last generate "
                "failed its checks)"
                + (f"; the manifest {MANIFEST} is damaged ({self.manifest.damaged})" if self.manifest.damaged else ""),
                display_path(rp.local_dir),
                fix=fix_generate,
                run=name,
            )
        if edited:
            return Problem(
                f"not checked: {', '.join(edited)} edited by hand since generate checked it",
                display_path(Path(files[TRAINING_FILES.index(edited[0])])),
                fix="carry the change into the summary with `scaffold setup-finetune --KEY VALUE` in the run "
                "directory, or regenerate it with `scaffold generate --force` (a backup is kept)",
                run=name,
            )
        model = rp.setup["model"]
        if model not in self._model_texts:
            self._model_texts[model] = model_json(self.plan.models[model])
        fp = fingerprint(rp.setup, self.plan.models[model], self._model_texts[model])
        if not self.manifest.checked(name, fp, files):
            return Problem(
                "not checked: its files were generated and checked for other settings than the summary, the site "
                "config and this scaffold-torchtune give it now (changed since, or its last generate failed)",
                display_path(rp.local_dir),
                fix=fix_generate,
                run=name,
            )
        return None


@dataclass
class _Ready:
    """A run that may be queued: its batch script, and what the record holds of it from before."""

    name: str
    script: Path
    digest: str
    previous: dict | None


def _add(
    record: dict, run: _Ready, job_id: str | None, array: str | None = None, sbatch_said: str | None = None
) -> list[str]:
    """Record a run's job id (see scaffold.slurm.submissions.add); its earlier job ids."""
    return submissions.add(record, run.name, run.digest, run.previous, job_id, array, sbatch_said)


def _prepare(
    s: Summary, gate: Gate, exp_dir: Path, name: str, record: dict, *, explicit: bool, resubmit: bool
) -> Submission | _Ready:
    """A run's submission decided without sbatch (not found, already submitted, refused, not the checked files, no
    log directory), or the run ready to be queued."""
    script = exp_dir / name / SLURM_FILE
    command = f"sbatch --parsable {script}"
    if (leads_out := confine.run_problem(exp_dir, exp_dir / name, name)) is not None:
        return Submission(name, FAILED, command=command, error=leads_out)
    if not script.is_file():
        err = Problem(f"{SLURM_FILE} not found", display_path(script), fix="run `scaffold generate` first", run=name)
        return Submission(name, FAILED, command=command, error=err)
    text = script.read_text(encoding="utf-8", errors="replace")
    digest = sha256(text.encode("utf-8"))
    previous = record.get(name)
    if previous and not resubmit:
        changed = " (finetune.slurm changed since)" if previous.get("script_sha256") != digest else ""
        maybe = previous.get("job_id") is None
        job = None if maybe else str(previous.get("job_id"))
        what = "may be queued (sbatch gave no job id)" if maybe else f"already submitted as job {job}"
        if explicit:
            err = Problem(
                f"{what} on {previous.get('submitted')}{changed}; not queued again",
                display_path(script),
                fix=(f"check `squeue --me --name {name}`; if it is not there, " if maybe else "")
                + "pass --resubmit to queue it again",
                run=name,
            )
            return Submission(name, REFUSED, job, command, error=err)
        note = "; ".join(
            x
            for x in ("may be queued: check `squeue --me --name " + name + "`" if maybe else "", changed.strip(" ()"))
            if x
        )
        return Submission(name, ALREADY, job, command, note=note)
    if (why := gate.why_not(name)) is not None:
        return Submission(name, NOT_CHECKED, command=command, error=why)
    # SLURM does not create the --output directory: a job whose log directory is missing fails with no log.
    # The job writes where the script says (experiment.dir), which must be this machine's view of the cluster.
    match = _OUTPUT.search(text)
    if match:
        out_dir = Path(match.group(1)).parent
        if out_dir == s.to_local(out_dir) == exp_dir / name / ARTIFACTS_DIR:
            out_dir.mkdir(exist_ok=True)
        if not out_dir.is_dir():
            err = Problem(
                f"the --output directory {out_dir} does not exist here: the job would fail without a log",
                display_path(script),
                fix=f"submit where experiment.dir ({s.root}) is, or create the directory",
                run=name,
            )
            return Submission(name, FAILED, command=command, error=err)
    return _Ready(name, script, digest, previous)


def _submit_run(run: _Ready, record: dict, *, dry_run: bool, env: Mapping[str, str] | None) -> Submission:
    """Queue one run's own batch script."""
    name, script = run.name, run.script
    command = f"sbatch --parsable {script}"
    if dry_run:
        return Submission(name, WOULD, command=command)
    result = sbatch.submit(script, env)
    job_id, why = result.job_id, result.why
    if result.uncertain:
        _add(record, run, None, sbatch_said=why)
        return Submission(name, MAYBE, command=command, error=_maybe_problem(why, script, [name]))
    if result.limit:
        err = Problem(f"the cluster refused the job for a limit: {why}", display_path(script), run=name)
        return Submission(name, NOT_QUEUED, command=command, error=err)
    if job_id is None:
        err = Problem(
            f"sbatch refused the script: {why}",
            display_path(script),
            fix="check its #SBATCH lines (`scaffold verify` runs sbatch --test-only on every script)",
            run=name,
        )
        return Submission(name, FAILED, command=command, error=err)
    history = _add(record, run, job_id)
    return Submission(name, SUBMITTED, job_id, command, note=f"(earlier: {', '.join(history)})" if history else "")


def _maybe_problem(why: str, script: Path, runs: list[str], array: bool = False) -> Problem:
    """What to do about a submission that may have queued a job (recorded as such: not queued again unasked)."""
    one = runs[0]
    return Problem(
        f'{why}: the job may be queued; recorded as "may be queued", not submitted again without --resubmit',
        display_path(script),
        fix=f"check `squeue --me --name {one}` (jobs are named after their runs): if it is there, nothing to do; "
        f"if not, `scaffold submit{' --array' if array else ''} --run {one} --resubmit`",
        run=None if array else one,
    )


def header(report: SubmitReport) -> str:
    return f"scaffold-torchtune submit: {report.experiment}\n"


def line(report: SubmitReport, s: Submission | ArraySubmission) -> str:
    """One run's line (and its error), or one array's, as printed when it is done."""
    if isinstance(s, ArraySubmission):
        what = f"job {s.job_id}" if s.job_id else s.command if s.status == WOULD else ""
        text = (
            f"  {s.file} --array={s.spec}  {s.status:<17}  {what} ({len(s.runs)} run{'s' if len(s.runs) != 1 else ''})"
        )
        return text + "\n" + (f"      error: {s.error.format()}\n" if s.error else "")
    extra = f"job {s.job_id}" if s.job_id else s.command if s.status == WOULD else ""
    text = f"  {s.run:<{report.width}}  {s.status:<17}  {extra}{' ' + s.note if s.note else ''}".rstrip() + "\n"
    if s.error:
        text += f"      error: {s.error.format()}\n"
    return text


STATUSES = (SUBMITTED, MAYBE, ALREADY, REFUSED, NOT_CHECKED, WOULD, FAILED, NOT_QUEUED)


def counts(report: SubmitReport) -> dict[str, int]:
    return {k: sum(s.status == k for s in report.submissions) for k in STATUSES}


def footer(report: SubmitReport) -> str:
    """The counts, where the job ids are recorded, and why submit stopped early."""
    n = counts(report)
    lines = [", ".join(f"{v} {k}" for k, v in n.items() if v or k == SUBMITTED)]
    if report.record and n[SUBMITTED]:
        lines.append(f"job ids: {report.record}")
    if report.record_error:
        lines.append(f"error: {report.record_error.format()}")
    if report.stopped:
        lines.append(f"error: {report.stopped.format()}")
    return "\n".join(lines) + "\n"


def as_text(report: SubmitReport) -> str:
    """The report for people: one line per run, then the counts and where the job ids are recorded."""
    if report.problems:
        return "\n".join(f"error: {p.format()}" for p in report.problems) + "\n"
    report.width = report.width or max((len(s.run) for s in report.submissions), default=0)
    if report.arrays:  # --array: a line per array, and one per run that was not queued for its own reason
        shown = [
            *report.arrays,
            *(s for s in report.submissions if s.status in (FAILED, REFUSED, NOT_CHECKED) and not s.array),
        ]
        return header(report) + "".join(line(report, s) for s in shown) + footer(report)
    return header(report) + "".join(line(report, s) for s in report.submissions) + footer(report)


def as_json(report: SubmitReport) -> dict:
    """The report as one JSON document (`--json`)."""
    return {
        "experiment": report.experiment,
        "record": report.record or None,
        "submissions": [
            {
                "run": s.run,
                "status": s.status,
                "job_id": s.job_id,
                "command": s.command,
                **({"note": s.note} if s.note else {}),
                **({"array": s.array} if s.array else {}),
                **({"error": s.error.as_dict()} if s.error else {}),
            }
            for s in report.submissions
        ],
        "arrays": [
            {
                "file": a.file,
                "array": a.spec,
                "offset": a.offset,
                "runs": a.runs,
                "status": a.status,
                "job_id": a.job_id,
                "command": a.command,
                **({"error": a.error.as_dict()} if a.error else {}),
            }
            for a in report.arrays
        ],
        "counts": counts(report),
        "stopped": report.stopped.as_dict() if report.stopped else None,
        "record_error": report.record_error.as_dict() if report.record_error else None,
        "not_queued": report.remaining,
        "problems": [p.as_dict() for p in report.problems],
        "exit_status": report.exit_status,
    }


def reply(report: SubmitReport, *, json_out: bool = False, started: bool = False) -> Reply:
    """What submit prints once it is done (`started`: the progress lines, header first, were printed as the runs
    were queued): the counts and where the job ids are, or the JSON document (`--json`, the counts then on
    stderr, with the progress); the problems on stderr when nothing was looked at."""
    if json_out:
        return Reply(
            report.exit_status, json.dumps(as_json(report), indent=1) + "\n", "" if report.problems else footer(report)
        )
    if report.problems:
        return Reply(report.exit_status, err=as_text(report))
    return Reply(report.exit_status, ("" if started else header(report)) + footer(report))
