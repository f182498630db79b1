"""Job arrays: the fine-tuned runs of an experiment whose `#SBATCH` resources are identical, queued as one Slurm job
array (`scaffold submit --array`) instead of one job each.

`scaffold generate` writes one array script per group, `{experiment}/arrays/array_K.slurm` (K from 1, groups in the
order of their first run in the summary). It carries the group's shared directives and the list of its runs; task
`i` changes into run `i`'s directory and runs that run's own `finetune.slurm` (the same file a plain submit would
queue, its `#SBATCH` lines being comments to bash), with its output appended to
`{run output dir}/slurm-{array job}_{task}.out`. So a run trains the same, alone or in an array, and requeue and
resume work per task (finetune.slurm requeues `ARRAYJOB_TASK`, never the whole array).

The rules live here once: which directives make up a run's resources (`resources`), how runs are grouped
(`groups`), what an array script holds (`render`), which runs it lists (`members`), and how a set of task indices
is split at the cluster's `MaxArraySize` and capped (`plan_chunks`, `array_spec`). generate, submit and the
verification suite all use them.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from ..errors import Problem, display_path
from ..layout import ARRAY_DIR, SLURM_FILE
from ..output.outcome import ArrayOutcome
from ..output.writer import KEPT, Manifest, cannot_write, sha256, write
from ..resources import generator_digest
from .sbatch import CLIENT_TEXT

if TYPE_CHECKING:
    from ..output.runlog import RunLog

ARRAY_GLOB = "array_*.slurm"
# Options that name or route one run's job; the array sets its own (its name, and a dispatch log per task).
PER_RUN = frozenset({"job-name", "output", "error"})
# Slurm's default MaxArraySize: task indices run from 0 to MaxArraySize - 1.
DEFAULT_MAX_ARRAY_SIZE = 1001
_NAME = re.compile(r"^array_([1-9][0-9]*)\.slurm$")
_MEMBER = re.compile(r"^  (\S+)  # task (\d+)$")


def file_name(k: int) -> str:
    return f"array_{k}.slurm"


def is_array_file(name: str) -> bool:
    return _NAME.match(name) is not None


@dataclass(frozen=True)
class Group:
    """Runs that can share one job array: their scripts' directives are the same but for PER_RUN ones."""

    directives: tuple[str, ...]  # the shared #SBATCH lines, as the runs' scripts write them
    runs: tuple[str, ...]
    log_dirs: tuple[str, ...]  # each run's --output directory (where its own slurm-*.out goes)


def _directives(text: str) -> list:
    """The #SBATCH lines sbatch reads: from the top to the first command (each parsed as the suite parses it)."""
    from .directives import parse_directive, script_lines

    out = []
    for lineno, line in enumerate(script_lines(text), start=1):
        stripped = line.strip()
        if stripped.startswith("#SBATCH"):
            out.append(parse_directive(lineno, line))
        elif stripped and not stripped.startswith("#"):
            break
    return out


def resources(text: str, directives: list | None = None) -> tuple[str, ...]:
    """A run script's #SBATCH lines that decide where and how it runs (everything but PER_RUN options);
    `directives`: the script's, when they were parsed already."""
    return tuple(d.text.strip() for d in directives or _directives(text) if d.option not in PER_RUN)


def log_dir(text: str, directives: list | None = None) -> str | None:
    """The directory of a run script's --output file (None when it names none)."""
    found = [d for d in directives or _directives(text) if d.option == "output" and d.value]
    return str(PurePosixPath(found[-1].value).parent) if found else None


def groups(scripts: Iterable[tuple[str, str]]) -> list[Group]:
    """The runs (name, finetune.slurm text) grouped by their resources, groups in the order of their first run and
    runs in the order given. (A run whose script names no --output file writes its task's output in its
    directory.)"""
    found: dict[tuple[str, ...], tuple[list[str], list[str]]] = {}
    for name, text in scripts:
        directives = _directives(text)  # parsed once a script
        runs, logs = found.setdefault(resources(text, directives), ([], []))
        runs.append(name)
        logs.append(log_dir(text, directives) or "")
    return [Group(key, tuple(runs), tuple(logs)) for key, (runs, logs) in found.items()]


def render(group: Group, k: int, *, experiment: str, root: str | os.PathLike) -> str:
    """The array script of group `k` of experiment `experiment`, whose run directories are under `root` (the
    experiment directory as the cluster sees it)."""
    from ..render import render_template

    return render_template(
        "finetune_array.slurm.j2",
        {
            "experiment": experiment,
            "name": file_name(k).removesuffix(".slurm"),
            "root": str(root),
            "log_dir": f"{root}/logs",
            "directives": group.directives,
            "runs": [(run, d or f"{root}/{run}") for run, d in zip(group.runs, group.log_dirs, strict=True)],
        },
    )


def members(text: str) -> list[str]:
    """The runs an array script lists, in task order (the `  NAME  # task I` lines of its list)."""
    from .directives import script_lines

    out = []
    for line in script_lines(text):
        m = _MEMBER.match(line)
        if m and int(m.group(2)) == len(out):
            out.append(m.group(1).strip("'"))
    return out


@dataclass(frozen=True)
class Chunk:
    """One `sbatch --array` call: tasks `indices` (0 <= each < MaxArraySize) run the runs at `offset + index`."""

    offset: int
    indices: tuple[int, ...]


def plan_chunks(positions: list[int], max_array_size: int) -> list[Chunk]:
    """The arrays that queue the runs at `positions` (their places in an array script's list, ascending) on a
    cluster whose task indices must stay below `max_array_size`: one array per block of `max_array_size` places,
    so a task's index is its run's place in the list whenever the list fits in one array."""
    out: list[Chunk] = []
    for p in positions:
        offset = p - p % max_array_size
        if out and out[-1].offset == offset:
            out[-1] = Chunk(offset, (*out[-1].indices, p - offset))
        else:
            out.append(Chunk(offset, (p - offset,)))
    return out


def array_spec(indices: Iterable[int], max_running: int | None = None) -> str:
    """`--array` value for these task indices: ranges `a-b` joined by commas, `%K` for at most K running at once."""
    parts: list[str] = []
    run: list[int] = []
    for i in sorted(set(indices)):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(parts) + (f"%{max_running}" if max_running else "")


def max_array_size(env: Mapping[str, str] | None = None) -> int:
    """The cluster's MaxArraySize (`scontrol show config`), or Slurm's default when it cannot be asked."""
    try:
        proc = subprocess.run(
            ["scontrol", "show", "config"],
            env={**os.environ, **(env or {})},
            capture_output=True,
            **CLIENT_TEXT,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return DEFAULT_MAX_ARRAY_SIZE
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", proc.stdout, re.MULTILINE)
    return int(m.group(1)) if m and int(m.group(1)) > 0 else DEFAULT_MAX_ARRAY_SIZE


# The manifest's record of what the job arrays were last written from (`made_from`), under a name no run can have.
SOURCE = f"{ARRAY_DIR}/"


def made_from(scripts: list[tuple[str, str]], *, experiment: str, root: str | os.PathLike) -> str:
    """What the array scripts of `scripts` (run, finetune.slurm text) are made from, as one digest: the runs'
    scripts, the experiment, where it is and the generator itself (its templates and rules)."""
    h = hashlib.sha256(f"{generator_digest()}\0{experiment}\0{root}\0".encode())
    for name, text in scripts:
        h.update(f"{name}\0{len(text)}\0{text}".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def update(
    exp_dir: Path,
    runs: list[str],
    *,
    experiment: str,
    root: str | os.PathLike,
    manifest: Manifest,
    force: bool,
    log: RunLog,
) -> tuple[list[ArrayOutcome], list[Problem]]:
    """Write the array scripts that the fine-tuned `runs`' batch scripts (on disk, in `exp_dir`) call for, and remove
    those no group needs now (kept when edited by hand). What was written, and what went wrong. When the batch
    scripts are what the array scripts on disk were last written from and those are as written (the manifest's
    rule of "generated and checked", `Manifest.checked`), nothing is rendered: each is unchanged."""
    outcomes: list[ArrayOutcome] = []
    scripts, unreadable = read_scripts(exp_dir, runs)
    if unreadable:
        name, why = next(iter(unreadable.items()))
        path = display_path(exp_dir / name / SLURM_FILE)
        return outcomes, [Problem(f"cannot read it for the job arrays: {why}", path)]
    problems: list[Problem] = []
    settled = True  # every array script on disk is one the runs call for, as written
    directory = exp_dir / ARRAY_DIR
    source = made_from(scripts, experiment=experiment, root=root)
    on_disk = sorted(p.name for p in directory.glob(ARRAY_GLOB)) if directory.is_dir() else []
    if not force and scripts and on_disk and manifest.checked(SOURCE, source, [str(directory / n) for n in on_disk]):
        wanted = {name: (directory / name).read_text(encoding="utf-8") for name in on_disk}
    else:
        wanted = expected(scripts, experiment=experiment, root=root)
    log.heading(f"job arrays: {len(wanted)} (queued by `scaffold submit --array`)")
    try:
        if wanted:
            directory.mkdir(exist_ok=True)
        for name, text in wanted.items():
            path = directory / name
            res = write(path, text, manifest, force)
            listed = members(text)
            outcomes.append(ArrayOutcome(f"{ARRAY_DIR}/{name}", len(listed), res.status))
            log.info(f"{ARRAY_DIR}/{name}: {len(listed)} run(s): {', '.join(listed)}: {res.status}")
            if res.backup:
                log.info(f"{ARRAY_DIR}/{name}: edited by hand, overwritten (--force); backup {res.backup}")
            if res.status == KEPT:
                log.info("diff:\n" + res.diff)
                problems.append(
                    Problem(
                        "job array script edited by hand since it was generated; kept",
                        display_path(path),
                        fix="re-run with --force to regenerate it (a backup is kept)",
                    )
                )
        for path in sorted(directory.glob(ARRAY_GLOB)) if directory.is_dir() else []:
            if path.name in wanted or not is_array_file(path.name):
                continue
            if manifest.generated_hash(path) == sha256(path.read_bytes()):
                path.unlink()
                manifest.forget(path)
                log.info(f"{ARRAY_DIR}/{path.name}: removed (no group of runs needs it now)")
            else:
                settled = False  # looked at (and warned of) again next time
                log.warning(f"{ARRAY_DIR}/{path.name}: no group of runs needs it, but it was edited by hand: kept")
    except OSError as e:
        problem = cannot_write(e)
        problems.append(
            replace(problem, message=f"cannot write the job arrays: {problem.message.removeprefix('cannot write: ')}")
        )
    if settled and wanted and not problems:
        manifest.record_source(SOURCE, source)
    else:
        manifest.forget_source(SOURCE)
    return outcomes, problems


def read_scripts(
    exp_dir: Path, runs: Iterable[str], errors: str = "strict"
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The batch scripts the job arrays are made from: (run, finetune.slurm text) of each run that has a readable
    one, in order, and why each of the others cannot be read (generate, submit and the suite all read them so;
    `errors`: how bytes that are not utf-8 are decoded, "replace" where nothing is written from the text)."""
    scripts, unreadable = [], {}
    for name in runs:
        try:
            scripts.append((name, (exp_dir / name / SLURM_FILE).read_text(encoding="utf-8", errors=errors)))
        except FileNotFoundError:
            unreadable[name] = f"{name}/{SLURM_FILE} is missing"
        except (OSError, UnicodeDecodeError) as e:
            unreadable[name] = str(e)
    return scripts, unreadable


def expected(scripts: Iterable[tuple[str, str]], *, experiment: str, root: str | os.PathLike) -> dict[str, str]:
    """Every array script the runs (name, finetune.slurm text) call for: file name -> text."""
    return {
        file_name(k): render(g, k, experiment=experiment, root=root) for k, g in enumerate(groups(scripts), start=1)
    }


def queued_tasks(
    exp_dir: Path, names: list[str], *, experiment: str, root: str | os.PathLike
) -> tuple[dict[str, tuple[Path, int, list[str]]], dict[str, Problem]]:
    """Where each of the fine-tuned runs `names` is queued as a task: run -> (array script, its place in the list,
    the list), for the array scripts that are exactly what the runs' batch scripts call for now; and, for the runs
    of array scripts that are not (edited, or the runs changed since), why not."""
    scripts, _ = read_scripts(exp_dir, names, errors="replace")  # a run whose script cannot be read: its own failure
    places: dict[str, tuple[Path, int, list[str]]] = {}
    stale: dict[str, Problem] = {}
    for file, text in expected(scripts, experiment=experiment, root=root).items():
        path = exp_dir / ARRAY_DIR / file
        listed = members(text)
        try:
            current = path.read_text(encoding="utf-8") == text
        except (OSError, UnicodeDecodeError):
            current = False
        for i, name in enumerate(listed):
            if current:
                places[name] = (path, i, listed)
            else:
                stale[name] = Problem(
                    f"{ARRAY_DIR}/{file} is missing or not what the runs' batch scripts call for now",
                    display_path(path),
                    fix="run `scaffold generate` (it writes the job arrays from the runs' batch scripts), then submit",
                    run=name,
                )
    return places, stale
