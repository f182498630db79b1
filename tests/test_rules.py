"""The rules of a correct run (scaffold/rules.py), each written once: what they refuse, and that the planner, the
renderer (settings edited by hand) and the checks all apply the same rule."""

from __future__ import annotations

import pytest

from scaffold import rules
from scaffold.render import RenderError, context

BASE = {
    "method": "lora",
    "gpus": 1,
    "nodes": 1,
    "device": "cuda",
    "gpu_directive": "gres",
    "validation_during_training": False,
}


@pytest.mark.parametrize(
    ("change", "setting", "words"),
    [
        ({"nodes": 2}, "nodes", "multi-node LoRA fine-tuning is not supported by torchtune 0.6.1"),
        ({"gpus": 0}, "gpus", "a CUDA run needs at least one GPU"),
        ({"method": "full", "nodes": 2, "gpus": 0}, "nodes", "2 nodes need GPUs"),
        ({"method": "full", "nodes": 2, "device": "cpu", "gpus": 1}, "nodes", "2 nodes need GPUs"),
        ({"method": "full", "nodes": 2, "gpu_directive": "gpus"}, "gpu_directive", "--gpus asks for a job total"),
        ({"method": "full", "validation_during_training": True}, "validation_during_training", "with method full"),
        ({"gpus": 2, "validation_during_training": True}, "validation_during_training", "with 2 GPUs"),
    ],
)
def test_each_rule_refuses_what_no_recipe_can_train(change, setting, words) -> None:
    found = rules.violations({**BASE, **change})
    assert [v.setting for v in found if words in v.message] == [setting], found
    assert all(v.fix for v in found)


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"gpus": 8},
        {"method": "full", "nodes": 4, "gpus": 8},
        {"validation_during_training": True},
        {"device": "cpu", "gpus": 0},
    ],
)
def test_what_a_recipe_trains_is_allowed(change) -> None:
    assert rules.violations({**BASE, **change}) == []


@pytest.mark.parametrize(
    ("change", "recipe"),
    [
        ({}, rules.SINGLE_DEVICE),
        ({"validation_during_training": True}, rules.VALIDATING),
        ({"gpus": 4}, rules.DISTRIBUTED),
        ({"method": "full"}, rules.FULL_SINGLE_DEVICE),
        ({"method": "full", "nodes": 2}, rules.FULL_DISTRIBUTED),
        ({"method": None}, rules.SINGLE_DEVICE),  # setup files written before `method` existed are LoRA
    ],
)
def test_the_recipe_follows_method_gpus_nodes_and_validation(change, recipe) -> None:
    assert rules.recipe_for({**BASE, **change}) == recipe


def test_the_renderer_refuses_hand_edited_settings_by_the_same_rule() -> None:
    setup = {**BASE, "nodes": 2, "model_dir": "/m", "model": "M"}
    with pytest.raises(RenderError) as e:
        context(setup, {})
    assert rules.violations(setup)[0].message in str(e.value) and "(fix: " in str(e.value)


def test_lora_alpha_defaults_to_twice_the_rank() -> None:
    assert rules.default_lora_alpha(8) == 16 and rules.ALPHA_RULE == "2 x lora_rank"


@pytest.mark.parametrize(
    ("option", "value", "count"),
    [
        ("gres", "gpu:4", 4),
        ("gres", "gpu:a100:2", 2),
        ("gpus", "3", 3),
        ("gpus-per-node", "h100:8", 8),
        ("gres", "4", None),
    ],
)
def test_gpu_requests_are_written_and_read_by_one_rule(option, value, count) -> None:
    assert rules.gpu_count(option, value) == count
    if count:
        gpu_type = value.split(":")[-2] if value.count(":") >= (2 if option == "gres" else 1) else None
        written = rules.gpu_request({"gpus": count, "gpu_type": gpu_type, "gpu_directive": option})
        assert written == f"--{option}={value}"


@pytest.mark.parametrize(
    ("prompt", "words"),
    [
        ("Capitalize: {input}", None),
        ("{input} and {input}", "exactly once"),
        ("no field", "exactly once"),
        ("{input} -> {output}", "must not contain {output}"),
        ("{input} {", "cannot be"),
    ],
)
def test_the_prompt_rule(prompt, words) -> None:
    found = rules.prompt_problem(prompt)
    assert (found is None) if words is None else (words in found[0])


def test_the_planner_reports_every_problem_of_a_run_at_once(local_example) -> None:
    """An unknown model no longer hides the run's other problems (each planning step reports its own)."""
    data = local_example.load()
    run = data["runs"][0]  # Llama-3.2-1B-Instruct_rank4
    run["model"] = "No-Such-Model"
    run["parameters"] = {"lora_rank": 8}
    run["compute"] = {"time": "25:99:00"}
    local_example.save(data)
    res = local_example.generate()
    assert res.code == 1, res.out + res.err
    errors = [ln for ln in res.out.splitlines() if ln.strip().startswith("error:") and run["name"] in ln]
    assert any("No-Such-Model" in e for e in errors), errors
    assert any("the run name says rank4 but lora_rank is 8" in e for e in errors), errors
    assert any("'25:99:00' is not a SLURM time" in e for e in errors), errors


# --- resources: the run, the model's registry entry, the site's defaults ----------------------------------------


@pytest.mark.parametrize(
    ("run", "model", "site", "expected"),
    [
        (None, "80G", None, "80G"),  # the model's need
        (None, "80G", "120G", "120G"),  # the site's default is a floor: it asks for more
        (None, "80G", "32G", "80G"),  # ... and never for less than the model needs
        (None, "80G", "81920", "80G"),  # equal (81920 MB): the model's, as written
        (None, "80G", "1T", "1T"),
        (None, None, "20G", "20G"),  # a model entry that names none
        (None, None, None, "32G"),  # the built-in default
        ("16G", "80G", "120G", "16G"),  # the run's own compute: wins over both
    ],
)
def test_memory_is_the_runs_else_the_larger_of_model_and_site(run, model, site, expected) -> None:
    assert rules.floor_resource(run, model, site, "32G", rules.memory_mb) == expected


@pytest.mark.parametrize(("model", "site", "expected"), [(1, 8, 8), (4, 2, 4), (None, 3, 3), (1, None, 1)])
def test_cpus_are_the_larger_of_model_and_site(model, site, expected) -> None:
    assert rules.floor_resource(None, model, site, 4) == expected
    assert rules.floor_resource(2, model, site, 4) == 2


@pytest.mark.parametrize(("text", "mb"), [("80G", 81920), ("40960", 40960), ("512K", 0.5), ("2t", 2 * 1024**2)])
def test_memory_sizes_are_read_as_sbatch_reads_them(text, mb) -> None:
    assert rules.memory_mb(text) == mb


def test_the_site_defaults_reach_the_batch_script_of_a_shipped_model(example, tmp_path) -> None:
    """default_cpus and default_mem of the local config take effect for a model of the shipped registry (1 CPU and
    80G of memory) where they ask for more, and the self-check (slurm_resources) agrees; a run's compute: wins."""
    import yaml

    from .conftest import run_cli

    example.local.write_text(example.local.read_text() + "default_cpus: 8\ndefault_mem: 120G\n")
    data = example.load()
    data["runs"][1]["compute"] = {"mem": "16G", "cpus_per_task": 2}
    example.save(data)
    res = run_cli("generate", example.dir, "--local-config", example.local, "--no-check-paths")
    assert res.code == 0, res.out + res.err
    script = (example.dir / "Llama-3.2-1B-Instruct_rank4" / "finetune.slurm").read_text()
    assert "#SBATCH --mem=120G\n" in script and "#SBATCH --cpus-per-task=8\n" in script
    script = (example.dir / "Llama-3.2-1B-Instruct_rank8" / "finetune.slurm").read_text()
    assert "#SBATCH --mem=16G\n" in script and "#SBATCH --cpus-per-task=2\n" in script
    setup = yaml.safe_load((example.dir / "Llama-3.2-1B-Instruct_rank4" / "setup_finetune.yaml").read_text())
    assert (setup["mem"], setup["cpus_per_task"]) == ("120G", 8)
    example.local.write_text(example.local.read_text().replace("default_mem: 120G", "default_mem: 32G"))
    res = run_cli("generate", example.dir, "--local-config", example.local, "--no-check-paths")
    assert res.code == 0, res.out + res.err
    script = (example.dir / "Llama-3.2-1B-Instruct_rank4" / "finetune.slurm").read_text()
    assert "#SBATCH --mem=80G\n" in script, "a site default below the model's need lowered it"
