"""Loading every finetune.yaml of a large sweep as torchtune loads it (OmegaConf) without paying OmegaConf's node
building for each of them: about 7 ms a config on the 2-core machines this suite is sized for.

What it buys (measured for issue 16 with `nox -s bench`, on /dev/shm, medians of 3 rounds): `scaffold verify` of
1,000 runs takes 7.8 s with the rule and 14.9 s with OmegaConf on every config, over the budget of 10 s; of 100
runs, 2.2 s and 3.2 s.

The rule (`--omegaconf per-shape`, the default above 50 runs; `--omegaconf every` runs OmegaConf itself on every
config):

1. Every config is parsed by OmegaConf's own YAML loader (the loader class `OmegaConf.load` uses: its duplicate-key
   check, its float syntax, its alias limits). A file it rejects goes to OmegaConf itself, which reports the error.
2. The parsed document's *shape* is computed: its keys (verbatim, in order), the nesting of mappings and lists, the
   type of every scalar, and verbatim every string holding `$`, `?` or `\\` (the only strings OmegaConf treats
   specially: interpolations `${...}` and their escapes, the missing value `???` and its escapes).
3. The first config of each shape goes through OmegaConf itself (`OmegaConf.load`, then `to_container(resolve=True)`),
   and its result is compared, value and type, with what step 1 parsed, interpolations resolved here (only plain
   references, `${a.b}`, to plain scalars, whole or inside a string). When they agree, the other configs of that
   shape take that result; when OmegaConf rejects the config or the results differ, every config of that shape goes
   through OmegaConf itself.

Why a shape decides: what OmegaConf does with a parsed document beyond the YAML loader depends only on what the shape
keeps. DictConfig accepts or rejects a key by its value and type and a scalar by its type; it treats a string
specially only for `${`, `???` and backslash escapes (kept verbatim in the shape); resolution depends on the
interpolation strings (verbatim) and, for the value it produces, on the referenced values, which enter as `str()` of
a scalar of the same type as in the config OmegaConf checked. Anything outside that (other scalar types such as
dates or bytes, another root than a mapping, a resolver call, a relative or nested interpolation, an escape, a
reference to a container or to another interpolation) sends the config to OmegaConf itself, and so does every
config where this OmegaConf does not expose its YAML loader (a private function: `get_yaml_loader`).
tests/test_verify_scale.py checks the rule against OmegaConf itself on configs of every kind this project writes,
on configs changed by hand (values, types, interpolations, escapes, YAML errors) and on random values.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from ..engine.generated import ConfigLoadError, LoadedConfig, load_config

EVERY = "every"
PER_SHAPE = "per-shape"

_PLAIN_SCALARS = (int, float, bool, type(None))
_SPECIAL = re.compile(r"[$?\\]")
# A plain reference: `${a.b.c}` (keys made of word characters), nothing else inside the braces.
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}")


def omegaconf_yaml_loader() -> Any:
    """The YAML loader class OmegaConf.load parses with, or None where this OmegaConf does not expose it."""
    try:
        from omegaconf._yaml import get_yaml_loader  # OmegaConf 2.4
    except ImportError:
        try:
            from omegaconf._utils import get_yaml_loader  # OmegaConf 2.1 - 2.3
        except ImportError:
            return None
    try:
        return get_yaml_loader()
    except Exception:
        return None


class _NotPlain(Exception):
    """The document holds something the shape rule does not cover: OmegaConf itself must load it."""


def shape(value: Any) -> Any:
    """The shape of a parsed document (see the module's docstring); raises _NotPlain outside the rule."""
    kind = type(value)
    if kind is dict:
        return (dict, *((type(k), k, shape(v)) for k, v in value.items()))
    if kind is list:
        return (list, *(shape(v) for v in value))
    if kind is str:
        return (str, value) if _SPECIAL.search(value) else str
    if kind in _PLAIN_SCALARS:
        return kind
    raise _NotPlain(kind.__name__)


def shape_key(value: Any) -> bytes:
    """A shape as a short key: the digest of its repr (types, keys and special strings all have unambiguous
    reprs)."""
    return hashlib.sha256(repr(value).encode("utf-8", "surrogatepass")).digest()


def resolve(data: dict) -> dict:
    r"""`data` with its interpolations resolved as OmegaConf resolves plain references (`${a.b}` to a scalar that is
    not itself special); raises _NotPlain for any other interpolation. Strings without `${` are returned as they
    are: those OmegaConf changes (`\???`) are kept verbatim in the shape, so the comparison on the first config of
    the shape covers them."""

    def lookup(dotted: str) -> Any:
        node: Any = data
        for part in dotted.split("."):
            if type(node) is not dict or part not in node:
                raise _NotPlain(f"${{{dotted}}} does not name a key")
            node = node[part]
        if type(node) is str:
            if _SPECIAL.search(node):
                raise _NotPlain(f"${{{dotted}}} names a string OmegaConf treats specially")
        elif type(node) not in _PLAIN_SCALARS:
            raise _NotPlain(f"${{{dotted}}} names a container")
        return node

    def walk(value: Any) -> Any:
        kind = type(value)
        if kind is dict:
            return {k: walk(v) for k, v in value.items()}
        if kind is list:
            return [walk(v) for v in value]
        if kind is not str or "${" not in value:
            return value
        if "\\" in value:
            raise _NotPlain("an escape in an interpolation")
        whole = _REFERENCE.fullmatch(value)
        if whole:
            return lookup(whole.group(1))
        if "${" in _REFERENCE.sub("", value):
            raise _NotPlain("an interpolation other than a plain reference")
        return _REFERENCE.sub(lambda m: str(lookup(m.group(1))), value)

    return walk(data)


def same(a: Any, b: Any) -> bool:
    """Equal values of identical types, all the way down (1, 1.0 and True differ; so does key order)."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is float and a != a:  # NaN
        return b != b
    return bool(a == b)


def parse(yaml_loader: Any, text: str) -> tuple[Any, dict] | None:
    """Steps 1 and 2 of the rule for one config's text: (shape, data with its interpolations resolved), or None
    when OmegaConf itself must load it (a YAML error, which OmegaConf then reports, or anything outside the rule)."""
    try:
        parsed = yaml.load(text, Loader=yaml_loader)  # noqa: S506 - OmegaConf's SafeLoader subclass
        if type(parsed) is not dict:
            return None
        return shape_key(shape(parsed)), resolve(parsed)
    except Exception:  # noqa: BLE001 - whatever it is, OmegaConf itself says it
        return None


class ConfigLoader:
    """Loads finetune.yaml files for one session: OmegaConf itself for each (`every`), or by the shape rule."""

    def __init__(self, mode: str = PER_SHAPE):
        self.mode = mode
        self.yaml_loader = omegaconf_yaml_loader() if mode == PER_SHAPE else None
        self._shapes: dict[Any, bool] = {}  # shape -> whether OmegaConf agreed with the fast result
        self.counts: Counter[str] = Counter()  # how configs were loaded, for the summary

    def load(self, path: Path, text: str | None = None) -> LoadedConfig:
        """finetune.yaml as torchtune reads it; ConfigLoadError when OmegaConf does not load it. `text` is the
        file's text (utf-8), or None when it cannot be decoded."""
        if self.yaml_loader is None:
            return self._omegaconf(path)
        parsed = parse(self.yaml_loader, text) if text is not None else None
        if parsed is None:
            return self._omegaconf(path)  # OmegaConf itself says what is wrong, or loads what the rule leaves out
        key, fast = parsed
        agreed = self._shapes.get(key)
        if agreed is None:
            try:
                loaded = self._omegaconf(path)
            except ConfigLoadError:
                self._shapes[key] = False
                raise
            self._shapes[key] = same(loaded.data, fast)
            return loaded
        if not agreed:
            return self._omegaconf(path)
        self.counts["shape"] += 1
        return LoadedConfig(path, fast)

    def _omegaconf(self, path: Path) -> LoadedConfig:
        self.counts["omegaconf"] += 1
        return load_config(path)

    def describe(self) -> str | None:
        """One line for the summary: how many configs OmegaConf loaded itself, and how many by their shape."""
        if not self.counts:
            return None
        text = f"finetune.yaml: {self.counts['omegaconf']} loaded by OmegaConf itself"
        if self.counts["shape"]:
            text += (
                f", {self.counts['shape']} by OmegaConf's YAML loader with OmegaConf's result for their shape "
                f"({len(self._shapes)} shape(s); --omegaconf every loads each with OmegaConf)"
            )
        return text
