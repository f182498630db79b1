"""A fine-tuned run's settings as one typed structure: what setup_finetune.yaml records, key for key
(schemas/setup_finetune.schema.json, whose parameter keys come from templates/parameters.yaml;
tests/test_settings.py holds the two to the same keys and types).

The planner builds complete settings. A setup_finetune.yaml written by hand, or by an older version, may leave keys
out: `complete` fills them once, from the parameter table's defaults and the rules (scaffold.rules), so the
renderer, the self-check and the checks read every key without defaults of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypedDict


class RunSettings(TypedDict):
    # The run and where it goes.
    run_name: str
    experiment: str
    project: str | None
    run_dir: str
    output_dir: str
    model: str
    model_dir: str
    dataset_path: str
    dataset_label: str | None
    wandb_project: str | None
    wandb_entity: str | None
    wandb_mode: Literal["offline", "online", "disabled"] | None
    # Resources and the site.
    time: str
    gpus: int
    nodes: int
    mem: str
    cpus_per_task: int
    account: str | None
    partition: str | None
    qos: str | None
    constraint: str | None
    gpu_directive: Literal["gres", "gpus", "gpus-per-node"]
    gpu_type: str | None
    mail_user: str | None
    mail_type: str | None
    conda_env: str | None
    venv: str | None
    modules: list[str]
    sbatch_extra: list[str]
    slurm_overrides: dict[str, Any]
    # The parameter table (templates/parameters.yaml).
    method: Literal["lora", "full"]
    lora_rank: int
    lora_alpha: int | float
    lora_dropout: int | float
    lr: int | float
    weight_decay: int | float
    batch_size: int
    gradient_accumulation_steps: int
    epochs: int
    seed: int
    max_seq_len: int | None
    num_warmup_steps: int
    max_steps_per_epoch: int | None
    packed: bool
    train_on_input: bool
    system_prompt: str | None
    prompt: str
    chat_template_date: str
    dataset_type: Literal["chat_completion", "text_completion"]
    evaluator: Literal["inspect-ai-hf"]
    untrainable_records: Literal["refuse", "drop", "train"]
    lr_scheduler: Literal["cosine"]
    validation_during_training: bool
    run_val_every_n_steps: int | None
    batch_size_val: int | None
    device: Literal["cuda", "cpu"]
    dtype: Literal["bf16", "fp32"]
    metric_logger: Literal["wandb", "disk"] | None
    lora_attn_modules: list[str]
    apply_lora_to_mlp: bool
    enable_activation_checkpointing: bool
    compile: bool
    log_every_n_steps: int
    requeue: bool


# Keys outside the parameter table that setup_finetune.yaml may leave out, and their value then.
OPTIONAL: dict[str, Any] = {
    "project": None,
    "dataset_label": None,
    "wandb_project": None,
    "wandb_entity": None,
    "wandb_mode": None,
    "account": None,
    "partition": None,
    "qos": None,
    "constraint": None,
    "gpu_type": None,
    "mail_user": None,
    "mail_type": None,
    "conda_env": None,
    "venv": None,
    "modules": [],
    "sbatch_extra": [],
    "slurm_overrides": {},
}


def complete(setup: Mapping[str, Any]) -> RunSettings:
    """Settings with every key: those given, then the parameter table's defaults (lora_alpha by its rule) and the
    empty values of the optional keys."""
    from . import rules
    from .inputs import params

    out: dict[str, Any] = dict(setup)
    for name, p in params.table().items():
        if name not in out:  # (a null given stays null: for some parameters it means something, e.g. no limit)
            out[name] = p.default
    if out["lora_alpha"] is None:
        out["lora_alpha"] = rules.default_lora_alpha(out["lora_rank"])
    for key, empty in OPTIONAL.items():
        if out.get(key) is None:
            out[key] = type(empty)() if isinstance(empty, list | dict) else empty
    return out  # type: ignore[return-value]
