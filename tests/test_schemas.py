"""The shipped schemas are valid draft 2020-12 schemas, and every setup the generator writes satisfies the
setup_finetune schema (the generator builds setups from validated inputs and does not re-validate each one)."""

from __future__ import annotations

import jsonschema
import pytest

from scaffold.inputs import schemas
from scaffold.inputs.yamlio import load_yaml

from .conftest import Experiment


@pytest.mark.parametrize("name", [schemas.SUMMARY, schemas.LOCAL_CONFIG, schemas.SETUP])
def test_schema_is_valid(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(schemas.schema(name))
    jsonschema.Draft202012Validator.check_schema(schemas._inline_refs(schemas.schema(name), name))


def test_generated_setups_satisfy_their_schema(local_example: Experiment) -> None:
    data = local_example.load()
    data["runs"][1]["parameters"].update(validation_during_training=True, run_val_every_n_steps=5)
    data["runs"][1]["compute"] = {"time": "23:30:00", "mem": "80G", "cpus_per_task": 8}
    local_example.save(data)
    assert local_example.generate().code == 0
    setups = sorted(local_example.dir.glob("*/setup_finetune.yaml"))
    assert len(setups) == 2
    for path in setups:
        doc = load_yaml(path)
        assert schemas.validate(schemas.SETUP, doc) == [], path
