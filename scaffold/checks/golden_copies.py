"""The golden copies: each generated file the same as its copy (`golden[RUN-FILE]`, and the job array scripts'
`golden[EXPERIMENT-arrays]`, compared with syrupy's `snapshot` fixture: scaffold.engine.snapshots), and no copy
left for a run or file the experiment no longer has (`golden_stale`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..engine import EXPERIMENT, check
from ..engine.context import ExperimentContext, RunContext
from ..engine.expectations import Expectations
from ..engine.findings import NotApplicable, finding
from ..errors import Problem
from ..layout import ARRAY_DIR, FINE_TUNED, TRAINING_FILES
from ..slurm.arrays import is_array_file
from .job_arrays import array_files

if TYPE_CHECKING:  # syrupy is imported when a comparison runs: generate loads every check module
    from ..engine.snapshots import Snapshot


@check("golden_stale", scope=EXPERIMENT, file="golden")
def no_stale_golden_files(exp: ExperimentContext) -> Iterator[Problem]:
    """No golden file is left for a run or file the experiment no longer has (removed under --snapshot-update)."""
    stale = stale_golden_files(exp.expectations)
    if stale and exp.expectations.options.update_golden:
        remove_stale(stale, exp.expectations.golden_dir)
        exp.removed_golden += stale
        return
    for path in stale:
        yield finding(
            "golden file of no run or generated file of this experiment",
            file=path,
            fix="remove it, or run with --snapshot-update (which removes stale golden files)",
        )


def stale_golden_files(expectations: Expectations) -> list[Path]:
    """Files under the golden directory that belong to no run or file of the experiment (hidden files aside), in
    path order. (Walked as strings, not Path objects: a sweep's golden directory holds thousands of files.)"""
    root = expectations.golden_dir
    if not root.is_dir():
        return []
    want = {(r.name, f) for r in expectations.fine_tuned_runs() for f in TRAINING_FILES}
    # The job array scripts generated now (a group that no longer exists has had its script removed).
    with contextlib.suppress(OSError):
        want |= {(ARRAY_DIR, f) for f in os.listdir(expectations.local_dir / ARRAY_DIR) if is_array_file(f)}
    stale: list[tuple[str, ...]] = []
    for parent, dirs, files in os.walk(root):  # as rglob: symbolic links to directories are not entered
        dirs.sort()
        rel = os.path.relpath(parent, root)
        parts = () if rel == os.curdir else tuple(rel.split(os.sep))
        for name in files:
            if name.startswith(".") or (len(parts) == 1 and (parts[0], name) in want):
                continue
            if os.path.isfile(os.path.join(parent, name)):
                stale.append((*parts, name))
    return [root.joinpath(*parts) for parts in sorted(stale)]


def remove_stale(paths: list[Path], root: Path) -> None:
    """Delete stale golden files, and the run directories they leave empty."""
    for path in paths:
        path.unlink()
        parent = path.parent
        while parent != root and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent


@check("golden", scope=FINE_TUNED, file="golden", files=TRAINING_FILES, snapshot=True)
def same_as_golden_copy(run: RunContext, file: str, snapshot: Snapshot) -> list[Problem]:
    """Each generated file (setup_finetune.yaml, finetune.yaml, finetune.slurm) is the same as its golden copy
    `{golden}/{run}/{file}` (a unified diff when not)."""
    from ..engine.snapshots import compare, same_as_golden

    if not snapshot.eager and same_as_golden(run, file):
        return []
    return compare(run, file, snapshot.assertion())  # syrupy reports the difference, or updates the copy


@check("golden", scope=EXPERIMENT, file="golden", files=(ARRAY_DIR,), snapshot=True)
def job_arrays_same_as_golden_copies(exp: ExperimentContext, file: str, snapshot: Snapshot) -> list[Problem]:
    """Every job array script is the same as its golden copy `{golden}/arrays/`."""
    from ..engine.snapshots import compare_array

    files = array_files(exp)
    if not files:
        raise NotApplicable("no job array scripts on disk (array_scripts reports any missing)")
    assertion = snapshot.assertion()
    return [p for name in files for p in compare_array(exp.expectations, name, assertion)]
