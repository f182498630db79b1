"""Golden snapshots in the suite: every generated file of every fine-tuned run is compared, whole, with
`{golden_dir}/{run}/{file}` (default golden_dir: `golden/` beside the summary); `--snapshot-update` accepts changes.
The comparisons are the `golden` checks (scaffold.checks.golden_copies); here is how they compare.

Snapshots are machine-independent: generated files name paths under `experiment.dir` (the cluster's path), so
they do not depend on where the experiment is checked out; a summary without `experiment.dir` names the local
directory, which is replaced by a placeholder before comparing (scaffold.engine.golden.machine_independent).
"""

from __future__ import annotations

import difflib
import os
import shlex
from functools import cache
from pathlib import Path
from typing import Any

from .. import confine
from ..errors import Problem, display_path
from ..layout import ARRAY_DIR
from .context import RunContext
from .expectations import Expectations
from .findings import finding
from .golden import ACCEPT_COMMAND, golden_extension, local_dir_named, machine_independent


class Snapshot:
    """syrupy's `snapshot` fixture for the golden checks of one test, asked for when a check needs it. `eager` (a
    test of one comparison): every file is compared by syrupy, which counts it in its report; else (a test of a
    run's checks, large sweeps) a file the same as its golden copy passes without syrupy's bookkeeping."""

    def __init__(self, request: Any, eager: bool):
        self._request = request
        self.eager = eager

    def assertion(self) -> Any:
        return self._request.getfixturevalue("snapshot")


def generated_text(run: RunContext, file: str) -> str:
    """A generated file's text as its golden copy holds it (machine-independent); Blocked when it is missing."""
    path = run.require(file)
    local_named = local_dir_named(run.experiment.summary())
    text = run.text(file)
    if text is None:  # not utf-8: compared as decoded with replacement characters, so it differs from its copy
        text = path.read_bytes().decode("utf-8", errors="replace")
    return machine_independent(text, local_named)


def same_as_golden(run: RunContext, file: str) -> bool:
    """Whether the golden copy exists and holds the generated file's text, read as syrupy reads it (utf-8,
    universal newlines). When it does, syrupy's comparison would pass and an update would write nothing, so large
    sweeps skip syrupy's bookkeeping for that file."""
    text = generated_text(run, file)
    try:
        with open(os.path.join(run.experiment.golden_dir, run.name, file), encoding="utf-8") as f:
            return f.read() == text
    except (OSError, UnicodeDecodeError):
        return False


def compare(run: RunContext, file: str, snapshot: Any) -> list[Problem]:
    """Compare one generated file with its golden copy (syrupy `snapshot` fixture): the difference, if any."""
    path = run.require(file)
    text = generated_text(run, file)
    golden_dir = run.experiment.golden_dir
    assertion = snapshot.use_extension(_extension(golden_dir, file))
    return _compare(assertion, text, path, golden_dir / run.name / file, run.name)


def compare_array(expectations: Expectations, file: str, snapshot: Any) -> list[Problem]:
    """Compare one job array script (`arrays/FILE`) with its golden copy `{golden_dir}/arrays/FILE`."""
    path = expectations.local_dir / ARRAY_DIR / file
    if (link := confine.leads_out(expectations.local_dir, path, strict=True)) is not None:
        return [link.problem()]  # never read: its content would be shown in the diff
    local_named = local_dir_named(expectations.summary())
    text = machine_independent(path.read_text(encoding="utf-8", errors="replace"), local_named)
    golden_dir = expectations.golden_dir
    assertion = snapshot.use_extension(golden_extension(golden_dir, file, ARRAY_DIR))
    return _compare(assertion, text, path, golden_dir / ARRAY_DIR / file, None)


def _compare(assertion: Any, text: str, path: Path, golden: Path, run: str | None) -> list[Problem]:
    if assertion == text:
        return []
    experiment = path.parent.parent  # of RUN/FILE or arrays/FILE
    accept = ACCEPT_COMMAND.format(experiment=shlex.quote(display_path(experiment)))
    golden_dir = golden.parent.parent
    if golden_dir != experiment / "golden":
        accept += f" --golden-dir {shlex.quote(display_path(golden_dir))}"
    if not golden.is_file():
        message = f"no golden copy at {display_path(golden)}"
        fix = f"review the file, then accept it with `{accept}` and commit the golden copy"
    else:
        diff = difflib.unified_diff(
            golden.read_text(encoding="utf-8").splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile=f"golden {display_path(golden)}",
            tofile=f"generated {display_path(path)}",
            n=2,
        )
        message = "differs from its golden copy:\n" + "".join(diff).rstrip("\n")
        fix = f"if the change is intended, accept it with `{accept}` and commit the golden copy"
    return [finding(message, run=run, file=path, fix=fix)]


@cache
def _extension(root: Path, file: str) -> type:
    """The syrupy extension storing the golden copy of `file` of the test's run as `{root}/{run}/{file}` (one class
    per file, the run read from the test: VerifyItem.run)."""
    per_run = golden_extension(root, file, "")

    class GoldenFileOfRun(per_run):  # type: ignore[valid-type,misc]
        @classmethod
        def dirname(cls, *, test_location) -> str:
            return str(root / test_location.item.run.name)

    GoldenFileOfRun.__name__ = per_run.__name__
    return GoldenFileOfRun
