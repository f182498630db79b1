r"""Reading many nearly identical generated configs fast: `IncrementalConfigReader.read_many(texts)` returns, for
every text, exactly what `load_generated_config(text)` returns (or the exception it raises), at a small
fraction of the cost when the texts differ from one another in a few one-line scalars, as the runs of a sweep do.

What it buys (generate's self-check reads every config it writes with it; benchmarks/bench_yamlread.py, CPU time
in one process, medians of 5): 0.05 ms a config against 0.45 to 0.56 ms for a whole libyaml parse and 0.6 ms by
shape (and OmegaConf's import, about 50 ms), so 0.4 to 0.5 s of a 1,000-run generate, 0.04 s of a 100-run one.

How. A few texts are parsed whole by libyaml (`_FastLoader`, as `load_generated_config` parses them) and
kept as references, with their lines and, from libyaml's own node positions, which lines are
*substitutable*: a line `<indentation><key>: <value>` holding exactly one entry of a block mapping (the
indentation may hold the `- ` of block sequence entries), its plain key a string, its value a scalar that begins
right after `": "`, ends at the end of the line and is written in a safe form (below), the next non-blank line
indented no deeper than the key. Full-line comments outside every multi-line scalar are kept too. Another text
with as many lines as a reference, that differs from it only on substitutable lines, in the value after the same
`<indentation><key>: `, with a new value in
the safe form, and on comment lines, which stay comment lines at the same indentation, gets the reference's
data with the values at those keys' paths replaced by the new values, parsed by libyaml too (all of a call's new
values in one document `- value` per line, remembered across calls), then resolved by
`resolve_interpolations`, the second step of `load_generated_config`. Anything else is parsed whole
(and may become a reference: up to `MAX_REFERENCES`, the least recently used goes).

Why that is the same answer. libyaml's scanner reads a text left to right. Safe values are single-line scalars
that cannot contain a comment, a `: ` (or end with `:`), a flow or block indicator, an anchor, alias or tag, an
escape, a line break or a character libyaml rejects: plain `[A-Za-z0-9_./+-][A-Za-z0-9_./+:-]*` (not a lone
`-`, not ending with `:`), or printable ASCII in "..." or '...' without the quote, `\`, `$`, `{` or `}`.
Written after `<key>: ` in a block mapping, such a value is one scalar token that ends at the end of its line,
and the scanner leaves it in the same state whichever safe value (plain or quoted) was there: a plain value
could only go on to the next lines if the next non-blank line were indented deeper than the mapping's keys,
which is excluded; and a comment line, at the same indentation, is skipped whatever it says. So, line by line,
the two texts give the same tokens but for the values of the changed lines, hence the same events and nodes
but for those scalars, whose tags are resolved from their text alone: as the same text is resolved in
`- <value>` (a block sequence entry: a plain scalar, the same implicit-tag lookup). Paths come from the
reference's node graph, not from guessing by indentation, and each is checked: the reference's data at the
path must equal, in type and value, its line's value parsed the same way. Nothing in or below a mapping that
repeats a key is substitutable (yaml.load keeps the last value). References with aliases, merge keys (`<<`,
which copy values elsewhere), line breaks other than `\n`, a BOM, or values other than dicts, lists and immutable
scalars are not used (their texts are still read right, whole).
Interpolations: safe values cannot hold `${`, so the interpolated strings are the reference's; each is resolved
by `resolve_interpolations` against the new (unresolved) data, as `load_generated_config` resolves it; if one
fails, the text is read by `load_generated_config` itself, so errors are always its own.

Copies: each result is a fresh tree of dicts and lists (the reference's containers are copied one by one with
`.copy()`, in a precomputed order, and never mutated); the leaves are immutable scalars, shared.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from itertools import compress
from operator import ne
from typing import Any

import yaml

from ..inputs.yamlio import RESOLVERS

_CLoaderBase = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _FastLoader(_CLoaderBase):  # type: ignore[valid-type,misc]
    """libyaml's parser with our (YAML 1.2 float) resolvers: for re-reading thousands of generated files. A key
    given twice in one mapping is an error, as in OmegaConf's loader (torchtune's), which PyYAML allows."""

    yaml_implicit_resolvers = RESOLVERS

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
    (The reader below resolves the documents it assembles from parts of others with this too.)"""

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


MAX_REFERENCES = 8
MAX_MEMO = 200_000  # remembered scalar parses; forgotten between calls when there are more

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_SCALARS = frozenset({str, int, float, bool, type(None), bytes, datetime.date, datetime.datetime})

_PLAIN = r"(?:[A-Za-z0-9_./+]|-(?=[A-Za-z0-9_./+:-]))[A-Za-z0-9_./+:-]*(?<!:)"
_DOUBLE = r'"[ !#%-\[\]-z|~]*"'  # printable ASCII but " $ \ { }
_SINGLE = r"'[ -#%&(-\[\]-z|~]*'"  # printable ASCII but ' $ \ { }
_SAFE_VALUE = re.compile(f"{_PLAIN}|{_DOUBLE}|{_SINGLE}")
# After the '#' of a comment: printable characters that are not line breaks (no \r, NEL, LS, PS, BOM).
_COMMENT_TEXT = re.compile("[\t -~\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]*")
_COMMENT_LINE = re.compile(r" *#")
_LINE_START = re.compile(r"(?: |-(?= ))*")  # before a key: indentation, and `- ` of block sequence entries
_ODD_BREAKS = re.compile("[\r\x85\u2028\u2029\ufeff]")

_FAILED = object()  # a scalar text libyaml does not read as one scalar on its own


class _NotReference(Exception):
    """The text is read right, but not kept as a reference."""


@dataclass(eq=False)
class _Reference:
    """A text parsed whole. Its containers (dicts and lists) are numbered in document order, 0 the root; a
    copy of its data is made by `copy()` of each in turn (`plan`: each one's parent number and key)."""

    lines: list[str]
    data: Any  # as libyaml read it, unresolved; never mutated
    plan: list[tuple[int, Any]] | None  # None: data is a scalar
    containers: dict[tuple, int]  # path -> number
    # line -> (length of prefix, prefix `<spaces><key>: `, parent container number, key)
    keys: dict[int, tuple[int, str, int, Any]] = field(default_factory=dict)
    comments: dict[int, str] = field(default_factory=dict)  # line -> its spaces and '#'
    sites: list[tuple[int | None, Any, str]] = field(default_factory=list)  # (parent number, key, text with '${')


def _at(data: Any, path: tuple) -> Any:
    for key in path:
        data = data[key]
    return data


def _outcome(text: Any) -> Any:
    try:
        return load_generated_config(text)
    except Exception as e:  # returned, as read_many promises
        return e


class IncrementalConfigReader:
    """`load_generated_config` for many texts, each one's answer unchanged, fast when they are alike."""

    def __init__(self, max_references: int = MAX_REFERENCES) -> None:
        self.max_references = max_references
        self._refs: list[_Reference] = []  # most recently used first
        self._memo: dict[str, Any] = {}  # scalar text -> its value (or _FAILED)
        self.stats = {"whole": 0, "incremental": 0}

    def read(self, text: str) -> Any:
        """load_generated_config(text), or the exception it raises."""
        return self.read_many([text])[0]

    def read_many(self, texts: list[str]) -> list[Any | Exception]:
        """For each text: load_generated_config(text), or the exception it raises (a yaml.YAMLError, KeyError
        from a bad interpolation, ...)."""
        if len(self._memo) > MAX_MEMO:
            self._memo.clear()
        results: list[Any] = [None] * len(texts)
        pending: list[tuple[int, _Reference, list]] = []
        new_scalars: dict[str, None] = {}
        memo = self._memo
        for n, text in enumerate(texts):
            found = self._match(text) if type(text) is str else None
            if found is None:
                results[n] = self._whole(text)
                continue
            ref, subs = found
            for _, _, value in subs:
                if value not in memo:
                    new_scalars[value] = None
            pending.append((n, ref, subs))
        self._parse_scalars(list(new_scalars))
        for n, ref, subs in pending:
            results[n] = self._assemble(texts[n], ref, subs)
        return results

    # -- matching a text against the references

    def _match(self, text: str) -> tuple[_Reference, list] | None:
        lines = text.split("\n")
        count = len(lines)
        safe, comment = _SAFE_VALUE.fullmatch, _COMMENT_TEXT.fullmatch
        for ref in self._refs:
            if len(ref.lines) != count:
                continue
            subs = []
            for i in compress(range(count), map(ne, lines, ref.lines)):
                line = lines[i]
                entry = ref.keys.get(i)
                if entry is not None:
                    start = entry[0]
                    if line.startswith(entry[1]) and safe(line, start):
                        subs.append((entry[2], entry[3], line[start:]))
                        continue
                    break
                start = ref.comments.get(i)
                if start is None or not line.startswith(start) or not comment(line, len(start)):
                    break
            else:
                if ref is not self._refs[0]:
                    self._refs.remove(ref)
                    self._refs.insert(0, ref)
                return ref, subs
        return None

    def _assemble(self, text: str, ref: _Reference, subs: list) -> Any:
        memo = self._memo
        if ref.plan is None:
            return resolve_interpolations(ref.data)  # a scalar document (no substitutable lines)
        nodes = [ref.data.copy()]
        append = nodes.append
        for parent, key in ref.plan:
            node = nodes[parent][key] = nodes[parent][key].copy()
            append(node)
        for parent, key, value in subs:
            parsed = memo.get(value, _FAILED)
            if parsed is _FAILED:
                self.stats["whole"] += 1
                return _outcome(text)
            nodes[parent][key] = parsed
        data = nodes[0]
        if ref.sites:
            try:  # all of them against the data as read, before any is replaced
                resolved = resolve_interpolations(data, [value for _, _, value in ref.sites])
            except Exception:  # its own error, from its own reading
                self.stats["whole"] += 1
                return _outcome(text)
            for (parent, key, _), value in zip(ref.sites, resolved, strict=True):
                nodes[parent][key] = value
        self.stats["incremental"] += 1
        return data

    # -- scalars, parsed by libyaml in one document

    def _parse_scalars(self, texts: list[str]) -> None:
        memo = self._memo
        texts = [t for t in texts if t not in memo]
        if not texts:
            return
        values = _load_sequence(texts)
        if values is None:  # one of them fails: each on its own, to know which
            values = [v[0] if v is not None else _FAILED for v in (_load_sequence([t]) for t in texts)]
        for t, v in zip(texts, values, strict=True):
            memo[t] = v if type(v) in _SCALARS else _FAILED

    # -- whole texts, and references

    def _whole(self, text: Any) -> Any:
        self.stats["whole"] += 1
        if type(text) is not str:
            return _outcome(text)
        try:
            data, ref = self._parse_reference(text)
        except Exception:  # the text's own error, or one this module does not reproduce: let the original say
            return _outcome(text)
        try:
            result = resolve_interpolations(data)
        except Exception:
            result = _outcome(text)
        if ref is not None:
            self._refs.insert(0, ref)
            del self._refs[self.max_references :]
        return result

    def _parse_reference(self, text: str) -> tuple[Any, _Reference | None]:
        """The text's data as `yaml.load(text, Loader=_FastLoader)` reads it, and a reference when it may be one."""
        loader = _FastLoader(text)
        try:
            node = loader.get_single_node()
            try:
                graph = _Graph(node) if node is not None and not _ODD_BREAKS.search(text) else None
            except (_NotReference, RecursionError):
                graph = None
            data = None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
        if graph is None or self.max_references <= 0:
            return data, None
        try:
            return data, self._reference(text, data, graph)
        except (_NotReference, RecursionError):
            return data, None

    def _reference(self, text: str, data: Any, graph: _Graph) -> _Reference:
        lines = text.split("\n")
        sites: list[tuple[tuple, str]] = []
        containers: dict[tuple, int] = {}
        plan: list[tuple[int, Any]] = []
        _number(data, (), containers, plan, sites)
        if not containers:
            return _Reference(lines, data, None, containers)  # a scalar: nothing to substitute
        ref = _Reference(lines, data, plan, containers)
        ref.sites = [(containers[path[:-1]], path[-1], value) for path, value in sites]
        site_paths = {path for path, _ in sites}

        # Indentation of each line's first character, looking past blank lines (spaces only): -1 at the end.
        next_lead = [-1] * len(lines)
        lead = -1
        for i in range(len(lines) - 1, -1, -1):
            next_lead[i] = lead
            line = lines[i]
            stripped = line.lstrip(" ")
            if stripped:
                lead = len(line) - len(stripped) if not stripped[0].isspace() else 1 << 30

        candidates = []
        for line_no, path, key, column, start, end in graph.entries:
            line = lines[line_no]
            prefix = line[:column] + key + ": "
            if (
                _LINE_START.fullmatch(line, 0, column)
                and line.startswith(prefix)
                and start == len(prefix)
                and end == len(line)
                and _SAFE_VALUE.fullmatch(line, len(prefix))
                and next_lead[line_no] <= column
                and path + (key,) not in site_paths
            ):
                candidates.append((line_no, prefix, path, key))
        self._parse_scalars([lines[i][len(p) :] for i, p, _, _ in candidates])
        for line_no, prefix, path, key in candidates:
            want = self._memo.get(lines[line_no][len(prefix) :], _FAILED)
            try:
                have = _at(data, path)[key]
            except (KeyError, IndexError, TypeError):
                continue
            if want is not _FAILED and type(have) is type(want) and have == want:
                ref.keys[line_no] = (len(prefix), prefix, containers[path], key)

        for i, line in enumerate(lines):
            m = _COMMENT_LINE.match(line)
            if m and i not in graph.covered:
                ref.comments[i] = m.group(0)
        return ref


def _load_sequence(texts: list[str]) -> list | None:
    """libyaml's values of `- text` lines, or None when that document does not read as one value per text."""
    try:
        values = yaml.load("".join(f"- {t}\n" for t in texts), Loader=_FastLoader)
    except Exception:
        return None
    return values if type(values) is list and len(values) == len(texts) else None


def _number(value: Any, path: tuple, containers: dict, plan: list, sites: list) -> None:
    """Number the dicts and lists in `value` in document order (containers: path -> number; plan: each one's
    parent number and key); the strings with '${' go to sites; values of other types refuse."""
    kind = type(value)
    if kind is dict:
        items: Any = value.items()
    elif kind is list:
        items = enumerate(value)
    else:
        if kind is str and "${" in value:
            if not path:
                raise _NotReference  # the whole document is one interpolated string
            sites.append((path, value))
        elif kind not in _SCALARS:
            raise _NotReference  # a set, an omap's tuples...: not copied by resolve_interpolations
        return
    containers[path] = len(containers)
    if path:
        plan.append((containers[path[:-1]], path[-1]))
    for key, child in items:
        _number(child, path + (key,), containers, plan, sites)


class _Graph:
    """What the reference needs from libyaml's node graph (read before construction, which flattens merges):
    the one-line `key: scalar` entries of block mappings, and the lines inside multi-line scalars."""

    def __init__(self, root: yaml.Node) -> None:
        # (line, parent path, key, key column, value start column, value end column)
        self.entries: list[tuple[int, tuple, str, int, int, int]] = []
        self.covered: set[int] = set()
        self._seen: set[int] = set()
        self._walk(root, ())

    def _walk(self, node: yaml.Node, path: tuple | None) -> None:
        if id(node) in self._seen:
            raise _NotReference  # an alias: one node, several places in the data
        self._seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            first, last = node.start_mark.line, node.end_mark.line
            if first != last:
                self.covered.update(range(first, last + 1))
            return
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, None if path is None else path + (i,))
            return
        if not isinstance(node, yaml.MappingNode):
            raise _NotReference
        str_keys = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode) and k.tag == _STR]
        if len(set(str_keys)) != len(str_keys):
            path = None  # a key given twice: the data holds only the last value, and nothing below the first
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                raise _NotReference
            self._walk(key_node, None)
            is_str_key = isinstance(key_node, yaml.ScalarNode) and key_node.tag == _STR
            self._walk(value_node, path + (key_node.value,) if path is not None and is_str_key else None)
            if (
                path is not None
                and is_str_key
                and node.flow_style is False
                and isinstance(value_node, yaml.ScalarNode)
                and key_node.start_mark.line == value_node.start_mark.line == value_node.end_mark.line
            ):
                self.entries.append(
                    (
                        key_node.start_mark.line,
                        path,
                        key_node.value,
                        key_node.start_mark.column,
                        value_node.start_mark.column,
                        value_node.end_mark.column,
                    )
                )
