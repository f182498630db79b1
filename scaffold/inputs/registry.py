"""The model registry: templates/models.yaml, extended or overridden by the local config's `models:`; a model
that is in neither is recognised from its directory's config.json (scaffold/inputs/modelrecognition.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import Problem, did_you_mean
from ..layout import RECOGNISED_MODELS
from ..resources import load_data
from . import modelrecognition


@dataclass(frozen=True)
class UnmappableModel(Problem):
    """A model directory that is there but maps to no torchtune builder: invalid input (exit status 2)."""


def models(local_models: dict[str, Any] | None = None) -> dict[str, dict]:
    """Every known model by name; the local config's entries win."""
    out = dict(load_data("models.yaml"))
    out.update(local_models or {})
    return out


def lookup(name: str, registry: dict[str, dict]) -> dict | Problem:
    """The entry for a model name, or a Problem that lists the known names."""
    if name in registry:
        return registry[name]
    return Problem(
        f"unknown model '{name}'",
        fix=f"{did_you_mean(name, registry)}; or add it under `models:` in the local config "
        "(known: " + ", ".join(sorted(registry)) + ")",
    )


def find(
    name: str,
    registry: dict[str, dict],
    model_dir: Path | None,
    recorded: modelrecognition.Recognised | None = None,
) -> tuple[dict | Problem, str | None, modelrecognition.Recognised | None]:
    """(entry or Problem, a note saying what was recognised, the recognition when this call made it) for a model
    name. A name that is not in the registry is recognised from `model_dir`'s config.json; pass model_dir=None where
    the directory is not to be looked at (no path checks): the name is then what `recorded` says (generate's record
    of an earlier recognition), else unknown."""
    entry = lookup(name, registry)
    if not isinstance(entry, Problem):
        return entry, None, None
    if model_dir is None:
        if recorded is not None:
            note = (
                f"model '{name}' is not in the registry: {recorded.describe()} (as recorded in "
                f"{RECOGNISED_MODELS}; the directory is not looked at here)"
            )
            return recorded.entry, note, None
        return (
            Problem(
                entry.message,
                fix=f"{entry.fix}; with path checks on, a model directory whose config.json is of a family torchtune "
                f"0.6.1 has builders for is recognised (and recorded in {RECOGNISED_MODELS} for runs "
                "without path checks)",
            ),
            None,
            None,
        )
    found = modelrecognition.recognise(model_dir)
    if found is None:
        why = "it has no config.json" if model_dir.is_dir() else "it was not found"
        return (
            Problem(entry.message, fix=f"{entry.fix}; the model directory {model_dir} cannot be recognised: {why}"),
            None,
            None,
        )
    if isinstance(found, modelrecognition.Unrecognised):
        return (
            UnmappableModel(
                f"model '{name}' is not in the registry and its directory maps to no torchtune 0.6.1 builder: "
                f"{found.message}",
                fix=f"add a `models:` entry for '{name}' in the local config (lora_builder, full_builder, model_type, "
                "checkpoint_files, tokenizer), or use a model the registry knows (" + ", ".join(sorted(registry)) + ")",
            ),
            None,
            None,
        )
    return found.entry, f"model '{name}' is not in the registry: {found.describe()}", found
