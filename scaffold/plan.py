"""Planning: summary + local config + registry -> one RunPlan per run (pure data, nothing written)."""

from __future__ import annotations

import contextlib
import json
import os
from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import rules
from .errors import InputError, Problem
from .inputs import modelrecognition, params, registry, sweep
from .inputs.localconfig import DEFAULT_WANDB_MODE, LocalConfig
from .inputs.summary import Summary
from .layout import (
    ARRAY_DIR,
    ARTIFACTS_DIR,
    FINE_TUNED,
    LOG_DIR,
    MANIFEST,
    RECOGNISED_MODELS,
    SUMMARY_NAME,
)
from .settings import RunSettings
from .stamps import cached_by_stamp
from .steps import StepPlan
from .timeutil import format_time, parse_time
from .torchtune_ext.datasets import CHAT_TEMPLATE_FILE

# Where neither the run (compute.time), the model's registry entry nor the local config (default_time) gives a time
# limit: the original's (its batch script template and setup_finetune.py --time default).
DEFAULT_TIME = "00:15:00"
DEFAULT_MEM = "32G"
DEFAULT_CPUS = 4
DEFAULT_MAIL_TYPE = "BEGIN,END"  # with a mail_user and no mail_type: as the original, mail at begin and end
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


@dataclass
class RunPlan:
    """One run: where it goes and, for fine-tuned runs, the settings its setup_finetune.yaml records."""

    name: str
    type: str
    index: int
    local_dir: Path
    setup: RunSettings | None = None  # complete: every key of setup_finetune.schema.json
    sources: Mapping[str, str] = field(default_factory=dict)  # parameter -> "run" | "controls" | "default" | ...
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the run is generated, but something deserves a look
    # The optimizer steps as torchtune's recipes count them over the train split's records (None where the dataset
    # was not read); the pre-flight audit counts them again without the records it drops.
    steps: StepPlan | None = None
    # No time limit was given anywhere: the time is the floor (the original's default) until the pre-flight
    # estimate sets it (scaffold.checks.audit.preflight, which needs the token audit).
    time_estimated: bool = False

    @property
    def fine_tuned(self) -> bool:
        return self.type == FINE_TUNED


@dataclass
class Plan:
    summary: Summary
    local: LocalConfig
    models: dict[str, dict]
    runs: list[RunPlan]
    # Models recognised from their config.json by this plan (by name), and whether it looked at model directories
    # at all (then what it recognised is the whole record of RECOGNISED_MODELS).
    recognised: dict[str, modelrecognition.Recognised] = field(default_factory=dict)
    recognition_ran: bool = False


def make_plan(summary: Summary, local: LocalConfig, *, check_paths: bool = True, recognise: bool | None = None) -> Plan:
    """Plan every run. Problems of the experiment as a whole raise InputError; per-run problems stay on the run.
    `recognise` (default: check_paths): a model in neither registry is recognised from its directory's config.json
    (the verification suite plans without path checks but recognises where it may look at the directory)."""
    models = registry.models(local.get("models"))
    _check_collisions(summary)
    unnamed = {p.run: p for p in sweep.name_problems(summary.data, summary.doc, summary.swept)}
    shared = _Shared(summary, local, models, check_paths, check_paths if recognise is None else recognise)
    runs = []
    local_dir = str(summary.local_dir)
    for i, run in enumerate(summary.data["runs"]):
        rp = RunPlan(run["name"], run["type"], i, Path(os.path.join(local_dir, run["name"])))
        if rp.fine_tuned:
            _plan_fine_tuned(rp, run, shared)
        elif run.get("checkpoint_path"):
            _plan_eval_only(rp, run, shared)
        if rp.name in unnamed:
            rp.problems.insert(0, unnamed[rp.name])
        runs.append(rp)
    return Plan(summary, local, models, runs, shared.recognised, shared.recognise)


def reserved_names(summary: Summary) -> dict[str, str]:
    """Names in the experiment directory that belong to something other than a run (case-folded -> why)."""
    reserved = {
        LOG_DIR: "the tool's log directory",
        ARRAY_DIR: "the job array scripts' directory",
        "golden": "the golden snapshots directory",
        SUMMARY_NAME: "the summary",
        RECOGNISED_MODELS: "the record of recognised models",
        MANIFEST: "the manifest of generated files",
    }
    paths = [summary.data["data"]["training"]["path"]] + [
        r["dataset_path"] for r in summary.data["runs"] if r.get("dataset_path")
    ]
    for path in paths:
        if not Path(path).is_absolute():
            reserved[Path(path).parts[0]] = f"where the dataset {path} is"
    return {fold(k): v for k, v in reserved.items()}


def fold(name: str) -> str:
    """A run name as filesystems may compare it: case-insensitive (macOS, Windows), trailing dots dropped
    (Windows)."""
    return name.casefold().rstrip(".")


def _check_collisions(summary: Summary) -> None:
    """Two runs may not share a directory, also on filesystems that fold case, nor take a reserved name."""
    seen: dict[str, int] = {}
    problems = []
    reserved = reserved_names(summary)
    for i, run in enumerate(summary.data["runs"]):
        key = fold(run["name"])
        if key in reserved:
            problems.append(
                summary.doc.problem(
                    ("runs", i, "name"),
                    f"run name '{run['name']}' is taken: that directory is {reserved[key]}",
                    fix="rename the run",
                )
            )
        elif key in seen:
            j = seen[key]
            other = summary.data["runs"][j]["name"]
            how = (
                "the same name"
                if other == run["name"]
                else "names that a filesystem may fold together (case, trailing dots)"
            )
            problems.append(
                summary.doc.problem(
                    ("runs", i, "name"),
                    f"runs[{j}] '{other}' and runs[{i}] '{run['name']}' have {how}, so they would share a directory",
                    fix="give every run a distinct name",
                )
            )
        else:
            seen[key] = i
    if problems:
        raise InputError(problems)


class _Shared:
    """What every run of one plan shares, worked out once: the parameter defaults merged with the controls,
    each model's registry entry and directory, each dataset's checks, the site settings. Planning a sweep of
    thousands of runs then costs little more per run than its own settings (see benchmarks/)."""

    def __init__(self, summary: Summary, local: LocalConfig, models: dict, check_paths: bool, recognise: bool):
        self.summary, self.local, self.models, self.check_paths = summary, local, models, check_paths
        self.recognise = recognise
        self.doc = summary.doc
        self.root = str(summary.root)
        self.table = params.table()
        self.controls = summary.data.get("controls") or {}
        self.values: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        # table default < controls.base_recipe's stock config < controls (the run's own come on top)
        recipe = summary.base_recipe
        for name, p in self.table.items():
            if name in self.controls:
                self.values[name], self.sources[name] = self.controls[name], "controls"
            elif recipe is not None and name in recipe.values:
                self.values[name], self.sources[name] = recipe.values[name], recipe.source
            else:
                self.values[name], self.sources[name] = p.default, "default"
        self.lora_only = [n for n, p in self.table.items() if p.when.get("method") == "lora"]
        self.base = {m["name"]: (i, m) for i, m in enumerate(summary.data["models"]["base"])}
        self.training = summary.data["data"]["training"]
        self.output = summary.data.get("output") or {}
        # Runs log to W&B when a project is named: the summary's, else the local config's default project (as the
        # original, which always logs to W&B). A placeholder there is then an error, where the value is used.
        self.wandb_from = (
            "output.wandb_project"
            if self.output.get("wandb_project")
            else "local config wandb_project"
            if local.settings.get("wandb_project") or "wandb_project" in local.placeholders
            else None
        )
        self.wandb = self.wandb_from is not None
        # Run directories already on disk that are symbolic links (one directory listing, not a stat per run).
        self.links: set[str] = set()
        with contextlib.suppress(OSError), os.scandir(summary.local_dir) as entries:
            self.links = {e.name for e in entries if e.is_symlink()}
        self.site = {
            "account": local.get("account"),
            "partition": local.get("partition"),
            "qos": local.get("qos"),
            "constraint": local.get("constraint"),
            "gpu_directive": local.get("gpu_directive", "gres"),
            "gpu_type": local.get("gpu_type"),
            "mail_user": local.get("mail_user"),
            # As the original's batch script: mail when the job begins and when it ends.
            "mail_type": local.get("mail_type", DEFAULT_MAIL_TYPE) if local.get("mail_user") else None,
            "conda_env": local.get("conda_env"),
            "venv": local.get("venv"),
        }
        self._models: dict[str, tuple] = {}
        self.recognised: dict[str, modelrecognition.Recognised] = {}  # recognised from config.json by this plan
        self._recorded: dict[str, modelrecognition.Recognised] | None = None
        self._paths: dict[str, tuple[Path, bool]] = {}
        self._datasets: dict[tuple, tuple[list, int | None]] = {}
        self._model_files: dict[tuple, tuple[str, str] | None] = {}
        self._hf_tokenizer: dict[tuple, tuple[str, str] | None] = {}
        self._environment: list[tuple[str, str, str]] | None = None

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
            recorded = None
            if look_in is None and name not in self.models:
                recorded = self.recorded().get(name)
            entry, note, fresh = registry.find(name, self.models, look_in, recorded)
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
            self._recorded = modelrecognition.read_record(self.summary.local_dir)
        return self._recorded

    def dataset(self, text: str) -> tuple[Path, bool]:
        """(the dataset path as generated files name it, whether this machine checks it: a dataset inside the
        experiment is always checked, one elsewhere only with path checks)."""
        if text not in self._paths:
            path = self.summary.resolve(text)
            self._paths[text] = (path, self.check_paths or self.summary.is_inside(path))
        return self._paths[text]

    def dataset_findings(self, dataset: Path, validation: bool, own: bool) -> tuple[list, int | None]:
        """([(summary path or None for the run's dataset setting, message, fix)], records in the train split)
        for one dataset as a run reads it (once per dataset, whatever the number of runs)."""
        key = (dataset, validation, own)
        if key in self._datasets:
            return self._datasets[key]
        out: list[tuple[tuple | None, str, str]] = []
        train = None
        local_dataset = self.summary.to_local(dataset)
        if not local_dataset.is_file():
            out.append((None, f"dataset not found: {local_dataset}", "check the path, or generate the dataset first"))
        else:
            needed = ["train"] + (["validation"] if validation else [])
            missing = _missing_splits(local_dataset, needed)
            for split, message in missing.items():
                out.append(
                    (None, f"dataset {local_dataset}: {message}", f"give the JSON file a non-empty '{split}' list")
                )
            splits = _dataset_splits(local_dataset)
            if not missing:
                train = splits["train"] if isinstance(splits, dict) else None
                for path, message, fix in _dataset_content_problems(local_dataset, needed, self.summary, own):
                    out.append((path, f"dataset {local_dataset}: {message}", fix))
        self._datasets[key] = (out, train)
        return out, train

    def model_files(self, name: str, entry: dict, model_dir: Path) -> tuple[str, str] | None:
        key = (name, model_dir)
        if key not in self._model_files:
            self._model_files[key] = _model_files_problem(entry, model_dir)
        return self._model_files[key]

    def hf_tokenizer(self, model_dir: Path, dataset_type: str) -> tuple[str, str] | None:
        key = (model_dir, dataset_type)
        if key not in self._hf_tokenizer:
            self._hf_tokenizer[key] = _hf_tokenizer_problem(model_dir, dataset_type)
        return self._hf_tokenizer[key]

    def environment(self) -> list[tuple[str, str, str]]:
        """(local config key, message, fix) for a venv or conda environment named but not found."""
        if self._environment is None:
            self._environment = _environment_problems(self.site)
        return self._environment


def _plan_eval_only(rp: RunPlan, run: dict, shared: _Shared) -> None:
    """An eval-only run that evaluates an existing checkpoint: its directory only; the checkpoint must exist when
    paths are checked, and the log names it."""
    checkpoint = shared.summary.resolve(run["checkpoint_path"])
    rp.notes.append(f"evaluates the existing checkpoint {checkpoint} (nothing to train)")
    if shared.check_paths and not checkpoint.is_dir():
        rp.problems.append(
            shared.doc.problem(
                ("runs", rp.index, "checkpoint_path"),
                f"checkpoint directory not found: {checkpoint}",
                "point checkpoint_path at an existing epoch directory (e.g. .../some_run/artifacts/epoch_0)",
                run=rp.name,
            )
        )


def _plan_fine_tuned(rp: RunPlan, run: dict, shared: _Shared) -> None:
    """A fine-tuned run: its settings and every problem of them, each step checking one part (so all of a run's
    problems are reported at once). The settings are built when the parts they need are known: the model, its
    directory, the time and the dataset."""
    f = _FineTuned(rp, run, shared)
    if f.linked_elsewhere():
        return  # the run's files would land outside the experiment: nothing else about it matters yet
    f.parameters()
    f.name_agrees()
    entry, model_dir = f.model()
    compute = f.compute(entry or {})
    f.method(entry, compute)
    dataset = f.data(compute)
    if entry is None or model_dir is None:
        return
    output_dir = f.paths(entry, model_dir)
    if compute.seconds is None or dataset is None:
        return
    rp.setup = f.settings(model_dir, output_dir, compute, dataset)


@dataclass
class _Compute:
    gpus: int
    nodes: int
    seconds: int | None  # None: the time is not a SLURM time
    resources: dict  # the registry entry's defaults

    @property
    def world(self) -> int:
        """Trainer processes: one per GPU on every node."""
        return max(self.gpus, 1) * self.nodes


@dataclass
class _Dataset:
    path: Path
    own: str | None  # the run's own train file (dataset_path or training_condition), else None
    label: str | None  # a run's own dataset is labelled by its file name, as in the original


class _FineTuned:
    """The steps of planning one fine-tuned run; each adds the problems it finds to the run."""

    def __init__(self, rp: RunPlan, run: dict, shared: _Shared):
        self.rp, self.run, self.shared = rp, run, shared
        self.here: tuple = ("runs", rp.index)
        self.given: dict = run.get("parameters") or {}
        self.values: dict[str, Any] = {}
        self.spelt: dict = {}

    def problem(self, path: tuple, message: str, fix: str | None = None) -> None:
        self.rp.problems.append(self.shared.doc.problem(path, message, fix, run=self.rp.name))

    def given_at(self, name: str) -> tuple:
        """Where the summary gives a parameter's value for this run: its parameters, controls, or the base_recipe
        that supplied it."""
        source = self.rp.sources.get(name)
        if source == "run":
            return self.here + ("parameters", name)
        if self.shared.summary.base_recipe is not None and source == self.shared.summary.base_recipe.source:
            return ("controls", "base_recipe")
        return ("controls", name)

    def linked_elsewhere(self) -> bool:
        if self.rp.name not in self.shared.links:
            return False
        elsewhere = _run_dir_elsewhere(self.rp.local_dir, self.shared.summary.local_dir)
        if elsewhere:
            self.problem(
                self.here + ("name",),
                elsewhere,
                "remove the link: a run's files are written only inside the experiment",
            )
        return bool(elsewhere)

    def parameters(self) -> None:
        """The run's values: table default < controls < the run's own, and the rules that fill the rest."""
        rp, shared, values = self.rp, self.shared, dict(self.shared.values)
        own: dict[str, str] = {}  # where this run's values come from, where not as for every run (memory: sweeps)
        rp.sources = ChainMap(own, shared.sources)
        for name, value in self.given.items():
            if name in values:
                values[name], own[name] = value, "run"
        if values["lora_alpha"] is None:
            values["lora_alpha"] = rules.default_lora_alpha(values["lora_rank"])
            own["lora_alpha"] = rules.ALPHA_RULE
        if values["metric_logger"] is None:
            values["metric_logger"] = "wandb" if shared.wandb else "disk"
            own["metric_logger"] = shared.wandb_from or "default"
        if values["dataset_type"] == "text_completion" and values["system_prompt"]:
            rp.notes.append(
                f"system_prompt ({rp.sources['system_prompt']}) dropped: a base model (dataset_type text_completion) "
                "has no system prompt; setup_finetune.yaml records an empty one, which the evaluation step reads"
            )
            values["system_prompt"] = ""
            own["system_prompt"] = "dropped (text_completion)"
        self.values = values

    def name_agrees(self) -> None:
        """The run name agrees with the values it spells."""
        self.spelt = params.parse_run_name(self.rp.name)
        for name, spelt in self.spelt.items():
            if len(spelt) > 1:
                self.problem(
                    self.here + ("name",), f"the run name spells {name} twice ({', '.join(t for t, _ in spelt)})"
                )
            token, value = spelt[0]
            if not params.same_value(value, self.values[name]):
                where = self.here + ("parameters", name) if name in self.given else self.here + ("name",)
                self.problem(
                    where,
                    f"the run name says {token} but {name} is {self.values[name]!r} (from {self.rp.sources[name]})",
                    f"rename the run or set parameters.{name}: {params.format_token_value(value)}",
                )

    def model(self) -> tuple[dict | None, Path | None]:
        """The registry entry (how to build the model) and the model directory (the summary's path, or the models
        directory); None for what is not known."""
        rp, doc, name = self.rp, self.shared.doc, self.run["model"]
        entry, model_dir, how, recognised = self.shared.model(name)
        if isinstance(entry, Problem):
            line, col = doc.locate(self.here + ("model",))
            located = Problem(entry.message, doc.name, line, col, f"runs[{rp.index}].model", entry.fix, rp.name)
            if isinstance(entry, registry.UnmappableModel):
                raise InputError([located])  # the model directory is there but no builder fits: invalid input
            rp.problems.append(located)
            return None, None
        if recognised:
            rp.notes.append(recognised)
        if model_dir is None:
            self.problem(
                self.here + ("model",),
                f"no path for model '{name}'",
                "add it to models.base with a path, or set the models directory in the local config",
            )
        elif how == "models_dir":
            rp.notes.append(f"model directory {model_dir} (from the local config's models directory)")
        return entry, model_dir

    def compute(self, entry: dict) -> _Compute:
        """Resources: the run's compute > older controls.gpus > registry defaults > local config defaults."""
        shared, local, here = self.shared, self.shared.local, self.here
        compute = self.run.get("compute") or {}
        for option in self.run.get("slurm_overrides") or {}:
            if option in RUN_DIRECTIVES:
                self.problem(
                    here + ("slurm_overrides", option),
                    f"--{option} is written from the run's own settings: an override would be a second, conflicting "
                    "line",
                    "set it under the run's compute: (time, mem, cpus_per_task, gpus, nodes) instead",
                )
        res = entry.get("resources") or {}
        gpus = _first(compute.get("gpus"), shared.summary.legacy_gpus, res.get("gpus"), local.get("default_gpus"), 1)
        given = [
            (value, source)
            for value, source in (
                (compute.get("time"), f"runs[{self.rp.index}].compute.time"),
                (res.get("time"), f"the model registry entry of {self.run['model']}"),
                (local.get("default_time"), "the local config's default time"),
            )
            if value is not None
        ]
        if given:
            time_text, time_from = given[0]
        else:  # the pre-flight estimate raises it where the token audit runs (scaffold.checks.audit.preflight)
            self.rp.time_estimated = True
            time_text, time_from = DEFAULT_TIME, "no time limit given anywhere: the original's default, or the estimate"
        self.rp.notes.append(f"time limit {time_text} (from {time_from})")
        seconds = parse_time(str(time_text))
        time_path = here + ("compute", "time") if "time" in compute else here
        if seconds is None or seconds <= 0:
            self.problem(time_path, f"'{time_text}' is not a SLURM time", 'write "HH:MM:SS" or "D-HH:MM:SS"')
            seconds = None
        max_time = local.get("partition_max_time")
        if seconds and max_time and (limit := parse_time(max_time)) and seconds > limit:
            self.problem(
                time_path,
                f"time {format_time(seconds)} is over the partition limit {format_time(limit)} (local config)",
                f"ask for at most {format_time(limit)}",
            )
        return _Compute(gpus, compute.get("nodes", 1), seconds, res)

    def method(self, entry: dict | None, compute: _Compute) -> None:
        """The method, GPUs and nodes a recipe can train (scaffold.rules), and what full fine-tuning needs."""
        shared, local, here, given, values = self.shared, self.shared.local, self.here, self.given, self.values
        full = values["method"] == "full"
        method_path = here + ("parameters", "method") if "method" in given else ("controls", "method")
        if full and entry is not None and not entry.get("full_builder"):
            self.problem(
                method_path,
                f"method full, but the model registry entry of {self.run['model']} has no full_builder",
                "add full_builder (a torchtune model builder, e.g. torchtune.models.llama3_2.llama3_2_1b) to the entry",
            )
        if full:
            # A LoRA setting has no effect on full fine-tuning: a run that gives one, or spells one in its name,
            # was probably meant to be LoRA.
            for name in (n for n in shared.lora_only if n in given):
                self.problem(
                    here + ("parameters", name),
                    f"{name} is a LoRA setting, but this run's method is full (every weight is trained, no adapter)",
                    f"remove {name} from the run, or set method: lora",
                )
            spelt = [n for n in self.spelt if n in shared.lora_only]
            if spelt:
                self.problem(
                    here + ("name",),
                    f"the run name spells {', '.join(spelt)}, a LoRA setting, but this run's method is full",
                    "rename the run, or set method: lora",
                )
        validation_path = (
            here + ("parameters", "validation_during_training")
            if "validation_during_training" in given
            else ("controls", "validation_during_training")
        )
        site = {"gpus": compute.gpus, "nodes": compute.nodes, "gpu_directive": local.get("gpu_directive", "gres")}
        for v in rules.violations({**values, **site}):
            if v.setting == "gpu_directive":  # the site's setting: reported at the local config's line
                line, col = local.doc.locate(("gpu_directive",))
                self.rp.problems.append(
                    Problem(v.message, local.doc.name, line, col, "gpu_directive", v.fix, self.rp.name)
                )
                continue
            paths = {
                "gpus": here + ("compute", "gpus"),
                "nodes": here + ("compute", "nodes"),
                "validation_during_training": validation_path,
                "max_seq_len": self.given_at("max_seq_len"),
            }
            self.problem(paths[v.setting], v.message, v.fix)
        if values["validation_during_training"] and (shared.training.get("splits") or {}).get("validation") == 0:
            self.problem(
                validation_path,
                "validation during training was asked for, but data.training.splits.validation is 0",
                "add validation records to the dataset, or set validation_during_training: false",
            )

    def data(self, compute: _Compute) -> _Dataset | None:
        """The run's train file and what the dataset says about this run (records, splits, optimizer steps); None
        when the run's train file cannot be worked out."""
        rp, run, shared, here, values = self.rp, self.run, self.shared, self.here, self.values
        own_dataset = run.get("dataset_path")
        if run.get("training_condition"):
            own_dataset = _training_condition_path(run, here, shared, self.problem)
            if own_dataset is None:
                return None
            rp.notes.append(f"training_condition {run['training_condition']!r} resolved to {own_dataset}")
        dataset, check_dataset = shared.dataset(own_dataset or shared.training["path"])
        label = Path(own_dataset).stem if own_dataset else shared.training.get("dataset_label")
        where = (
            f"runs[{rp.index}].training_condition"
            if run.get("training_condition")
            else f"runs[{rp.index}].dataset_path"
            if own_dataset
            else "data.training.path"
        )
        rp.notes.append(f"dataset {dataset} (label {label}; from {where})")
        if not check_dataset:
            return _Dataset(dataset, own_dataset, label)
        dpath = here + ("dataset_path",) if own_dataset else ("data", "training", "path")
        if run.get("training_condition"):
            dpath = here + ("training_condition",)
        findings, train = shared.dataset_findings(
            dataset, bool(values["validation_during_training"]), bool(own_dataset)
        )
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
        # What wastes the run (scaffold.steps: zero steps is refused, the rest are warnings).
        for what, fix in plan.warnings() if plan is not None else ():
            if plan.total_steps == 0:
                self.problem(dpath, what, fix)
            else:
                rp.warnings.append(f"{what} ({fix})")
        for path, message, fix in findings:
            self.problem(path or dpath, message, fix)
        return _Dataset(dataset, own_dataset, label)

    def paths(self, entry: dict, model_dir: Path) -> str:
        """The run's output directory, outside the model directory; the model's files and Hugging Face tokenizer
        (with path checks)."""
        shared, here = self.shared, self.here
        output_dir = os.path.join(shared.root, self.rp.name, ARTIFACTS_DIR)
        model_str = str(model_dir)
        if output_dir == model_str or output_dir.startswith(model_str.rstrip("/") + "/"):
            self.problem(
                here + ("model",), f"the output directory {output_dir} is inside the model directory {model_dir}"
            )
        if shared.check_paths:
            missing = shared.model_files(self.run["model"], entry, model_dir)
            if missing:
                self.problem(here + ("model",), *missing)
            else:
                wrong_tokenizer = shared.hf_tokenizer(model_dir, self.values["dataset_type"])
                if wrong_tokenizer:
                    self.problem(here + ("model",), *wrong_tokenizer)
        return output_dir

    def settings(self, model_dir: Path, output_dir: str, compute: _Compute, dataset: _Dataset) -> RunSettings:
        """What setup_finetune.yaml records (scaffold/schemas setup_finetune.schema.json)."""
        rp, run, shared, local = self.rp, self.run, self.shared, self.shared.local
        summary, res = shared.summary, compute.resources
        c = run.get("compute") or {}
        setup: dict[str, Any] = {
            "run_name": rp.name,
            "experiment": summary.name,
            "project": summary.data["experiment"].get("project"),
            "run_dir": os.path.join(shared.root, rp.name),
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
        setup.update(
            {
                "wandb_project": (shared.output.get("wandb_project") or local.get("wandb_project")) if wandb else None,
                # Optional (the original never writes one): an unfilled placeholder leaves W&B its default entity.
                "wandb_entity": local.settings.get("wandb_entity") if wandb else None,
                "wandb_mode": local.get("wandb_mode", DEFAULT_WANDB_MODE) if wandb else None,
            }
        )
        setup.update(
            {
                "time": format_time(compute.seconds),
                "gpus": compute.gpus,
                "nodes": compute.nodes,
                # The site's defaults are floors over the model's needs (scaffold.rules.floor_resource).
                "mem": str(
                    rules.floor_resource(
                        c.get("mem"), res.get("mem"), local.get("default_mem"), DEFAULT_MEM, rules.memory_mb
                    )
                ),
                "cpus_per_task": rules.floor_resource(
                    c.get("cpus_per_task"), res.get("cpus_per_task"), local.get("default_cpus"), DEFAULT_CPUS
                ),
            }
        )
        setup.update(shared.site)
        setup.update(
            {
                "modules": list(local.get("modules", [])),
                "sbatch_extra": list(local.get("sbatch_extra", [])),
                "slurm_overrides": dict(run.get("slurm_overrides") or {}),
            }
        )
        if not (setup["conda_env"] or setup["venv"]):
            rp.notes.append("no conda environment or venv in the local config: the batch script activates nothing")
        if shared.check_paths:
            for key, message, fix in shared.environment():
                line, col = local.doc.locate((key,))
                rp.problems.append(Problem(message, local.doc.name, line, col, key, fix, rp.name))
        return setup  # type: ignore[return-value]  (every key: tests/test_settings.py)


@dataclass(frozen=True)
class _DatasetFacts:
    """What the planner reads of a JSON dataset: record counts by split (or why it cannot be read), and for each
    split the first record the dataset builder cannot read."""

    counts: dict[str, int] | str
    bad: dict[str, str]


@cached_by_stamp()
def _dataset_facts(path: Path) -> _DatasetFacts:
    """Read once per version of the file (keyed by its stamp: a changed dataset is read again)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return _DatasetFacts(f"not readable as JSON ({e})", {})
    if not isinstance(data, dict):
        return _DatasetFacts('not a JSON object of splits ({"train": [...], "validation": [...]})', {})
    counts = {k: len(v) for k, v in data.items() if isinstance(v, list)}
    return _DatasetFacts(counts, _bad_records(data))


def _dataset_splits(path: Path) -> dict[str, int] | str:
    """Split name -> record count of a JSON dataset, or why it cannot be read."""
    return _dataset_facts(path).counts


def _missing_splits(path: Path, needed: list[str]) -> dict[str, str]:
    splits = _dataset_splits(path)
    if isinstance(splits, str):
        return {needed[0]: splits}
    return {s: f"no records in split '{s}'" for s in needed if not splits.get(s)}


def _dataset_content_problems(
    path: Path, needed: list[str], summary: Summary, own: bool
) -> list[tuple[tuple | None, str, str]]:
    """(summary path or None for the dataset's own, message, fix) for records the recipe cannot read, and for
    split counts in data.training.splits that disagree with the file (when the run reads that file)."""
    out: list[tuple[tuple | None, str, str]] = []
    bad = _dataset_facts(path).bad
    for split in needed:
        if split in bad:
            out.append(
                (None, bad[split], f"give every record of the '{split}' split string 'input' and 'output' fields")
            )
    counts = _dataset_splits(path)
    declared = summary.data["data"]["training"].get("splits") or {}
    if own or not isinstance(counts, dict):  # a run's own dataset is not the one data.training describes
        return out
    for split, n in declared.items():
        if isinstance(n, int) and not isinstance(n, bool) and counts.get(split, 0) != n:
            out.append(
                (
                    ("data", "training", "splits", split),
                    f"data.training.splits.{split} is {n}, but the file has {counts.get(split, 0)} records in "
                    f"'{split}'",
                    f"set splits.{split}: {counts.get(split, 0)}, or regenerate the dataset",
                )
            )
    return out


def _bad_records(data: dict) -> dict[str, str]:
    """Split name -> the first record of that split that is not {"input": text, "output": text}."""
    out: dict[str, str] = {}
    for split, records in data.items():
        if not isinstance(records, list):
            continue
        for i, record in enumerate(records):
            if not isinstance(record, dict):
                why = "is not an object"
            else:
                absent = [k for k in ("input", "output") if not isinstance(record.get(k), str)]
                why = f"has no text '{absent[0]}'" if absent else ""
            if why:
                n = sum(
                    not (isinstance(r, dict) and all(isinstance(r.get(k), str) for k in ("input", "output")))
                    for r in records
                )
                out[split] = f"record {split}[{i}] {why} ({n} of {len(records)} records are not {{input, output}})"
                break
    return out


def _run_dir_elsewhere(run_dir: Path, experiment_dir: Path) -> str | None:
    """Why a run directory that is a symbolic link (to elsewhere, or dangling) cannot be written, else None."""
    if not run_dir.is_symlink():
        return None
    target = run_dir.resolve()
    if target == experiment_dir.resolve() / run_dir.name:
        return None
    return f"the run directory {run_dir} is a symbolic link to {target}, outside its place in the experiment"


def _model_files_problem(entry: dict, model_dir: Path) -> tuple[str, str] | None:
    """(message, fix) when the model directory or a file the registry entry names is missing."""
    if not model_dir.is_dir():
        return f"model directory not found: {model_dir}", "download the model or fix models.base[].path"
    missing = [
        n for n in ["config.json", *checkpoint_file_names(entry["checkpoint_files"])] if not (model_dir / n).is_file()
    ]
    missing += [f for f in entry["tokenizer"]["files"].values() if not (model_dir / f).is_file()]
    if missing:
        return (
            f"model files missing in {model_dir}: {', '.join(missing)}",
            "complete the download, or fix the registry entry's checkpoint_files",
        )
    return None


HF_TOKENIZER_CONFIG = "tokenizer_config.json"
# The original's resolver of generated-text conditions (cruijff_kit, installed beside it), and where it writes.
CONDITION_RESOLVER = "cruijff_kit.tabular_to_text_gen.lib.config_hash"
GENERATED_DATA_DIR = "{scratch_dir}/ck-data/generated"


def _training_condition_path(run: dict, here: tuple, shared: _Shared, problem: Callable) -> str | None:
    """The train file of a generated-text condition, resolved as the original resolves it: its own
    `resolve_dataset_path(data.data_generation, condition, "train", "{scratch}/ck-data/generated")`."""
    import importlib

    condition = run["training_condition"]
    path = here + ("training_condition",)
    generation = (shared.summary.data.get("data") or {}).get("data_generation")
    hint = (
        f"give the run its train file as dataset_path instead (the file the original generated: "
        f"{GENERATED_DATA_DIR.format(scratch_dir='{scratch}')}/{condition}_train_<hash8>.json)"
    )
    if not isinstance(generation, dict):
        problem(path, "training_condition needs data.data_generation (the conditions it names)", hint)
        return None
    scratch = shared.local.get("scratch_dir")
    if not scratch:
        problem(path, "training_condition resolves under the local config's scratch directory, which is unset",
                "set scratch_dir (markdown: **Scratch directory**) in the local config, or " + hint)  # fmt: skip
        return None
    try:
        resolver = importlib.import_module(CONDITION_RESOLVER).resolve_dataset_path
    except (ImportError, AttributeError):
        problem(path, f"training_condition is resolved by the original's {CONDITION_RESOLVER}.resolve_dataset_path, "
                "which is not importable here (install cruijff_kit in this environment)", hint)  # fmt: skip
        return None
    try:
        return str(resolver(generation, condition, "train", GENERATED_DATA_DIR.format(scratch_dir=scratch)))
    except Exception as e:  # the resolver's own refusal (an unknown condition, ...)
        problem(path, f"the original's resolver refused condition {condition!r}: {e}", hint)
        return None


def _hf_tokenizer_problem(model_dir: Path, dataset_type: str) -> tuple[str, str] | None:
    """(message, fix) when the model directory lacks what the dataset builders tokenize with: the Hugging Face
    tokenizer (tokenizer_config.json) and, for chat runs, the chat template the model is evaluated with."""
    config_path = model_dir / HF_TOKENIZER_CONFIG
    if not config_path.is_file():
        return (
            f"no Hugging Face tokenizer in {model_dir} ({HF_TOKENIZER_CONFIG} missing): the runs train on the tokens "
            "of the model's own tokenizer, as they are evaluated",
            "download the model's tokenizer files (tokenizer.json, tokenizer_config.json) into its directory",
        )
    if dataset_type != "chat_completion" or (model_dir / CHAT_TEMPLATE_FILE).is_file():
        return None
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"{config_path}: cannot be read as JSON ({e})", "download the model's tokenizer_config.json again"
    if not (isinstance(config, dict) and config.get("chat_template")):
        return (
            f"no chat template in {model_dir} (neither `chat_template` in {HF_TOKENIZER_CONFIG} nor "
            f"{CHAT_TEMPLATE_FILE}): chat_completion runs train on the template the model is evaluated with",
            "use the instruct model's directory, or set dataset_type: text_completion for a base model",
        )
    return None


def _environment_problems(site: dict) -> list[tuple[str, str, str]]:
    """(local config key, message, fix): the venv or conda environment (by prefix) the local config names must
    exist when this machine can see it."""
    out = []
    venv = site.get("venv")
    if venv and not (Path(venv) / "bin" / "activate").is_file():
        out.append(
            (
                "venv",
                f"virtual environment not found: {venv}/bin/activate",
                "create it (python -m venv ...) or fix `venv` in the local config",
            )
        )
    env = site.get("conda_env")
    if env and env.startswith("/") and not Path(env).is_dir():
        out.append(
            (
                "conda_env",
                f"conda environment not found: {env}",
                "create it or fix the conda environment in the local config",
            )
        )
    return out


def checkpoint_file_names(spec: Any) -> list[str]:
    """The file names a checkpoint_files setting stands for."""
    if isinstance(spec, list):
        return list(spec)
    total = int(spec["max_filename"])
    width = len(spec["max_filename"])
    return [spec["filename_format"].format(str(i).zfill(width), spec["max_filename"]) for i in range(1, total + 1)]


def _first(*values: Any) -> Any:
    for v in values:
        if v is not None:
            return v
    return None


def describe(rp: RunPlan, *, only: frozenset[str] | None = None, skip: frozenset[str] = frozenset()) -> str:
    """One line per parameter with its value and where it came from (for the log): every parameter, or those
    in `only`, less those in `skip`."""
    if not rp.setup:
        return ""
    return "\n".join(
        f"  {k} = {_log_value(rp.setup[k])} ({rp.sources[k]})"
        for k in params.table()
        if (only is None or k in only) and k not in skip
    )


def _log_value(value: Any) -> str:
    return json.dumps(value)


def shared_settings(runs: list[RunPlan]) -> frozenset[str]:
    """The parameters that every fine-tuned run of a sweep (two or more) sets alike, from the same place: the
    log gives them once, and each run's section only the others."""
    planned = [rp for rp in runs if rp.setup]
    if len(planned) < 2:
        return frozenset()
    first = planned[0]
    keys = set(params.table())
    for rp in planned[1:]:
        assert rp.setup is not None and first.setup is not None
        keys = {
            k
            for k in keys
            if rp.sources[k] == first.sources[k]
            and type(rp.setup[k]) is type(first.setup[k])
            and rp.setup[k] == first.setup[k]
        }
        if not keys:
            break
    return frozenset(keys)
