"""The original tool's summary forms (its newest design template) mean here what they mean there: eval-only runs
with parameters.checkpoint_path, per-run dataset paths with their own label, training_condition resolved by the
original's resolver, learning_rate wherever parameters are given, dataset_type required, no system prompt for base
models, and a warning when a run trains entirely inside its warm-up."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from .conftest import Experiment, run_cli

R4, R8, BASE = "Llama-3.2-1B-Instruct_rank4", "Llama-3.2-1B-Instruct_rank8", "Llama-3.2-1B-Instruct_base"


def setup_of(exp: Experiment, run: str) -> dict:
    return yaml.safe_load((exp.dir / run / "setup_finetune.yaml").read_text())


def log_of(exp: Experiment) -> str:
    return (exp.dir / "logs" / "scaffold-torchtune.log").read_text()


def test_eval_only_run_with_checkpoint_path_gets_its_directory(local_example: Experiment, tmp_path: Path) -> None:
    checkpoint = tmp_path / "earlier" / "artifacts" / "epoch_0"
    checkpoint.mkdir(parents=True)
    data = local_example.load()
    data["runs"].append(
        {
            "name": "earlier_eval",
            "type": "eval-only",
            "model": "Llama-3.2-1B-Instruct",
            "parameters": {"checkpoint_path": str(checkpoint)},
        }  # fmt: skip
    )
    local_example.save(data)
    res = local_example.generate()
    assert res.code == 0, res.out + res.err
    assert (local_example.dir / "earlier_eval").is_dir()
    assert not list((local_example.dir / "earlier_eval").iterdir())  # the directory only
    assert f"evaluates the existing checkpoint {checkpoint}" in log_of(local_example)


def test_eval_only_checkpoint_must_exist_when_paths_are_checked(local_example: Experiment, tmp_path: Path) -> None:
    data = local_example.load()
    data["runs"].append(
        {"name": "earlier_eval", "type": "eval-only", "parameters": {"checkpoint_path": str(tmp_path / "nope")}}
    )
    local_example.save(data)
    res = local_example.generate()
    assert res.code == 1, res.out + res.err
    assert "runs[3].checkpoint_path: checkpoint directory not found" in res.out


def test_checkpoint_path_on_a_fine_tuned_run_is_an_input_error(example: Experiment, tmp_path: Path) -> None:
    data = example.load()
    data["runs"][0]["parameters"]["checkpoint_path"] = str(tmp_path)
    example.save(data)
    res = example.generate("--no-check-paths")
    assert res.code == 2, res.out + res.err
    assert "runs[0].type" in res.out + res.err and "eval-only" in res.out + res.err


def test_per_run_dataset_path_in_parameters_has_its_own_label(local_example: Experiment) -> None:
    other = local_example.dir / "data" / "other_words.json"
    other.write_text((local_example.dir / "data" / "words_5L_80P_10.json").read_text())
    data = local_example.load()
    data["runs"][0]["parameters"]["dataset_path"] = str(other)
    local_example.save(data)
    res = local_example.generate()
    assert res.code == 0, res.out + res.err
    setup = setup_of(local_example, R4)
    assert setup["dataset_path"] == str(other) and setup["dataset_label"] == "other_words"
    assert setup_of(local_example, R8)["dataset_label"] == "words_5L_80P_10"


def test_learning_rate_inside_a_run_is_lr(example: Experiment) -> None:
    data = example.load()
    data["runs"][0]["parameters"]["learning_rate"] = 3e-4
    example.save(data)
    res = example.generate("--no-check-paths")
    assert res.code == 0, res.out + res.err
    assert setup_of(example, R4)["lr"] == 3e-4 and setup_of(example, R8)["lr"] == 1e-4
    assert "normalised older spelling runs[0].parameters.learning_rate -> lr" in log_of(example)


def test_missing_dataset_type_is_an_input_error_with_the_fix(example: Experiment) -> None:
    data = example.load()
    del data["controls"]["dataset_type"]
    example.save(data)
    before = example.snapshot()
    res = example.generate("--no-check-paths")
    assert res.code == 2, res.out + res.err
    assert "dataset_type is not set" in res.err and "dataset_type: chat_completion" in res.err
    assert example.snapshot().keys() - before.keys() <= {"logs/scaffold-torchtune.log"}


def test_text_completion_drops_the_system_prompt(example: Experiment) -> None:
    data = example.load()
    data["controls"]["dataset_type"] = "text_completion"
    example.save(data)
    res = example.generate("--no-check-paths")
    assert res.code == 0, res.out + res.err
    assert setup_of(example, R4)["system_prompt"] == ""  # what the evaluation step reads
    assert "system_prompt" not in yaml.safe_load((example.dir / R4 / "finetune.yaml").read_text())["dataset"]
    assert "system_prompt (controls) dropped: a base model" in log_of(example)


def test_a_run_inside_its_warmup_is_warned_about(example: Experiment) -> None:
    """The example's 8 records at batch 4 make 2 optimizer steps, inside the original's 100-step warm-up."""
    res = example.generate("--no-check-paths")
    assert res.code == 0, res.out + res.err
    assert "warning: the run takes 2 optimizer steps" in res.out and "num_warmup_steps 100" in res.out
    assert "WARN  [Llama-3.2-1B-Instruct_rank4] the run takes 2 optimizer steps" in log_of(example)
    doc = json.loads(run_cli("generate", example.dir, "--local-config", example.local, "--no-check-paths",
                             "--json").out)  # fmt: skip
    assert any("fewer than its num_warmup_steps" in w for r in doc["runs"] for w in r["warnings"])
    data = example.load()
    data["controls"]["num_warmup_steps"] = 2
    data["controls"]["log_every_n_steps"] = 1  # else: the loss is never logged in 2 steps (warned too)
    example.save(data)
    assert "warning:" not in example.generate("--no-check-paths").out


# --- training_condition: the original's resolver (cruijff_kit cannot be installed here: a stand-in package
# with its module path and signature; what it returns is the original's documented file name form) ----------


def with_condition(exp: Experiment) -> None:
    data = exp.load()
    data["data"]["data_generation"] = {"conditions": {"dict_full": {"template": "dictionary"}}}
    data["runs"][0]["training_condition"] = "dict_full"
    exp.save(data)


def test_training_condition_without_the_resolver_asks_for_dataset_path(example: Experiment) -> None:
    with_condition(example)
    res = example.generate("--no-check-paths")
    assert res.code == 1, res.out + res.err
    assert "runs[0].training_condition: training_condition is resolved by the original's" in res.out
    assert "give the run its train file as dataset_path instead" in res.out


def test_training_condition_resolved_by_the_originals_resolver(example: Experiment, tmp_path: Path) -> None:
    with_condition(example)
    resolver_package(tmp_path / "site")
    res = example.generate("--no-check-paths", env={"PYTHONPATH": str(tmp_path / "site")})
    assert res.code == 0, res.out + res.err
    setup = setup_of(example, R4)
    assert setup["dataset_path"] == "/scratch/nlplab/ada/ck-data/generated/dict_full_train_0123abcd.json"
    assert setup["dataset_label"] == "dict_full_train_0123abcd"
    assert "training_condition 'dict_full' resolved to" in log_of(example)


def resolver_package(root: Path) -> Path:
    """A stand-in for the installed cruijff_kit (its module path, signature and documented file name form)."""
    package = root / "cruijff_kit" / "tabular_to_text_gen" / "lib"
    package.mkdir(parents=True)
    for d in (package, package.parent, package.parent.parent):
        (d / "__init__.py").write_text("")
    (package / "config_hash.py").write_text(
        "import os\n\ndef resolve_dataset_path(data_generation, condition_name, split, output_dir):\n"
        "    assert condition_name in data_generation['conditions']\n"
        "    return os.path.join(str(output_dir), f'{condition_name}_{split}_0123abcd.json')\n"
    )
    return root


def test_a_summary_using_every_newest_field(tmp_path: Path, example: Experiment) -> None:
    from .conftest import ORIGINAL_FORMAT

    scratch = tmp_path / "scratch"
    text = (ORIGINAL_FORMAT / "newest_fields_summary.yaml").read_text().replace("@SCRATCH@", str(scratch))
    exp_dir = Path(yaml.safe_load(text)["experiment"]["dir"])
    exp_dir.mkdir(parents=True)
    (exp_dir / "experiment_summary.yaml").write_text(text)
    (scratch / "data").mkdir()
    for name in ("words_fixture.json", "other_words.json"):
        (scratch / "data" / name).write_text((ORIGINAL_FORMAT / "words_fixture.json").read_text())
    exp = Experiment(exp_dir, example.local)
    site = resolver_package(tmp_path / "site")
    res = exp.generate("--no-check-paths", env={"PYTHONPATH": str(site)})
    assert res.code == 0, res.out + res.err
    setups = {r: setup_of(exp, r) for r in ("llama_terse", "llama_own_file", "llama_generated", "llama_base_text",
                                             "qwen_default", "mistral_default")}  # fmt: skip
    assert setups["llama_terse"]["prompt"] == "{input} ->" and setups["llama_terse"]["lr"] == 5e-5
    assert setups["llama_own_file"]["dataset_label"] == "other_words"
    assert setups["llama_generated"]["dataset_path"].endswith("/ck-data/generated/dict_full_train_0123abcd.json")
    assert setups["llama_base_text"]["dataset_type"] == "text_completion"
    assert setups["llama_base_text"]["system_prompt"] == ""
    for setup in setups.values():
        assert setup["seed"] == 14 and setup["system_prompt"] == "" and setup["log_every_n_steps"] == 5
    assert setups["qwen_default"]["lora_rank"] == 64 and setups["qwen_default"]["lora_alpha"] == 128
    assert setups["mistral_default"]["mem"] == "80G"
    for run in ("llama_from_earlier", "llama_untrained"):
        assert (exp.dir / run).is_dir() and not list((exp.dir / run).iterdir())
    assert "evaluates the existing checkpoint" in log_of(exp)
