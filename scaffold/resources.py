"""Where the shipped data lives: `schemas/` and `templates/` inside the installed package, or at the top
of a source checkout (editable installs and running from the repository)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

_PACKAGE = Path(__file__).resolve().parent
# libyaml's safe loader where PyYAML was built with it: the same resolvers and constructors as yaml.SafeLoader (the
# same data), with the scanning and parsing in C (the shipped files are read by every process).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def data_dir(name: str) -> Path:
    """The `schemas` or `templates` directory."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"scaffold-torchtune is installed without its {name}/ directory")


@cache
def load_data(name: str) -> dict:
    """A YAML data file shipped in templates/ (model registry, parameter table, recipe keys)."""
    with open(data_dir("templates") / name, encoding="utf-8") as f:
        return yaml.load(f, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader
