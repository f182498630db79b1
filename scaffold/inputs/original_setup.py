"""The original tool's own per-run setup_finetune.yaml (cruijff_kit's setup_finetune.py reads it): a format of its
own, not this tool's. It is recognised, so that it is refused with what to run instead, never read as a broken
file of this tool's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# Keys of the original's setup_finetune.yaml (its setup_finetune.py arguments) that this tool's format has not.
ORIGINAL_KEYS = (
    "torchtune_model_name",
    "model_checkpoint",
    "input_dir_base",
    "input_formatting",
    "dataset_ext",
    "my_wandb_project",
    "my_wandb_run_name",
    "project_dir",
    "experiment_name",
    "custom_recipe",
    "base_recipe",
)
FORMAT = "the original tool's (cruijff_kit setup_finetune.py) per-run format"


def original_keys(data: Any) -> list[str]:
    """The original's keys in a setup_finetune.yaml mapping; empty for this tool's own format (which has run_name)."""
    if not isinstance(data, dict) or "run_name" in data:
        return []
    return [k for k in ORIGINAL_KEYS if k in data]


def original_keys_of(path: Path) -> list[str]:
    """original_keys of a file on disk (empty when it is not a readable YAML mapping)."""
    try:
        return original_keys(yaml.safe_load(Path(path).read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []


def describe(keys: list[str]) -> str:
    shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
    return f"{FORMAT} ({shown})"
