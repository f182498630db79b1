"""Golden snapshots in the suite: every generated file of every fine-tuned run is compared, whole, with
`{golden_dir}/{run}/{file}` (default golden_dir: `golden/` beside the summary); `--snapshot-update` accepts changes.

Snapshots are machine-independent: generated files name paths under `experiment.dir` (the cluster's path), so
they do not depend on where the experiment is checked out; a summary without `experiment.dir` names the local
directory, which is replaced by a placeholder before comparing (scaffold.golden.machine_independent).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from ..errors import display_path
from ..golden import golden_extension, machine_independent
from ..plan import TRAINING_FILES
from .context import RunContext
from .expectations import Expectations
from .findings import CheckFailed, finding


def compare(run: RunContext, file: str, snapshot: Any) -> None:
    """Compare one generated file with its golden copy (syrupy `snapshot` fixture); raise CheckFailed on a diff."""
    path = run.require(file)
    summary = run.experiment.summary()
    local_named = None if summary.data["experiment"].get("dir") else summary.local_dir
    text = machine_independent(path.read_text(encoding="utf-8"), local_named)
    golden_dir = run.experiment.golden_dir
    assertion = snapshot.use_extension(golden_extension(golden_dir, file, run.name))
    if assertion == text:
        return
    golden = golden_dir / run.name / file
    if not golden.is_file():
        message = f"no golden copy at {display_path(golden)}"
        fix = "review the file, then accept it with --snapshot-update (and commit the golden file)"
    else:
        diff = difflib.unified_diff(
            golden.read_text(encoding="utf-8").splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile=f"golden {display_path(golden)}",
            tofile=f"generated {display_path(path)}",
            n=2,
        )
        message = "differs from its golden copy:\n" + "".join(diff).rstrip("\n")
        fix = "if the change is intended, accept it with --snapshot-update and commit the golden file"
    raise CheckFailed([finding(message, run=run.name, file=path, fix=fix)])


def expected_golden_files(expectations: Expectations) -> set[Path]:
    """The golden file of every generated file of every fine-tuned run."""
    return {expectations.golden_dir / r.name / f for r in expectations.fine_tuned_runs() for f in TRAINING_FILES}


def stale_golden_files(expectations: Expectations) -> list[Path]:
    """Files under the golden directory that belong to no run or file of the experiment (hidden files aside)."""
    root = expectations.golden_dir
    if not root.is_dir():
        return []
    want = expected_golden_files(expectations)
    found = [p for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    return [p for p in found if p not in want]


def remove_stale(paths: list[Path], root: Path) -> None:
    """Delete stale golden files, and the run directories they leave empty."""
    for path in paths:
        path.unlink()
        parent = path.parent
        while parent != root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
