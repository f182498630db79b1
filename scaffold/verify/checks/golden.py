"""The golden directory holds snapshots of this experiment's runs only (the per-file comparisons are the
`golden[run-file]` items of the plugin, which use syrupy's `snapshot` fixture)."""

from __future__ import annotations

from collections.abc import Iterator

from ...errors import Problem
from ..context import ExperimentContext
from ..findings import finding
from . import EXPERIMENT, check


@check("golden_stale", scope=EXPERIMENT, file="golden")
def no_stale_golden_files(exp: ExperimentContext) -> Iterator[Problem]:
    """No golden file is left for a run or file the experiment no longer has (removed under --snapshot-update)."""
    from ..snapshots import remove_stale, stale_golden_files  # here: syrupy costs 0.1 s to import, and generate
    # imports every check module (the self-check runs the texts=True ones)

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
