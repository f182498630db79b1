"""`scaffold setup-finetune`: change one run, in its entry of experiment_summary.yaml, and render it again.

The summary stays the one source of truth of the experiment (the evaluation step and later analysis read it). A
change to one run, given as flags (`--lora_rank 16`, `--set lr=1e-5`) or as edits of the run's setup_finetune.yaml,
is written into that run's entry of the summary (`runs[i].parameters`, `compute`, `slurm_overrides`, `model`,
`dataset_path`; comments and everything else kept as written), and the run is generated again from it, exactly as
`scaffold generate` generates it: rendered, self-checked, and written only when every check passes. Nothing is
written, the summary included, when the change is invalid (exit 2), when the run fails its checks (exit 1: the
texts are kept in logs/rejected/RUN/), or when one of its files was edited by hand (kept unless --force). So after
it, `generate` finds the run unchanged and `verify` re-derives the same settings from the summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import confine
from ..errors import InputError, Problem, did_you_mean, display_path
from ..inputs import original_setup, params, schemas
from ..inputs import summary as summary_mod
from ..inputs.yamledit import EditError, set_values
from ..inputs.yamlio import Document, dotted, load_yaml, parse_yaml
from ..layout import FINE_TUNED, SETUP_FILE, SUMMARY_NAME
from ..output.lock import DEFAULT_TIMEOUT, LockTimeout, lock_where_writable
from ..output.writer import Manifest, sha256
from ..render import SITE_DIRECTIVES, render_setup
from .generate import RunChange, generate, plan_summary, read_summary_text
from .reply import Reply, errors

# Settings of one run, by where they live in its summary entry (runs[i]...).
COMPUTE = ("time", "gpus", "nodes", "mem", "cpus_per_task")
SITE_OPTIONS = {key: option for option, key in SITE_DIRECTIVES.items()}  # account -> account, mail_user -> mail-user
# Settings that are not the run's own: where each one comes from instead.
ELSEWHERE = {
    "run_name": "the run's name (runs[].name): renaming a run changes the experiment",
    "experiment": "experiment.name in the summary",
    "project": "experiment.project in the summary",
    "run_dir": "experiment.dir and the run's name",
    "output_dir": "experiment.dir and the run's name",
    "model_dir": "models.base[].path of the run's model in the summary",
    "dataset_label": "data.training.dataset_label in the summary (or the file name of the run's dataset_path)",
    "wandb_project": "output.wandb_project in the summary, else the site config's wandb_project",
    "wandb_entity": "the site config (wandb_entity)",
    "wandb_mode": "the site config (wandb_mode)",
    "gpu_directive": "the site config (gpu_directive)",
    "gpu_type": "the site config (gpu_type)",
    "conda_env": "the site config (conda_env)",
    "venv": "the site config (venv)",
    "modules": "the site config (modules)",
    "sbatch_extra": "the site config (sbatch_extra)",
}


@dataclass
class SetupResult:
    run_dir: Path
    exit_status: int = 0
    files: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    checks: dict[str, list[Problem]] = field(default_factory=dict)  # self-check: check id -> its problems
    notes: list[str] = field(default_factory=list)
    diffs: dict[str, str] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)  # each value written into the summary: "path: old -> new"


def reply(result: SetupResult) -> Reply:
    """What setup-finetune prints: the changes written into the summary, the notes, each file's status (with the
    diff of one kept as edited by hand), the self-check's counts; the problems on stderr."""
    out = [f"change: {change}\n" for change in result.changes] + [f"note: {note}\n" for note in result.notes]
    for name, status in result.files.items():
        out.append(f"  {name}: {status}\n")
        if status.startswith("kept") and name in result.diffs:
            out.append("".join("      " + line for line in result.diffs[name].splitlines(True)))
    if result.checks:
        passed = sum(not problems for problems in result.checks.values())
        out.append(f"verification: {passed} checks passed, {len(result.checks) - passed} failed\n")
    return Reply(result.exit_status, "".join(out), errors(result.problems))


def parse_overrides(args: list[str], known: list[str]) -> dict[str, object]:
    """`--lora_rank 16`, `--lora-rank=16` or `--set lora_rank=16` -> {lora_rank: 16}; unknown keys are errors."""
    out: dict[str, object] = {}
    problems = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--set" and i + 1 < len(args):
            key, sep, raw = args[i + 1].partition("=")
            i += 2
        elif arg.startswith("--"):
            key, sep, raw = arg[2:].partition("=")
            if not sep:
                if i + 1 >= len(args):
                    problems.append(Problem(f"option --{key} needs a value", fix=f"write --{key} VALUE"))
                    break
                raw, sep = args[i + 1], "="
                i += 1
            i += 1
        else:
            problems.append(Problem(f"unexpected argument '{arg}'", fix="write overrides as --KEY VALUE"))
            i += 1
            continue
        key = key.replace("-", "_")
        if not sep:
            problems.append(Problem(f"--set {key} needs KEY=VALUE"))
            continue
        if key not in known:
            problems.append(Problem(f"unknown setting '{key}'", field=key, fix=did_you_mean(key, known)))
            continue
        try:
            out[key] = parse_yaml(raw, Path(f"--{key}")).data
        except InputError:
            out[key] = raw
    if problems:
        raise InputError(problems)
    return out


def experiment_dir_of(run_dir: Path) -> Path | None:
    """The experiment directory above a run directory (where the summary is)."""
    parent = run_dir.resolve().parent
    return parent if (parent / SUMMARY_NAME).is_file() else None


@dataclass
class _Origin:
    """Where a change came from: a flag, or a line of the hand-edited setup_finetune.yaml."""

    key: str
    value: Any
    doc: Document | None = None  # the edited setup_finetune.yaml

    def problem(self, message: str, fix: str | None = None, run: str | None = None) -> Problem:
        if self.doc is not None:
            return self.doc.problem((self.key,), message, fix, run)
        return Problem(f"--{self.key}: {message}", fix=fix, run=run)


def setup_finetune(
    run_dir: Path,
    overrides: list[str],
    *,
    local_config: Path | None = None,
    force: bool = False,
    check_paths: bool = True,
    lock_timeout: float = DEFAULT_TIMEOUT,
) -> SetupResult:
    """Write the run's change (flags, and edits of its setup_finetune.yaml) into its entry of the summary, then
    generate the run from it (see the module). The experiment's lock is held from reading the run and the summary to
    writing them, so a `generate` (or another setup-finetune) on the experiment waits, and none sees the other's
    half-written run."""
    run_dir = Path(run_dir)
    exp_dir = experiment_dir_of(run_dir)
    if exp_dir is not None:
        # Links that lead out of the experiment: refused before anything is read, locked or written.
        hostile = confine.summary_problems(exp_dir / SUMMARY_NAME)
        if not hostile and (link := confine.run_problem(exp_dir, exp_dir / run_dir.resolve().name)) is not None:
            hostile = [link]
        if hostile:
            return SetupResult(run_dir, exit_status=2, problems=hostile)
        try:
            with lock_where_writable(exp_dir, f"setup-finetune {run_dir.resolve().name}", lock_timeout):
                return _setup_finetune(run_dir, overrides, local_config, force, check_paths)
        except LockTimeout as e:
            return SetupResult(
                run_dir,
                exit_status=1,
                problems=[Problem(str(e), display_path(exp_dir), fix="wait for the other process")],
            )
    return _setup_finetune(run_dir, overrides, local_config, force, check_paths)


def _setup_finetune(
    run_dir: Path, overrides: list[str], local_config: Path | None, force: bool, check_paths: bool
) -> SetupResult:
    result = SetupResult(run_dir)
    try:
        exp_dir = experiment_dir_of(run_dir)
        if exp_dir is None:
            raise InputError(
                [
                    Problem(
                        f"no {SUMMARY_NAME} in the directory above: setup-finetune changes a run in its entry of "
                        "the experiment's summary",
                        display_path(run_dir),
                        fix="run it in (or --dir) a run directory of an experiment",
                    )
                ]
            )
        setup_path = run_dir / SETUP_FILE
        if keys := original_setup.original_keys_of(setup_path):
            raise InputError(
                [
                    Problem(
                        f"this setup_finetune.yaml is in {original_setup.describe(keys)}, not this tool's: it is not "
                        "rendered here",
                        display_path(setup_path),
                        fix="run `scaffold generate` on the experiment (the directory of experiment_summary.yaml) to "
                        "write this run's files in this tool's format (the original's file is kept unless --force, "
                        "which keeps it as a .bak backup); then run setup-finetune",
                    )
                ]
            )
        summary_file = exp_dir / SUMMARY_NAME
        flags = parse_overrides(overrides, list(schemas.schema(schemas.SETUP)["properties"]))
        summary = summary_mod.load(summary_file)
        name, raw_index = _listed_run(summary, run_dir.resolve().name)
        original = read_summary_text(summary_file)
        raw_run = parse_yaml(original, summary_file).data["runs"][raw_index]
        edits, edited = _edits(run_dir, exp_dir, name, local_config)
        origins = {key: _Origin(key, value, doc) for key, value, doc in edits}
        origins.update({key: _Origin(key, value) for key, value in flags.items()})
        placed, lines, where = _place(origins, raw_run, raw_index, summary.swept)
        try:
            text = set_values(original, placed, SUMMARY_NAME) if placed else original
        except EditError as e:
            raise InputError(
                [
                    summary.doc.problem(
                        ("runs", raw_index + summary.swept),
                        f"cannot write the change into the summary: {e}",
                        f"make it by hand in the run's entry ({', '.join(lines)}), then run `scaffold generate`",
                        name,
                    )
                ]
            ) from None
        _check_change(summary_file, text, local_config, check_paths, name, where)
    except InputError as e:
        result.problems = e.problems
        result.exit_status = 2
        return result
    result.changes = lines
    absorbed = frozenset({SETUP_FILE}) if edited else frozenset()
    report = generate(
        exp_dir,
        local_config=local_config,
        force=force,
        check_paths=check_paths,
        change=RunChange(name, text, original, absorbed, tuple(lines)),
    )
    if report.input_errors:
        result.problems, result.exit_status = _relocated(report.input_errors, where), 2
        return result
    out = next((r for r in report.runs if r.name == name), None)
    result.problems = list(report.errors)
    if out is not None:
        result.files = dict(out.files)
        result.diffs, result.checks = dict(out.diffs), dict(out.checks)
        result.problems = list(out.errors) + result.problems
        result.notes += out.notes + [f"backup of the hand-edited file: {b}" for b in out.backups]
        if out.status == "ok" and text != original:
            result.files = {SUMMARY_NAME: "updated", **result.files}
    result.notes += report.notes
    for a in report.arrays:
        if a.status != "unchanged":
            result.files[a.file] = a.status
    if result.problems and text != original:
        result.notes.append(f"the change was not made: {SUMMARY_NAME} is as it was")
    result.exit_status = report.exit_status
    return result


def _listed_run(summary: summary_mod.Summary, name: str) -> tuple[str, int]:
    """The run's index among the summary's listed runs (as written), for a fine-tuned run listed there."""
    runs = summary.data["runs"]
    names = [r["name"] for r in runs if r["type"] == FINE_TUNED]
    index = next((i for i, r in enumerate(runs) if r["name"] == name), None)
    if index is None or runs[index]["type"] != FINE_TUNED:
        raise InputError(
            [
                summary.doc.problem(
                    ("runs",), f"no fine-tuned run named '{name}' in the summary", did_you_mean(name, names)
                )
            ]
        )
    if index < summary.swept:
        raise InputError(
            [
                summary.doc.problem(
                    ("variables",),
                    f"run '{name}' is expanded from variables: the summary has no entry of its own to change",
                    "change variables for every run, or list the runs under runs: (each with its parameters), then "
                    "run setup-finetune again",
                    name,
                )
            ]
        )
    return name, index - summary.swept


def _edits(
    run_dir: Path, exp_dir: Path, name: str, local_config: Path | None
) -> tuple[list[tuple[str, Any, Document]], bool]:
    """The settings a hand-edited setup_finetune.yaml changes, each (key, value, the file): its values that differ
    from what generate writes there; and whether the file was edited by hand at all (then its edits, comments
    included, are carried over: the file is regenerated, with a backup). The edits can be told apart only while the
    summary still gives the run the file as it was generated; otherwise they are refused."""
    path = run_dir / SETUP_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], False
    except OSError as e:
        raise InputError([Problem(f"cannot read: {e.strerror}", display_path(path))]) from None
    recorded = Manifest(exp_dir).generated_hash(path)
    if sha256(data) == recorded:
        return [], False
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise InputError(
            [
                doc.problem(
                    (),
                    "setup_finetune.yaml must be a mapping of settings",
                    "write one `key: value` setting per line, or run `scaffold generate --force` to recreate it",
                )
            ]
        )
    problems = schemas.validate(schemas.SETUP, doc, doc.data)
    if problems:
        raise InputError(problems)
    plan = plan_summary(exp_dir / SUMMARY_NAME, local_config, check_paths=False)
    rp = next(r for r in plan.runs if r.name == name)
    if rp.setup is None or recorded is None or sha256(render_setup(rp.setup).encode("utf-8")) != recorded:
        raise InputError(
            [
                doc.problem(
                    (),
                    "setup_finetune.yaml was edited by hand, and what the summary, the site config or "
                    "scaffold-torchtune give this run changed since the file was generated: its edits cannot be told "
                    "apart from those changes",
                    "pass the change as flags (`scaffold setup-finetune --KEY VALUE`), or regenerate the file with "
                    "`scaffold generate --force` (a backup is kept)",
                    name,
                )
            ]
        )
    setup: dict = dict(rp.setup)
    return [(k, v, doc) for k, v in doc.data.items() if k in setup and not params.same_value(v, setup[k])], True


def _place(
    origins: dict[str, _Origin], raw_run: dict, raw_index: int, swept: int
) -> tuple[list[tuple[tuple, Any]], list[str], dict[str, _Origin]]:
    """Each change at its place in the run's summary entry: [(path, value)], the change in words, and which origin
    each summary field (dotted, as problems name it) comes from. A setting that is not the run's own is refused."""
    placed, lines, where, problems = [], [], {}, []
    run_path = ("runs", raw_index)
    for key, origin in origins.items():
        if key in ELSEWHERE:
            problems.append(
                origin.problem(
                    f"{key} is not a setting of one run: it comes from {ELSEWHERE[key]}",
                    "change it there, then run `scaffold generate`",
                    raw_run.get("name"),
                )
            )
            continue
        if key == "slurm_overrides":
            if not isinstance(origin.value, dict):
                problems.append(origin.problem("slurm_overrides must be a mapping of #SBATCH options"))
                continue
            targets = [(("slurm_overrides", option), value) for option, value in origin.value.items()]
        elif key in SITE_OPTIONS:
            targets = [(("slurm_overrides", SITE_OPTIONS[key]), origin.value)]
        elif key in COMPUTE:
            targets = [(("compute", key), origin.value)]
        elif key in ("model", "dataset_path") and key not in (raw_run.get("parameters") or {}):
            targets = [((key,), origin.value)]
        else:
            given = raw_run.get("parameters") or {}
            spelt = next((a for a in params.table()[key].aliases if a in given), key) if key in params.table() else key
            targets = [(("parameters", spelt), origin.value)]
        for sub, value in targets:
            path = run_path + sub
            old = _get(raw_run, sub)
            placed.append((path, value))
            lines.append(f"{dotted(path)}: {_shown(old)} -> {_shown(value)}")
            for index in {raw_index, raw_index + swept}:
                where[dotted(("runs", index) + sub)] = origin
    if problems:
        raise InputError(problems)
    return placed, lines, where


_UNSET = object()


def _get(node: Any, path: tuple) -> Any:
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return _UNSET
        node = node[part]
    return node


def _shown(value: Any) -> str:
    return "(not set)" if value is _UNSET else repr(value)


def _check_change(
    summary_file: Path, text: str, local_config: Path | None, check_paths: bool, name: str, where: dict
) -> None:
    """The summary with the change must be valid and plan this run without a problem (else nothing is written)."""
    try:
        plan = plan_summary(summary_file, local_config, check_paths, text)
    except InputError as e:
        raise InputError(_relocated(e.problems, where)) from None
    rp = next(r for r in plan.runs if r.name == name)
    if rp.problems:
        raise InputError(_relocated(rp.problems, where))


def _relocated(problems: list[Problem], where: dict[str, _Origin]) -> list[Problem]:
    """Problems of a changed summary field, told where the change came from: the line of setup_finetune.yaml that
    was edited, or the flag."""
    out = []
    for p in problems:
        origin = where.get(p.field or "")
        if origin is None:
            out.append(p)
        elif origin.doc is not None:
            line, col = origin.doc.locate((origin.key,))
            out.append(replace(p, file=origin.doc.name, line=line, col=col, field=origin.key))
        else:
            out.append(replace(p, message=f"--{origin.key} {origin.value!r}: {p.message}"))
    return out
