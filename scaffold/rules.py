"""What a correct run is, as rules over its settings, each written once.

The planner applies them to the summary (and reports a violation at the summary's line, with its fix; a change
made with `setup-finetune` goes through the summary too), the renderer to the settings it is given, and the
verification checks to the generated files. The facts behind them are torchtune 0.6.1's: which recipe trains which settings, and what it
cannot do (multi-node LoRA, validation outside the single-device LoRA recipe).
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The recipes (torchtune 0.6.1, and this project's validating copy of the single-device LoRA recipe).
SINGLE_DEVICE = "lora_finetune_single_device"
DISTRIBUTED = "lora_finetune_distributed"
VALIDATING = "lora_finetune_single_device_val"
FULL_SINGLE_DEVICE = "full_finetune_single_device"
FULL_DISTRIBUTED = "full_finetune_distributed"
# Recipes launched through torchrun (`tune run --nproc_per_node N ...`).
TORCHRUN_RECIPES = (DISTRIBUTED, FULL_DISTRIBUTED)

# lora_alpha, when not given: the original's rule.
ALPHA_RULE = "2 x lora_rank"


def default_lora_alpha(lora_rank: int) -> int:
    return 2 * lora_rank


def method(settings: Mapping[str, Any]) -> str:
    """`lora` or `full` (setup files written before `method` existed are LoRA)."""
    return settings.get("method") or "lora"


def recipe_for(settings: Mapping[str, Any]) -> str:
    """The recipe for a run. LoRA: one device (with validation: this project's validating recipe), or the
    distributed recipe for several GPUs (which has no validation: see `violations`). Full fine-tuning: single
    device, or distributed for several GPUs or nodes."""
    distributed = settings["gpus"] > 1 or settings.get("nodes", 1) > 1
    if method(settings) == "full":
        return FULL_DISTRIBUTED if distributed else FULL_SINGLE_DEVICE
    if distributed:
        return DISTRIBUTED
    return VALIDATING if settings.get("validation_during_training") else SINGLE_DEVICE


@dataclass(frozen=True)
class Violation:
    """A rule a run's settings break: the setting to change (as setup_finetune.yaml names it), what is wrong, and
    the fix."""

    setting: str
    message: str
    fix: str


def multi_node_lora(method_: str, nodes: int) -> Violation | None:
    if nodes > 1 and method_ != "full":
        return Violation(
            "nodes",
            f"multi-node LoRA fine-tuning is not supported by torchtune 0.6.1 (lora_finetune_distributed is "
            f"single-node; {nodes} nodes asked)",
            "use one node with up to 8 GPUs (compute.gpus), or set method: full (full_finetune_distributed runs on "
            "several nodes)",
        )
    return None


def violations(settings: Mapping[str, Any]) -> list[Violation]:
    """Every rule these settings break (method, GPUs, nodes, device, the site's GPU syntax, packing, validation); none
    when a stock torchtune 0.6.1 recipe (or this project's validating one) can train them as asked."""
    out: list[Violation] = []
    m, gpus, nodes = method(settings), settings["gpus"], settings.get("nodes", 1)
    cuda = settings.get("device", "cuda") == "cuda"
    if cuda and gpus < 1:
        out.append(Violation("gpus", "a CUDA run needs at least one GPU", "set compute.gpus >= 1, or device: cpu"))
    if (v := multi_node_lora(m, nodes)) is not None:
        out.append(v)
    if nodes > 1 and (gpus < 1 or not cuda):
        out.append(
            Violation(
                "nodes",
                f"{nodes} nodes need GPUs: a multi-node run starts one trainer process per GPU on every node",
                "set compute.gpus >= 1 (GPUs per node) and device: cuda",
            )
        )
    if nodes > 1 and settings.get("gpu_directive", "gres") == "gpus":
        out.append(
            Violation(
                "gpu_directive",
                f"{nodes} nodes with gpu_directive gpus: --gpus asks for a job total that SLURM may spread unevenly "
                "over the nodes, and every node needs compute.gpus of them",
                "set gpu_directive: gres or gpus-per-node in the local config (both ask per node)",
            )
        )
    if settings.get("packed") and settings.get("max_seq_len") is None:
        out.append(
            Violation(
                "max_seq_len",
                "packed: true packs records into sequences of max_seq_len tokens, but max_seq_len is null (no limit)",
                "set max_seq_len (e.g. 2048), or packed: false",
            )
        )
    if settings.get("validation_during_training"):
        if m == "full":
            out.append(
                Violation(
                    "validation_during_training",
                    "validation during training was asked for with method full, but the only validating recipe is "
                    "single-device LoRA (stock torchtune 0.6.1 recipes have no validation loop); the run would "
                    "silently train without validation",
                    "set validation_during_training: false and evaluate after training, or use method: lora",
                )
            )
        elif gpus > 1:
            out.append(
                Violation(
                    "validation_during_training",
                    f"validation during training was asked for with {gpus} GPUs, but the only validating recipe is "
                    "single-device (stock torchtune 0.6.1 recipes have no validation loop); the run would silently "
                    "train without validation",
                    "use compute.gpus: 1, or set validation_during_training: false and evaluate after training",
                )
            )
    return out


# --- resources: the run, the model's registry entry and the site's defaults --------------------------------------

# --mem as sbatch reads it: a count with an optional unit (no unit: megabytes), in megabytes.
_MEMORY = re.compile(r"^([1-9][0-9]*)([KMGT]?)$")
_MEMORY_MB = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2}


def memory_mb(text: str) -> float:
    """A --mem value (`80G`, `40960`, `1T`) in megabytes."""
    m = _MEMORY.match(str(text).upper())
    if m is None:
        raise ValueError(f"not a memory size: {text!r}")
    return int(m.group(1)) * _MEMORY_MB[m.group(2)]


def floor_resource(run: Any, model: Any, site: Any, builtin: Any, measure: Any = None) -> Any:
    """A run's memory or CPUs: the run's own `compute:` value when it gives one; else the larger of the model's
    registry default (what the model needs) and the site's default (`default_mem`, `default_cpus` in the local
    config: the least every run of this site asks for); else the built-in default. `measure` compares values
    (memory_mb for memory); on a tie the model's value, as written, is kept."""
    if run is not None:
        return run
    given = [v for v in (model, site) if v is not None]
    if not given:
        return builtin
    key = measure or (lambda v: v)
    return max(given, key=key)  # max keeps the first of equal values: the model's


# --- the environment of the batch script --------------------------------------------------------------------


def purges_modules(settings: Mapping[str, Any]) -> bool:
    """A batch script that loads modules runs `module purge` before its `module load` lines, as the original's does:
    a job must not inherit the modules of the shell it was submitted from. A site without modules (no `modules` in
    the local config) may have no `module` command at all, so its scripts run none."""
    return bool(settings.get("modules"))


# --- the GPU request, in the site's syntax ---------------------------------------------------------------------

GPU_OPTIONS = ("gres", "gpus", "gpus-per-node")
GPU_VALUE = {
    "gres": re.compile(r"^gpu(?::(?P<type>[A-Za-z0-9_.-]+))?:(?P<n>[1-9]\d*)$"),
    "gpus": re.compile(r"^(?:(?P<type>[A-Za-z0-9_.-]+):)?(?P<n>[1-9]\d*)$"),
    "gpus-per-node": re.compile(r"^(?:(?P<type>[A-Za-z0-9_.-]+):)?(?P<n>[1-9]\d*)$"),
}
GPU_EXAMPLE = {"gres": "--gres=gpu:N", "gpus": "--gpus=N", "gpus-per-node": "--gpus-per-node=N"}


def gpu_request(settings: Mapping[str, Any]) -> str | None:
    """The GPU request in the site's syntax (per node: `--gres=gpu:N`, `--gpus-per-node=N`; `--gpus=N` on one
    node only: see `violations`), or None for a run without GPUs."""
    n = settings["gpus"]
    if not n:
        return None
    typed = f"{settings['gpu_type']}:{n}" if settings.get("gpu_type") else str(n)
    directive = settings["gpu_directive"]
    if directive == "gres":
        return f"--gres=gpu:{typed}"
    if directive == "gpus":
        return f"--gpus={typed}"
    return f"--gpus-per-node={typed}"


def gpu_count(option: str, value: str | None) -> int | None:
    """The number of GPUs a GPU directive (`--OPTION=VALUE`) asks for, or None when its value is malformed."""
    pattern = GPU_VALUE.get(option)
    m = pattern.match(value or "") if pattern else None
    return int(m.group("n")) if m else None


# --- the prompt ----------------------------------------------------------------------------------------------


def prompt_problem(prompt: str) -> tuple[str, str] | None:
    """(message, fix) when a prompt cannot be filled the way the evaluation step fills it,
    `prompt.format(**record)`: `{input}` exactly once, other fields by name only (never `{output}`, the answer),
    and literal braces doubled. The schemas apply it through their `x-prompt` keyword (scaffold.inputs.schemas)."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(prompt) if f is not None]
    except ValueError as e:
        return (
            f"the prompt is filled with str.format, as the evaluation step fills it, and cannot be: {e}",
            "write a literal brace twice ({{ or }}), and each field as {name}",
        )
    if fields.count("input") != 1:
        return (
            "the prompt must contain {input} exactly once",
            "write {input} exactly once where the record's input goes, e.g. 'Capitalize the given word: {input}'",
        )
    if "output" in fields:
        return "the prompt must not contain {output}: it is the answer the model learns", "remove {output}"
    odd = [f for f in fields if not f.isidentifier()]
    if odd:
        return (
            f"prompt fields must be record keys such as {{input}}, not {odd[0]!r}",
            "write a literal brace twice ({{ or }}), and each field as {name}",
        )
    return None
