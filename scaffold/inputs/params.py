"""The parameter table (templates/parameters.yaml): where each parameter lands and how run names spell it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..resources import load_data


@dataclass(frozen=True)
class Parameter:
    name: str
    path: str | None
    tokens: tuple[str, ...]
    aliases: tuple[str, ...]
    default: Any
    schema: dict
    compare: str  # "numeric" or "exact"
    when: dict  # the path exists only for runs whose settings match these
    spellings: dict  # an older spelling of a value -> the value (the original's, e.g. a torchtune function name)

    def applies(self, values: dict[str, Any]) -> bool:
        """Whether this parameter lands at its path for a run with these settings."""
        return self.path is not None and all(values.get(k) == v for k, v in self.when.items())


@cache
def table() -> dict[str, Parameter]:
    """Every known parameter by name, in table order."""
    out = {}
    for name, row in load_data("parameters.yaml").items():
        out[name] = Parameter(
            name=name,
            path=row.get("path"),
            tokens=tuple(row.get("tokens", ())),
            aliases=tuple(row.get("aliases", ())),
            default=row.get("default"),
            schema=row["schema"],
            compare=row.get("compare", "numeric"),
            when=dict(row.get("when") or {}),
            spellings=dict(row.get("spellings") or {}),
        )
    return out


@cache
def aliases() -> dict[str, str]:
    """Older spelling -> table name."""
    return {a: p.name for p in table().values() for a in p.aliases}


@cache
def _token_pattern() -> re.Pattern:
    # Longest prefix first, so `rank8` is not read as `r` + `ank8`.
    prefixes = sorted({t for p in table().values() for t in p.tokens}, key=len, reverse=True)
    number = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
    return re.compile(rf"^({'|'.join(map(re.escape, prefixes))})({number})$")


@cache
def _by_token() -> dict[str, str]:
    return {t: p.name for p in table().values() for t in p.tokens}


def parse_run_name(name: str) -> dict[str, list[tuple[str, float]]]:
    """Parameters a run name spells, as {parameter: [(token, value), ...]}.

    The name is split on `_`; tokens such as `rank8`, `lr1e-5`, `s7` are read, everything else
    (the model name, `base`) is ignored. A parameter spelt twice is returned twice so callers can object.
    """
    found: dict[str, list[tuple[str, float]]] = {}
    for token in name.split("_"):
        m = _token_pattern().match(token)
        if m:
            found.setdefault(_by_token()[m.group(1)], []).append((token, float(m.group(2))))
    return found


def same_value(a: Any, b: Any) -> bool:
    """Numeric comparison for numbers (1e-5 == 1.0e-05), exact comparison otherwise. Booleans are not numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a == b


def format_token_value(value: float | int) -> str:
    """How a run name writes a value: 8, 0.1, 1e-5, 3e-4."""
    if isinstance(value, bool):
        raise TypeError("booleans have no run-name token")
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1:
        return str(int(value))
    v = float(value)
    if v != 0 and abs(v) < 1e-2:
        # the fewest digits that read back as this value (a plain `:e` keeps six: 1.23456789e-05 -> 1.234568e-5)
        digits = next(d for d in range(17) if float(f"{v:.{d}e}") == v)
        mantissa, exp = f"{v:.{digits}e}".split("e")
        return f"{mantissa}e{int(exp)}"
    return repr(v)


def token_for(name: str, value: Any) -> str | None:
    """The run-name token for one parameter value (`rank8`), or None when the table gives no token."""
    p = table()[name]
    if not p.tokens or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return f"{p.tokens[0]}{format_token_value(value)}"


def get_path(data: Any, dotted: str) -> tuple[bool, Any]:
    """(found, value) for `model.lora_rank`-style paths in nested dicts."""
    cur = data
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur
