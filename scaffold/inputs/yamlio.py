"""Safe YAML reading that keeps where every value came from, and YAML writing for generated files.

Only `yaml.SafeLoader` machinery is used. Two deliberate differences from plain `yaml.safe_load`:
- duplicate mapping keys are an error (OmegaConf, which torchtune uses, rejects them too);
- `1e-5` is a float, as OmegaConf and YAML 1.2 read it (PyYAML's YAML 1.1 resolver makes it a string).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError, Problem, display_path

Path_ = tuple[str | int, ...]


# Bounds on what a YAML input may cost (experiment repositories arrive by `git clone` from other people): nesting
# deeper than this is refused at its line (PyYAML's composer recurses: 10,000 levels end in a RecursionError), and
# so is a document whose aliases expand it by more than this many values (a "billion laughs": a 2.6 KB file of
# nested aliases expands to billions). Real summaries and site configs nest about 5 deep and expand by a few hundred.
MAX_DEPTH = 64
MAX_ALIAS_EXPANSION = 100_000
# The tags a value may carry, explicitly or as resolved: YAML's core schema (and dates, which plain dates resolve to,
# and merge keys). Any other (`!!python/object/apply:...`, `!!set`, `!!binary`, `!foo`) is refused at its line.
_CORE = "tag:yaml.org,2002:"
ALLOWED_TAGS = frozenset(_CORE + t for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp", "merge"))


class InputLoader(yaml.SafeLoader):
    """The loader of the inputs: SafeLoader with YAML 1.2 floats, and a bound on nesting (`MAX_DEPTH`)."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Fail(
                    self.peek_event().start_mark,
                    f"nested more than {MAX_DEPTH} levels deep",
                    fix="flatten the structure: no setting of this tool nests more than a few levels",
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# Drop the YAML 1.1 float resolver and add one that also takes 1e-5 and 1E+5 (no dot needed).
InputLoader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
InputLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)

# PyYAML reads 4:00:00 as the base-60 integer 14400; we keep the scalar's source text to say so.
SEXAGESIMAL = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+$")


@dataclass
class Document:
    """A loaded YAML file: its data, and the line/column and source text of every node by path."""

    path: Path
    data: Any
    marks: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    raw: dict[Path_, str] = field(default_factory=dict)  # plain scalar source text

    @property
    def name(self) -> str:
        return display_path(self.path)

    def locate(self, path: Path_) -> tuple[int | None, int | None]:
        """Line and column (1-based) of the node at `path`, or of its nearest ancestor that exists."""
        p = tuple(path)
        while p not in self.marks and p:
            p = p[:-1]
        return self.marks.get(p, (None, None))

    def problem(self, path: Path_, message: str, fix: str | None = None, run: str | None = None) -> Problem:
        line, col = self.locate(path)
        return Problem(message, self.name, line, col, dotted(path) or None, fix, run)


def dotted(path: Path_) -> str:
    """('runs', 1, 'parameters', 'lora_rank') -> 'runs[1].parameters.lora_rank'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _shown_tag(tag: str) -> str:
    return "!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag


def _check_tag(node: yaml.Node, path: Path_) -> None:
    if node.tag not in ALLOWED_TAGS:
        raise _Fail(
            node,
            f"the tag {_shown_tag(node.tag)} is not read here",
            dotted(path),
            "remove the tag: only plain YAML values are read (text, numbers, true/false, null, lists and mappings)",
        )


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a document whose aliases expand it by more than MAX_ALIAS_EXPANSION values, or refer to a node that
    contains them, before anything is constructed: counted once per distinct node, whatever they expand to."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()
    aliased: dict[int, yaml.Node] = {}

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            aliased.setdefault(key, node)
            return sizes[key]
        if key in open_:
            raise _Fail(
                node,
                "an alias refers to a node that contains it (an endless value)",
                fix="replace the alias (*name) inside its own anchor (&name) with the value itself",
            )
        open_.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(v) for v in node.value)
        open_.discard(key)
        sizes[key] = total
        return total

    expanded = size(root)
    if aliased and expanded - len(sizes) > MAX_ALIAS_EXPANSION:
        first = min(aliased.values(), key=lambda n: (n.start_mark.line, n.start_mark.column))
        raise _Fail(
            first,
            f"aliases expand this document to {expanded:,} values from {len(sizes):,} (more than "
            f"{MAX_ALIAS_EXPANSION:,} extra): not read",
            fix="write the values out, or use fewer nested aliases (*name)",
        )


def _construct(node: yaml.Node, path: Path_, doc: Document, ctor: yaml.constructor.SafeConstructor) -> Any:
    doc.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    _check_tag(node, path)
    if isinstance(node, yaml.MappingNode):
        ctor.flatten_mapping(node)  # merge keys (<<)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            _check_tag(key_node, path)
            key = ctor.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise _Fail(key_node, "a mapping key must be a plain value")
            if key in out:
                first = doc.marks.get(path + (key,), (None, None))[0]
                raise _Fail(
                    key_node,
                    f"duplicate key '{key}' (first defined on line {first})",
                    dotted(path + (key,)),
                    f"keep one '{key}': delete line {first} or line {key_node.start_mark.line + 1}",
                )
            out[key] = _construct(value_node, path + (key,), doc, ctor)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, path + (i,), doc, ctor) for i, item in enumerate(node.value)]
    if isinstance(node, yaml.ScalarNode) and node.style is None:
        doc.raw[path] = node.value
    value = ctor.construct_object(node, deep=True)
    if isinstance(value, float) and not math.isfinite(value):
        raise _Fail(
            node,
            f"{node.value} is not a finite number",
            dotted(path),
            "give a number: NaN and infinities are no setting's value (quote it if you mean the text)",
        )
    return value


class _Fail(Exception):
    def __init__(self, node: yaml.Node | yaml.Mark, message: str, field: str | None = None, fix: str | None = None):
        super().__init__(message)
        self.mark = getattr(node, "start_mark", node)
        self.message = message
        self.field = field or None
        self.fix = fix


def _syntax_fix(message: str) -> str:
    """How to repair the commonest YAML syntax errors."""
    if "'\\t'" in message:
        return "indent with spaces, not tabs"
    return "check the indentation, quotes and brackets on this line and the lines above it"


def parse_yaml(text: str, path: Path) -> Document:
    """Parse YAML text safely; raise InputError with line and column on any syntax problem."""
    doc = Document(Path(path), None)
    try:
        loader = InputLoader(text)
        try:
            node = loader.get_single_node()
            if node is not None:
                _check_expansion(node)
            doc.data = None if node is None else _construct(node, (), doc, loader)
            if node is None:
                doc.marks[()] = (1, 1)  # an empty file: its problems are on line 1
        finally:
            loader.dispose()
    except _Fail as e:
        mark = e.mark
        raise InputError([Problem(e.message, doc.name, mark.line + 1, mark.column + 1, e.field, e.fix)]) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        msg = " ".join(str(x) for x in (e.context, e.problem) if x) or "not valid YAML"
        raise InputError([Problem(f"not valid YAML: {msg}", doc.name, line, col, fix=_syntax_fix(msg))]) from None
    except yaml.YAMLError as e:
        raise InputError([Problem(f"not valid YAML: {e}", doc.name, fix=_syntax_fix(str(e)))]) from None
    return doc


def load_yaml(path: Path) -> Document:
    """Read and parse a YAML file; unreadable files and bad encodings are InputErrors too."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        # As a text-mode read does: universal newlines.
        text = data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
    except FileNotFoundError:
        raise InputError([Problem("file not found", display_path(path))]) from None
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        problem = Problem(
            f"not UTF-8 text ({e.reason} at byte {e.start})", display_path(path), line, fix="save the file as UTF-8"
        )
        raise InputError([problem]) from None
    except OSError as e:
        raise InputError([Problem(f"cannot read: {e.strerror}", display_path(path))]) from None
    return parse_yaml(text, path)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that never emits aliases, indents lists under their key, and quotes every string that the
    reader (ours, and OmegaConf's) would take for another type: it shares the loader's resolvers."""

    yaml_implicit_resolvers = InputLoader.yaml_implicit_resolvers

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
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def dump_yaml(data: Any) -> str:
    """Block-style YAML with keys in the given order, `null` for None and no aliases."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=10_000)


# Rendering thousands of runs calls these per value, and PyYAML's pure-Python emitter costs about 0.5 ms a call.
# The fast path writes the common values directly, exactly as PyYAML would (tests/test_yamlio.py compares
# both on many values); anything else goes through PyYAML.
_PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./+-]*\Z")
_RESOLVER = yaml.resolver.Resolver()
_RESOLVER.yaml_implicit_resolvers = InputLoader.yaml_implicit_resolvers  # e.g. "1e-5" is a float: quote it
_STR = "tag:yaml.org,2002:str"


_FAST_CACHE: dict[tuple[type, Any], str | None] = {}


def _fast_scalar(value: Any) -> str | None:
    """The plain-style YAML text of a simple value, or None when PyYAML must decide (memoised: a sweep repeats
    most values in every run)."""
    key = (type(value), repr(value) if type(value) is float else value)  # repr: 0.0 and -0.0 differ
    try:
        return _FAST_CACHE[key]
    except KeyError:
        pass
    except TypeError:  # unhashable
        return None
    text = _FAST_CACHE[key] = _fast_scalar_uncached(value)
    return text


def _fast_scalar_uncached(value: Any) -> str | None:
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


def _fast_flow(value: Any) -> str | None:
    if type(value) is list:
        items = [_fast_scalar(v) for v in value]
        return None if None in items else "[" + ", ".join(items) + "]"  # type: ignore[arg-type]
    return _fast_scalar(value)


_LINE_CACHE: dict[tuple, str] = {}


def dump_flat(data: dict[str, Any]) -> str:
    """`dump_yaml` of a mapping of simple values (setup_finetune.yaml), fast and byte-identical to it. The line of
    each scalar setting is memoised: a sweep repeats most of them in every run."""
    if not data:
        return dump_yaml(data)
    lines = []
    cache = _LINE_CACHE
    for key, value in data.items():
        kind = type(value)
        if kind is not list and kind is not dict:
            memo = (key, kind, repr(value) if kind is float else value)  # repr: 0.0 and -0.0 differ
            try:
                lines.append(cache[memo])
                continue
            except KeyError:
                pass
            except TypeError:  # unhashable
                memo = None
        else:
            memo = None
        if type(key) is not str or _fast_scalar(key) != key:  # a key that YAML would quote ('no', '1')
            return dump_yaml(data)
        if kind is list and value:
            lines.append(f"{key}:")
            lines += [f"  - {_fast_scalar(v) or yaml_scalar(v)}" for v in value]
        elif kind is dict and value:
            if any(type(k) is not str or _fast_scalar(k) != k for k in value):
                return dump_yaml(data)
            lines.append(f"{key}:")
            lines += [f"  {k}: {_fast_scalar(v) or yaml_scalar(v)}" for k, v in value.items()]
        else:
            line = f"{key}: {'[]' if value == [] else '{}' if value == {} else yaml_scalar(value)}"
            lines.append(line)
            if memo is not None:
                if len(cache) > 100_000:  # bounded: run names and paths are new in every run
                    cache.clear()
                cache[memo] = line
    return "\n".join(lines) + "\n"


_SCALAR_CACHE: dict[tuple[type, Any], str] = {}


def yaml_scalar(value: Any) -> str:
    """One value as a YAML flow scalar/collection on one line (used by the templates)."""
    fast = _fast_flow(value)
    if fast is not None:
        return fast
    key = (
        type(value),
        tuple(map(repr, value)) if type(value) is list else repr(value) if type(value) is float else value,
    )
    try:
        return _SCALAR_CACHE[key]  # prompts repeat in every run of a sweep
    except KeyError:
        pass
    except TypeError:  # unhashable: nothing to remember it by
        return _pyyaml_flow(value)
    text = _SCALAR_CACHE[key] = _pyyaml_flow(value)
    return text


def _pyyaml_flow(value: Any) -> str:
    text = yaml.dump(value, Dumper=_Dumper, default_flow_style=True, allow_unicode=True, width=10_000).strip()
    for end in ("\n...", "..."):
        text = text.removesuffix(end).rstrip()
    return text


_CLoaderBase = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _FastLoader(_CLoaderBase):  # type: ignore[valid-type,misc]
    """libyaml's parser with our (YAML 1.2 float) resolvers: for re-reading thousands of generated files. A key
    given twice in one mapping is an error, as in OmegaConf's loader (torchtune's), which PyYAML allows."""

    yaml_implicit_resolvers = InputLoader.yaml_implicit_resolvers

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping",
                        node.start_mark,
                        f"found duplicate key {key_node.value}",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_REFERENCE = re.compile(r"(\\*)\$\{(?:([A-Za-z_][A-Za-z0-9_.]*)\})?")


def load_generated_config(text: str) -> Any:
    r"""A generated finetune.yaml as torchtune sees it, fast: interpolations of other keys (`${output_dir}`)
    resolved and escaped ones (`\${`) unescaped, as OmegaConf does for the forms this project writes.
    (The verification suite loads every file with OmegaConf itself.)"""
    return resolve_interpolations(yaml.load(text, Loader=_FastLoader))


_WHOLE = object()


def resolve_interpolations(data: Any, value: Any = _WHOLE) -> Any:
    """The second step of `load_generated_config`: `value` (by default all of `data`, the document as libyaml
    read it) with its interpolations resolved against `data`. Returns new dicts and lists; `data` is not changed.
    (scaffold.checks.yamlread resolves the documents it assembles from parts of others with this too.)"""

    def lookup(dotted: str) -> Any:
        node = data
        for part in dotted.split("."):
            node = node[part]
        return node

    def resolve(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        if not isinstance(value, str) or "${" not in value:
            return value
        whole = _REFERENCE.fullmatch(value)
        if whole and whole.group(2) and not whole.group(1):
            return resolve(lookup(whole.group(2)))

        def sub(m: re.Match) -> str:
            slashes, ref = m.group(1), m.group(2)
            if len(slashes) % 2:  # escaped: \${ -> ${ (and each \\ before it -> \)
                return slashes[: len(slashes) // 2] + "${" + (f"{ref}}}" if ref else "")
            if ref is None:
                return m.group(0)
            return slashes[: len(slashes) // 2] + str(resolve(lookup(ref)))

        return _REFERENCE.sub(sub, value)

    return resolve(data if value is _WHOLE else value)
