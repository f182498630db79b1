"""`controls.base_recipe`: the torchtune stock config whose settings fill what the summary leaves out, as in the
original (templates/base_recipes.yaml holds the values, from torchtune 0.6.1's own config files)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from ..resources import load_data

FILE = "base_recipes.yaml"


@dataclass(frozen=True)
class BaseRecipe:
    """What a base_recipe name gives: a stock config's settings, or (a recipe name) the method only."""

    name: str
    values: dict[str, Any]  # parameter -> the config's value (empty for a recipe name)
    method: str | None  # lora | full for a recipe name, else None

    @property
    def source(self) -> str:
        """Where a value taken from it came from, as the log says it."""
        return f"base_recipe {self.name}"


@cache
def _data() -> dict:
    return load_data(FILE)


def known() -> list[str]:
    """Every name base_recipe may take: the stock configs, then the recipe names."""
    return [*_data()["configs"], *_data()["recipes"]]


def lookup(name: object) -> BaseRecipe | None:
    """The base recipe of that name, or None when this tool knows no such name."""
    data = _data()
    if not isinstance(name, str):
        return None
    if name in data["configs"]:
        return BaseRecipe(name, dict(data["configs"][name]), None)
    if name in data["recipes"]:
        return BaseRecipe(name, {}, data["recipes"][name])
    return None
