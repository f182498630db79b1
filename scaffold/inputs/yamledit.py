"""Changing values in a YAML document's text in place, keeping everything else as written (comments, order,
quoting, blank lines): `scaffold setup-finetune` writes a run's change into its entry of experiment_summary.yaml.

Only the span of each value changed is rewritten, and a missing key is added as one new line in its block mapping
(or as one more entry of a flow mapping). The result is read back: when it does not hold exactly the original data
with the changes made, nothing is returned but the reason (EditError).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError
from .yamlio import InputLoader, Path_, dotted, parse_yaml, yaml_scalar


class EditError(Exception):
    """The change cannot be written into the text safely (the message says where and why)."""


def set_values(text: str, changes: list[tuple[Path_, Any]], name: str = "document") -> str:
    """`text` with the value at each path set (paths of mapping keys and list indices; a missing last key, or a
    missing mapping on the way, is added). Raises EditError when a change cannot be made or read back exactly."""
    before = parse_yaml(text, Path(name)).data
    out = text
    for path, value in changes:
        out = _set(out, tuple(path), value)
    expected = copy.deepcopy(before)
    for path, value in changes:
        _put(expected, tuple(path), value)
    try:
        after = parse_yaml(out, Path(name)).data
    except InputError as e:
        raise EditError(f"the edited {name} would not be valid YAML ({e.problems[0].message})") from None
    if after != expected or not _same_types(after, expected):
        raise EditError(f"the edited {name} would not read back as written")
    return out


def _put(data: Any, path: Path_, value: Any) -> None:
    node = data
    for part in path[:-1]:
        if isinstance(node, dict) and (part not in node or node[part] is None):
            node[part] = {}
        node = node[part]
    node[path[-1]] = copy.deepcopy(value)


def _same_types(a: Any, b: Any) -> bool:
    """Equal data whose scalars also have the same types (1 and 1.0 and True compare equal in Python)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return all(_same_types(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return all(_same_types(x, y) for x, y in zip(a, b, strict=True))
    return True


def _compose(text: str) -> yaml.Node:
    loader = InputLoader(text)
    try:
        node = loader.get_single_node()
    finally:
        loader.dispose()
    if node is None:
        raise EditError("the document is empty")
    return node


def _child(node: yaml.Node, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode) and isinstance(part, str):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == part:
                return value
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return node.value[part]
    return None


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def _key(key: str) -> str:
    return key if _PLAIN_KEY.match(key) and yaml_scalar(key) == key else json.dumps(key, ensure_ascii=False)


def flow(value: Any) -> str:
    """A value as YAML that reads back the same in any context, flow or block, on one line."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(str(k))}: {flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(flow(v) for v in value) + "]"
    return yaml_scalar(value)


def _block(value: Any) -> str:
    """A value as it is written after `key: ` in a block mapping (plain where YAML reads it back the same)."""
    if isinstance(value, str):
        plain = yaml_scalar(value)
        return plain if "\n" not in plain else flow(value)
    return flow(value)


def _nested(keys: Path_, value: Any) -> Any:
    for key in reversed(keys[1:]):
        value = {key: value}
    return value


def _set(text: str, path: Path_, value: Any) -> str:
    root = _compose(text)
    node, parents = root, [root]
    depth = 0
    for part in path:
        child = _child(node, part)
        if child is None:
            break
        node = child
        parents.append(node)
        depth += 1
    if depth == len(path):  # the value exists: rewrite its span
        start, end = node.start_mark.index, node.end_mark.index
        while end > start and text[end - 1] in " \n":
            end -= 1  # (a block collection's span runs to the next line)
        in_flow = bool(getattr(parents[-2], "flow_style", False))
        quoted = isinstance(node, yaml.ScalarNode) and node.style in ('"', "'") and isinstance(value, str)
        rendered = flow(value) if in_flow or quoted or isinstance(node, yaml.CollectionNode) else _block(value)
        return text[:start] + rendered + text[end:]
    rest = path[depth:]
    if not all(isinstance(k, str) for k in rest):
        raise EditError(f"{dotted(path)}: no such list item")
    key, new = rest[0], _nested(rest, value)
    if isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null", "Null", "NULL"):
        start, end = node.start_mark.index, node.end_mark.index
        rendered = "{" + f"{_key(key)}: {flow(new)}" + "}"
        if start == end and start > 0 and text[start - 1] == ":":
            rendered = " " + rendered
        return text[:start] + rendered + text[end:]
    if not isinstance(node, yaml.MappingNode):
        raise EditError(f"{dotted(path[:depth]) or 'the document'} is not a mapping")
    if node.flow_style or not node.value:
        close = node.end_mark.index - 1
        if text[close] != "}":
            raise EditError(f"{dotted(path[:depth])}: cannot find the end of its mapping")
        sep = ", " if node.value else ""
        return text[:close] + f"{sep}{_key(key)}: {flow(new)}" + text[close:]
    indent = " " * node.value[0][0].start_mark.column
    line = _lines(key, new, indent)
    insert_at = _after_last_entry(text, node)
    prefix = "" if insert_at == 0 or text[insert_at - 1] == "\n" else "\n"
    return text[:insert_at] + prefix + line + text[insert_at:]


def _after_last_entry(text: str, mapping: yaml.MappingNode) -> int:
    """Where a new entry of a block mapping goes: at the start of the line after its last value (after a comment on
    that line, before blank lines that follow)."""
    last: yaml.Node = mapping.value[-1][1]
    while isinstance(last, yaml.CollectionNode) and not last.flow_style and last.value:
        last = last.value[-1][1] if isinstance(last, yaml.MappingNode) else last.value[-1]
    end = last.end_mark.index
    if isinstance(last, yaml.ScalarNode) and last.style in ("|", ">"):
        at = end  # a block scalar runs to the start of the line after it, blank lines included
    else:
        newline = text.find("\n", end)
        return len(text) if newline < 0 else newline + 1
    while at >= 2 and text[at - 2 : at] == "\n\n":
        at -= 1
    return at


def _lines(key: str, value: Any, indent: str) -> str:
    if isinstance(value, dict) and value:
        return f"{indent}{_key(key)}:\n" + "".join(_lines(k, v, indent + "  ") for k, v in value.items())
    return f"{indent}{_key(key)}: {_block(value)}\n"
