"""`scaffold submit`: sbatch every generated fine-tuned run that has not been submitted, and record the job ids.

Submissions are recorded in `{experiment}/logs/submissions.json` (run -> job id, time, hash of the script
submitted, earlier job ids), so a second `submit` does not queue a run twice: runs already submitted are
skipped, and one named with `--run` is refused, unless `--resubmit`. The experiment's lock is held while
submitting, so two submits at once cannot both queue a run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from . import sbatch
from .errors import InputError, Problem, did_you_mean, display_path
from .lock import experiment_lock
from .plan import SLURM_FILE
from .runlog import LOG_DIR, LOG_NAME, RunLog
from .summary import Summary, summary_path
from .writer import atomic_write, sha256

RECORD = "submissions.json"
SUBMITTED = "submitted"
ALREADY = "already submitted"  # skipped: submitted before (not named with --run)
REFUSED = "refused"  # named with --run, submitted before, no --resubmit
WOULD = "would submit"  # --dry-run
FAILED = "failed"
_OUTPUT = re.compile(r"^#SBATCH\s+(?:--output[= ]|-o\s*)(\S+)", re.MULTILINE)


@dataclass
class Submission:
    run: str
    status: str
    job_id: str | None = None
    command: str = ""
    note: str = ""
    error: Problem | None = None


@dataclass
class SubmitReport:
    experiment: str
    record: str = ""
    submissions: list[Submission] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        """2: nothing was looked at (bad input, no controller); 1: some run failed or was refused; else 0."""
        if self.problems:
            return 2
        return 1 if any(s.status in (FAILED, REFUSED) for s in self.submissions) else 0


def submit(
    target: Path,
    *,
    dry_run: bool = False,
    resubmit: bool = False,
    runs: list[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> SubmitReport:
    """Queue the experiment's generated batch scripts with sbatch (`env` is added to sbatch's environment)."""
    from . import summary

    exp_dir = summary_path(Path(target)).resolve().parent
    report = SubmitReport(display_path(exp_dir))
    try:
        s = summary.load(exp_dir)
    except InputError as e:
        report.problems = e.problems
        return report
    names = [r["name"] for r in s.data["runs"] if r["type"] == "fine-tuned"]
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
    record_path = exp_dir / LOG_DIR / RECORD
    report.record = display_path(record_path)
    log = RunLog(exp_dir / LOG_DIR / LOG_NAME)
    with experiment_lock(exp_dir, "submit"):
        try:
            record = json.loads(record_path.read_text(encoding="utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            record = {}
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
        log.heading(f"submit {report.experiment} (dry_run={dry_run}, resubmit={resubmit})")
        for name in dict.fromkeys(runs) if runs else names:
            sub = _submit_run(
                s, exp_dir, name, record, explicit=bool(runs), dry_run=dry_run, resubmit=resubmit, env=env
            )
            report.submissions.append(sub)
            if sub.status == SUBMITTED:
                atomic_write(record_path, json.dumps(record, indent=1, sort_keys=True) + "\n")
            if sub.error:
                log.error_line(sub.error.format(), name)
            else:
                log.info(
                    f"{sub.status}{' as job ' + sub.job_id if sub.job_id else ''}{' ' + sub.note if sub.note else ''}",
                    name,
                )
        log.flush()
    return report


def _submit_run(
    s: Summary,
    exp_dir: Path,
    name: str,
    record: dict,
    *,
    explicit: bool,
    dry_run: bool,
    resubmit: bool,
    env: Mapping[str, str] | None,
) -> Submission:
    script = exp_dir / name / SLURM_FILE
    command = f"sbatch --parsable {script}"
    if not script.is_file():
        err = Problem(f"{SLURM_FILE} not found", display_path(script), fix="run `scaffold generate` first", run=name)
        return Submission(name, FAILED, command=command, error=err)
    text = script.read_text(encoding="utf-8", errors="replace")
    digest = sha256(text.encode("utf-8"))
    previous = record.get(name)
    if previous and not resubmit:
        changed = " (finetune.slurm changed since)" if previous.get("script_sha256") != digest else ""
        job = str(previous.get("job_id"))
        if explicit:
            err = Problem(
                f"already submitted as job {job} on {previous.get('submitted')}{changed}; not queued again",
                display_path(script),
                fix="pass --resubmit to queue it again",
                run=name,
            )
            return Submission(name, REFUSED, job, command, error=err)
        return Submission(name, ALREADY, job, command, note=changed.strip(" ()"))
    # SLURM does not create the --output directory: a job whose log directory is missing fails with no log.
    # The job writes where the script says (experiment.dir), which must be this machine's view of the cluster.
    match = _OUTPUT.search(text)
    if match:
        out_dir = Path(match.group(1)).parent
        if out_dir == s.to_local(out_dir) == exp_dir / name / "artifacts":
            out_dir.mkdir(exist_ok=True)
        if not out_dir.is_dir():
            err = Problem(
                f"the --output directory {out_dir} does not exist here: the job would fail without a log",
                display_path(script),
                fix=f"submit where experiment.dir ({s.root}) is, or create the directory",
                run=name,
            )
            return Submission(name, FAILED, command=command, error=err)
    if dry_run:
        return Submission(name, WOULD, command=command)
    job_id, why = sbatch.submit(script, env)
    if job_id is None:
        err = Problem(
            f"sbatch refused the script: {why}",
            display_path(script),
            fix="check its #SBATCH lines (`scaffold verify` runs sbatch --test-only on every script)",
            run=name,
        )
        return Submission(name, FAILED, command=command, error=err)
    history = list(previous.get("earlier_job_ids", [])) + [previous["job_id"]] if previous else []
    record[name] = {
        "job_id": job_id,
        "submitted": datetime.now(UTC).isoformat(timespec="seconds"),
        "script_sha256": digest,
        **({"earlier_job_ids": history} if history else {}),
    }
    return Submission(name, SUBMITTED, job_id, command, note=f"(earlier: {', '.join(history)})" if history else "")


def as_text(report: SubmitReport) -> str:
    """The report for people: one line per run, then the counts and where the job ids are recorded."""
    if report.problems:
        return "\n".join(f"error: {p.format()}" for p in report.problems) + "\n"
    width = max((len(s.run) for s in report.submissions), default=0)
    lines = [f"scaffold-torchtune submit: {report.experiment}"]
    for s in report.submissions:
        extra = f"job {s.job_id}" if s.job_id else s.command if s.status == WOULD else ""
        lines.append(f"  {s.run:<{width}}  {s.status:<17}  {extra}{' ' + s.note if s.note else ''}".rstrip())
        if s.error:
            lines.append(f"      error: {s.error.format()}")
    statuses = (SUBMITTED, ALREADY, REFUSED, WOULD, FAILED)
    counts = {k: sum(s.status == k for s in report.submissions) for k in statuses}
    lines.append(", ".join(f"{v} {k}" for k, v in counts.items() if v or k == SUBMITTED))
    if report.record and counts[SUBMITTED]:
        lines.append(f"job ids: {report.record}")
    return "\n".join(lines) + "\n"
