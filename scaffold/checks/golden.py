"""The golden directory holds snapshots of this experiment's runs only (the per-file comparisons are the
`golden[run-file]` items of the plugin, which use syrupy's `snapshot` fixture)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import Problem
from ..layout import ARRAY_DIR, TRAINING_FILES
from ..slurm.arrays import is_array_file
from . import EXPERIMENT, check
from .context import ExperimentContext
from .expectations import Expectations
from .findings import finding


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
