"""The unchanged re-run: when nothing a generation depends on has changed since the last one that generated
and checked every run, say so without loading the validators, the planner or the templates.

A generation depends on: this tool (its code, templates and schemas), the summary and the local config (their
bytes, and where they are), the options, and the paths planning looked at (datasets it read, model files and
environments it looked for: `Plan.inputs`, with their state then). Its output is every run directory and the
files the manifest records. When a generation ends with every run generated and self-checked, the manifest
keeps a digest of all the inputs and the list of runs (its `state`); any later write drops it (on disk before
the first file is written, so a killed generation leaves none behind).

A re-run then compares: the digest of the inputs as they are now, then every run directory (a real directory,
not a link) and every generated file's size, modification time and inode (its content where that stamp is
too recent to trust, as `Manifest.unchanged` does). Anything different, or anything it cannot read, sends the
re-run down the ordinary path, which finds out what changed; so this is only ever a shortcut to the answer
that path would give. (tests/test_uptodate.py holds the two paths to the same report.)
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

from . import __version__
from .discover import MANIFEST, TRAINING_FILES, find, signature, summary_path
from .errors import InputError, display_path
from .lock import LockTimeout, experiment_lock
from .outcome import ArrayOutcome, Report, RunOutcome
from .runlog import LOG_DIR, LOG_NAME, RunLog
from .writer import UNCHANGED, Manifest

_PACKAGE = Path(__file__).resolve().parent
_SHIPPED = (".py", ".j2", ".yaml", ".yml", ".json")


def tool_signature() -> list:
    """Name, size and modification time of every file of this tool that decides what it generates (the
    package's code, and its templates and schemas, shipped inside it or at the top of a source checkout)."""
    out = []
    roots = [_PACKAGE, _PACKAGE.parent / "templates", _PACKAGE.parent / "schemas"]
    for root in roots:
        if root.is_dir():
            _walk(str(root), out)
    return out


def _walk(directory: str, out: list) -> None:
    with os.scandir(directory) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False):
                if entry.name != "__pycache__":
                    _walk(entry.path, out)
            elif entry.name.endswith(_SHIPPED):
                st = entry.stat()
                out.append([entry.path, st.st_size, st.st_mtime_ns])


def input_key(
    summary_file: Path,
    summary_digest: str | None,
    local_file: Path,
    local_digest: str | None,
    check_paths: bool,
    inputs: dict[str, list | None],
) -> str:
    """The digest of everything a generation depends on (see the module's docstring)."""
    payload = json.dumps(
        [
            __version__,
            tool_signature(),
            str(Path(summary_file).resolve()),
            summary_digest,
            str(Path(local_file).resolve()),
            local_digest,
            check_paths,
            sorted(inputs.items()),
        ]
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def state(key: str, inputs: dict[str, list | None], report: Report, notes: list[str]) -> dict:
    """What the manifest keeps of a generation that generated and checked every run."""
    return {
        "key": key,
        "inputs": sorted(inputs),
        "experiment": report.experiment,
        "notes": notes,
        "runs": [[r.name, r.type, r.recipe, r.warnings] for r in report.runs],
        "arrays": [[a.file, a.runs] for a in report.arrays],
    }


def _digest(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None


def try_unchanged(target: Path, *, local_config: Path | None, check_paths: bool) -> Report | None:
    """The report of a re-run that would change nothing (logged as such), or None: then generate as usual."""
    import time

    started = time.perf_counter()
    summary_file = summary_path(Path(target))
    summary_digest = _digest(summary_file)
    if summary_digest is None:
        return None
    experiment = summary_file.resolve().parent
    if not _recorded_state(experiment):  # most first generations stop here
        return None
    try:
        local_file = find(experiment, local_config)
    except InputError:
        return None
    local_digest = _digest(local_file)
    if local_digest is None:
        return None
    try:
        with experiment_lock(experiment, "generate", wait=False):
            manifest = Manifest(experiment)
            recorded = manifest.state
            if not recorded or not isinstance(recorded.get("inputs"), list):
                return None
            inputs = {p: signature(p) for p in recorded["inputs"]}
            key = input_key(summary_file, summary_digest, local_file, local_digest, check_paths, inputs)
            if (
                key != recorded.get("key")
                or not isinstance(recorded.get("arrays"), list)  # a state from before job arrays
                or not _outputs_unchanged(experiment, recorded["runs"], manifest)
                or not manifest.unchanged([os.path.join(experiment, file) for file, _ in recorded["arrays"]])
            ):
                return None
            return _report(summary_file, local_file, experiment, recorded, check_paths, started)
    except (LockTimeout, OSError, KeyError, TypeError, ValueError):
        return None


def _recorded_state(experiment: Path) -> bool:
    """Whether the manifest may hold a state at all (a cheap look before the real reading)."""
    try:
        with open(experiment / MANIFEST, "rb") as f:
            return b'"state"' in f.read()
    except OSError:
        return False


def _outputs_unchanged(experiment: Path, runs: list, manifest: Manifest) -> bool:
    root = str(experiment)
    for name, kind, *_ in runs:
        run_dir = os.path.join(root, name)
        try:
            if not stat.S_ISDIR(os.lstat(run_dir).st_mode):
                return False
        except OSError:
            return False
        if kind == "fine-tuned":
            if manifest.source(name) is None:
                return False
            if not manifest.unchanged([os.path.join(run_dir, f) for f in TRAINING_FILES]):
                return False
    return True


def _report(
    summary_file: Path, local_file: Path, experiment: Path, recorded: dict, check_paths: bool, started: float
) -> Report:
    import time

    report = Report(summary=display_path(summary_file), experiment=recorded["experiment"])
    log = RunLog(experiment / LOG_DIR / LOG_NAME, keep_open=True)
    report.log = display_path(log.path)
    log.heading(
        f"scaffold-torchtune {__version__} generate {report.summary} (experiment {report.experiment}; "
        f"local config {display_path(local_file)}; force=False; check_paths={check_paths})"
    )
    for note in recorded.get("notes", []):
        log.info(note)
    log.info(
        "nothing changed since the last generation (same tool, summary, local config, options and inputs; every "
        "run directory and generated file as written and checked then)"
    )
    for name, kind, recipe, warnings in recorded["runs"]:
        out = RunOutcome(name, kind, directory=display_path(experiment / name), recipe=recipe, warnings=warnings)
        log.heading(f"run {name} ({kind})")
        for warning in warnings:
            log.warning(warning, name)
        if kind == "fine-tuned":
            out.files = dict.fromkeys(TRAINING_FILES, UNCHANGED)
            out.checked_earlier = True
            log.info("unchanged since generated (settings, templates and files all as then)", name)
        else:
            log.info(f"{kind} run: directory only ({out.directory})", name)
        report.runs.append(out)
        log.flush_some()
    report.arrays = [ArrayOutcome(file, runs, UNCHANGED) for file, runs in recorded["arrays"]]
    log.heading(f"job arrays: {len(report.arrays)} (queued by `scaffold submit --array`)")
    for a in report.arrays:
        log.info(f"{a.file}: {a.runs} run(s): {UNCHANGED}")
    fine = sum(r.type == "fine-tuned" for r in report.runs)
    log.info(f"done: {fine} fine-tuned runs configured, {len(report.runs) - fine} control/eval-only runs created")
    log.close()
    report.log_error = log.error
    report.seconds = time.perf_counter() - started
    return report
