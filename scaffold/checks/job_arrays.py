"""Checks of the experiment's job array scripts (`arrays/array_K.slurm`, scaffold.slurm.arrays): they are exactly the
scripts the runs' own batch scripts call for, bash and sbatch read them, and the controller accepts them. (Their
golden comparison is the plugin's `golden[EXPERIMENT-arrays]` item.)"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..engine import EXPERIMENT, check
from ..engine.context import ExperimentContext
from ..engine.expectations import item_id
from ..engine.findings import Blocked, NotApplicable, finding
from ..engine.generated import parse_slurm_text
from ..engine.shell import bash_n, script_text
from ..errors import Problem
from ..layout import ARRAY_DIR
from ..slurm import arrays
from ..slurm.sbatch import controller_unreachable, test_only
from .batch_script import directive_order

REGEN = "regenerate with `scaffold generate` (it writes the job arrays when every fine-tuned run is generated)"
FILE = ARRAY_DIR


@dataclass
class ArrayView:
    directory: Path
    expected: dict[str, str]  # file name -> text, from the runs' batch scripts as they are on disk
    found: dict[str, Path]  # file name -> path of the array scripts on disk


def view(exp: ExperimentContext) -> ArrayView:
    """What the runs' batch scripts call for and what is on disk (computed once per session); Blocked when a
    run's batch script is missing (run_files reports it)."""
    if "arrays" not in exp.memo:
        summary = exp.expectations.summary()
        local = exp.expectations.local_dir
        scripts, unreadable = arrays.read_scripts(
            local, [ref.name for ref in exp.expectations.fine_tuned_runs()], errors="replace"
        )
        for name, why in unreadable.items():
            raise Blocked(why, item_id("run_files", name))
        directory = local / ARRAY_DIR
        found = {}
        if directory.is_dir():
            found = {p.name: p for p in sorted(directory.iterdir()) if arrays.is_array_file(p.name) and p.is_file()}
        expected = arrays.expected(scripts, experiment=summary.name, root=summary.root)
        exp.memo["arrays"] = ArrayView(directory, expected, found)
    return exp.memo["arrays"]


@check("array_scripts", scope=EXPERIMENT, file=FILE, reads_runs=True)
def array_scripts_match_the_runs(exp: ExperimentContext) -> Iterator[Problem]:
    """The job array scripts are exactly those the runs' batch scripts call for: one per group of runs whose
    #SBATCH resources are identical, listing each run of the group once, with its own output directory (so each
    task runs with the resources its run asks for, and no run is left out or queued twice)."""
    v = view(exp)
    for name, text in v.expected.items():
        path = v.directory / name
        if name not in v.found:
            yield finding("job array script missing", file=path, fix=REGEN)
            continue
        actual = path.read_text(encoding="utf-8", errors="replace")
        if actual == text:
            continue
        want, have = text.splitlines(), actual.splitlines()
        line = next((i for i, (a, b) in enumerate(zip(want, have, strict=False)) if a != b), min(len(want), len(have)))
        diff = "".join(
            difflib.unified_diff(actual.splitlines(True), text.splitlines(True), "on disk", "called for", n=1)
        )
        yield finding(
            "job array script is not the one the runs' batch scripts call for:\n" + diff.rstrip("\n"),
            file=path,
            line=line + 1,
            expected=want[line] if line < len(want) else "(end of file)",
            found=have[line] if line < len(have) else "(end of file)",
            fix=REGEN,
        )
    for name, path in v.found.items():
        if name not in v.expected:
            yield finding(
                "job array script of no group of this experiment's runs (submitting it would queue runs twice or "
                "with resources they do not ask for)",
                file=path,
                fix=REGEN + ", or remove it",
            )


def _present(exp: ExperimentContext) -> list[Path]:
    v = view(exp)
    if not v.found:
        raise NotApplicable("no job array scripts on disk (array_scripts reports any missing)")
    return list(v.found.values())


@check("array_syntax", scope=EXPERIMENT, file=FILE, reads_runs=True)
def array_scripts_parse(exp: ExperimentContext) -> Iterator[Problem]:
    """bash -n accepts every job array script."""
    for path in _present(exp):
        error = bash_n(script_text(path))
        if error:
            for text in error.splitlines():
                m = re.search(r"line (\d+):\s*(.*)", text)
                yield finding(
                    f"bash -n: {m.group(2) if m else text}", file=path, line=int(m.group(1)) if m else None, fix=REGEN
                )


@check("array_directives_first", scope=EXPERIMENT, file=FILE, reads_runs=True)
def array_directives_first(exp: ExperimentContext) -> Iterator[Problem]:
    """Every job array script starts with a shebang, has its #SBATCH lines before the first command, and asks for
    an array (--array)."""
    for path in _present(exp):
        script = parse_slurm_text(path, path.read_text(encoding="utf-8", errors="replace"))
        for line, message, found, fix in directive_order(script, REGEN):
            yield finding(message, file=path, line=line, found=found, fix=fix)
        if script.directive("array") is None:
            yield finding("no #SBATCH --array line: sbatch would queue one job, not an array", file=path, fix=REGEN)


@check("array_sbatch_test_only", scope=EXPERIMENT, file=FILE, reads_runs=True)
def arrays_accepted_by_the_controller(exp: ExperimentContext) -> Iterator[Problem]:
    """`sbatch --test-only` accepts every job array script, with the --array range `scaffold submit --array` would
    give its first array on this cluster (needs a reachable controller; skipped elsewhere)."""
    paths = _present(exp)
    why = controller_unreachable()
    if why:
        raise NotApplicable(f"no SLURM controller reachable ({why}): sbatch --test-only not run")
    size = arrays.max_array_size()
    for path in paths:
        runs = arrays.members(path.read_text(encoding="utf-8", errors="replace"))
        first = arrays.plan_chunks(list(range(len(runs))), size)[:1]
        options = [f"--array={arrays.array_spec(first[0].indices)}"] if first else []
        answer = test_only(path, options=options)
        if not answer.ok:
            yield finding(
                f"sbatch --test-only {' '.join(options)} rejects it: {answer.message}",
                file=path,
                fix="fix the #SBATCH values of its runs (compute: in the summary, or the local config) and regenerate",
            )


def array_files(exp: ExperimentContext) -> list[str]:
    """The array scripts on disk that the runs call for (the ones compared with golden copies)."""
    v = view(exp)
    return [name for name in v.expected if name in v.found]
