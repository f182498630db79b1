"""Reading the user's YAML inputs (the summary, the site config) safely, keeping where every value came from.

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

# How plain scalars are typed here, and by the writer (yamlemit), which quotes a string read as another type.
RESOLVERS = InputLoader.yaml_implicit_resolvers


class _LibyamlLoader(getattr(yaml, "CSafeLoader", InputLoader)):  # type: ignore[misc]
    """libyaml's parser and composer (C) with the same resolvers and constructor: the nodes InputLoader composes
    in pure Python, about ten times faster. Used only for documents it reads without an error within MAX_DEPTH
    (`_compose`): any other goes to InputLoader, whose errors are the ones reported."""

    yaml_implicit_resolvers = RESOLVERS


_STARTS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_ENDS = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
_LEAVES = (yaml.ScalarEvent, yaml.AliasEvent)


def _apart_in_flow(event: yaml.ScalarEvent) -> bool:
    """Whether a plain scalar of a flow collection is one PyYAML reads apart from libyaml: empty, or holding `?`."""
    return not event.value or "?" in event.value


def _libyaml_reads(text: str) -> bool:
    """Whether libyaml parses the whole text without an error, no node deeper than MAX_DEPTH (found from its events,
    one after the other: libyaml's composer recurses in C, where a deep document would overflow the stack), and
    none of what the two read apart: an explicit tag (`!`), and in a flow collection (`[...]`, `{...}`) a plain
    scalar that is empty or holds a `?` (PyYAML refuses it or marks it elsewhere)."""
    loader = _LibyamlLoader(text)
    try:
        flow: list[bool] = []  # of each open collection: whether it is a flow one
        while loader.check_event():
            event = loader.get_event()
            if getattr(event, "tag", None) is not None:
                return False
            if isinstance(event, _STARTS):
                flow.append(bool(event.flow_style) or bool(flow and flow[-1]))
            elif isinstance(event, _ENDS):
                flow.pop()
            elif (
                isinstance(event, yaml.ScalarEvent) and flow and flow[-1] and not event.style and _apart_in_flow(event)
            ):
                return False
            if len(flow) >= MAX_DEPTH or (len(flow) + 1 >= MAX_DEPTH and isinstance(event, _LEAVES)):
                return False
        return True
    except yaml.YAMLError:
        return False
    finally:
        loader.dispose()


# Where the two are known to differ (tests/test_yamlio.py looks for more), PyYAML reads: libyaml takes a tab where
# PyYAML refuses it and a comment right after a block scalar's `|` or `>`, counts a byte order mark inside the text
# as a column, and marks an empty value after an explicit key (`? a`) or a document marker on the next line.
_PYYAML_ONLY = re.compile(
    r"[\t\ufeff]|[|>][-+0-9]*#|(?:^|[\s\[{,])\?(?:\s|$)|(?:^|[\r\x85\u2028\u2029])(?:---|\.\.\.)", re.M
)


def _compose(text: str) -> tuple[yaml.Node | None, yaml.SafeLoader]:
    """The document's node graph, and the loader that composed it (whose constructor builds the values): libyaml's
    where it reads the document, else InputLoader's, which raises the error to report."""
    if _LibyamlLoader is not InputLoader and not _PYYAML_ONLY.search(text) and _libyaml_reads(text):
        loader = _LibyamlLoader(text)
        try:
            return loader.get_single_node(), loader
        except yaml.YAMLError:  # e.g. two documents, an undefined alias: InputLoader says it
            loader.dispose()
    loader = InputLoader(text)
    try:
        return loader.get_single_node(), loader
    except BaseException:
        loader.dispose()
        raise


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
    if isinstance(node, yaml.ScalarNode) and not node.style:  # plain: None (PyYAML) or '' (libyaml)
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
        node, loader = _compose(text)
        try:
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
