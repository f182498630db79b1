"""Safe YAML reading that keeps where every value came from, and YAML writing for generated files.

Only `yaml.SafeLoader` machinery is used. Two deliberate differences from plain `yaml.safe_load`:
- duplicate mapping keys are an error (OmegaConf, which torchtune uses, rejects them too);
- `1e-5` is a float, as OmegaConf and YAML 1.2 read it (PyYAML's YAML 1.1 resolver makes it a string).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError, Problem, display_path

Path_ = tuple[str | int, ...]


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats."""


# Drop the YAML 1.1 float resolver and add one that also takes 1e-5 and 1E+5 (no dot needed).
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
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


def _construct(node: yaml.Node, path: Path_, doc: Document, ctor: yaml.constructor.SafeConstructor) -> Any:
    doc.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        ctor.flatten_mapping(node)  # merge keys (<<)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = ctor.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise _Fail(key_node, "a mapping key must be a plain value")
            if key in out:
                first = doc.marks.get(path + (key,), (None, None))[0]
                raise _Fail(key_node, f"duplicate key '{key}' (first defined on line {first})")
            out[key] = _construct(value_node, path + (key,), doc, ctor)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, path + (i,), doc, ctor) for i, item in enumerate(node.value)]
    if isinstance(node, yaml.ScalarNode) and node.style is None:
        doc.raw[path] = node.value
    return ctor.construct_object(node, deep=True)


class _Fail(Exception):
    def __init__(self, node: yaml.Node, message: str):
        super().__init__(message)
        self.node = node
        self.message = message


def parse_yaml(text: str, path: Path) -> Document:
    """Parse YAML text safely; raise InputError with line and column on any syntax problem."""
    doc = Document(Path(path), None)
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            doc.data = None if node is None else _construct(node, (), doc, loader)
        finally:
            loader.dispose()
    except _Fail as e:
        mark = e.node.start_mark
        raise InputError([Problem(e.message, doc.name, mark.line + 1, mark.column + 1)]) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        msg = " ".join(str(x) for x in (e.context, e.problem) if x) or "not valid YAML"
        raise InputError([Problem(f"not valid YAML: {msg}", doc.name, line, col)]) from None
    except yaml.YAMLError as e:
        raise InputError([Problem(f"not valid YAML: {e}", doc.name)]) from None
    return doc


def load_yaml(path: Path) -> Document:
    """Read and parse a YAML file; unreadable files and bad encodings are InputErrors too."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError([Problem("file not found", display_path(path))]) from None
    except UnicodeDecodeError as e:
        raise InputError([Problem(f"not UTF-8 text ({e.reason} at byte {e.start})", display_path(path))]) from None
    except OSError as e:
        raise InputError([Problem(f"cannot read: {e.strerror}", display_path(path))]) from None
    return parse_yaml(text, path)


class _Dumper(yaml.SafeDumper):
    """SafeDumper that never emits aliases and indents lists under their key."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # Multi-line strings as quoted scalars keep every byte, including trailing newlines.
    style = '"' if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def dump_yaml(data: Any) -> str:
    """Block-style YAML with keys in the given order, `null` for None and no aliases."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True, width=10_000)


def yaml_scalar(value: Any) -> str:
    """One value as a YAML flow scalar/collection on one line (used by the templates)."""
    text = yaml.dump(value, Dumper=_Dumper, default_flow_style=True, allow_unicode=True, width=10_000)
    text = text.strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")]
    if text.endswith("..."):
        text = text[:-3].rstrip()
    return text
