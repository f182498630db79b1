"""The shipped model registry: valid entries (by the same schema as user entries) and facts from torchtune 0.6.1."""

from __future__ import annotations

import jsonschema
import pytest

from scaffold.errors import Problem
from scaffold.inputs import registry, schemas
from scaffold.runplanner import checkpoint_file_names

MODELS = registry.models()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_entry_is_valid(name: str) -> None:
    local = schemas.schema(schemas.LOCAL_CONFIG)
    v = schemas.validator(schemas.LOCAL_CONFIG)
    v.validate({"models": {name: MODELS[name]}})
    assert local["properties"]["models"]


def test_required_models_are_there() -> None:
    for name in (
        "Llama-3.2-1B-Instruct",
        "Llama-3.2-3B-Instruct",
        "Llama-3.1-8B-Instruct",
        "Llama-3.3-70B-Instruct",
        "Qwen2.5-3B-Instruct",
    ):
        assert name in MODELS


def test_model_types_follow_torchtune() -> None:
    # There is no LLAMA3_1: Llama 3.1 and 3.3 checkpoints load as LLAMA3; Qwen2.5 as QWEN2.
    assert MODELS["Llama-3.1-8B-Instruct"]["model_type"] == "LLAMA3"
    assert MODELS["Llama-3.3-70B-Instruct"]["model_type"] == "LLAMA3"
    assert MODELS["Llama-3.2-1B-Instruct"]["model_type"] == "LLAMA3_2"
    assert MODELS["Qwen2.5-3B-Instruct"]["model_type"] == "QWEN2"
    assert set(MODELS["Qwen2.5-3B-Instruct"]["tokenizer"]["files"]) == {"path", "merges_file"}


def test_sharded_checkpoint_names() -> None:
    assert checkpoint_file_names(MODELS["Llama-3.1-8B-Instruct"]["checkpoint_files"]) == [
        f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)
    ]
    assert isinstance(MODELS["Llama-3.1-8B-Instruct"]["checkpoint_files"]["max_filename"], str)


def test_unknown_model_lists_the_known_ones() -> None:
    p = registry.lookup("Llama-3.2-1B-Instruc", MODELS)
    assert isinstance(p, Problem)
    assert "did you mean 'Llama-3.2-1B-Instruct'" in p.fix and "Qwen2.5-3B-Instruct" in p.fix


def test_unquoted_max_filename_is_rejected() -> None:
    bad = dict(MODELS["Llama-3.1-8B-Instruct"], checkpoint_files={"filename_format": "m-{}-of-{}", "max_filename": 4})
    with pytest.raises(jsonschema.ValidationError):
        schemas.validator(schemas.LOCAL_CONFIG).validate({"models": {"x": bad}})
