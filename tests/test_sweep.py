"""Runs expanded from `variables`: the Cartesian product (with paired axes) for every model, deterministic names
from the parameter table's tokens, and collisions refused naming both runs."""

from __future__ import annotations

import copy
import json

import pytest

from scaffold.inputs import summary as summary_mod
from scaffold.inputs import sweep as sweep_mod
from scaffold.inputs.yamlio import parse_yaml

from .conftest import Experiment, run_cli


def sweep(example: Experiment, variables: dict, runs: list | None = None, models: int = 1) -> None:
    data = example.load()
    data["variables"] = variables
    if runs is None:
        data.pop("runs")
    else:
        data["runs"] = runs
    if models == 2:
        data["models"]["base"].append({"name": "Qwen2.5-3B-Instruct", "path": "/scratch/models/Qwen2.5-3B-Instruct"})
    example.save(data)


def names(res) -> list[str]:
    return [r["name"] for r in json.loads(res.out)["runs"]]


def test_product_of_axes_for_every_model(example: Experiment) -> None:
    sweep(example, {"lora_rank": [8, 16], "lr": [1e-5, 3e-4], "seed": [7]}, models=2)
    res = example.generate("--no-check-paths", "--json")
    assert res.code == 0, res.out + res.err
    assert names(res) == [
        f"{m}_rank{r}_lr{lr}_s7"
        for m in ("Llama-3.2-1B-Instruct", "Qwen2.5-3B-Instruct")
        for r in (8, 16)
        for lr in ("1e-5", "3e-4")
    ]
    cfg = (example.dir / "Qwen2.5-3B-Instruct_rank16_lr3e-4_s7" / "finetune.yaml").read_text()
    assert "lora_rank: 16" in cfg and "lr: 0.0003" in cfg and "seed: 7" in cfg


def test_names_are_deterministic(example: Experiment) -> None:
    sweep(example, {"lr": [1e-4, 2e-5], "lora_rank": [4]})
    first = names(example.generate("--no-check-paths", "--json", "--dry-run"))
    second = names(example.generate("--no-check-paths", "--json", "--dry-run"))
    assert first == second == ["Llama-3.2-1B-Instruct_lr1e-4_rank4", "Llama-3.2-1B-Instruct_lr2e-5_rank4"]


def test_paired_axis_moves_settings_together(example: Experiment) -> None:
    paired = [{"batch_size": 4, "gradient_accumulation_steps": 1}, {"batch_size": 2, "gradient_accumulation_steps": 2}]
    sweep(example, {"lora_rank": [4, 8], "paired": paired})
    res = example.generate("--no-check-paths", "--json")
    assert res.code == 0, res.out + res.err
    assert names(res) == [
        "Llama-3.2-1B-Instruct_rank4_bs4_ga1",
        "Llama-3.2-1B-Instruct_rank4_bs2_ga2",
        "Llama-3.2-1B-Instruct_rank8_bs4_ga1",
        "Llama-3.2-1B-Instruct_rank8_bs2_ga2",
    ]
    cfg = (example.dir / "Llama-3.2-1B-Instruct_rank8_bs2_ga2" / "finetune.yaml").read_text()
    assert "batch_size: 2" in cfg and "gradient_accumulation_steps: 2" in cfg


def test_controls_listed_alone_are_kept_beside_the_sweep(example: Experiment) -> None:
    control = {"name": "Llama-3.2-1B-Instruct_base", "type": "control", "model": "Llama-3.2-1B-Instruct"}
    sweep(example, {"lora_rank": [4, 8]}, runs=[control])
    res = example.generate("--no-check-paths", "--json")
    assert res.code == 0
    assert names(res)[-1] == "Llama-3.2-1B-Instruct_base" and len(names(res)) == 3


def test_print_plan_writes_nothing(example: Experiment) -> None:
    sweep(example, {"lora_rank": [4, 8], "lr": [1e-5]})
    before = example.snapshot()
    res = run_cli("generate", example.dir, "--local-config", example.local, "--no-check-paths", "--print-plan")
    assert res.code == 0, res.err
    assert "2 expanded from variables: lora_rank, lr" in res.out
    assert "Llama-3.2-1B-Instruct_rank8_lr1e-5" in res.out
    assert example.snapshot() == before


def test_print_plan_reports_invalid_input_as_the_other_commands_do(example: Experiment) -> None:
    sweep(example, {"lora_rank": [4, 8], "no_such_parameter": [1]})
    res = run_cli("generate", example.dir, "--local-config", example.local, "--no-check-paths", "--print-plan")
    assert res.code == 2 and not res.out
    assert res.err.startswith("error: ") and "no_such_parameter" in res.err, res.err
    assert all(line.startswith("error: ") for line in res.err.splitlines()), res.err


def test_listed_runs_win_but_must_spell_what_they_sweep(example: Experiment) -> None:
    """`runs` is given, so it wins; a run that sets a swept parameter without saying it in its name is reported."""
    data = example.load()
    data["variables"] = {"lora_rank": [4, 8], "lr": [1e-5, 1e-4]}
    data["runs"][0]["parameters"]["lr"] = 1e-5  # "..._rank4" says nothing of lr
    example.save(data)
    res = example.generate("--no-check-paths")
    assert res.code == 1
    assert "sets the swept parameter lr but its name does not say it" in res.out and "add _lr1e-5" in res.out
    assert (example.dir / "Llama-3.2-1B-Instruct_rank8" / "finetune.yaml").is_file()


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"lr": [1e-5, 1.0e-05]}, "have the same name"),
        ({"lora_dropout": [0.1, 0.10]}, "have the same name"),
    ],
    ids=["same-lr-twice", "same-dropout-twice"],
)
def test_sweep_collisions_name_both_runs(example: Experiment, variables: dict, expected: str) -> None:
    sweep(example, variables)
    res = example.generate("--no-check-paths")
    assert res.code == 2
    assert expected in res.err and "runs[0]" in res.err and "runs[1]" in res.err


@pytest.mark.parametrize(
    ("second", "how"),
    [
        ("LLAMA-3.2-1B-INSTRUCT_RANK4", "fold together"),
        ("Llama-3.2-1B-Instruct_rank4.", "fold together"),
        ("Llama-3.2-1B-Instruct_rank4", "the same name"),
    ],
    ids=["case", "trailing-dot", "identical"],
)
def test_listed_collisions_name_both_runs(example: Experiment, second: str, how: str) -> None:
    data = example.load()
    data["runs"][2] = {"name": second, "type": "control", "model": "Llama-3.2-1B-Instruct"}
    example.save(data)
    res = example.generate("--no-check-paths")
    assert res.code == 2
    line = [ln for ln in res.err.splitlines() if "share a directory" in ln][0]
    assert how in line and "runs[0] 'Llama-3.2-1B-Instruct_rank4'" in line and f"runs[2] '{second}'" in line


def test_same_output_dir_is_the_same_collision(example: Experiment) -> None:
    """output_dir is {experiment}/{run}/artifacts: two runs share it exactly when their directories collide."""
    data = example.load()
    data["runs"][1]["name"] = "llama-3.2-1b-instruct_RANK4"
    data["runs"][1]["parameters"] = {"lora_rank": 4}
    example.save(data)
    res = example.generate("--no-check-paths")
    assert res.code == 2 and "share a directory" in res.err


def test_swept_parameter_without_a_token_is_refused(example: Experiment) -> None:
    sweep(example, {"packed": [True, False]})
    res = example.generate("--no-check-paths")
    assert res.code == 2
    assert "packed has no run-name token" in res.err and "list those runs explicitly" in res.err


def test_no_runs_and_no_variables(example: Experiment) -> None:
    data = example.load()
    data.pop("runs")
    data.pop("variables")
    example.save(data)
    res = example.generate("--no-check-paths")
    assert res.code == 2 and "neither `runs` nor `variables`" in res.err


def test_swept_values_are_validated_at_their_line(example: Experiment) -> None:
    sweep(example, {"lora_rank": [8, 0]})
    res = example.generate("--no-check-paths")
    assert res.code == 2 and "variables.lora_rank[1]" in res.err and "out of range" in res.err


def test_unknown_variable_gets_a_suggestion(example: Experiment) -> None:
    sweep(example, {"lora_ranks": [8]})
    res = example.generate("--no-check-paths")
    assert res.code == 2 and "did you mean 'lora_rank'" in res.err


def test_expand_returns_the_runs_it_adds_and_the_summary_adds_them(example: Experiment) -> None:
    sweep(example, {"lora_rank": [4, 8]}, runs=[{"name": "Llama-3.2-1B-Instruct_base", "type": "control"}])
    path = example.dir / "experiment_summary.yaml"
    text = path.read_text()
    doc = parse_yaml(text, path)
    before, marks = copy.deepcopy(doc.data), dict(doc.marks)
    added = sweep_mod.expand(doc.data, doc)
    assert doc.data == before and doc.marks == marks  # expand changes nothing
    assert [r["name"] for r in added.runs] == ["Llama-3.2-1B-Instruct_rank4", "Llama-3.2-1B-Instruct_rank8"]
    assert added.note.endswith("expanded variables (lora_rank) x 1 model(s) into 2 fine-tuned runs")
    loaded = summary_mod.load(example.dir, text)  # ...the summary puts them in front of the listed runs
    assert [r["name"] for r in loaded.data["runs"]] == [*(r["name"] for r in added.runs), "Llama-3.2-1B-Instruct_base"]
    assert loaded.swept == 2 and added.note in loaded.notes
    assert loaded.doc.locate(("runs", 2, "name")) == doc.locate(("runs", 0, "name"))  # its line marks moved with it
