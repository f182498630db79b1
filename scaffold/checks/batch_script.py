"""Checks of finetune.slurm, read as bash and sbatch read it, against the run's expectations."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import rules
from ..engine import check
from ..engine.context import RunContext, RunView, inside
from ..engine.findings import UNSET, NotApplicable
from ..engine.generated import Command, Launch, SlurmScript
from ..errors import Problem
from ..layout import FINE_TUNED, FINETUNE_FILE, SLURM_FILE
from ..output.writer import KEEP_FILE
from ..render import POST_FINETUNE_MODULE, TUNE_RUN_RECIPE, sbatch_site
from ..rules import GPU_EXAMPLE, GPU_OPTIONS, method
from ..slurm.directives import Directive
from ..timeutil import format_time, parse_time

REGEN = "regenerate with `scaffold generate` (or `scaffold setup-finetune` in the run directory)"
_TIME = re.compile(r"^(?:\d+-)?\d{2}:\d{2}:\d{2}$")  # [D-]HH:MM:SS, as the generator writes it
_MEM = re.compile(r"^[1-9]\d*[KMGT]?$")
_COUNT = re.compile(r"^[1-9]\d*$")
_NODES = re.compile(r"^[1-9]\d*(?:-[1-9]\d*)?$")
_PLACEHOLDER = re.compile(r"\$|<[^>]*>")


def _problem(run: RunView, d: Directive | None, message: str, **kw) -> Problem:
    return run.problem(message, file=SLURM_FILE, line=d.line if d else None, field=kw.pop("field", None), **kw)


def gpu_count(d: Directive) -> int | None:
    """The number of GPUs a GPU directive asks for, or None when its value is malformed."""
    return rules.gpu_count(d.option, d.value)


def gpu_directive(run: RunView) -> Directive | None:
    found = [d for d in run.slurm().directives if d.option in GPU_OPTIONS]
    return found[-1] if found else None


@check("slurm_syntax", scope=FINE_TUNED, file=SLURM_FILE, texts=True)
def slurm_parses(run: RunView) -> Iterator[Problem]:
    """bash -n accepts the batch script."""
    error = run.bash_syntax()
    if error:
        for line in error.splitlines():
            m = re.search(r"line (\d+):\s*(.*)", line)
            yield run.problem(
                f"bash -n: {m.group(2) if m else line}",
                file=SLURM_FILE,
                line=int(m.group(1)) if m else None,
                fix=REGEN,
            )


@check("slurm_directives_first", scope=FINE_TUNED, file=SLURM_FILE, texts=True)
def directives_before_commands(run: RunView) -> Iterator[Problem]:
    """The script starts with a shebang and every #SBATCH line comes before the first command (sbatch stops reading
    directives there)."""
    for line, message, found, fix in directive_order(run.slurm(), REGEN):
        yield run.problem(message, file=SLURM_FILE, line=line, found=found, fix=fix)


def directive_order(script: SlurmScript, regen: str) -> Iterator[tuple[int, str, Any, str]]:
    """(line, message, found, fix) for a batch script that sbatch would misread: no shebang, or #SBATCH lines
    after the first command (it stops reading directives there). Shared by the runs' and the arrays' checks."""
    if not script.text.startswith("#!"):
        yield 1, "the script does not start with a shebang (#!/bin/bash)", UNSET, regen
    first = script.first_command
    for d in script.late_directives:
        yield (
            d.line,
            f"#SBATCH line after the first command (line {first.line if first else '?'}): sbatch ignores it",
            d.text.strip(),
            "move it up with the other #SBATCH lines",
        )


@check("slurm_directive_values", scope=FINE_TUNED, file=SLURM_FILE, texts=True)
def directive_values_well_formed(run: RunView) -> Iterator[Problem]:
    """Directive values are well formed: time [D-]HH:MM:SS, memory, CPU and node counts, and the GPU request in
    the site's syntax (the local config's gpu_directive)."""
    site = run.local().get("gpu_directive", "gres")
    for d in run.slurm().directives:
        value = d.value or ""
        if not d.option:
            yield _problem(run, d, "#SBATCH line without an option", found=d.text.strip())
        elif d.option == "time" and not (_TIME.match(value) and parse_time(value)):
            yield _problem(run, d, "--time is not [D-]HH:MM:SS", field="--time", expected="e.g. 04:00:00", found=value)
        elif d.option in ("mem", "mem-per-cpu", "mem-per-gpu") and not _MEM.match(value):
            yield _problem(
                run, d, f"--{d.option} is not a size", field=f"--{d.option}", expected="e.g. 40G", found=value
            )
        elif d.option in ("cpus-per-task", "ntasks", "ntasks-per-node") and not _COUNT.match(value):
            yield _problem(
                run, d, f"--{d.option} is not a positive count", field=f"--{d.option}", expected="e.g. 4", found=value
            )
        elif d.option == "nodes" and not _NODES.match(value):
            yield _problem(run, d, "--nodes is not a node count", field="--nodes", expected="e.g. 1", found=value)
        elif d.option in GPU_OPTIONS:
            example = GPU_EXAMPLE[site]
            if d.option != site:
                yield _problem(
                    run,
                    d,
                    f"GPU request not in the site's syntax (gpu_directive: {site} in the local config)",
                    field=f"--{d.option}",
                    expected=example,
                    found=d.text.strip(),
                    fix=REGEN,
                )
            elif gpu_count(d) is None:
                yield _problem(
                    run, d, "malformed GPU request", field=f"--{d.option}", expected=example, found=d.text.strip()
                )
        elif d.option in ("job-name", "output", "account", "partition", "qos", "constraint") and not value:
            yield _problem(run, d, f"--{d.option} has no value", field=f"--{d.option}", found=d.text.strip())


@check("slurm_no_placeholders", scope=FINE_TUNED, file=SLURM_FILE, texts=True)
def no_placeholders_in_directives(run: RunView) -> Iterator[Problem]:
    """No active #SBATCH line holds `$VAR` or `<PLACEHOLDER>`: sbatch does not expand variables there."""
    for d in run.slurm().directives:
        if _PLACEHOLDER.search(d.text):
            yield _problem(
                run,
                d,
                "a variable or placeholder in an #SBATCH line: sbatch does not expand it",
                found=d.text.strip(),
                fix="write the concrete value (regenerate), or comment the line out (##SBATCH)",
            )


@check("slurm_job_name", scope=FINE_TUNED, file=SLURM_FILE, texts=True)
def job_name_is_run_name(run: RunView) -> Iterator[Problem]:
    """The job name is the run name."""
    d = run.slurm().directive("job-name")
    if d is None or d.value != run.name:
        yield _problem(
            run, d, "job name", field="--job-name", expected=run.name, found=d.value if d else None, fix=REGEN
        )


@check("slurm_output_dir", scope=FINE_TUNED, file=SLURM_FILE)
def output_directory_exists(run: RunContext) -> Iterator[Problem]:
    """--output is inside the run directory and its directory exists (SLURM does not create it; the job would fail
    with no log), holding the file that keeps it in git (a clone has no empty directory)."""
    d = run.slurm().directive("output")
    if d is None or not d.value:
        yield _problem(run, d, "no --output: the log would land where sbatch was called", field="--output", fix=REGEN)
        return
    out_dir = Path(d.value).parent
    expected = run.expected()
    if not inside(out_dir, expected.run_dir):
        yield _problem(
            run, d, f"--output is outside the run directory {expected.run_dir}", field="--output", found=d.value
        )
        return
    local = run.to_local(out_dir)
    if not local.is_dir():
        yield _problem(
            run,
            d,
            f"the --output directory does not exist: {local}",
            field="--output",
            fix=f"run `scaffold generate` (it creates the directory, with a {KEEP_FILE} that keeps it in git), and commit it",
        )
    elif not (local / KEEP_FILE).is_file():
        yield _problem(
            run,
            d,
            f"the --output directory {local} holds no {KEEP_FILE}: git stores no empty directory, so a clone lacks it",
            field="--output",
            fix=f"run `scaffold generate` (it writes {local / KEEP_FILE}), and commit it",
        )


def _expected_gpus_text(n: int) -> str:
    return "no GPU request" if n == 0 else f"{n} GPU(s)"


@check("slurm_resources", scope=FINE_TUNED, file=SLURM_FILE, texts=True)
def resources_as_expected(run: RunView) -> Iterator[Problem]:
    """The script asks for the run's time (where an input gives one), memory, CPUs, nodes, GPUs, account,
    partition, QoS and constraint, as the summary, registry and local config give them (malformed values are slurm_directive_values' concern)."""
    setup = run.expected().setup
    script = run.slurm()
    for option in ("time", "mem", "cpus-per-task", "nodes"):
        if script.directive(option) is None:
            yield run.problem(f"no --{option} directive", file=SLURM_FILE, field=f"--{option}", fix=REGEN)
    d = script.directive("time")
    # A time no input gives is the pre-flight estimate's, which slurm_time_estimate compares (it needs the data).
    given = not run.expected().plan.time_estimated
    if given and d is not None and _TIME.match(d.value or "") and parse_time(d.value) != parse_time(setup["time"]):
        yield _problem(run, d, "--time", field="--time", expected=setup["time"], found=d.value, fix=REGEN)
    d = script.directive("mem")
    if d is not None and _MEM.match(d.value or "") and d.value.upper() != str(setup["mem"]).upper():
        yield _problem(run, d, "--mem", field="--mem", expected=setup["mem"], found=d.value, fix=REGEN)
    for option, key in (("cpus-per-task", "cpus_per_task"), ("nodes", "nodes")):
        d = script.directive(option)
        if d is not None and _COUNT.match(d.value or "") and int(d.value) != int(setup[key]):
            yield _problem(
                run, d, f"--{option}", field=f"--{option}", expected=setup[key], found=int(d.value), fix=REGEN
            )
    gd = gpu_directive(run)
    n = gpu_count(gd) if gd is not None else 0
    if n is not None and n != setup["gpus"]:
        yield _problem(
            run, gd, "GPU request", expected=_expected_gpus_text(setup["gpus"]), found=_expected_gpus_text(n), fix=REGEN
        )
    if setup["device"] == "cuda" and gd is None:
        yield run.problem("device is cuda but the script asks for no GPU", file=SLURM_FILE, fix=REGEN)
    site = sbatch_site(setup)  # the local config's values after the run's slurm_overrides
    extra = [line[2:].partition("=") for line in site["sbatch_extra"]]  # the site's own extra lines, kept as given
    for option in ("account", "partition", "qos", "constraint"):
        want = [site[option]] if site[option] not in (None, "") else []
        want += [value for name, _, value in extra if name == option]
        found = [d for d in script.directives if d.option == option]
        if [d.value for d in found] == want:
            continue
        d = found[-1] if found else None
        value = d.value if d else None
        if (want[-1] if want else None) != (value or None):
            yield _problem(
                run,
                d,
                f"--{option} (local config, then the run's slurm_overrides)",
                field=f"--{option}",
                expected=want[-1] if len(want) == 1 else (want or None),
                found=value,
                fix=REGEN,
            )
        else:
            yield _problem(
                run,
                found[0],
                f"--{option} is given {len(found)} times (an override should replace the site's line)",
                field=f"--{option}",
                expected=want if len(want) > 1 else want[0],
                found=[x.value for x in found],
                fix=REGEN,
            )


def _launch(run: RunView) -> Iterator[Problem | Launch]:
    launches = run.slurm().launches
    if len(launches) != 1:
        yield run.problem(
            "the script must run `tune run` exactly once",
            file=SLURM_FILE,
            expected=1,
            found=len(launches),
            fix=REGEN,
        )
        return
    yield launches[0]


@check("slurm_launch", scope=FINE_TUNED, file=SLURM_FILE, texts=True)
def launch_matches_gpus(run: RunView) -> Iterator[Problem]:
    """`tune run` uses the recipe for the run's method and GPU count, with --nproc_per_node N for N > 1 GPUs; on
    several nodes (full fine-tuning only: LoRA recipes of torchtune 0.6.1 are single-node) through srun with
    --nnodes N and a c10d rendezvous."""
    found = list(_launch(run))
    if not isinstance(found[0], Launch):
        yield from found  # type: ignore[misc]
        return
    launch: Launch = found[0]
    expected = run.expected()
    gpus = int(expected.setup["gpus"])
    recipe = launch.recipe or ""
    want = TUNE_RUN_RECIPE.get(expected.recipe, expected.recipe)
    if recipe != want:
        validation = " with validation" if expected.setup.get("validation_during_training") else ""
        yield run.problem(
            f"recipe for {gpus} GPU(s){validation}",
            file=SLURM_FILE,
            line=launch.line,
            expected=want,
            found=recipe,
            fix=REGEN,
        )
    nproc = launch.launcher_options.get("nproc_per_node")
    if (nproc != str(gpus)) if gpus > 1 else (nproc not in (None, "1")):
        yield run.problem(
            f"--nproc_per_node must match the GPU count ({gpus})",
            file=SLURM_FILE,
            line=launch.line,
            expected=str(gpus) if gpus > 1 else None,
            found=nproc,
            fix=REGEN,
        )
    nodes = launch.launcher_options.get("nnodes", "1")
    asked = int(nodes.partition(":")[2] or nodes) if nodes.replace(":", "").isdigit() else 2
    if "lora" in recipe and (v := rules.multi_node_lora("lora", asked)) is not None:
        yield run.problem(
            v.message, file=SLURM_FILE, line=launch.line, expected="--nnodes 1", found=f"--nnodes {nodes}", fix=v.fix
        )
    want_nodes = int(expected.setup["nodes"])
    if want_nodes > 1:
        yield from _multi_node_launch(run, launch, want_nodes)


def _multi_node_launch(run: RunView, launch: Launch, nodes: int) -> Iterator[Problem]:
    """Several nodes: srun starts one torchrun per node (`--nnodes N`), meeting at a c10d rendezvous."""
    options = launch.launcher_options
    if options.get("nnodes") != str(nodes):
        yield run.problem(
            f"--nnodes must match the node count ({nodes})",
            file=SLURM_FILE,
            line=launch.line,
            expected=str(nodes),
            found=options.get("nnodes"),
            fix=REGEN,
        )
    command = next((c for c in run.slurm().commands if c.line == launch.line), None)
    if command is None or not command.words or command.words[0] != "srun":
        yield run.problem(
            "a multi-node launch must go through srun (one torchrun per node); without it only the first node trains",
            file=SLURM_FILE,
            line=launch.line,
            fix=REGEN,
        )
    if options.get("rdzv_backend") != "c10d" or not options.get("rdzv_endpoint"):
        yield run.problem(
            "a multi-node launch needs a c10d rendezvous on the first node",
            file=SLURM_FILE,
            line=launch.line,
            expected="--rdzv_backend c10d --rdzv_endpoint HOST:PORT",
            found=" ".join(f"--{k} {options[k]}" for k in ("rdzv_backend", "rdzv_endpoint") if k in options) or None,
            fix=REGEN,
        )


@check("slurm_config_path", scope=FINE_TUNED, file=SLURM_FILE, texts=True)
def launch_uses_this_config(run: RunView) -> Iterator[Problem]:
    """`tune run --config` is this run's finetune.yaml (as the cluster names it)."""
    found = list(_launch(run))
    if not isinstance(found[0], Launch):
        return  # slurm_launch reports it
    launch: Launch = found[0]
    want = str(run.expected().run_dir / FINETUNE_FILE)
    if launch.config != want:
        yield run.problem(
            "--config is not this run's finetune.yaml",
            file=SLURM_FILE,
            line=launch.line,
            expected=want,
            found=launch.config,
            fix=REGEN,
        )


@check("slurm_environment", scope=FINE_TUNED, file=SLURM_FILE, texts=True)
def environment_from_local_config(run: RunView) -> Iterator[Problem]:
    """The script purges the modules it inherited (`module purge`), loads the modules and activates the conda
    environment or venv the local config names, and no other, before `tune run`."""
    setup = run.expected().setup
    script = run.slurm()
    launches = script.launches
    launch_line = launches[0].line if launches else None
    loads = script.commands_starting("module", "load")
    modules = [w for c in loads for w in c.words[2:]]
    if modules != list(setup["modules"]):
        yield run.problem(
            "modules loaded (local config `modules`)",
            file=SLURM_FILE,
            line=loads[0].line if loads else None,
            expected=list(setup["modules"]),
            found=modules,
            fix=REGEN,
        )
    # `module purge` once, before the first `module load`, where the site loads modules (scaffold.rules); none on a
    # site without them (`module` may not exist there, and the script stops at the first failing command).
    purges = script.commands_starting("module", "purge")
    want_purge = rules.purges_modules(setup)
    before = [c for c in purges if not loads or c.line < loads[0].line]
    if purges != before or (want_purge and not before) or (purges and not want_purge):
        late = [c for c in purges if c not in before]
        expected = "module purge, then module load " + " ".join(setup["modules"]) if want_purge else "no module purge"
        yield run.problem(
            "`module purge` before the first `module load` (a job must not inherit the submitting shell's modules)"
            if want_purge
            else "`module purge` on a site that loads no modules (local config `modules` is empty)",
            file=SLURM_FILE,
            line=(late or purges or loads)[0].line if purges or loads else None,
            expected=expected,
            found=", ".join(f"module purge on line {c.line}" for c in purges) or "no module purge",
            fix=REGEN,
        )
    conda = script.commands_starting("conda", "activate")
    found_env = [c.words[2] if len(c.words) > 2 else "" for c in conda]
    want_env = [setup["conda_env"]] if setup.get("conda_env") else []
    if found_env != want_env:
        yield run.problem(
            "conda environment activated (local config)",
            file=SLURM_FILE,
            line=conda[0].line if conda else None,
            expected=want_env[0] if want_env else None,
            found=", ".join(found_env) or None,
            fix=REGEN,
        )
    sourced = script.commands_starting("source") + script.commands_starting(".")
    venvs = [c for c in sourced if len(c.words) > 1 and c.words[1].endswith("/bin/activate")]
    found_venv = [c.words[1].removesuffix("/bin/activate") for c in venvs]
    want_venv = [setup["venv"].rstrip("/")] if setup.get("venv") else []
    if found_venv != want_venv:
        yield run.problem(
            "virtual environment activated (local config `venv`)",
            file=SLURM_FILE,
            line=venvs[0].line if venvs else None,
            expected=want_venv[0] if want_venv else None,
            found=", ".join(found_venv) or None,
            fix=REGEN,
        )
    for c in purges + loads + conda + venvs:
        if launch_line is not None and c.line > launch_line:
            yield run.problem(
                "the environment is set up after `tune run`",
                file=SLURM_FILE,
                line=c.line,
                fix="move it before tune run",
            )


@check("slurm_time_limit", scope=FINE_TUNED, file=SLURM_FILE, texts=True)
def time_within_partition_limit(run: RunView) -> Iterator[Problem]:
    """--time is within the partition's limit (the local config's partition_max_time)."""
    limit_text = run.local().get("partition_max_time")
    limit = parse_time(str(limit_text)) if limit_text else None
    if not limit:
        raise NotApplicable("the local config gives no partition_max_time, so the time limit is not checked")
    d = run.slurm().directive("time")
    seconds = parse_time(d.value or "") if d is not None else None
    if seconds is not None and seconds > limit:
        yield _problem(
            run,
            d,
            f"--time is over the partition limit (partition_max_time: {limit_text})",
            field="--time",
            expected=f"<= {format_time(limit)}",
            found=d.value,
            fix=f"ask for at most {format_time(limit)} in the run's compute.time",
        )


_ASSIGNMENT = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$", re.S)
_VARIABLE = re.compile(r"^\$(?:(?P<bare>[A-Za-z_][A-Za-z0-9_]*)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\})$")


def _option_value(words: tuple[str, ...], option: str) -> str | None:
    """The value of `--option VALUE` or `--option=VALUE` among a command's words."""
    for i, word in enumerate(words):
        if word == f"--{option}" and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(f"--{option}="):
            return word.partition("=")[2]
    return None


def _resolved(word: str | None, commands: list[Command], before: int) -> str | None:
    """A word as the shell gives it: a whole `$name` or `${name}` is the value of the last plain assignment
    `name=VALUE` before line `before` (None when there is none); any other word is itself."""
    m = _VARIABLE.match(word or "")
    if word is None or not m:
        return word
    name = m.group("bare") or m.group("braced")
    value = None
    for c in commands:
        if c.line >= before:
            break
        a = _ASSIGNMENT.match(c.words[0]) if len(c.words) == 1 else None
        if a and a.group("name") == name:
            value = a.group("value")
    return value


def _runs_module(words: tuple[str, ...], module: str) -> bool:
    """The command runs `python -m MODULE` (any interpreter name)."""
    return module in words and any(w == "-m" and nxt == module for w, nxt in zip(words, words[1:], strict=False))


@check("slurm_post_finetune", scope=FINE_TUNED, file=SLURM_FILE, texts=True)
def post_step_after_training(run: RunView) -> Iterator[Problem]:
    """After `tune run`, the script runs `python -m scaffold.torchtune_ext.post_finetune` once, with this run's
    output_dir, model_dir, method, dataset_type and (chat runs) chat_template_date: it prepares each epoch
    directory's tokenizer files so that the evaluator feeds the prompt tokens the run trained on (the BOS, the
    date, the base-model prompt form), and points each LoRA adapter_config.json at the local base model directory
    instead of the Hub id, which an offline compute node cannot resolve."""
    setup = run.expected().setup
    script = run.slurm()
    steps = [c for c in script.commands if _runs_module(c.words, POST_FINETUNE_MODULE)]
    want = {
        "output-dir": setup["output_dir"],
        "model-dir": setup["model_dir"],
        "method": method(setup),
        "dataset-type": setup["dataset_type"],
    }
    if setup["dataset_type"] == "chat_completion":
        want["chat-template-date"] = setup["chat_template_date"]
    if len(steps) != 1:
        yield run.problem(
            "the script must run the post-training step once after `tune run` (without it the evaluator feeds the "
            "model other prompt tokens than it trained on, and each LoRA adapter_config.json names the base model "
            "by its Hub id)",
            file=SLURM_FILE,
            line=steps[1].line if steps else None,
            expected=f"python -m {POST_FINETUNE_MODULE} " + " ".join(f"--{k} {v}" for k, v in want.items()),
            found=f"{len(steps)} post-training step(s)",
            fix=REGEN,
        )
        return
    step = steps[0]
    launches = script.launches
    if launches and step.line < launches[0].line:
        yield run.problem("the post-training step runs before `tune run`", file=SLURM_FILE, line=step.line, fix=REGEN)
    for option, value_wanted in want.items():
        given = _option_value(step.words, option)
        value = _resolved(given, script.commands, step.line)
        is_path = option in ("output-dir", "model-dir")
        same = value is not None and (
            value == value_wanted or (is_path and Path(value) == Path(value_wanted))  # the same text: the same path
        )
        if not same:
            yield run.problem(
                f"post-training step --{option} is not this run's {option.replace('-', '_')}",
                file=SLURM_FILE,
                line=step.line,
                field=f"--{option}",
                expected=str(value_wanted),
                found=given if value == given else f"{given} (= {value})",
                fix=REGEN,
            )
