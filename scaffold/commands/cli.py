"""Command line: the arguments of each command, then the command (scaffold.commands.generate, setupfinetune, submit,
verify, ci) and its reply (scaffold.commands.reply).

Exit status: 0 every run succeeded; 1 some run failed (the others were still written); 2 the input is invalid
(nothing written); 3 an internal error (a bug: please report it, with SCAFFOLD_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from .. import __version__
from .reply import Reply, errors, print_reply

EPILOG = "exit status: 0 all runs succeeded, 1 some run failed, 2 invalid input (nothing written), 3 internal error"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scaffold", description="Generate verified torchtune fine-tuning runs for SLURM.", epilog=EPILOG
    )
    parser.add_argument("--version", action="version", version=f"scaffold-torchtune {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate every run of an experiment", epilog=EPILOG)
    gen.add_argument(
        "experiment",
        nargs="?",
        default=".",
        type=Path,
        help="experiment directory holding experiment_summary.yaml, or the summary file (default: .)",
    )
    gen.add_argument(
        "--local-config",
        type=Path,
        metavar="PATH",
        help="claude.local.md or scaffold.local.yaml (default: $SCAFFOLD_LOCAL_CONFIG, else the "
        "nearest one upward from the experiment)",
    )
    gen.add_argument("--dry-run", action="store_true", help="plan and render, write nothing")
    gen.add_argument(
        "--print-plan",
        action="store_true",
        help="print the runs (with those expanded from `variables`) and their settings; write nothing",
    )
    gen.add_argument("--force", action="store_true", help="overwrite files edited by hand (a backup is kept)")
    gen.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    gen.add_argument(
        "--no-check-paths",
        action="store_true",
        help="do not check model and dataset paths outside the experiment (machines that do not "
        "mount the cluster's storage)",
    )

    st = sub.add_parser(
        "setup-finetune",
        help="change one run: write the change into its entry of experiment_summary.yaml and render the run again",
        description="Run inside a run directory. The change, --KEY VALUE (or --set KEY=VALUE) for a key of "
        "setup_finetune.yaml, or the edits of the run's setup_finetune.yaml, is written into the run's entry of "
        "experiment_summary.yaml (comments kept), and the run is generated again from it, as `scaffold generate` "
        "does: self-checked, and written only when every check passes. Nothing is written when the change is "
        "invalid or the run fails its checks.",
        epilog=EPILOG,
    )
    st.add_argument("--dir", type=Path, default=Path("."), help="the run directory (default: .)")
    st.add_argument("--local-config", type=Path, metavar="PATH", help="site config (default: as for generate)")
    st.add_argument("--force", action="store_true", help="overwrite files edited by hand (a backup is kept)")
    st.add_argument(
        "--no-check-paths",
        action="store_true",
        help="do not check model and dataset paths outside the experiment (as for generate)",
    )
    _add_verify_commands(sub)
    _add_submit_command(sub)
    return parser


def _add_submit_command(sub) -> None:
    """`scaffold submit`: sbatch the generated runs not yet submitted; job ids go to logs/submissions.json."""
    sm = sub.add_parser(
        "submit",
        help="sbatch every fine-tuned run not yet submitted, and record the job ids",
        description="Submits each fine-tuned run's finetune.slurm with sbatch and records the job ids in "
        "EXPERIMENT/logs/submissions.json. Runs submitted before are skipped (named with --run: refused) unless "
        "--resubmit. Only runs whose files are the ones `scaffold generate` wrote and checked for the summary's "
        "settings now are queued: a run edited by hand, failed or never checked is refused by name.",
        epilog="exit status: 0 every run submitted or already submitted, 1 some run failed or was refused (not "
        "checked among them), or the "
        "cluster's job limit stopped the submission (what was queued is recorded; run submit again later), 2 "
        "invalid input or no SLURM controller reachable",
    )
    sm.add_argument("experiment", nargs="?", default=".", type=Path, help="experiment directory (default: .)")
    sm.add_argument("--local-config", type=Path, metavar="PATH", help="site config (default: as for generate)")
    sm.add_argument("--dry-run", action="store_true", help="say what would be submitted; submit nothing")
    sm.add_argument("--resubmit", action="store_true", help="submit runs again that were submitted before")
    sm.add_argument(
        "--run", dest="runs", action="append", metavar="NAME", help="submit only this run (repeat for several)"
    )
    sm.add_argument(
        "--array",
        action="store_true",
        help="queue the runs of each job array script (arrays/array_K.slurm: runs with identical #SBATCH resources) "
        "as one job array; each run's job id is recorded as ARRAYJOB_TASK",
    )
    sm.add_argument(
        "--max-running",
        type=_positive,
        metavar="K",
        help="with --array: at most K tasks of each array run at once (--array=...%%K)",
    )
    sm.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout (the progress lines go to stderr)"
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def _add_verify_commands(sub) -> None:
    """`scaffold verify` (the verification suite, a pytest run) and `scaffold init-ci` (a CI workflow for it)."""
    ver = sub.add_parser(
        "verify",
        help="check an experiment's generated files with the verification suite (pytest)",
        description="Runs `pytest --experiment EXPERIMENT`: every check on every run, and every generated file "
        "against its golden copy. Other arguments go to pytest (e.g. -k rank8, -x, --snapshot-update).",
        epilog="exit status: pytest's (0 every check passed, 1 some check failed, 2 collection error: no runs, "
        "duplicate run names...)",
    )
    ver.add_argument("experiment", nargs="?", default=".", type=Path, help="experiment directory (default: .)")
    ver.add_argument("--local-config", type=Path, metavar="PATH", help="site config (default: as for generate)")
    ver.add_argument("--no-check-paths", action="store_true", help="skip the checks of paths outside the experiment")
    ver.add_argument("--golden-dir", type=Path, metavar="DIR", help="golden snapshots (default: golden/ beside it)")
    ci = sub.add_parser(
        "init-ci",
        help="write a GitHub Actions workflow that runs `scaffold verify` on pull requests",
        description="Writes .github/workflows/scaffold-verify.yml at the root of the repository holding the "
        "experiment, and the golden copies of the generated files that are missing (from the files `scaffold "
        "generate` wrote). The workflow installs the scaffold-torchtune installed here (as pip recorded it: a VCS "
        "URL at its commit, or its version on the package index; --package SPEC where a runner cannot reach it) "
        "and reads the site config, either form, from the repository secret SCAFFOLD_LOCAL_CONFIG.",
        epilog="exit status: 0 written or unchanged, 1 an existing workflow differs (kept unless --force) or a "
        "generated file edited by hand was not taken as a golden copy, 2 no install spec can be told (--package) "
        "or the summary does not load",
    )
    ci.add_argument("experiment", nargs="?", default=".", type=Path, help="experiment directory (default: .)")
    ci.add_argument(
        "--package",
        metavar="SPEC",
        help="what the workflow pip-installs (default: the scaffold-torchtune installed here, as pip recorded it)",
    )
    ci.add_argument("--golden-dir", type=Path, metavar="DIR", help="golden snapshots (default: golden/ beside it)")
    ci.add_argument("--force", action="store_true", help="replace a workflow that differs")


def main(argv: list[str] | None = None) -> int:
    # SIGTERM (a scheduler or orchestrator stopping us) unwinds like Ctrl-C, so interrupted writes clean up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "generate":
            if rest:
                parser.error(f"unrecognized arguments: {' '.join(rest)}")
            return _generate(args)
        if args.command == "verify":
            return _verify(args, rest)
        if args.command == "submit":
            if rest:
                parser.error(f"unrecognized arguments: {' '.join(rest)}")
            if args.max_running and not args.array:
                parser.error("--max-running caps the tasks of job arrays: use it with --array")
            return _submit(args)
        if args.command == "init-ci":
            if rest:
                parser.error(f"unrecognized arguments: {' '.join(rest)}")
            return _init_ci(args)
        return _setup_finetune(args, rest)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not bad input: say so in one line unless asked for the traceback
        if os.environ.get("SCAFFOLD_DEBUG"):
            raise
        print(
            f"scaffold: internal error: {type(e).__name__}: {e} (set SCAFFOLD_DEBUG=1 for the traceback; "
            "please report it)",
            file=sys.stderr,
        )
        return 3


def _generate(args: argparse.Namespace) -> int:
    from .generate import generate, load_plan, plan_reply, reply

    if args.print_plan:
        plan = load_plan(args.experiment, local_config=args.local_config, check_paths=not args.no_check_paths)
        return print_reply(plan_reply(plan))
    report = generate(
        args.experiment,
        local_config=args.local_config,
        dry_run=args.dry_run,
        force=args.force,
        check_paths=not args.no_check_paths,
    )
    return print_reply(reply(report, json_out=args.json))


def _setup_finetune(args: argparse.Namespace, rest: list[str]) -> int:
    from .setupfinetune import reply, setup_finetune

    result = setup_finetune(
        args.dir, rest, local_config=args.local_config, force=args.force, check_paths=not args.no_check_paths
    )
    return print_reply(reply(result))


def _verify(args: argparse.Namespace, rest: list[str]) -> int:
    from .verify_suite import reply, run

    status = run(
        args.experiment,
        local_config=args.local_config,
        check_paths=not args.no_check_paths,
        golden_dir=args.golden_dir,
        extra=rest,
    )
    return print_reply(reply(status))


def _submit(args: argparse.Namespace) -> int:
    from . import submit as sm

    out = sys.stderr if args.json else sys.stdout
    started = False

    def progress(report: sm.SubmitReport, sub: sm.Submission | sm.ArraySubmission) -> None:
        """Each run's line as soon as it is done, so a long submission shows where it is."""
        nonlocal started
        text = sm.line(report, sub)
        if not started:
            text = sm.header(report) + text
            started = True
        print(text, end="", file=out, flush=True)

    report = sm.submit(
        args.experiment,
        dry_run=args.dry_run,
        resubmit=args.resubmit,
        runs=args.runs,
        progress=progress,
        array=args.array,
        max_running=args.max_running,
        local_config=args.local_config,
    )
    return print_reply(sm.reply(report, json_out=args.json, started=started))


def _init_ci(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from .ci import init_ci, reply

    try:
        result = init_ci(args.experiment, package=args.package, golden_dir=args.golden_dir, force=args.force)
    except InputError as e:
        return print_reply(Reply(2, err=errors(e.problems)))
    return print_reply(reply(result, args.experiment))
