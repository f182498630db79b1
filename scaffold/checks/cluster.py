"""Checks that ask a SLURM controller: where one is reachable from here (`sinfo` answers), each batch script goes
through `sbatch --test-only`; elsewhere they are skipped, with the reason printed. What --test-only cannot see
(a missing --output directory; a time over the partition limit where the site does not enforce it) stays with
the static checks of batch_script.py."""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..engine import check
from ..engine.context import RunContext
from ..engine.findings import NotApplicable
from ..errors import Problem
from ..layout import FINE_TUNED, SLURM_FILE
from ..slurm.sbatch import TestOnly, controller_unreachable, test_only

# Options that name or route a job but never decide whether the cluster accepts it: scripts that differ only in
# these (the runs of a sweep, mostly) get the controller's answer once, not once per run.
_NAMING = frozenset({"job-name", "output", "error", "open-mode", "mail-user", "mail-type", "comment", "chdir"})
_answers: dict[tuple, TestOnly] = {}


@check("sbatch_test_only", scope=FINE_TUNED, file=SLURM_FILE)
def accepted_by_the_controller(run: RunContext) -> Iterator[Problem]:
    """`sbatch --test-only` accepts the script: time syntax, partition, memory, CPUs, GPUs, nodes and features are
    ones the cluster can run (needs a reachable controller; skipped elsewhere)."""
    path = run.require(SLURM_FILE)
    where = ("controller_unreachable", os.environ.get("SLURM_CONF"), os.environ.get("PATH"))
    if where not in run.memo:
        run.memo[where] = controller_unreachable()
    why = run.memo[where]
    if why:
        raise NotApplicable(f"no SLURM controller reachable ({why}): sbatch --test-only not run")
    key = (
        os.environ.get("SLURM_CONF", ""),
        tuple((d.option, d.value) for d in run.slurm().directives if d.option not in _NAMING),
    )
    if key not in _answers:
        _answers[key] = test_only(path)
    answer = _answers[key]
    if not answer.ok:
        yield run.problem(
            f"sbatch --test-only rejects it: {answer.message}",
            file=SLURM_FILE,
            fix="fix the #SBATCH values (compute: in the summary, or the local config) and regenerate",
        )
