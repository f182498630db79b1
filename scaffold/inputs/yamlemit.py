"""Writing YAML: the generated files' values (setup_finetune.yaml, the values of finetune.yaml and of the CI
workflow), the summary's rewritten values and the model records. A string is quoted whenever the reader here
(`yamlio`, YAML 1.2 floats) or OmegaConf would take it for another type: the writer shares the reader's resolvers.

Rendering a sweep calls `yaml_scalar` for every value of every run, and PyYAML's pure-Python emitter costs about
0.5 ms a call. Two things keep that off the path: a fast path that writes the common values directly, exactly as
PyYAML would (tests/test_yamlemit.py compares both on many values), and one bounded memo of `yaml_scalar`, since a
sweep repeats most values (the prompt, the paths of the model) in every run (and one of whether `dump_flat` writes a
key as it is: every run has the same keys).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import yaml

from .yamlio import RESOLVERS

_STR = "tag:yaml.org,2002:str"
MEMO_SIZE = 4096  # distinct values remembered; a sweep of 1,000 runs has about 1,000 (its run names and paths)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that never emits aliases, indents lists under their key, and quotes every string that the
    reader (ours, and OmegaConf's) would take for another type: it shares the loader's resolvers."""

    yaml_implicit_resolvers = RESOLVERS

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # The one rule for how a string is written, shared by dump_yaml and dump_flat/yaml_scalar (which fall back
    # to this dumper): double-quoted when it holds a line break or a character that is not printable. Double
    # quotes keep every byte (trailing newlines included) and write such characters as escapes; written plain
    # or single-quoted, PyYAML folds NEL and line separators into spaces and writes a lone no-break space plain,
    # which readers take for an empty value.
    style = '"' if "\n" in value or not value.isprintable() else None
    return dumper.represent_scalar(_STR, value, style=style)


_Dumper.add_representer(str, _str_representer)


def dump_yaml(data: Any) -> str:
    """Block-style YAML with keys in the given order, `null` for None and no aliases."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=10_000)


def dump_flat(data: dict[str, Any]) -> str:
    """`dump_yaml` of a mapping of simple values (setup_finetune.yaml), fast and byte-identical to it."""
    if not data:
        return dump_yaml(data)
    lines = []
    for key, value in data.items():
        if type(key) is not str or not _plain_key(key):
            return dump_yaml(data)
        kind = type(value)
        if kind is list and value:
            lines.append(f"{key}:")
            lines += [f"  - {yaml_scalar(v)}" for v in value]
        elif kind is dict and value:
            if any(type(k) is not str or not _plain_key(k) for k in value):
                return dump_yaml(data)
            lines.append(f"{key}:")
            lines += [f"  {k}: {yaml_scalar(v)}" for k, v in value.items()]
        else:
            lines.append(f"{key}: {yaml_scalar(value)}")
    return "\n".join(lines) + "\n"


@lru_cache(maxsize=MEMO_SIZE)
def _plain_key(key: str) -> bool:
    """Whether YAML writes a key as it is (it quotes 'no' or '1'); a sweep's runs share their keys."""
    return _fast_scalar(key) == key


def memo_key(value: Any) -> Any:
    """What `yaml_scalar` of a value depends on, hashable: its type and value all the way down (1, 1.0 and True
    differ; so do 0.0 and -0.0, by their repr). TypeError for a value that holds something unhashable."""
    kind = type(value)
    if kind is float:
        return (kind, repr(value))
    if kind is list:
        return (kind, *map(memo_key, value))
    if kind is dict:
        return (kind, *((memo_key(k), memo_key(v)) for k, v in value.items()))
    return (kind, value)


_MEMO: dict[Any, str] = {}


def yaml_scalar(value: Any) -> str:
    """One value as a YAML flow scalar/collection on one line (used by the templates)."""
    try:
        key = memo_key(value)
        return _MEMO[key]
    except KeyError:
        pass
    except TypeError:  # unhashable: nothing to remember it by
        return _yaml_scalar(value)
    if len(_MEMO) >= MEMO_SIZE:  # bounded: run names and paths are new in every run
        _MEMO.clear()
    text = _MEMO[key] = _yaml_scalar(value)
    return text


def _yaml_scalar(value: Any) -> str:
    if type(value) is list:
        items = [_fast_scalar(v) for v in value]
        if None not in items:
            return "[" + ", ".join(items) + "]"  # type: ignore[arg-type]
    else:
        text = _fast_scalar(value)
        if text is not None:
            return text
    return _pyyaml_flow(value)


# The fast path: plain-style text of the values PyYAML writes plain, as PyYAML writes them.
_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./+-]*\Z")
_RESOLVER = yaml.resolver.Resolver()
_RESOLVER.yaml_implicit_resolvers = RESOLVERS  # e.g. "1e-5" is a float: quote it


def _fast_scalar(value: Any) -> str | None:
    """The plain-style YAML text of a simple value, or None when PyYAML must decide."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        return str(value)
    if type(value) is float:
        if value != value or value in (float("inf"), float("-inf")):
            return None
        text = repr(value).lower()
        # PyYAML's SafeRepresenter: 1e-05 -> 1.0e-05, so YAML 1.1 readers see a float too.
        return text.replace("e", ".0e", 1) if "." not in text and "e" in text else text
    if type(value) is str and _PLAIN.match(value) and _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) == _STR:
        return value
    return None


def _pyyaml_flow(value: Any) -> str:
    text = yaml.dump(value, Dumper=_Dumper, default_flow_style=True, allow_unicode=True, width=10_000).strip()
    for end in ("\n...", "..."):
        text = text.removesuffix(end).rstrip()
    return text
