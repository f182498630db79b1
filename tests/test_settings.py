"""The run's settings as one typed structure (scaffold/settings.py) that matches setup_finetune.schema.json key for
key and type for type, what the planner builds, and `complete` for files that leave keys out."""

from __future__ import annotations

import types
import typing

import pytest
import yaml

from scaffold.inputs import params, schemas
from scaffold.settings import OPTIONAL, RunSettings, complete

JSON_TYPES = {"string": str, "integer": int, "number": float, "boolean": bool, "array": list, "object": dict}


def _python_types(hint) -> set:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return set().union(*(_python_types(a) for a in args))
    if typing.get_origin(hint) is typing.Literal:
        return {type(a) for a in args}
    origin = typing.get_origin(hint)
    return {origin or hint}


def _schema_types(node: dict) -> set:
    if "enum" in node:
        return {type(v) for v in node["enum"]}
    kinds = node.get("type")
    if kinds is None:
        return set()
    kinds = kinds if isinstance(kinds, list) else [kinds]
    out = {type(None) if k == "null" else JSON_TYPES[k] for k in kinds}
    return out | ({int} if float in out else set())  # JSON numbers: an int is a number


def test_the_typed_settings_have_the_schemas_keys() -> None:
    schema = schemas.schema(schemas.SETUP)
    assert set(RunSettings.__annotations__) == set(schema["properties"])


def test_the_typed_settings_have_the_schemas_types() -> None:
    schema = schemas._inline_refs(schemas.schema(schemas.SETUP), schemas.SETUP)
    hints = typing.get_type_hints(RunSettings)
    wrong = {}
    for key, node in schema["properties"].items():
        want = _schema_types(node)
        if want and _python_types(hints[key]) - {type(None)} != want - {type(None)}:
            wrong[key] = (hints[key], node.get("type") or node.get("enum"))
    assert not wrong


def test_the_planner_builds_every_key(generated_example_plan) -> None:
    for rp in generated_example_plan.runs:
        if rp.setup is not None:
            assert set(rp.setup) == set(RunSettings.__annotations__), rp.name


@pytest.fixture
def generated_example_plan(local_example):
    from scaffold.commands.generate import load_plan

    return load_plan(local_example.dir, local_config=local_example.local)


def test_complete_fills_what_a_file_leaves_out_and_keeps_what_it_gives() -> None:
    given = {"run_name": "r", "lora_rank": 8, "max_steps_per_epoch": None, "modules": None}
    full = complete(given)
    assert set(full) >= set(params.table()) | set(OPTIONAL)
    assert full["method"] == "lora" and full["lora_alpha"] == 16 and full["requeue"] is False  # table, rule
    assert full["max_steps_per_epoch"] is None  # a null given stays null
    assert full["modules"] == [] and full["slurm_overrides"] == {}
    assert given == {"run_name": "r", "lora_rank": 8, "max_steps_per_epoch": None, "modules": None}  # not changed


def test_setup_finetune_renders_a_file_that_leaves_keys_out(generated_example_plan, local_example) -> None:
    from .conftest import run_cli

    run = next(rp for rp in generated_example_plan.runs if rp.setup is not None)
    assert local_example.generate().code == 0
    path = run.local_dir / "setup_finetune.yaml"
    data = yaml.safe_load(path.read_text())
    required = set(schemas.schema(schemas.SETUP)["required"])
    # As an older version wrote it: the required keys and the run's own values only.
    path.write_text(
        yaml.safe_dump({k: v for k, v in data.items() if k in required or k in ("lora_rank", "dataset_type")})
    )
    res = run_cli("setup-finetune", "--dir", run.local_dir, "--local-config", local_example.local)
    assert res.code == 0, res.out + res.err
    assert "verification: " in res.out and " 0 failed" in res.out, res.out
