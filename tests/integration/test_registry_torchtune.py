"""Every model the tool knows (templates/models.yaml and every size of templates/model_families.yaml) names
builders and a tokenizer that torchtune 0.6.1 has, and the builders take the arguments finetune.yaml gives them.
Nothing is built (signatures only: full-size models would need their memory)."""

from __future__ import annotations

import inspect

import pytest

pytest.importorskip("torchtune", reason="torchtune is not installed here: run `nox -s integration`")

from scaffold.checks.components_bind import bind_component, import_component  # noqa: E402
from scaffold.inputs import modelrecognition, registry  # noqa: E402

pytestmark = pytest.mark.integration

# What finetune.yaml.j2 gives a LoRA builder (model_args aside, which no shipped entry has).
LORA_ARGS = {
    "lora_attn_modules": ["q_proj", "v_proj"],
    "apply_lora_to_mlp": True,
    "lora_rank": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
}


def _entries() -> dict[str, dict]:
    out = {f"registry:{name}": entry for name, entry in registry.models().items()}
    for family in modelrecognition.families()["families"]:
        for size in family["sizes"]:
            out[f"family:{size['name']}"] = {
                "lora_builder": size["lora_builder"],
                "full_builder": size["full_builder"],
                "tokenizer": family["tokenizer"],
                "model_type": size["model_type"],
            }
    return out


ENTRIES = _entries()


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_builders_and_tokenizer_exist_and_bind(name: str) -> None:
    from torchtune.training.checkpointing._utils import ModelType

    entry = ENTRIES[name]
    assert bind_component("model", {"_component_": entry["lora_builder"], **LORA_ARGS}) is None
    assert bind_component("model", {"_component_": entry["full_builder"]}) is None
    tokenizer = {"_component_": entry["tokenizer"]["component"], **{k: "x" for k in entry["tokenizer"]["files"]}}
    assert bind_component("tokenizer", tokenizer) is None
    assert hasattr(ModelType, entry["model_type"])
    # The LoRA and full builders are the same size of the same model.
    lora_fn, full_fn = import_component(entry["lora_builder"]), import_component(entry["full_builder"])
    assert lora_fn.__module__ == full_fn.__module__, (lora_fn.__module__, full_fn.__module__)
    assert inspect.signature(full_fn).parameters == {} or all(
        p.default is not inspect.Parameter.empty for p in inspect.signature(full_fn).parameters.values()
    )
