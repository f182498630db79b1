"""JSON-schema validation (draft 2020-12) that reports every problem at once, with line, field and fix.

A document that passed is remembered on disk (`Verdicts`): the same data, the same schema and the same code pass
again without validating (nor importing jsonschema), which is most of an unchanged re-run's time at 1,000 listed
runs. Only passes are remembered, so a problem is always found by validating."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import rules
from ..errors import Problem, did_you_mean
from ..resources import cache_directory, data_dir, generator_digest, package_stamp
from . import params
from .yamlio import SEXAGESIMAL, Document

SUMMARY = "experiment_summary.schema.json"
LOCAL_CONFIG = "local_config.schema.json"
SETUP = "setup_finetune.schema.json"
VERDICTS_ENV = "SCAFFOLD_VALIDATED_CACHE"  # where the passes are remembered (a directory), or "off"
_VERDICT_FORMAT = "1"

if TYPE_CHECKING:
    import jsonschema


@cache
def _raw(name: str) -> dict:
    with open(data_dir("schemas") / name, encoding="utf-8") as f:
        return json.load(f)


@cache
def schema(name: str) -> dict:
    """A shipped schema, with the parameter table injected where the schema says so."""
    s = copy.deepcopy(_raw(name))
    table = params.table()
    if name == SUMMARY:
        s["$defs"]["parameter_name"] = {"enum": list(table), "x-fix": "use a parameter from the table"}
        s["$defs"]["variable_name"] = {"enum": [*table, "paired"], "x-fix": "use a parameter from the table"}
        for n, p in table.items():
            s["properties"]["variables"]["properties"][n] = {"type": "array", "minItems": 1, "items": p.schema}
        s["$defs"]["parameters"] = {
            "type": "object",
            "additionalProperties": False,
            "properties": {n: p.schema for n, p in table.items()},
        }
    elif name == SETUP:
        for n, p in table.items():
            s["properties"][n] = p.schema
    return s


def _inline_refs(node: Any, base: str) -> Any:
    """The schema with every `$ref` (within or between the shipped schemas, none recursive) replaced by its
    target: validation then never resolves a reference, which makes it several times faster."""
    if isinstance(node, list):
        return [_inline_refs(item, base) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        file, _, fragment = node["$ref"].partition("#")
        target: Any = schema(file or base)
        for part in filter(None, fragment.split("/")):
            target = target[part]
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return _inline_refs({**target, **rest}, file or base)
    return {k: _inline_refs(v, base) for k, v in node.items()}


@cache
def _anchored(pattern: str) -> re.Pattern:
    """A schema pattern as JSON Schema means it: `$` is the end of the text. (Python's `$` also matches before a
    final newline, so "nlplab\\n" would pass `^[A-Za-z0-9_.+-]+$` and put a line break into an #SBATCH line.)
    The shipped patterns have no `$` inside a character class."""
    return re.compile(re.sub(r"(?<!\\)\$", r"\\Z", pattern))


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict) -> Any:
    import jsonschema

    if validator.is_type(instance, "string") and not _anchored(pattern).search(instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


def _prompt(validator: Any, enabled: bool, instance: Any, schema: dict) -> Any:
    # `x-prompt: true`: a str.format template as the evaluation step fills it (the rule: rules.prompt_problem).
    import jsonschema

    if enabled and validator.is_type(instance, "string"):
        wrong = rules.prompt_problem(instance)
        if wrong:
            yield jsonschema.ValidationError(wrong[0])


@cache
def validator(name: str) -> jsonschema.protocols.Validator:
    """A compiled validator (built once per process), references inlined."""
    import jsonschema

    s = _inline_refs(schema(name), name)
    cls = jsonschema.validators.extend(
        jsonschema.validators.validator_for(s), {"pattern": _pattern, "x-prompt": _prompt}
    )
    # (The schemas are checked against their metaschema in tests/test_schemas.py, not on every start.)
    return cls(s, format_checker=cls.FORMAT_CHECKER)


def validate(name: str, doc: Document, data: Any = None, run: str | None = None) -> list[Problem]:
    """Every schema problem of `data` (default: the document's data), each with line, field and fix."""
    data = doc.data if data is None else data
    verdicts = Verdicts.default()
    key = verdicts.key(name, data)
    if verdicts.passed(key):
        return []
    problems = _problems(name, doc, data, run)
    if not problems:
        verdicts.record(key)
    return problems


class Verdicts:
    """The documents that passed validation, remembered on disk: one empty file per pass in `directory`, named by
    the digest of what decides the verdict (`key`): the data (its repr: every value with its type, so the text
    "1" is not the number 1), the schema as validation uses it, this package's code, schemas and data files
    (`generator_digest`: the custom keywords and the parameter table among them) and the installed jsonschema's
    files. Files in the user's own cache directory, as trusted as the inputs beside them; a file that cannot be
    read or written is a pass not remembered, never an error."""

    def __init__(self, directory: Path | None):
        self.directory = directory

    @staticmethod
    def default() -> Verdicts:
        """SCAFFOLD_VALIDATED_CACHE (a directory, or "off"), else $XDG_CACHE_HOME/scaffold-torchtune/validated
        (~/.cache/... by default)."""
        return Verdicts(cache_directory("validated", VERDICTS_ENV))

    def key(self, name: str, data: Any) -> str | None:
        if self.directory is None:
            return None
        parts = (
            _VERDICT_FORMAT,
            name,
            _schema_digest(name),
            generator_digest(),
            package_stamp("jsonschema"),
            repr(data),
        )
        return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()

    def passed(self, key: str | None) -> bool:
        if key is None or self.directory is None:
            return False
        try:
            return (self.directory / key).is_file()
        except OSError:  # e.g. another user's cache directory: validated as if nothing were remembered
            return False

    def record(self, key: str | None) -> None:
        if key is None or self.directory is None:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            (self.directory / key).touch()
        except OSError:
            pass


@cache
def _schema_digest(name: str) -> str:
    return hashlib.sha256(json.dumps(schema(name), sort_keys=True).encode()).hexdigest()


def _problems(name: str, doc: Document, data: Any, run: str | None) -> list[Problem]:
    errors = sorted(validator(name).iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    problems = []
    for err in errors:
        for leaf in _leaves(err):
            problems.append(_problem(leaf, doc, run))
    # One message per place and text.
    seen, unique = set(), []
    for p in problems:
        key = (p.line, p.col, p.field, p.message)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _leaves(err: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """For oneOf/anyOf failures, the errors of the best-matching branch (the actionable ones)."""
    import jsonschema

    if err.context:
        best = jsonschema.exceptions.best_match(err.context)
        return _leaves(best) if best is not None else [err]
    return [err]


def _problem(err: jsonschema.ValidationError, doc: Document, run: str | None) -> Problem:
    path = tuple(err.absolute_path)
    fix = err.schema.get("x-fix") if isinstance(err.schema, dict) else None
    kind = err.validator
    message = err.message
    if kind == "additionalProperties":
        allowed = list(err.schema.get("properties", {}))
        extras = [k for k in err.instance if k not in allowed] if isinstance(err.instance, dict) else []
        for key in extras:
            path = path + (key,)
            message = f"unknown key '{key}'"
            fix = f"{did_you_mean(str(key), allowed)} (or remove it)"
            break
    elif kind == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        message = f"missing required key '{missing}'"
        fix = fix or f"add `{missing}:`"
    elif kind == "enum":
        choices = err.validator_value
        message = f"{err.instance!r} is not allowed"
        if isinstance(err.instance, str):
            fix = f"use one of {', '.join(map(str, choices))}" + (
                f"; {did_you_mean(err.instance, map(str, choices))}" if len(choices) > 3 else ""
            )
        else:
            fix = fix or f"use one of {', '.join(map(str, choices))}"
        if isinstance(err.schema, dict) and err.schema.get("x-why"):  # why the choices are these few
            fix += f"; {err.schema['x-why']}"
    elif kind == "propertyNames":
        path = path + (err.instance,)
        if isinstance(err.validator_value, dict) and "$ref" in err.validator_value:
            message = f"unknown parameter '{err.instance}'"
            fix = did_you_mean(str(err.instance), params.table())
        else:
            message = f"key '{err.instance}' is not allowed"
    elif kind == "type":
        raw = doc.raw.get(path)
        expected = err.validator_value
        expected = " or ".join(expected) if isinstance(expected, list) else expected
        if raw is not None and SEXAGESIMAL.match(raw) and isinstance(err.instance, int):
            message = f"YAML read {raw} as the number {err.instance} (base 60), not as a time"
            fix = f'quote it: "{raw}"'
        else:
            message = f"expected {expected}, found {type_name(err.instance)} {short(err.instance)}"
            fix = fix or f"write a {expected}"
    elif kind == "pattern":
        message = f"{short(err.instance)} is not allowed here"
    elif kind == "x-prompt":
        message, fix = rules.prompt_problem(err.instance) or (message, fix)
    elif kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        bound = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kind]
        message = f"{err.instance!r} is out of range"
        fix = f"use a value {bound} {err.validator_value}"
    elif kind in ("minItems", "minLength"):
        message = f"{short(err.instance)} is empty or too short"
    elif kind == "not":
        message = f"{short(err.instance)} is not allowed here"
    if fix is None and kind == "const":
        fix = f"use {err.validator_value!r}"
    p = doc.problem(path, message, fix, run)
    return p


def type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "the string", bool: "the boolean", type(None): "null"}.get(
        type(value), f"the {type(value).__name__}"
    )


def short(value: Any, limit: int = 60) -> str:
    if isinstance(value, dict | list):
        return ""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
