"""The model registry: templates/models.yaml, extended or overridden by the local config's `models:`."""

from __future__ import annotations

from typing import Any

from .errors import Problem, did_you_mean
from .resources import load_data


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
