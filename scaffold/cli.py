"""Command line: a thin layer over scaffold.generate and scaffold.setupfinetune.

Exit status: 0 every run succeeded; 1 some run failed (the others were still written); 2 the input is invalid
(nothing written); 3 an internal error (a bug: please report it, with SCAFFOLD_DEBUG=1 for the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__

EPILOG = "exit status: 0 all runs succeeded, 1 some run failed, 2 invalid input (nothing written)"


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
        help="re-render finetune.yaml and finetune.slurm from this run's setup_finetune.yaml",
        description="Run inside a run directory. Overrides: --KEY VALUE (or --set KEY=VALUE) for any key of "
        "setup_finetune.yaml; they are written back into it.",
        epilog=EPILOG,
    )
    st.add_argument("--dir", type=Path, default=Path("."), help="the run directory (default: .)")
    st.add_argument("--local-config", type=Path, metavar="PATH", help="local config (for user model entries)")
    st.add_argument("--force", action="store_true", help="overwrite files edited by hand (a backup is kept)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        if args.command == "generate":
            if rest:
                parser.error(f"unrecognized arguments: {' '.join(rest)}")
            return _generate(args)
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
    from .generate import generate
    from .report import as_json, as_text

    report = generate(
        args.experiment,
        local_config=args.local_config,
        dry_run=args.dry_run,
        force=args.force,
        check_paths=not args.no_check_paths,
    )
    if args.json:
        print(as_json(report))
    else:
        stream = sys.stderr if report.input_errors else sys.stdout
        print(as_text(report), end="", file=stream)
    return report.exit_status


def _setup_finetune(args: argparse.Namespace, rest: list[str]) -> int:
    from .setupfinetune import setup_finetune

    result = setup_finetune(args.dir, rest, local_config=args.local_config, force=args.force)
    for note in result.notes:
        print(f"note: {note}")
    for name, status in result.files.items():
        print(f"  {name}: {status}")
        if status.startswith("kept") and name in result.diffs:
            print("".join("      " + line for line in result.diffs[name].splitlines(True)), end="")
    if result.checks:
        passed = sum(c.ok for c in result.checks)
        print(f"verification: {passed} checks passed, {len(result.checks) - passed} failed")
    for p in result.problems:
        print(f"error: {p.format()}", file=sys.stderr)
    return result.exit_status
