"""Models: every name of the original's table generates, and a model directory with no registry entry is
recognised from its config.json (templates/model_families.yaml, scaffold/inputs/modelrecognition.py). No torch needed:
the config.json files below are written by hand with the real public sizes of each model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from scaffold.inputs import modelrecognition, registry
from scaffold.inputs.modelrecognition import Recognised, Unrecognised

from .conftest import Experiment, make_model_dir

# The original's table (cruijff_kit src/tools/torchtune/model_configs.py): name -> (lora builder, model_type,
# checkpoint_files, tokenizer component, (mem, cpus, gpus)).
L32 = "torchtune.models.llama3_2."
LLAMA_TOK = "torchtune.models.llama3.llama3_tokenizer"
MISTRAL = ("torchtune.models.mistral.lora_mistral_7b", "MISTRAL", "00002", "torchtune.models.mistral.mistral_tokenizer")
QWEN = ("torchtune.models.qwen2_5.lora_qwen2_5_3b", "QWEN2", "00002", "torchtune.models.qwen2_5.qwen2_5_tokenizer")
ORIGINAL = {
    "Llama-3.2-1B": (L32 + "lora_llama3_2_1b", "LLAMA3_2", None, LLAMA_TOK, ("80G", 1, 1)),
    "Llama-3.2-1B-Instruct": (L32 + "lora_llama3_2_1b", "LLAMA3_2", None, LLAMA_TOK, ("80G", 1, 1)),
    "Llama-3.2-3B-Instruct": (L32 + "lora_llama3_2_3b", "LLAMA3_2", "00002", LLAMA_TOK, ("80G", 1, 1)),
    "Llama-3.1-8B-Instruct": (
        "torchtune.models.llama3_1.lora_llama3_1_8b",
        "LLAMA3",
        "00004",
        LLAMA_TOK,
        ("80G", 1, 1),
    ),
    "Llama-3.3-70B-Instruct": (
        "torchtune.models.llama3_3.lora_llama3_3_70b",
        "LLAMA3",
        "00030",
        LLAMA_TOK,
        ("320G", 4, 4),
    ),
    "Mistral-7B-v0.1": (*MISTRAL, ("80G", 1, 1)),
    "Mistral-7B-Instruct-v0.1": (*MISTRAL, ("80G", 1, 1)),
    "Qwen2.5-3B": (*QWEN, ("80G", 1, 1)),
    "Qwen2.5-3B-Instruct": (*QWEN, ("80G", 1, 1)),
}
MODELS = registry.models()


@pytest.mark.parametrize("name", sorted(ORIGINAL))
def test_original_table_entry(name: str) -> None:
    builder, model_type, shards, tokenizer, (mem, cpus, gpus) = ORIGINAL[name]
    entry = MODELS[name]
    assert (entry["lora_builder"], entry["model_type"], entry["tokenizer"]["component"]) == (
        builder,
        model_type,
        tokenizer,
    )
    if shards is None:
        assert entry["checkpoint_files"] == ["model.safetensors"]
    else:
        assert entry["checkpoint_files"] == {"filename_format": "model-{}-of-{}.safetensors", "max_filename": shards}
    assert entry["resources"] == {"gpus": gpus, "mem": mem, "cpus_per_task": cpus}


def test_every_original_name_generates(example: Experiment) -> None:
    """One run per name of the original's table, generated (model paths are cluster paths: --no-check-paths)."""
    data = example.load()
    data["models"]["base"] = [{"name": n, "path": f"/scratch/models/{n}"} for n in ORIGINAL]
    data["runs"] = [
        {"name": f"{n}_rank4", "type": "fine-tuned", "model": n, "parameters": {"lora_rank": 4}} for n in ORIGINAL
    ]
    data.pop("evaluation", None)
    data["controls"]["batch_size"] = 1  # the 70B model's 4 GPUs share the example's 8 training records
    example.save(data)
    res = example.generate("--no-check-paths")
    assert res.code == 0, res.out + res.err
    for name, (builder, model_type, _, tokenizer, (mem, cpus, gpus)) in ORIGINAL.items():
        run = example.dir / f"{name}_rank4"
        cfg = yaml.safe_load((run / "finetune.yaml").read_text())
        assert cfg["model"]["_component_"] == builder
        assert cfg["checkpointer"]["model_type"] == model_type
        assert cfg["tokenizer"]["_component_"] == tokenizer
        slurm = (run / "finetune.slurm").read_text()
        assert f"#SBATCH --mem={mem}\n" in slurm and f"#SBATCH --cpus-per-task={cpus}\n" in slurm
        assert f"gpu:{gpus}" in slurm


# --- recognition from config.json --------------------------------------------------------------------------------

# Public config.json sizes of each model (the Hub's config.json files; the same numbers torchtune 0.6.1's builders
# hard-code in torchtune/models/*/_model_builders.py): hidden_size, num_hidden_layers, num_attention_heads,
# num_key_value_heads, intermediate_size, vocab_size.
LLAMA32_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
LLAMA31_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}


def llama(h, n, a, kv, i, rope, tie=False):
    return dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=h, num_hidden_layers=n,
                num_attention_heads=a, num_key_value_heads=kv, intermediate_size=i, vocab_size=128256,
                tie_word_embeddings=tie, rope_scaling=rope)  # fmt: skip


def qwen(h, n, a, kv, i, v, pos, tie):
    return dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=h, num_hidden_layers=n,
                num_attention_heads=a, num_key_value_heads=kv, intermediate_size=i, vocab_size=v,
                max_position_embeddings=pos, tie_word_embeddings=tie, rope_theta=1000000.0)  # fmt: skip


def gemma(arch, h, n, a, kv, i):
    # Gemma's config.json leaves tie_word_embeddings out (GemmaConfig/Gemma2Config default: tied).
    return dict(architectures=[arch], model_type=arch[:-11].lower(), hidden_size=h, num_hidden_layers=n,
                num_attention_heads=a, num_key_value_heads=kv, intermediate_size=i, vocab_size=256000, head_dim=256)  # fmt: skip


QW = "torchtune.models.qwen2_5.lora_qwen2_5_"
CASES = {
    # name in model_families.yaml: (config.json, lora builder, model_type, tokenizer component, tied, gpus)
    "Llama 3.2 1B": (llama(2048, 16, 32, 8, 8192, LLAMA32_ROPE, True), L32 + "lora_llama3_2_1b", "LLAMA3_2", LLAMA_TOK, True, 1),
    "Llama 3.2 3B": (llama(3072, 28, 24, 8, 8192, LLAMA32_ROPE, True), L32 + "lora_llama3_2_3b", "LLAMA3_2", LLAMA_TOK, True, 1),
    "Llama 3.1 8B": (llama(4096, 32, 32, 8, 14336, LLAMA31_ROPE), "torchtune.models.llama3_1.lora_llama3_1_8b", "LLAMA3", LLAMA_TOK, False, 1),
    "Llama 3.1/3.3 70B": (llama(8192, 80, 64, 8, 28672, LLAMA31_ROPE), "torchtune.models.llama3_3.lora_llama3_3_70b", "LLAMA3", LLAMA_TOK, False, 4),
    "Llama 3.1 405B": (llama(16384, 126, 128, 8, 53248, LLAMA31_ROPE), "torchtune.models.llama3_1.lora_llama3_1_405b", "LLAMA3", LLAMA_TOK, False, 8),
    "Llama 3 8B": (llama(4096, 32, 32, 8, 14336, None), "torchtune.models.llama3.lora_llama3_8b", "LLAMA3", LLAMA_TOK, False, 1),
    "Llama 3 70B": (llama(8192, 80, 64, 8, 28672, None), "torchtune.models.llama3.lora_llama3_70b", "LLAMA3", LLAMA_TOK, False, 4),
    "Qwen2.5 0.5B": (qwen(896, 24, 14, 2, 4864, 151936, 32768, True), QW + "0_5b", "QWEN2", QWEN[3], True, 1),
    "Qwen2.5 1.5B (base)": (qwen(1536, 28, 12, 2, 8960, 151936, 131072, True), QW + "1_5b_base", "QWEN2", QWEN[3], True, 1),
    "Qwen2.5 1.5B Instruct": (qwen(1536, 28, 12, 2, 8960, 151936, 32768, True), QW + "1_5b_instruct", "QWEN2", QWEN[3], True, 1),
    "Qwen2.5 3B": (qwen(2048, 36, 16, 2, 11008, 151936, 32768, True), QW + "3b", "QWEN2", QWEN[3], True, 1),
    "Qwen2.5 7B (base)": (qwen(3584, 28, 28, 4, 18944, 152064, 131072, False), QW + "7b_base", "QWEN2", QWEN[3], False, 1),
    "Qwen2.5 7B Instruct": (qwen(3584, 28, 28, 4, 18944, 152064, 32768, False), QW + "7b_instruct", "QWEN2", QWEN[3], False, 1),
    "Qwen2.5 14B (base)": (qwen(5120, 48, 40, 8, 13824, 152064, 131072, False), QW + "14b_base", "QWEN2", QWEN[3], False, 1),
    "Qwen2.5 14B Instruct": (qwen(5120, 48, 40, 8, 13824, 152064, 32768, False), QW + "14b_instruct", "QWEN2", QWEN[3], False, 1),
    "Qwen2.5 32B (base)": (qwen(5120, 64, 40, 8, 27648, 152064, 131072, False), QW + "32b_base", "QWEN2", QWEN[3], False, 2),
    "Qwen2.5 32B Instruct": (qwen(5120, 64, 40, 8, 27648, 152064, 32768, False), QW + "32b_instruct", "QWEN2", QWEN[3], False, 2),
    "Qwen2.5 72B (base)": (qwen(8192, 80, 64, 8, 29568, 152064, 131072, False), QW + "72b_base", "QWEN2", QWEN[3], False, 4),
    "Qwen2.5 72B Instruct": (qwen(8192, 80, 64, 8, 29568, 152064, 32768, False), QW + "72b_instruct", "QWEN2", QWEN[3], False, 4),
    "Mistral 7B v0.1": (
        dict(architectures=["MistralForCausalLM"], model_type="mistral", hidden_size=4096, num_hidden_layers=32,
             num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336, vocab_size=32000,
             rope_theta=10000.0, sliding_window=4096, tie_word_embeddings=False),  # fmt: skip
        MISTRAL[0], "MISTRAL", MISTRAL[3], False, 1,
    ),
    "Gemma 2B": (gemma("GemmaForCausalLM", 2048, 18, 8, 1, 16384), "torchtune.models.gemma.lora_gemma_2b", "GEMMA", "torchtune.models.gemma.gemma_tokenizer", True, 1),
    "Gemma 7B": (gemma("GemmaForCausalLM", 3072, 28, 16, 16, 24576), "torchtune.models.gemma.lora_gemma_7b", "GEMMA", "torchtune.models.gemma.gemma_tokenizer", True, 1),
    "Gemma 2 2B": (gemma("Gemma2ForCausalLM", 2304, 26, 8, 4, 9216), "torchtune.models.gemma2.lora_gemma2_2b", "GEMMA2", "torchtune.models.gemma.gemma_tokenizer", True, 1),
    "Gemma 2 9B": (gemma("Gemma2ForCausalLM", 3584, 42, 16, 8, 14336), "torchtune.models.gemma2.lora_gemma2_9b", "GEMMA2", "torchtune.models.gemma.gemma_tokenizer", True, 1),
    "Gemma 2 27B": (gemma("Gemma2ForCausalLM", 4608, 46, 32, 16, 36864), "torchtune.models.gemma2.lora_gemma2_27b", "GEMMA2", "torchtune.models.gemma.gemma_tokenizer", True, 2),
    "Phi-3 mini (4k)": (
        dict(architectures=["Phi3ForCausalLM"], model_type="phi3", hidden_size=3072, num_hidden_layers=32,
             num_attention_heads=32, num_key_value_heads=32, intermediate_size=8192, vocab_size=32064,
             rope_scaling=None, tie_word_embeddings=False),  # fmt: skip
        "torchtune.models.phi3.lora_phi3_mini", "PHI3_MINI", "torchtune.models.phi3.phi3_mini_tokenizer", False, 1,
    ),
}  # fmt: skip


def model_dir(path: Path, config: dict, shards: list[str] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    if shards:
        weight_map = {f"w{i}": s for i, s in enumerate(shards)}
        (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    else:
        (path / "model.safetensors").write_text("")
    return path


def test_every_family_size_is_tested() -> None:
    assert sorted(CASES) == sorted(modelrecognition.known_sizes())


@pytest.mark.parametrize("size", sorted(CASES))
def test_recognised(size: str, tmp_path: Path) -> None:
    config, builder, model_type, tokenizer, tied, gpus = CASES[size]
    found = modelrecognition.recognise(model_dir(tmp_path / "m", config))
    assert isinstance(found, Recognised), found
    assert found.size == size
    e = found.entry
    assert (e["lora_builder"], e["model_type"], e["tokenizer"]["component"], e["tied_embeddings"]) == (
        builder,
        model_type,
        tokenizer,
        tied,
    )
    assert e["resources"]["gpus"] == gpus
    assert e["full_builder"].rsplit(".", 1)[0] == builder.rsplit(".", 1)[0]
    assert e["checkpoint_files"] == ["model.safetensors"]
    assert str(tmp_path / "m" / "config.json") in found.describe() and size in found.describe()


def test_tokenizer_files_follow_the_family(tmp_path: Path) -> None:
    files = {
        size: modelrecognition.recognise(model_dir(tmp_path / str(i), c[0])).entry["tokenizer"]["files"]  # type: ignore[union-attr]
        for i, (size, c) in enumerate(CASES.items())
    }
    assert files["Llama 3.2 1B"] == {"path": "original/tokenizer.model"}
    assert files["Qwen2.5 3B"] == {"path": "vocab.json", "merges_file": "merges.txt"}
    assert files["Mistral 7B v0.1"] == files["Gemma 2B"] == files["Phi-3 mini (4k)"] == {"path": "tokenizer.model"}


def test_recognised_entries_are_valid_registry_entries(tmp_path: Path) -> None:
    from scaffold.inputs import schemas

    v = schemas.validator(schemas.LOCAL_CONFIG)
    for i, (config, *_) in enumerate(CASES.values()):
        found = modelrecognition.recognise(model_dir(tmp_path / str(i), config))
        v.validate({"models": {"x": found.entry}})  # type: ignore[union-attr]


def test_sharded_checkpoints_from_the_index(tmp_path: Path) -> None:
    config = CASES["Llama 3.1 8B"][0]
    shards = [f"model-0000{i}-of-00004.safetensors" for i in (1, 2, 3, 4, 2)]  # a weight_map repeats its shards
    found = modelrecognition.recognise(model_dir(tmp_path / "a", config, shards))
    assert found.entry["checkpoint_files"] == {  # type: ignore[union-attr]
        "filename_format": "model-{}-of-{}.safetensors",
        "max_filename": "00004",
    }
    odd = ["weights-b.safetensors", "weights-a.safetensors"]
    found = modelrecognition.recognise(model_dir(tmp_path / "b", config, odd))
    assert found.entry["checkpoint_files"] == sorted(odd)  # type: ignore[union-attr]
    gap = ["model-00001-of-00003.safetensors", "model-00003-of-00003.safetensors"]
    found = modelrecognition.recognise(model_dir(tmp_path / "c", config, gap))
    assert found.entry["checkpoint_files"] == gap  # type: ignore[union-attr]


def test_no_checkpoint_is_unrecognised(tmp_path: Path) -> None:
    d = model_dir(tmp_path / "m", CASES["Qwen2.5 3B"][0])
    (d / "model.safetensors").unlink()
    found = modelrecognition.recognise(d)
    assert isinstance(found, Unrecognised) and "no safetensors checkpoint" in found.message


@pytest.mark.parametrize(
    ("config", "says"),
    [
        # Llama 2 13B (hidden 5120, 40 layers, vocabulary 32000): Llama architecture, not a Llama 3 vocabulary.
        (
            dict(architectures=["LlamaForCausalLM"], hidden_size=5120, num_hidden_layers=40, vocab_size=32000),
            ["LlamaForCausalLM", "hidden_size 5120", "matches no model family"],
        ),
        # Qwen2.5 with a size torchtune has no builder for (made-up: hidden 4096, 40 layers).
        (
            qwen(4096, 40, 32, 8, 11008, 151936, 32768, False),
            ["Qwen2.5 model of a size torchtune 0.6.1 has no builder for", "hidden_size 4096", "Qwen2.5 3B"],
        ),
        # Mistral 7B v0.3: vocabulary 32768 (torchtune's mistral_7b has 32000).
        (
            dict(
                architectures=["MistralForCausalLM"],
                hidden_size=4096,
                num_hidden_layers=32,
                num_attention_heads=32,
                num_key_value_heads=8,
                intermediate_size=14336,
                vocab_size=32768,
                rope_theta=1000000.0,
            ),  # fmt: skip
            ["Mistral model of a size", "vocab_size 32768"],
        ),
        # Phi-3-mini-128k: the same sizes as the 4k model, with longrope scaling torchtune's phi3_mini lacks.
        (
            dict(CASES["Phi-3 mini (4k)"][0], rope_scaling={"type": "longrope", "long_factor": [1.0]}),
            ["Phi-3 model of a size", "rope_scaling {'type': 'longrope'}"],
        ),
        (dict(architectures=["GPT2LMHeadModel"], n_embd=768), ["GPT2LMHeadModel", "matches no model family"]),
        ({}, ["none of architectures", "matches no model family"]),
    ],
)
def test_unmappable(config: dict, says: list[str], tmp_path: Path) -> None:
    found = modelrecognition.recognise(model_dir(tmp_path / "m", config))
    assert isinstance(found, Unrecognised)
    assert str(tmp_path / "m" / "config.json") in found.message
    for part in says:
        assert part in found.message


def test_no_config_is_nothing_to_recognise(tmp_path: Path) -> None:
    assert modelrecognition.recognise(tmp_path) is None


# --- through the generator -----------------------------------------------------------------------------------------


def custom_experiment(example: Experiment, tmp_path: Path, config: dict) -> Path:
    """The example with its runs on a model named My-Model, in no registry, in a local directory."""
    d = make_model_dir(tmp_path / "models" / "My-Model")
    (d / "config.json").write_text(json.dumps(config))
    data = example.load()
    data["experiment"]["dir"] = str(example.dir)
    data["models"]["base"] = [{"name": "My-Model", "path": str(d)}]
    for run in data["runs"]:
        run["model"] = "My-Model"
    example.save(data)
    return d


def test_generate_recognises_an_unregistered_model(example: Experiment, tmp_path: Path) -> None:
    custom_experiment(example, tmp_path, CASES["Llama 3.2 1B"][0])
    res = example.generate()
    assert res.code == 0, res.out + res.err
    cfg = yaml.safe_load((example.dir / "Llama-3.2-1B-Instruct_rank4" / "finetune.yaml").read_text())
    assert cfg["model"]["_component_"] == "torchtune.models.llama3_2.lora_llama3_2_1b"
    assert cfg["checkpointer"]["model_type"] == "LLAMA3_2"
    slurm = (example.dir / "Llama-3.2-1B-Instruct_rank4" / "finetune.slurm").read_text()
    assert "#SBATCH --mem=80G\n" in slurm
    log = (example.dir / "logs" / "scaffold-torchtune.log").read_text()
    assert "model 'My-Model' is not in the registry: recognised as Llama 3.2 1B from" in log
    # setup-finetune, run in the run directory, recognises it the same way.
    from .conftest import run_cli

    res = run_cli(
        "setup-finetune",
        "--dir",
        example.dir / "Llama-3.2-1B-Instruct_rank4",
        "--local-config",
        example.local,
        "--epochs",
        "2",
    )
    assert res.code == 0, res.out + res.err


def test_unmappable_config_is_invalid_input(example: Experiment, tmp_path: Path) -> None:
    d = custom_experiment(example, tmp_path, dict(CASES["Llama 3.2 1B"][0], hidden_size=5120, num_hidden_layers=40))
    before = example.snapshot()
    res = example.generate()
    assert res.code == 2, res.out + res.err
    text = res.out + res.err
    assert "Traceback" not in text
    assert f"{d / 'config.json'}" in text and "hidden_size 5120" in text and "num_hidden_layers 40" in text
    assert "Llama 3 model of a size torchtune 0.6.1 has no builder for" in text
    assert "add a `models:` entry for 'My-Model' in the local config" in text and "Llama-3.2-1B-Instruct" in text
    after = {k: v for k, v in example.snapshot().items() if not k.startswith("logs/")}
    assert after == before


def test_no_recognition_without_path_checks(example: Experiment, tmp_path: Path) -> None:
    custom_experiment(example, tmp_path, CASES["Llama 3.2 1B"][0])
    res = example.generate("--no-check-paths")
    assert res.code == 1
    text = res.out + res.err
    assert "unknown model 'My-Model'" in text and "known: Llama-3.1-8B-Instruct" in text
    assert "with path checks on, a model directory whose config.json" in text


def test_a_recognised_model_is_recorded_for_runs_without_path_checks(example: Experiment, tmp_path: Path) -> None:
    """generate records what it recognised (recognised_models.yaml, committed with the experiment): without the
    model directory (--no-check-paths, CI) the suite and generate take the entry from there, never "unknown"."""
    import shutil

    from .conftest import run_cli

    d = custom_experiment(example, tmp_path, CASES["Llama 3.2 1B"][0])
    assert example.generate().code == 0
    record = example.dir / "recognised_models.yaml"
    data = yaml.safe_load(record.read_text())
    assert data["My-Model"]["recognised_as"] == "Llama 3.2 1B" and data["My-Model"]["from"] == str(d / "config.json")
    assert data["My-Model"]["entry"]["lora_builder"] == "torchtune.models.llama3_2.lora_llama3_2_1b"
    shutil.rmtree(d)  # as on a CI runner: the model directory is not there
    verify = ("verify", example.dir, "--local-config", example.local, "--no-check-paths", "-p", "no:cacheprovider")
    res = run_cli(*verify, "-k", "not golden")
    assert res.code == 0 and "unknown model" not in res.out, res.out
    again = example.generate("--no-check-paths")
    assert again.code == 0 and "unknown model" not in again.out + again.err, again.out + again.err
    # The record is what the suite holds the files to: an entry edited by hand fails model_matches_registry...
    record.write_text(record.read_text().replace("model_type: LLAMA3_2", "model_type: LLAMA3"))
    res = run_cli(*verify, "-k", "not golden")
    assert res.code == 1 and "model_matches_registry" in res.out and "LLAMA3" in res.out, res.out
    # ... and without it the model is unknown again, as before any generation with path checks.
    record.unlink()
    res = run_cli(*verify, "-k", "not golden")
    assert res.code == 1 and "unknown model 'My-Model'" in res.out, res.out
    assert "recorded in recognised_models.yaml" in res.out
    # A record that is not one is an error naming the file, not a traceback.
    record.write_text("My-Model: {entry: {lora_builder: x}}\n")
    bad = example.generate("--no-check-paths")
    assert bad.code == 2 and "recognised_models.yaml" in bad.err and "lacks its entry" in bad.err, bad.out + bad.err
    assert "Traceback" not in bad.err
