"""The report of a generate run: text for people, JSON for an orchestrator."""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING

from ..layout import FINE_TUNED
from .outcome import Report

if TYPE_CHECKING:
    from ..plan import Plan


ARRAYS_SHOWN = 3


def counts(report: Report) -> dict[str, int]:
    ok = [r for r in report.runs if r.status == "ok"]
    checks = [problems for r in report.runs for problems in r.checks.values()]
    return {
        "runs_configured": sum(r.type == FINE_TUNED for r in ok),
        "control_runs": sum(r.type != FINE_TUNED for r in ok),
        "run_directories": len(ok) if not report.dry_run else 0,
        "runs_failed": len(report.runs) - len(ok),
        "checks_passed": sum(not c for c in checks),
        "checks_failed": sum(bool(c) for c in checks),
        "runs_checked_earlier": sum(r.checked_earlier for r in ok),
    }


PREFLIGHT_FIELDS = ("steps", "audit", "audit_skipped", "estimates", "time_estimated")


def as_json(report: Report) -> str:
    c = counts(report)
    doc = {
        "tool": "scaffold-torchtune",
        "summary": report.summary,
        "experiment": report.experiment,
        "dry_run": report.dry_run,
        "exit_status": report.exit_status,
        "runs_configured": c["runs_configured"],
        "control_runs": c["control_runs"],
        "run_directories": c["run_directories"],
        "runs_failed": c["runs_failed"],
        "input_errors": [p.as_dict() for p in report.input_errors],
        "errors": [p.as_dict() for p in report.errors],
        "runs": [
            {
                "name": r.name,
                "type": r.type,
                "status": r.status,
                "directory": r.directory,
                "recipe": r.recipe,
                "files": r.files,
                "backups": r.backups,
                "errors": [p.as_dict() for p in r.errors],
                "warnings": r.warnings,
                "notes": r.notes,
                # The pre-flight audit (scaffold.checks.token_audit.Preflight.fields): None where not known.
                **{key: r.preflight.get(key) for key in PREFLIGHT_FIELDS},
                "verification": {
                    "passed": sum(not problems for problems in r.checks.values()),
                    "failed": [
                        {"check": check, "message": p.format()}
                        for check, problems in r.checks.items()
                        for p in problems
                    ],
                },
            }
            for r in report.runs
        ],
        "verification": {
            "checks_passed": c["checks_passed"],
            "checks_failed": c["checks_failed"],
            "runs_unchanged_checked_earlier": c["runs_checked_earlier"],
        },
        "arrays": [{"file": a.file, "runs": a.runs, "status": a.status} for a in report.arrays],
        "notes": report.notes,
        "log": report.log,
        "log_error": report.log_error,
        "seconds": round(report.seconds, 3),
    }
    return json.dumps(doc, indent=2)


def as_text(report: Report, show_diffs: bool = True) -> str:
    lines = []
    if report.input_errors:
        lines.append(
            f"{report.summary}: input invalid, nothing written ({len(report.input_errors)} problem"
            f"{'s' if len(report.input_errors) != 1 else ''}):"
        )
        lines += [f"  {p.format()}" for p in report.input_errors]
        if report.log:
            lines.append(f"log: {report.log}")
        return "\n".join(lines) + "\n"
    c = counts(report)
    title = "dry run (nothing written)" if report.dry_run else "generated"
    lines.append(f"scaffold-torchtune {title}: {report.summary} (experiment {report.experiment})")
    width = max((len(r.name) for r in report.runs), default=0)
    for r in report.runs:
        files = ", ".join(f"{k} {v}" for k, v in r.files.items()) or ("directory" if r.status == "ok" else "")
        lines.append(f"  {r.name:<{width}}  {r.type:<10}  {r.status:<6}  {files}")
        for p in r.errors:
            lines.append(f"      error: {p.format()}")
        for w in r.warnings:
            lines.append(f"      warning: {w}")
        for n in r.notes:
            lines.append(f"      {n}")
        if show_diffs:
            for name, diff in r.diffs.items():
                if r.files.get(name, "").startswith("kept"):
                    lines += ["      " + d for d in diff.rstrip("\n").splitlines()]
        for b in r.backups:
            lines.append(f"      backup of the hand-edited file: {b}")
    lines.append(f"fine-tuned runs configured: {c['runs_configured']}")
    lines.append(f"control/eval-only runs created: {c['control_runs']}")
    lines.append(f"run directories: {c['run_directories']}")
    if not report.dry_run:
        earlier = c["runs_checked_earlier"]
        lines.append(
            f"verification: {c['checks_passed']} checks passed, {c['checks_failed']} failed"
            + (f" ({earlier} unchanged runs were checked when they were written)" if earlier else "")
        )
    if report.arrays:
        shown = ", ".join(f"{a.file} ({a.runs} run{'s' if a.runs != 1 else ''})" for a in report.arrays[:ARRAYS_SHOWN])
        more = len(report.arrays) - ARRAYS_SHOWN
        statuses = Counter(a.status for a in report.arrays)
        lines.append(
            f"job arrays (for `scaffold submit --array`): {shown}{f' and {more} more' if more > 0 else ''}: "
            + ", ".join(f"{n} {status}" for status, n in statuses.items())
        )
    for p in report.errors:
        lines.append(f"error: {p.format()}")
    if report.wandb_offline:
        # WandBLogger passes log_dir to wandb.init(dir=...), which writes each run to <log_dir>/wandb/offline-run-*.
        first = report.wandb_offline[0]
        more = len(report.wandb_offline) - 1
        lines.append(
            f"W&B logs offline ({len(report.wandb_offline)} run(s)): after training, upload with "
            f"`wandb sync {first}/logs/wandb/offline-run-*`"
            + (f" (and the same for the other {more} run(s))" if more else "")
            + ", or set wandb_mode: online in the local config"
        )
    lines += [f"note: {note}" for note in report.notes]
    failed = [r for r in report.runs if r.status != "ok"]
    if failed:
        lines.append(f"FAILED runs ({len(failed)}): " + ", ".join(r.name for r in failed))
    if report.log:
        lines.append(f"log: {report.log}")
    if report.log_error:
        lines.append(f"warning: {report.log_error}")
    return "\n".join(lines) + "\n"


def plan_text(plan: Plan) -> str:
    """The runs a generate would write, with the settings each run sets (--print-plan)."""
    from ..inputs import sweep

    summary = plan.summary
    swept = sweep.varied(summary.data.get("variables"))
    lines = [
        f"plan for {summary.name}: {len(plan.runs)} runs"
        + (f" ({summary.swept} expanded from variables: {', '.join(swept)})" if summary.swept else "")
    ]
    width = max((len(r.name) for r in plan.runs), default=0)
    for rp, run in zip(plan.runs, summary.data["runs"], strict=True):
        settings = " ".join(f"{k}={v}" for k, v in (run.get("parameters") or {}).items())
        status = "" if not rp.problems else f"  ({len(rp.problems)} problem(s): {rp.problems[0].message})"
        lines.append(f"  {rp.name:<{width}}  {rp.type:<10}  {run.get('model', '')}  {settings}{status}")
    return "\n".join(lines) + "\n"
