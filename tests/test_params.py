"""The parameter table: run-name tokens, numeric comparison, and the table as the one source for the schema."""

from __future__ import annotations

import pytest

from scaffold.inputs import params, schemas


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Llama-3.2-1B-Instruct_rank8", {"lora_rank": 8}),
        ("Llama-3.2-1B-Instruct_r8_lr1e-5_s7", {"lora_rank": 8, "lr": 1e-5, "seed": 7}),
        (
            "Qwen2.5-3B-Instruct_rank16_alpha32_drop0.05_wd0.01",
            {"lora_rank": 16, "lora_alpha": 32, "lora_dropout": 0.05, "weight_decay": 0.01},
        ),
        (
            "m_bs4_ga2_ep3_seed42_len2048_warmup100",
            {
                "batch_size": 4,
                "gradient_accumulation_steps": 2,
                "epochs": 3,
                "seed": 42,
                "max_seq_len": 2048,
                "num_warmup_steps": 100,
            },
        ),
        ("Llama-3.2-1B-Instruct_base", {}),
    ],
)
def test_parse_run_name(name: str, expected: dict) -> None:
    got = {k: v[0][1] for k, v in params.parse_run_name(name).items()}
    assert got == expected


def test_same_value_is_numeric() -> None:
    assert params.same_value(1e-5, 1.0e-05)
    assert params.same_value(8, 8.0)
    assert not params.same_value(1e-5, 1e-4)
    assert not params.same_value(True, 1)


@pytest.mark.parametrize(("value", "text"), [(8, "8"), (1e-5, "1e-5"), (3e-4, "3e-4"), (0.1, "0.1"), (2.0, "2")])
def test_token_values(value, text) -> None:
    assert params.format_token_value(value) == text
    assert params.same_value(float(text), value)


def test_tokens_roundtrip() -> None:
    for name in ("lora_rank", "lr", "seed", "batch_size"):
        token = params.token_for(name, 7 if name != "lr" else 2e-5)
        assert list(params.parse_run_name(f"model_{token}")) == [name]


def test_schema_parameters_come_from_the_table() -> None:
    summary = schemas.schema(schemas.SUMMARY)
    assert list(summary["$defs"]["parameters"]["properties"]) == list(params.table())
    setup = schemas.schema(schemas.SETUP)
    assert set(params.table()) <= set(setup["properties"])


def test_every_parameter_with_a_path_lands_in_the_template() -> None:
    """The renderer writes every table path (the self-check in test_example proves the values)."""
    from scaffold.resources import data_dir

    template = (data_dir("templates") / "finetune.yaml.j2").read_text()
    for p in params.table().values():
        if p.path:
            assert p.path.split(".")[-1] + ":" in template, p.name


# The original's defaults (cruijff_kit, src/tools/torchtune/setup_finetune.py argparse defaults, and its scaffold
# agent: run_val_every_n_steps 50 when validation_during_training, else no validation). The same summary must train
# the same way under both tools.
ORIGINAL_DEFAULTS = {
    "seed": 14,
    "lora_rank": 64,
    "lr": 1e-4,
    "weight_decay": 0.01,
    "lora_dropout": 0.0,
    "num_warmup_steps": 100,
    "max_seq_len": 2048,
    "batch_size": 4,
    "epochs": 1,
    "gradient_accumulation_steps": 1,
    "log_every_n_steps": 5,
    "run_val_every_n_steps": 50,
    "train_on_input": False,
    "packed": False,
    "prompt": "{input}\n",
    "system_prompt": "",
    "dataset_type": None,  # required: no default
    "lora_attn_modules": ["q_proj", "v_proj", "output_proj"],
    "apply_lora_to_mlp": True,
    "dtype": "bf16",
    "compile": False,
    "lr_scheduler": "cosine",
}


@pytest.mark.parametrize("name", sorted(ORIGINAL_DEFAULTS))
def test_default_is_the_originals(name: str) -> None:
    assert params.table()[name].default == ORIGINAL_DEFAULTS[name]


def test_lora_alpha_defaults_to_twice_the_rank_as_in_the_original() -> None:
    assert params.table()["lora_alpha"].default is None  # plan: 2 x lora_rank


def test_shipped_data_reads_as_the_pure_python_safe_loader_reads_it() -> None:
    """resources.load_data parses with libyaml where PyYAML has it: the data must be yaml.safe_load's, file by file."""
    import yaml

    from scaffold import resources

    files = sorted(resources.data_dir("templates").glob("*.yaml"))
    assert files
    for f in files:
        assert resources.load_data(f.name) == yaml.safe_load(f.read_text(encoding="utf-8")), f.name
