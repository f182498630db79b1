"""Planning one run of a sweep: what every run of a plan shares, worked out once (`SweepContext`), and the steps that
plan a fine-tuned run (`FineTunedSteps`: parameters, run name, model, compute, method, data, paths, settings), each
returning the problems it finds. Values come through scaffold/precedence.py's table; what the disk says, through the
plan's probe (scaffold/probe.py)."""

from __future__ import annotations

import os
from collections import ChainMap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import precedence, rules
from .errors import InputError, Problem
from .inputs import modelrecognition, params, registry
from .inputs.localconfig import LocalConfig
from .inputs.summary import Summary
from .layout import ARTIFACTS_DIR
from .precedence import RunInputs
from .probe import (
    CONDITION_RESOLVER,
    HF_TOKENIZER_CONFIG,
    ConditionResolver,
    DatasetFacts,
    Probe,
    TokenizerFacts,
)
from .settings import RunSettings
from .steps import StepPlan
from .timeutil import format_time, parse_time
from .torchtune_ext.datasets import CHAT_TEMPLATE_FILE

if TYPE_CHECKING:
    from .plan import RunPlan

# #SBATCH options the tool writes from the run's own settings (compute:, the registry): not for slurm_overrides.
RUN_DIRECTIVES = (
    "time",
    "mem",
    "cpus-per-task",
    "nodes",
    "ntasks-per-node",
    "gres",
    "gpus",
    "gpus-per-node",
    "requeue",
    "open-mode",
    "signal",
)
# Where the original's resolver of generated-text conditions writes them.
GENERATED_DATA_DIR = "{scratch_dir}/ck-data/generated"


class SweepContext:
    """What every run of one plan shares, worked out once: the parameter values of the runs that give none of
    their own, each model's registry entry and directory, what each dataset says, the site settings, and the
    probe's answers about the disk. Planning a sweep of thousands of runs then costs little more per run than its
    own settings (see benchmarks/)."""

    def __init__(
        self, summary: Summary, local: LocalConfig, models: dict, probe: Probe, check_paths: bool, recognise: bool
    ):
        self.summary, self.local, self.models, self.probe = summary, local, models, probe
        self.check_paths, self.recognise = check_paths, recognise
        self.doc = summary.doc
        self.root = str(summary.root)
        self.table = params.table()
        self.parameters = precedence.SweepParameters.of(summary)
        self.lora_only = [n for n, p in self.table.items() if p.when.get("method") == "lora"]
        self.base = {m["name"]: (i, m) for i, m in enumerate(summary.data["models"]["base"])}
        self.training = summary.data["data"]["training"]
        self.wandb_from = precedence.wandb_project_source(summary, local)
        self.site = precedence.site_settings(local)
        # Run directories already on disk that are symbolic links (one directory listing, not a stat per run).
        self.links = probe.symlinks(summary.local_dir)
        self._models: dict[str, tuple] = {}
        self.recognised: dict[str, modelrecognition.Recognised] = {}  # recognised from config.json by this plan
        self._recorded: dict[str, modelrecognition.Recognised] | None = None
        self._paths: dict[str, tuple[Path, bool]] = {}
        self._datasets: dict[tuple, tuple[list, int | None]] = {}
        self._model_files: dict[tuple, tuple[str, str] | None] = {}
        self._tokenizers: dict[Path, TokenizerFacts] = {}
        self._environment: list[tuple[str, str, str]] | None = None
        self._wandb: dict[bool, dict[str, Any]] = {}
        self._resolver: ConditionResolver | None | bool = False  # False: not asked yet

    def model(self, name: str) -> tuple:
        """(registry entry or Problem, model directory or None, how the directory was found, a note on how the
        entry was recognised or None). A name in neither registry is recognised from the directory's config.json
        when paths are checked; the entry is then added to the plan's models, which rendering reads."""
        if name not in self._models:
            model_dir, how = None, None
            if name in self.base and self.base[name][1].get("path"):
                model_dir, how = self.summary.resolve(self.base[name][1]["path"]), "summary"
            elif self.local.get("models_dir"):
                model_dir, how = Path(self.local.get("models_dir")) / name, "models_dir"
            look_in = self.summary.to_local(model_dir) if self.recognise and model_dir is not None else None
            if look_in is not None and name not in self.models:
                entry, note, fresh = self.probe.recognise_model(name, self.models, look_in)
            else:
                recorded = self.recorded().get(name) if look_in is None and name not in self.models else None
                entry, note, fresh = registry.find(name, self.models, None, recorded)
            if note:
                self.models[name] = entry
            if fresh is not None:
                self.recognised[name] = fresh
            self._models[name] = (entry, model_dir, how, note)
        return self._models[name]

    def recorded(self) -> dict[str, modelrecognition.Recognised]:
        """generate's record of the models it recognised (read once, when a model is not in the registry and its
        directory is not looked at)."""
        if self._recorded is None:
            self._recorded = self.probe.recorded_models(self.summary.local_dir)
        return self._recorded

    def dataset(self, text: str) -> tuple[Path, bool]:
        """(the dataset path as generated files name it, whether this machine checks it: a dataset inside the
        experiment is always checked, one elsewhere only with path checks)."""
        if text not in self._paths:
            path = self.summary.resolve(text)
            self._paths[text] = (path, self.check_paths or self.summary.is_inside(path))
        return self._paths[text]

    def dataset_findings(self, dataset: Path, validation: bool, run_file: bool) -> tuple[list, int | None]:
        """([(summary path or None for the run's dataset setting, message, fix)], records in the train split)
        for one dataset as a run reads it (once per dataset, whatever the number of runs). `run_file`: the run
        names its own train file (not the one data.training describes)."""
        key = (dataset, validation, run_file)
        if key not in self._datasets:
            local_dataset = self.summary.to_local(dataset)
            facts = self.probe.dataset(local_dataset)
            self._datasets[key] = _dataset_findings(local_dataset, facts, validation, run_file, self.training)
        return self._datasets[key]

    def model_files(self, name: str, entry: dict, model_dir: Path) -> tuple[str, str] | None:
        """(message, fix) when the model directory or a file the registry entry names is missing."""
        key = (name, model_dir)
        if key not in self._model_files:
            names = ["config.json", *checkpoint_file_names(entry["checkpoint_files"])]
            names += entry["tokenizer"]["files"].values()
            missing = self.probe.missing_files(model_dir, names)
            self._model_files[key] = (
                (f"model directory not found: {model_dir}", "download the model or fix models.base[].path")
                if missing is None
                else (
                    f"model files missing in {model_dir}: {', '.join(missing)}",
                    "complete the download, or fix the registry entry's checkpoint_files",
                )
                if missing
                else None
            )
        return self._model_files[key]

    def hf_tokenizer(self, model_dir: Path, dataset_type: str) -> tuple[str, str] | None:
        """(message, fix) when the model directory lacks what the dataset builders tokenize with: the Hugging Face
        tokenizer (tokenizer_config.json) and, for chat runs, the chat template the model is evaluated with."""
        if model_dir not in self._tokenizers:
            self._tokenizers[model_dir] = self.probe.hf_tokenizer(model_dir)
        facts = self._tokenizers[model_dir]
        if not facts.config:
            return (
                f"no Hugging Face tokenizer in {model_dir} ({HF_TOKENIZER_CONFIG} missing): the runs train on the "
                "tokens of the model's own tokenizer, as they are evaluated",
                "download the model's tokenizer files (tokenizer.json, tokenizer_config.json) into its directory",
            )
        if dataset_type != "chat_completion" or facts.chat_template is True:
            return None
        if isinstance(facts.chat_template, str):
            return facts.chat_template, "download the model's tokenizer_config.json again"
        return (
            f"no chat template in {model_dir} (neither `chat_template` in {HF_TOKENIZER_CONFIG} nor "
            f"{CHAT_TEMPLATE_FILE}): chat_completion runs train on the template the model is evaluated with",
            "use the instruct model's directory, or set dataset_type: text_completion for a base model",
        )

    def environment(self) -> list[tuple[str, str, str]]:
        """(local config key, message, fix) for a venv or conda environment (by prefix) the local config names but
        this machine does not have."""
        if self._environment is None:
            self._environment = []
            venv, env = self.site.get("venv"), self.site.get("conda_env")
            if venv and not self.probe.is_venv(Path(venv)):
                self._environment.append(
                    (
                        "venv",
                        f"virtual environment not found: {venv}/bin/activate",
                        "create it (python -m venv ...) or fix `venv` in the local config",
                    )
                )
            if env and env.startswith("/") and not self.probe.is_directory(Path(env)):
                self._environment.append(
                    (
                        "conda_env",
                        f"conda environment not found: {env}",
                        "create it or fix the conda environment in the local config",
                    )
                )
        return self._environment

    def wandb_settings(self, wandb: bool) -> dict[str, Any]:
        """The W&B settings of a run that logs to W&B, or of one that does not (each worked out once)."""
        if wandb not in self._wandb:
            self._wandb[wandb] = precedence.wandb_settings(self.summary, self.local, wandb)
        return self._wandb[wandb]

    def condition_resolver(self) -> ConditionResolver | None:
        """The original's resolver of generated-text conditions, or None (asked once)."""
        if self._resolver is False:
            self._resolver = self.probe.condition_resolver()
        return self._resolver  # type: ignore[return-value]


def _dataset_findings(
    local_dataset: Path, facts: DatasetFacts | None, validation: bool, run_file: bool, training: dict
) -> tuple[list[tuple[tuple | None, str, str]], int | None]:
    """What the probe's facts of a dataset say about a run that reads it (see SweepContext.dataset_findings)."""
    out: list[tuple[tuple | None, str, str]] = []
    if facts is None:
        out.append((None, f"dataset not found: {local_dataset}", "check the path, or generate the dataset first"))
        return out, None
    needed = ["train"] + (["validation"] if validation else [])
    counts = facts.counts
    if isinstance(counts, str):
        missing = {needed[0]: counts}
    else:
        missing = {s: f"no records in split '{s}'" for s in needed if not counts.get(s)}
    for split, message in missing.items():
        out.append((None, f"dataset {local_dataset}: {message}", f"give the JSON file a non-empty '{split}' list"))
    if missing:
        return out, None
    assert isinstance(counts, dict)
    for split in needed:
        if split in facts.bad:
            out.append(
                (
                    None,
                    f"dataset {local_dataset}: {facts.bad[split]}",
                    f"give every record of the '{split}' split string 'input' and 'output' fields",
                )
            )
    if not run_file:  # a run's own train file is not the one data.training describes
        for split, n in (training.get("splits") or {}).items():
            if isinstance(n, int) and not isinstance(n, bool) and counts.get(split, 0) != n:
                out.append(
                    (
                        ("data", "training", "splits", split),
                        f"dataset {local_dataset}: data.training.splits.{split} is {n}, but the file has "
                        f"{counts.get(split, 0)} records in '{split}'",
                        f"set splits.{split}: {counts.get(split, 0)}, or regenerate the dataset",
                    )
                )
    return out, counts["train"]


def plan_fine_tuned(rp: RunPlan, run: dict, context: SweepContext) -> None:
    """A fine-tuned run: its settings and every problem of them, each step checking one part and returning the
    problems it finds (so all of a run's problems are reported at once). The settings are built when the parts
    they need are known: the model, its directory, the time and the dataset."""
    steps = FineTunedSteps(rp, run, context)
    elsewhere = steps.linked_elsewhere()
    if elsewhere:
        rp.problems += elsewhere
        return  # the run's files would land outside the experiment: nothing else about it matters yet
    rp.problems += steps.parameters()
    rp.problems += steps.name_agrees()
    entry, model_dir, problems = steps.model()
    rp.problems += problems
    compute, problems = steps.compute(entry or {})
    rp.problems += problems
    rp.problems += steps.method(entry, compute)
    dataset, problems = steps.data(compute)
    rp.problems += problems
    if entry is None or model_dir is None:
        return
    output_dir, problems = steps.paths(entry, model_dir)
    rp.problems += problems
    if compute.seconds is None or dataset is None:
        return
    rp.setup, problems = steps.settings(model_dir, output_dir, compute, dataset)
    rp.problems += problems


@dataclass
class _Compute:
    gpus: int
    nodes: int
    seconds: int | None  # None: the time is not a SLURM time
    inputs: RunInputs  # what the run's resources are read from

    @property
    def world(self) -> int:
        """Trainer processes: one per GPU on every node."""
        return max(self.gpus, 1) * self.nodes


@dataclass
class _TrainFile:
    path: Path
    run_file: str | None  # the run's own train file (dataset_path or training_condition), else None
    label: str | None  # a run's own dataset is labelled by its file name, as in the original


class FineTunedSteps:
    """The steps of planning one fine-tuned run; each returns the problems it finds, and the notes, warnings and
    settings sources go on the run."""

    def __init__(self, rp: RunPlan, run: dict, context: SweepContext):
        self.rp, self.run, self.context = rp, run, context
        self.here: tuple = ("runs", rp.index)
        self.given: dict = run.get("parameters") or {}
        self.values: dict[str, Any] = {}
        self.spelt: dict = {}

    def problem(self, path: tuple, message: str, fix: str | None = None) -> Problem:
        return self.context.doc.problem(path, message, fix, run=self.rp.name)

    def given_at(self, name: str) -> tuple:
        """Where the summary gives a parameter's value for this run: its parameters, controls, or the base_recipe
        that supplied it."""
        source = self.rp.sources.get(name)
        if source == precedence.RUN:
            return self.here + ("parameters", name)
        if self.context.summary.base_recipe is not None and source == self.context.summary.base_recipe.source:
            return ("controls", "base_recipe")
        return ("controls", name)

    def linked_elsewhere(self) -> list[Problem]:
        """A run directory that is a symbolic link to elsewhere (or a dangling one) cannot be written."""
        if self.rp.name not in self.context.links:
            return []
        target = self.context.probe.link_elsewhere(self.rp.local_dir)
        if target is None:
            return []
        return [
            self.problem(
                self.here + ("name",),
                f"the run directory {self.rp.local_dir} is a symbolic link to {target}, outside its place in the "
                "experiment",
                "remove the link: a run's files are written only inside the experiment",
            )
        ]

    def parameters(self) -> list[Problem]:
        """The run's values (scaffold.precedence: table default < controls < the run's own, and the rules that fill
        the rest)."""
        sweep_parameters = self.context.parameters
        self.values, run_sources, notes = precedence.run_parameters(
            sweep_parameters, self.given, self.context.wandb_from
        )
        # where this run's values come from: its own, over the sweep's (one mapping for all: memory, in sweeps)
        self.rp.sources = ChainMap(run_sources, sweep_parameters.sources)
        self.rp.notes += notes
        return []

    def name_agrees(self) -> list[Problem]:
        """The run name agrees with the values it spells."""
        problems = []
        self.spelt = params.parse_run_name(self.rp.name)
        for name, spelt in self.spelt.items():
            if len(spelt) > 1:
                problems.append(
                    self.problem(
                        self.here + ("name",), f"the run name spells {name} twice ({', '.join(t for t, _ in spelt)})"
                    )
                )
            token, value = spelt[0]
            if not params.same_value(value, self.values[name]):
                where = self.here + ("parameters", name) if name in self.given else self.here + ("name",)
                problems.append(
                    self.problem(
                        where,
                        f"the run name says {token} but {name} is {self.values[name]!r} (from {self.rp.sources[name]})",
                        f"rename the run or set parameters.{name}: {params.format_token_value(value)}",
                    )
                )
        return problems

    def model(self) -> tuple[dict | None, Path | None, list[Problem]]:
        """The registry entry (how to build the model) and the model directory (the summary's path, or the models
        directory); None for what is not known."""
        rp, doc, name = self.rp, self.context.doc, self.run["model"]
        entry, model_dir, how, recognised = self.context.model(name)
        if isinstance(entry, Problem):
            line, col = doc.locate(self.here + ("model",))
            located = Problem(entry.message, doc.name, line, col, f"runs[{rp.index}].model", entry.fix, rp.name)
            if isinstance(entry, registry.UnmappableModel):
                raise InputError([located])  # the model directory is there but no builder fits: invalid input
            return None, None, [located]
        if recognised:
            rp.notes.append(recognised)
        problems = []
        if model_dir is None:
            problems.append(
                self.problem(
                    self.here + ("model",),
                    f"no path for model '{name}'",
                    "add it to models.base with a path, or set the models directory in the local config",
                )
            )
        elif how == "models_dir":
            rp.notes.append(f"model directory {model_dir} (from the local config's models directory)")
        return entry, model_dir, problems

    def compute(self, entry: dict) -> tuple[_Compute, list[Problem]]:
        """Resources (scaffold.precedence: the run's compute > older controls.gpus > registry defaults > local
        config defaults)."""
        local, here, problems = self.context.local, self.here, []
        compute = self.run.get("compute") or {}
        for option in self.run.get("slurm_overrides") or {}:
            if option in RUN_DIRECTIVES:
                problems.append(
                    self.problem(
                        here + ("slurm_overrides", option),
                        f"--{option} is written from the run's own settings: an override would be a second, "
                        "conflicting line",
                        "set it under the run's compute: (time, mem, cpus_per_task, gpus, nodes) instead",
                    )
                )
        inputs = RunInputs(self.run, self.rp.index, self.context.summary, entry.get("resources") or {}, local)
        gpus, _ = precedence.first(precedence.GPUS, inputs)  # type: ignore[misc]  (the last source gives one)
        nodes, _ = precedence.first(precedence.NODES, inputs)  # type: ignore[misc]
        given = precedence.first(precedence.TIME, inputs)
        if given:
            time_text, time_from = given
        else:  # the pre-flight estimate raises it where the token audit runs (scaffold.checks.token_audit.preflight)
            self.rp.time_estimated = True
            time_text = precedence.DEFAULT_TIME
            time_from = "no time limit given anywhere: the original's default, or the estimate"
        self.rp.notes.append(f"time limit {time_text} (from {time_from})")
        seconds = parse_time(str(time_text))
        time_path = here + ("compute", "time") if "time" in compute else here
        if seconds is None or seconds <= 0:
            problems.append(
                self.problem(time_path, f"'{time_text}' is not a SLURM time", 'write "HH:MM:SS" or "D-HH:MM:SS"')
            )
            seconds = None
        max_time = local.get("partition_max_time")
        if seconds and max_time and (limit := parse_time(max_time)) and seconds > limit:
            problems.append(
                self.problem(
                    time_path,
                    f"time {format_time(seconds)} is over the partition limit {format_time(limit)} (local config)",
                    f"ask for at most {format_time(limit)}",
                )
            )
        return _Compute(gpus, nodes, seconds, inputs), problems

    def method(self, entry: dict | None, compute: _Compute) -> list[Problem]:
        """The method, GPUs and nodes a recipe can train (scaffold.rules), and what full fine-tuning needs."""
        context, local, here, given, values = self.context, self.context.local, self.here, self.given, self.values
        problems = []
        full = values["method"] == "full"
        method_path = here + ("parameters", "method") if "method" in given else ("controls", "method")
        if full and entry is not None and not entry.get("full_builder"):
            problems.append(
                self.problem(
                    method_path,
                    f"method full, but the model registry entry of {self.run['model']} has no full_builder",
                    "add full_builder (a torchtune model builder, e.g. torchtune.models.llama3_2.llama3_2_1b) to the "
                    "entry",
                )
            )
        if full:
            # A LoRA setting has no effect on full fine-tuning: a run that gives one, or spells one in its name,
            # was probably meant to be LoRA.
            for name in (n for n in context.lora_only if n in given):
                problems.append(
                    self.problem(
                        here + ("parameters", name),
                        f"{name} is a LoRA setting, but this run's method is full (every weight is trained, no "
                        "adapter)",
                        f"remove {name} from the run, or set method: lora",
                    )
                )
            spelt = [n for n in self.spelt if n in context.lora_only]
            if spelt:
                problems.append(
                    self.problem(
                        here + ("name",),
                        f"the run name spells {', '.join(spelt)}, a LoRA setting, but this run's method is full",
                        "rename the run, or set method: lora",
                    )
                )
        validation_path = (
            here + ("parameters", "validation_during_training")
            if "validation_during_training" in given
            else ("controls", "validation_during_training")
        )
        site = {"gpus": compute.gpus, "nodes": compute.nodes, "gpu_directive": context.site["gpu_directive"]}
        for v in rules.violations({**values, **site}):
            if v.setting == "gpu_directive":  # the site's setting: reported at the local config's line
                line, col = local.doc.locate(("gpu_directive",))
                problems.append(Problem(v.message, local.doc.name, line, col, "gpu_directive", v.fix, self.rp.name))
                continue
            paths = {
                "gpus": here + ("compute", "gpus"),
                "nodes": here + ("compute", "nodes"),
                "validation_during_training": validation_path,
                "max_seq_len": self.given_at("max_seq_len"),
            }
            problems.append(self.problem(paths[v.setting], v.message, v.fix))
        if values["validation_during_training"] and (context.training.get("splits") or {}).get("validation") == 0:
            problems.append(
                self.problem(
                    validation_path,
                    "validation during training was asked for, but data.training.splits.validation is 0",
                    "add validation records to the dataset, or set validation_during_training: false",
                )
            )
        return problems

    def data(self, compute: _Compute) -> tuple[_TrainFile | None, list[Problem]]:
        """The run's train file and what the dataset says about this run (records, splits, optimizer steps); None
        when the run's train file cannot be worked out."""
        rp, run, context, here, values = self.rp, self.run, self.context, self.here, self.values
        run_file = run.get("dataset_path")
        if run.get("training_condition"):
            run_file, problems = self.training_condition_path()
            if run_file is None:
                return None, problems
            rp.notes.append(f"training_condition {run['training_condition']!r} resolved to {run_file}")
        dataset, check_dataset = context.dataset(run_file or context.training["path"])
        label = Path(run_file).stem if run_file else context.training.get("dataset_label")
        where = (
            f"runs[{rp.index}].training_condition"
            if run.get("training_condition")
            else f"runs[{rp.index}].dataset_path"
            if run_file
            else "data.training.path"
        )
        rp.notes.append(f"dataset {dataset} (label {label}; from {where})")
        if not check_dataset:
            return _TrainFile(dataset, run_file, label), []
        dpath = here + ("dataset_path",) if run_file else ("data", "training", "path")
        if run.get("training_condition"):
            dpath = here + ("training_condition",)
        findings, train = context.dataset_findings(dataset, bool(values["validation_during_training"]), bool(run_file))
        plan = None
        if train is not None:  # the optimizer steps as torchtune's recipes count them (scaffold.steps)
            plan = StepPlan(
                records=train,
                world_size=compute.world,
                batch_size=values["batch_size"],
                gradient_accumulation_steps=values["gradient_accumulation_steps"],
                epochs=values["epochs"],
                max_steps_per_epoch=values["max_steps_per_epoch"] or None,
                num_warmup_steps=values["num_warmup_steps"],
                log_every_n_steps=values["log_every_n_steps"],
                validating=bool(values["validation_during_training"]),
                run_val_every_n_steps=values["run_val_every_n_steps"],
            )
        rp.steps = plan
        problems = []
        # What wastes the run (scaffold.steps: zero steps is refused, the rest are warnings).
        for what, fix in plan.warnings() if plan is not None else ():
            if plan.total_steps == 0:
                problems.append(self.problem(dpath, what, fix))
            else:
                rp.warnings.append(f"{what} ({fix})")
        for path, message, fix in findings:
            problems.append(self.problem(path or dpath, message, fix))
        return _TrainFile(dataset, run_file, label), problems

    def training_condition_path(self) -> tuple[str | None, list[Problem]]:
        """The train file of a generated-text condition, resolved as the original resolves it: its own
        `resolve_dataset_path(data.data_generation, condition, "train", "{scratch}/ck-data/generated")`."""
        condition = self.run["training_condition"]
        path = self.here + ("training_condition",)
        generation = (self.context.summary.data.get("data") or {}).get("data_generation")
        hint = (
            f"give the run its train file as dataset_path instead (the file the original generated: "
            f"{GENERATED_DATA_DIR.format(scratch_dir='{scratch}')}/{condition}_train_<hash8>.json)"
        )
        if not isinstance(generation, dict):
            return None, [
                self.problem(path, "training_condition needs data.data_generation (the conditions it names)", hint)
            ]
        scratch = self.context.local.get("scratch_dir")
        if not scratch:
            return None, [
                self.problem(
                    path,
                    "training_condition resolves under the local config's scratch directory, which is unset",
                    "set scratch_dir (markdown: **Scratch directory**) in the local config, or " + hint,
                )
            ]
        resolver = self.context.condition_resolver()
        if resolver is None:
            return None, [
                self.problem(
                    path,
                    f"training_condition is resolved by the original's {CONDITION_RESOLVER}.resolve_dataset_path, "
                    "which is not importable here (install cruijff_kit in this environment)",
                    hint,
                )
            ]
        try:
            return str(resolver(generation, condition, "train", GENERATED_DATA_DIR.format(scratch_dir=scratch))), []
        except Exception as e:  # the resolver's own refusal (an unknown condition, ...)
            return None, [self.problem(path, f"the original's resolver refused condition {condition!r}: {e}", hint)]

    def paths(self, entry: dict, model_dir: Path) -> tuple[str, list[Problem]]:
        """The run's output directory, outside the model directory; the model's files and Hugging Face tokenizer
        (with path checks)."""
        context, here, problems = self.context, self.here, []
        output_dir = os.path.join(context.root, self.rp.name, ARTIFACTS_DIR)
        model_str = str(model_dir)
        if output_dir == model_str or output_dir.startswith(model_str.rstrip("/") + "/"):
            problems.append(
                self.problem(
                    here + ("model",), f"the output directory {output_dir} is inside the model directory {model_dir}"
                )
            )
        if context.check_paths:
            missing = context.model_files(self.run["model"], entry, model_dir)
            if missing:
                problems.append(self.problem(here + ("model",), *missing))
            else:
                wrong_tokenizer = context.hf_tokenizer(model_dir, self.values["dataset_type"])
                if wrong_tokenizer:
                    problems.append(self.problem(here + ("model",), *wrong_tokenizer))
        return output_dir, problems

    def settings(
        self, model_dir: Path, output_dir: str, compute: _Compute, dataset: _TrainFile
    ) -> tuple[RunSettings, list[Problem]]:
        """What setup_finetune.yaml records (scaffold/schemas setup_finetune.schema.json)."""
        rp, run, context, local = self.rp, self.run, self.context, self.context.local
        summary = context.summary
        setup: dict[str, Any] = {
            "run_name": rp.name,
            "experiment": summary.name,
            "project": summary.data["experiment"].get("project"),
            "run_dir": os.path.join(context.root, rp.name),
            "output_dir": output_dir,
            "model": run["model"],
            "model_dir": str(model_dir),
            "dataset_path": str(dataset.path),
            "dataset_label": dataset.label,
            "wandb_project": None,  # set below, for a run that logs to W&B
            "wandb_entity": None,
            "wandb_mode": None,
        }
        setup.update(self.values)
        # W&B settings are read (and a placeholder in them is an error) only for a run that logs to W&B.
        wandb = setup["metric_logger"] == "wandb"
        if wandb and "wandb_entity" in local.placeholders:
            rp.notes.append(
                f"W&B entity {local.placeholders['wandb_entity']} is an unfilled placeholder in the local config: "
                "not written, so runs log to the default entity of the W&B account (as the original, which writes "
                "none)"
            )
        setup.update(context.wandb_settings(wandb))
        setup.update(
            {
                "time": format_time(compute.seconds),
                "gpus": compute.gpus,
                "nodes": compute.nodes,
                # The site's defaults are floors over the model's needs (scaffold.rules.floor_resource).
                "mem": precedence.mem(compute.inputs),
                "cpus_per_task": precedence.cpus_per_task(compute.inputs),
            }
        )
        setup.update(context.site)
        setup.update(
            {
                "modules": list(local.get("modules", [])),
                "sbatch_extra": list(local.get("sbatch_extra", [])),
                "slurm_overrides": dict(run.get("slurm_overrides") or {}),
            }
        )
        if not (setup["conda_env"] or setup["venv"]):
            rp.notes.append("no conda environment or venv in the local config: the batch script activates nothing")
        problems = []
        if context.check_paths:
            for key, message, fix in context.environment():
                line, col = local.doc.locate((key,))
                problems.append(Problem(message, local.doc.name, line, col, key, fix, rp.name))
        return setup, problems  # type: ignore[return-value]  (every key: tests/test_settings.py)


def checkpoint_file_names(spec: Any) -> list[str]:
    """The file names a checkpoint_files setting stands for."""
    if isinstance(spec, list):
        return list(spec)
    total = int(spec["max_filename"])
    width = len(spec["max_filename"])
    return [spec["filename_format"].format(str(i).zfill(width), spec["max_filename"]) for i in range(1, total + 1)]
