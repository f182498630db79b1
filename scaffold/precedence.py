"""Where each setting of a fine-tuned run comes from: the precedence table, written down once, and the values
every run of a sweep shares worked out from it. The planner reads a run's settings through these tables only.

| setting | from, first that gives it wins |
|---|---|
| a parameter (templates/parameters.yaml) | `runs[].parameters` > `controls` > `controls.base_recipe`'s stock config > the table's default; then the rules: `lora_alpha` (scaffold.rules.default_lora_alpha), `metric_logger` (wandb where a W&B project is named, else disk), `system_prompt` (dropped for text_completion) |
| gpus | `runs[].compute.gpus` > the older `controls.gpus` > the registry entry's `resources.gpus` > the site's `default_gpus` > 1 |
| nodes | `runs[].compute.nodes` > 1 |
| time | `runs[].compute.time` > the registry entry's `resources.time` > the site's `default_time` > DEFAULT_TIME (the pre-flight estimate may raise it) |
| mem, cpus_per_task | `runs[].compute` > the larger of the registry entry's and the site's default (`default_mem`, `default_cpus`: scaffold.rules.floor_resource) > DEFAULT_MEM, DEFAULT_CPUS |
| wandb_project (a run that logs to W&B) | `output.wandb_project` > the site's `wandb_project` |
| wandb_entity, wandb_mode | the site's (an unfilled entity placeholder: none); wandb_mode > DEFAULT_WANDB_MODE |
| the model directory | `models.base[].path` > the site's `models_dir`/NAME |
| the train file | `runs[].training_condition` (the original's resolver) > `runs[].dataset_path` > `data.training.path` |
| dataset_label | the run's own train file's name > `data.training.dataset_label` |
| the site (account, partition, qos, constraint, gpu_type, mail_user, conda_env, venv) | the site config; gpu_directive > gres; mail_type > DEFAULT_MAIL_TYPE, with a mail_user |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import rules
from .inputs import params
from .inputs.localconfig import DEFAULT_WANDB_MODE, LocalConfig
from .inputs.summary import Summary

# Where neither the run (compute.time), the model's registry entry nor the local config (default_time) gives a time
# limit: the original's (its batch script template and setup_finetune.py --time default).
DEFAULT_TIME = "00:15:00"
DEFAULT_MEM = "32G"
DEFAULT_CPUS = 4
DEFAULT_GPUS = 1
DEFAULT_NODES = 1
DEFAULT_GPU_DIRECTIVE = "gres"
DEFAULT_MAIL_TYPE = "BEGIN,END"  # with a mail_user and no mail_type: as the original, mail at begin and end


class RunInputs:
    """What one run's resources are read from: its entry in the summary (and its `compute:`), the summary, its
    model's registry defaults (`resources:`) and the site config."""

    __slots__ = ("run", "index", "summary", "resources", "local", "compute")

    def __init__(self, run: dict, index: int, summary: Summary, resources: dict, local: LocalConfig):
        self.run, self.index, self.summary, self.resources, self.local = run, index, summary, resources, local
        self.compute: dict = run.get("compute") or {}


@dataclass(frozen=True)
class Source:
    """One place a setting may come from: how the log names it (formatted with the run's `index` and `model`), and
    how to read it from a run's inputs (None: this place gives nothing)."""

    name: str
    read: Callable[[RunInputs], Any]


GPUS = (
    Source("runs[{index}].compute.gpus", lambda i: i.compute.get("gpus")),
    Source("controls.gpus", lambda i: i.summary.legacy_gpus),
    Source("the model registry entry of {model}", lambda i: i.resources.get("gpus")),
    Source("the local config's default gpus", lambda i: i.local.get("default_gpus")),
    Source("built in", lambda i: DEFAULT_GPUS),
)
NODES = (
    Source("runs[{index}].compute.nodes", lambda i: i.compute.get("nodes")),
    Source("built in", lambda i: DEFAULT_NODES),
)
TIME = (
    Source("runs[{index}].compute.time", lambda i: i.compute.get("time")),
    Source("the model registry entry of {model}", lambda i: i.resources.get("time")),
    Source("the local config's default time", lambda i: i.local.get("default_time")),
)


def first(sources: tuple[Source, ...], inputs: RunInputs) -> tuple[Any, str] | None:
    """(value, where it came from) of the first source that gives one, or None. Every source is read, so that an
    unfilled placeholder in the local config is an error whichever source gives the value."""
    read = [(source.read(inputs), source) for source in sources]
    for value, source in read:
        if value is not None:
            return value, source.name.format(index=inputs.index, model=inputs.run["model"])
    return None


def mem(inputs: RunInputs) -> str:
    """The run's memory: its own, else the larger of the model's and the site's, else DEFAULT_MEM."""
    return str(
        rules.floor_resource(
            inputs.compute.get("mem"),
            inputs.resources.get("mem"),
            inputs.local.get("default_mem"),
            DEFAULT_MEM,
            rules.memory_mb,
        )
    )


def cpus_per_task(inputs: RunInputs) -> int:
    """The run's CPUs: its own, else the larger of the model's and the site's, else DEFAULT_CPUS."""
    return rules.floor_resource(
        inputs.compute.get("cpus_per_task"),
        inputs.resources.get("cpus_per_task"),
        inputs.local.get("default_cpus"),
        DEFAULT_CPUS,
    )


def site_settings(local: LocalConfig) -> dict[str, Any]:
    """The settings every run of a site takes from its config."""
    return {
        "account": local.get("account"),
        "partition": local.get("partition"),
        "qos": local.get("qos"),
        "constraint": local.get("constraint"),
        "gpu_directive": local.get("gpu_directive", DEFAULT_GPU_DIRECTIVE),
        "gpu_type": local.get("gpu_type"),
        "mail_user": local.get("mail_user"),
        # As the original's batch script: mail when the job begins and when it ends.
        "mail_type": local.get("mail_type", DEFAULT_MAIL_TYPE) if local.get("mail_user") else None,
        "conda_env": local.get("conda_env"),
        "venv": local.get("venv"),
    }


def wandb_project_source(summary: Summary, local: LocalConfig) -> str | None:
    """Where the W&B project of the runs is named, or None: runs log to W&B when a project is named (as the
    original, which always logs to W&B). A placeholder in the local config is then an error, where it is used."""
    if (summary.data.get("output") or {}).get("wandb_project"):
        return "output.wandb_project"
    if local.settings.get("wandb_project") or "wandb_project" in local.placeholders:
        return "local config wandb_project"
    return None


def wandb_settings(summary: Summary, local: LocalConfig, wandb: bool) -> dict[str, Any]:
    """wandb_project, wandb_entity and wandb_mode of a run (None each for a run that does not log to W&B)."""
    if not wandb:
        return {"wandb_project": None, "wandb_entity": None, "wandb_mode": None}
    return {
        "wandb_project": (summary.data.get("output") or {}).get("wandb_project") or local.get("wandb_project"),
        # Optional (the original never writes one): an unfilled placeholder leaves W&B its default entity.
        "wandb_entity": local.settings.get("wandb_entity"),
        "wandb_mode": local.get("wandb_mode", DEFAULT_WANDB_MODE),
    }


@dataclass
class SweepParameters:
    """Every parameter's value for the runs that do not give their own, and where it came from: the table's
    default < controls.base_recipe's stock config < controls. A run's own parameters come on top
    (`run_parameters`)."""

    values: dict[str, Any]
    sources: dict[str, str]

    @classmethod
    def of(cls, summary: Summary) -> SweepParameters:
        controls = summary.data.get("controls") or {}
        recipe = summary.base_recipe
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name, p in params.table().items():
            if name in controls:
                values[name], sources[name] = controls[name], "controls"
            elif recipe is not None and name in recipe.values:
                values[name], sources[name] = recipe.values[name], recipe.source
            else:
                values[name], sources[name] = p.default, "default"
        return cls(values, sources)


RUN = "run"  # the source of a value the run gives in its own parameters


def run_parameters(sweep: SweepParameters, given: dict, wandb_source: str | None) -> tuple[dict, dict, list[str]]:
    """(values, the sources where this run's differ from the sweep's, notes) of one run: its own parameters over
    the sweep's, then the rules that fill what is left (lora_alpha, metric_logger, the system prompt)."""
    values = dict(sweep.values)
    run_sources: dict[str, str] = {}  # only where not as for every run (memory: sweeps of thousands)
    notes = []
    for name, value in given.items():
        if name in values:
            values[name], run_sources[name] = value, RUN
    if values["lora_alpha"] is None:
        values["lora_alpha"] = rules.default_lora_alpha(values["lora_rank"])
        run_sources["lora_alpha"] = rules.ALPHA_RULE
    if values["metric_logger"] is None:
        values["metric_logger"] = "wandb" if wandb_source is not None else "disk"
        run_sources["metric_logger"] = wandb_source or "default"
    if values["dataset_type"] == "text_completion" and values["system_prompt"]:
        source = run_sources.get("system_prompt", sweep.sources["system_prompt"])
        notes.append(
            f"system_prompt ({source}) dropped: a base model (dataset_type text_completion) "
            "has no system prompt; setup_finetune.yaml records an empty one, which the evaluation step reads"
        )
        values["system_prompt"] = ""
        run_sources["system_prompt"] = "dropped (text_completion)"
    return values, run_sources, notes
