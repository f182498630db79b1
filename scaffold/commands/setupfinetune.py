"""`scaffold setup-finetune`: re-render one run from its (hand-edited) setup_finetune.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__, rules, settings
from ..checks import selfcheck
from ..checks.expectations import RunExpectation
from ..discover import MANIFEST
from ..errors import InputError, Problem, did_you_mean, display_path
from ..inputs import localconfig, original_setup, registry, schemas
from ..inputs.summary import SUMMARY_NAME
from ..inputs.yamlio import load_yaml, parse_yaml
from ..output.outcome import failures
from ..output.runlog import LOG_DIR, LOG_NAME, RunLog
from ..output.writer import KEPT, Manifest, atomic_write, write
from ..plan import FINE_TUNED, FINETUNE_FILE, SETUP_FILE, SLURM_FILE, RunPlan
from ..render import RenderError, render_finetune_yaml, render_setup, render_slurm


@dataclass
class SetupResult:
    run_dir: Path
    exit_status: int = 0
    files: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    checks: dict[str, list[Problem]] = field(default_factory=dict)  # self-check: check id -> its problems
    notes: list[str] = field(default_factory=list)
    diffs: dict[str, str] = field(default_factory=dict)


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
    """The experiment directory above a run directory (where the summary or the manifest is)."""
    parent = run_dir.resolve().parent
    if (parent / SUMMARY_NAME).is_file() or (parent / MANIFEST).is_file():
        return parent
    return None


def setup_finetune(
    run_dir: Path, overrides: list[str], *, local_config: Path | None = None, force: bool = False
) -> SetupResult:
    """Validate the run's setup_finetune.yaml (with flag overrides), then render and write its two files."""
    run_dir = Path(run_dir)
    result = SetupResult(run_dir)
    exp_dir = experiment_dir_of(run_dir)
    log = RunLog(exp_dir / LOG_DIR / LOG_NAME if exp_dir else None)
    try:
        doc = load_yaml(run_dir / SETUP_FILE)
        if not isinstance(doc.data, dict):
            raise InputError(
                [
                    doc.problem(
                        (),
                        "setup_finetune.yaml must be a mapping of settings",
                        "write one `key: value` setting per line, or run `scaffold generate` again to recreate it",
                    )
                ]
            )
        if keys := original_setup.original_keys(doc.data):
            raise InputError(
                [
                    doc.problem(
                        (keys[0],),
                        f"this setup_finetune.yaml is in {original_setup.describe(keys)}, not this tool's: it is not "
                        "rendered here",
                        "run `scaffold generate` on the experiment (the directory of experiment_summary.yaml) to write "
                        "this run's files in this tool's format (the original's file is kept unless --force, which "
                        "keeps it as a .bak backup); then edit that setup_finetune.yaml and run setup-finetune",
                    )
                ]
            )
        known = list(schemas.schema(schemas.SETUP)["properties"])
        changes = parse_overrides(overrides, known)
        setup = dict(doc.data)
        if (
            "lora_rank" in changes
            and "lora_alpha" not in changes
            and setup.get("lora_alpha") == rules.default_lora_alpha(setup.get("lora_rank", 0))
        ):
            changes["lora_alpha"] = rules.default_lora_alpha(changes["lora_rank"])
            result.notes.append(f"lora_alpha follows lora_rank: {changes['lora_alpha']}")
        setup.update(changes)
        problems = schemas.validate(schemas.SETUP, doc, setup)
        if problems:
            raise InputError(problems)
        local_models, local = None, None
        try:
            local = localconfig.load(localconfig.find(run_dir, local_config))
            local_models = local.get("models")
        except InputError:
            if local_config is not None:
                raise
            result.notes.append("no local config found: using the shipped model registry only")
        # A model in neither registry is recognised from its directory, as `scaffold generate` did with path checks.
        model_dir = Path(setup["model_dir"]) if setup.get("model_dir") else None
        entry, recognised = registry.find(setup["model"], registry.models(local_models), model_dir)
        if recognised:
            result.notes.append(recognised)
        if isinstance(entry, Problem):
            line, col = doc.locate(("model",))
            raise InputError([Problem(entry.message, doc.name, line, col, "model", entry.fix)])
    except InputError as e:
        result.problems = e.problems
        result.exit_status = 2
        return result

    name = setup["run_name"]
    log.heading(f"scaffold-torchtune {__version__} setup-finetune {display_path(run_dir)}")
    for note in result.notes:
        log.info(note, name)
    try:
        full = settings.complete(setup)  # keys the file leaves out: their defaults, once (scaffold.settings)
        texts = {FINETUNE_FILE: render_finetune_yaml(full, entry), SLURM_FILE: render_slurm(full, entry)}
    except RenderError as e:
        result.problems = [
            Problem(
                f"rendering failed: {e}",
                display_path(run_dir / e.file),
                fix="check the settings in setup_finetune.yaml",
                run=name,
            )
        ]
        result.exit_status = 1
        return result
    manifest = Manifest(exp_dir or run_dir)
    try:
        if changes:
            # The flags become part of the record; this file stays the user's (no manifest hash).
            atomic_write(run_dir / SETUP_FILE, render_setup(setup))
            result.files[SETUP_FILE] = "updated from flags"
            log.info(f"{SETUP_FILE}: updated from flags {sorted(changes)}", name)
        (run_dir / "artifacts").mkdir(exist_ok=True)
        for fname, text in texts.items():
            res = write(run_dir / fname, text, manifest, force)
            result.files[fname] = res.status
            if res.diff:
                result.diffs[fname] = res.diff
            log.info(f"{fname}: {res.status}" + (f" (backup {res.backup})" if res.backup else ""), name)
            if res.status == KEPT:
                result.problems.append(
                    Problem(
                        f"{fname} was edited by hand since it was generated; kept",
                        display_path(run_dir / fname),
                        fix="re-run with --force to overwrite it (a backup is kept)",
                        run=name,
                    )
                )
        manifest.save()
    except OSError as e:
        result.problems.append(Problem(f"cannot write: {e.strerror} ({e.filename})", run=name))
    if not result.problems:
        # The file's values are what the run is checked against: each is given (by setup_finetune.yaml).
        rp = RunPlan(name, FINE_TUNED, 0, run_dir, full, sources=dict.fromkeys(full, SETUP_FILE))
        result.checks = selfcheck.check_files(RunExpectation(rp, None, local, entry, full), run_dir)
        result.problems += failures(result.checks)
    if not result.problems and exp_dir is not None:
        _update_arrays(exp_dir, result, manifest, log, force=force)
    for p in result.problems:
        log.error_line(p.format(), name)
    log.flush()
    result.exit_status = 1 if result.problems else 0
    return result


def _update_arrays(exp_dir: Path, result: SetupResult, manifest: Manifest, log: RunLog, *, force: bool) -> None:
    """The experiment's job array scripts follow this run's batch script (its resources may have changed): written
    again from every fine-tuned run's batch script, when each has one."""
    from ..inputs import summary
    from ..slurm import arrays

    try:
        s = summary.load(exp_dir)
    except InputError:
        result.notes.append(f"job arrays not updated: {SUMMARY_NAME} is not valid (run `scaffold generate`)")
        return
    runs = [r["name"] for r in s.data["runs"] if r["type"] == FINE_TUNED]
    missing = [r for r in runs if not (exp_dir / r / SLURM_FILE).is_file()]
    if missing:
        result.notes.append(
            f"job arrays not updated: {len(missing)} run(s) not generated yet (run `scaffold generate`)"
        )
        return
    outcomes, problems = arrays.update(
        exp_dir, runs, experiment=s.name, root=s.root, manifest=manifest, force=force, log=log
    )
    for a in outcomes:
        if a.status != "unchanged":
            result.files[a.file] = a.status
    result.problems += problems
    try:
        manifest.save()
    except OSError as e:
        result.problems.append(Problem(f"cannot write the manifest: {e.strerror} ({e.filename})"))
