r"""Loading every finetune.yaml of a large sweep as torchtune loads it (OmegaConf) without paying OmegaConf's node
building for each of them (about 6 ms a config). What it buys (benchmarks/bench_yamlread.py, CPU time in one process,
medians): 0.6 ms a config, OmegaConf's result included for the first of each shape, so about 6 s of a 1,000-run
verify (measured whole: 6.5 s of CPU against 12.5 s with `--omegaconf every`).

The rule (`--omegaconf per-shape`, the default above 50 runs; `--omegaconf every` runs OmegaConf itself on every
config):

1. Every config is parsed by libyaml (the parser OmegaConf's own loader uses where PyYAML has it), into nodes. A
   config it rejects, or that holds anything below, goes to OmegaConf itself, which reports the error or loads it.
2. The nodes' *shape* is computed: the keys (verbatim, in order), the nesting of mappings and lists, and for each
   scalar the class of its text: a string (quoted, or plain `[A-Za-z_/][A-Za-z0-9_./+-]*` that is not a YAML 1.1
   boolean or null such as `yes` or `null`), a decimal integer (`-12`), a decimal float (`2.0e-05`); any other
   scalar, and every string holding `$`, `?` or `\\` (the only strings OmegaConf treats specially: interpolations
   `${...}` and their escapes, the missing value `???` and its escapes), is kept verbatim with its tag and style.
3. The first config of each shape goes through OmegaConf itself (`OmegaConf.load`, then `to_container(resolve=True)`),
   and its result is compared, value and type, with the data read in step 1, interpolations resolved here (only plain
   references, `${a.b}`, to plain scalars, whole or inside a string). When they agree, the other configs of that
   shape take their own data; when OmegaConf rejects the config or the results differ, every config of that shape
   goes through OmegaConf itself.

Why a shape decides. The three classes are read alike by every YAML 1.1 and 1.2 core-schema loader, OmegaConf's
included (its loader is SafeLoader's with other floats and no timestamps): a string as its text, an integer as
`int(text)`, a float as `float(text)`, and the first config of a shape shows OmegaConf reads its class so. Any
other scalar is verbatim, so its value is the one OmegaConf gave in the first config. Past the YAML loader, what
OmegaConf does depends only on what the shape keeps: DictConfig accepts or rejects a key by its value and type and
a scalar by its type; it treats a string specially only for `${`, `???` and backslash escapes (verbatim in the
shape); resolution depends on the interpolation strings (verbatim) and, for the value it produces, on the
referenced values, which enter as `str()` of a scalar of the same type as in the config OmegaConf checked. Anything
outside that (anchors and aliases, merge keys, a key given twice, other scalar types such as dates or bytes,
another root than a mapping, a resolver call, a relative or nested interpolation, an escape, a reference to a
container or to another interpolation) sends the config to OmegaConf itself. tests/test_verify_scale.py checks
the rule against OmegaConf itself on configs of every kind this project writes, on configs changed by hand
(values, types, interpolations, escapes, YAML errors) and on random values.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import yaml

from ..inputs.yamlio import RESOLVERS

_PLAIN_SCALARS = (int, float, bool, type(None))
_SPECIAL = re.compile(r"[$?\\]")
# A plain reference: `${a.b.c}` (keys made of word characters), nothing else inside the braces.
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}")

_TAG = "tag:yaml.org,2002:"
_CLASS_TAGS = {str: _TAG + "str", int: _TAG + "int", float: _TAG + "float"}
_WORD = re.compile(r"[A-Za-z_/][A-Za-z0-9_./+-]*")
_RESERVED = frozenset(("y", "n", "yes", "no", "true", "false", "on", "off", "null"))  # in any case
_DECIMAL_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_DECIMAL_FLOAT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\.[0-9]+(?:e[-+][0-9]+)?")


class _NodeLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml's parser and composer, with this project's resolvers (only verbatim scalars are typed by them)."""

    yaml_implicit_resolvers = RESOLVERS


class _NotPlain(Exception):
    """The document holds something the shape rule does not cover: OmegaConf itself must load it."""


class _Walk:
    """The shape and the data of a document's nodes (see the module's docstring); _NotPlain outside the rule."""

    def __init__(self, loader: yaml.BaseLoader):
        self.loader = loader
        self.seen: set[int] = set()

    def node(self, node: yaml.Node) -> tuple[Any, Any]:
        if id(node) in self.seen:
            raise _NotPlain("an alias")
        self.seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if isinstance(node, yaml.SequenceNode) and node.tag == _TAG + "seq":
            items = [self.node(item) for item in node.value]
            return (list, *(s for s, _ in items)), [d for _, d in items]
        if isinstance(node, yaml.MappingNode) and node.tag == _TAG + "map":
            shape: list[Any] = [dict]
            data: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key_shape, key = self.node(key_node)
                if key in data or type(key) not in (str, int):
                    raise _NotPlain("a key given twice, or not a string or an integer")
                value_shape, data[key] = self.node(value_node)
                shape.append((key_shape, key, value_shape))
            return tuple(shape), data
        raise _NotPlain(f"a {node.tag} node")

    def scalar(self, node: yaml.ScalarNode) -> tuple[Any, Any]:
        text = node.value
        if node.style or (_WORD.fullmatch(text) and text.lower() not in _RESERVED):
            kind: type | None = str  # quoted (or a block scalar: style '"', "'", '|' or '>'; plain: None or '')
        elif _DECIMAL_INT.fullmatch(text):
            kind = int
        elif _DECIMAL_FLOAT.fullmatch(text):
            kind = float
        else:
            kind = None
        if kind is not None and node.tag == _CLASS_TAGS[kind]:  # no other tag given (`!!str 5`)
            if kind is str:
                return (str if not _SPECIAL.search(text) else (str, text)), text
            return kind, kind(text)
        value = self.loader.construct_object(node)
        if type(value) is not str and type(value) not in _PLAIN_SCALARS:
            raise _NotPlain(type(value).__name__)
        return ("verbatim", node.tag, node.style, text), value


def shape_key(value: Any) -> bytes:
    """A shape as a short key: the digest of its repr (types, keys and verbatim texts all have unambiguous
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


def parse(text: str) -> tuple[bytes, dict] | None:
    """Steps 1 and 2 of the rule for one config's text: (shape key, data with its interpolations resolved), or None
    when OmegaConf itself must load it (a YAML error, which OmegaConf then reports, or anything outside the rule)."""
    try:
        loader = _NodeLoader(text)
        try:
            node = loader.get_single_node()
            if not isinstance(node, yaml.MappingNode):
                return None
            shape, data = _Walk(loader).node(node)
        finally:
            loader.dispose()
        return shape_key(shape), resolve(data)
    except Exception:  # noqa: BLE001 - whatever it is, OmegaConf itself says it
        return None
