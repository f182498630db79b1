"""Writing a change into a YAML text in place (scaffold/inputs/yamledit.py, which setup-finetune writes the summary
with): only the changed values' spans, or one new line, change; everything else stays as written; a result that
would not read back as exactly the data with the changes made is refused."""

from __future__ import annotations

import pytest

from scaffold.inputs.yamledit import EditError, set_values
from scaffold.inputs.yamlio import parse_yaml

from .conftest import EXAMPLE

SUMMARY = (EXAMPLE / "experiment_summary.yaml").read_text()


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    import difflib

    diff = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    return [d[2:] for d in diff if d.startswith("- ")], [d[2:] for d in diff if d.startswith("+ ")]


@pytest.mark.parametrize(
    ("path", "value", "removed", "added"),
    [
        (("runs", 0, "parameters", "lora_rank"), 16, ["      lora_rank: 4"], ["      lora_rank: 16"]),
        (("runs", 0, "parameters", "epochs"), 3, [], ["      epochs: 3"]),
        (("runs", 0, "compute", "time"), "02:00:00", [], ["    compute:", "      time: 02:00:00"]),
        (("runs", 1, "compute", "time"), "02:00:00", ['      time: "00:30:00"'], ['      time: "02:00:00"']),
        (("runs", 2, "parameters", "lr"), 1e-5, ["    parameters: {}"], ["    parameters: {lr: 1.0e-05}"]),
        (
            ("runs", 0, "parameters", "prompt"),
            "Say it: {input}\n",
            [],
            ['      prompt: "Say it: {input}\\n"'],
        ),
        (("runs", 0, "slurm_overrides", "qos"), "high", [], ["    slurm_overrides:", "      qos: high"]),
        (
            ("runs", 0, "parameters", "lora_attn_modules"),
            ["q_proj", "v_proj"],
            [],
            ['      lora_attn_modules: ["q_proj", "v_proj"]'],
        ),
    ],
)
def test_a_change_rewrites_its_value_alone_and_keeps_every_comment(path, value, removed, added):
    after = set_values(SUMMARY, [(path, value)], "experiment_summary.yaml")
    assert changed_lines(SUMMARY, after) == (removed, added)
    data = parse_yaml(after, "s").data
    node = data
    for part in path:
        node = node[part]
    assert node == value


def test_a_missing_mapping_on_a_flow_entry_is_added_inside_it():
    text = "runs: [{name: a, parameters: {}}]  # one run\n"
    after = set_values(text, [(("runs", 0, "compute", "gpus"), 2), (("runs", 0, "parameters", "seed"), 7)])
    assert after == "runs: [{name: a, parameters: {seed: 7}, compute: {gpus: 2}}]  # one run\n"


def test_an_empty_value_becomes_a_mapping():
    after = set_values("runs:\n- name: a\n  parameters:\n  model: m\n", [(("runs", 0, "parameters", "epochs"), 2)])
    assert after == "runs:\n- name: a\n  parameters: {epochs: 2}\n  model: m\n"


def test_a_new_entry_goes_after_a_block_scalar_and_before_the_blank_line():
    text = "runs:\n- name: a\n  parameters:\n    prompt: |\n      hi {input}\n\n- name: b\n"
    after = set_values(text, [(("runs", 0, "parameters", "epochs"), 2)])
    assert after == "runs:\n- name: a\n  parameters:\n    prompt: |\n      hi {input}\n    epochs: 2\n\n- name: b\n"


@pytest.mark.parametrize(
    "text",
    [
        # an alias: the change would reach the other run too
        "common: &p\n  lr: 1e-4\nruns:\n- name: a\n  parameters: *p\n- name: b\n  parameters: *p\n",
        # a kept block scalar whose trailing blank line is part of its value
        "runs:\n- name: a\n  parameters:\n    prompt: |+\n      hi {input}\n\n- name: b\n",
    ],
)
def test_an_edit_that_would_change_anything_else_is_refused(text):
    with pytest.raises(EditError, match="would not read back as written"):
        set_values(text, [(("runs", 0, "parameters", "lr" if "&p" in text else "epochs"), 2e-4)])


def test_a_value_is_written_so_that_it_reads_back_with_its_type():
    """Strings that YAML would read as something else are quoted: a time 4:00:00 (sexagesimal), yes, 1e-5, null."""
    text = "runs:\n- name: a\n  compute: {}\n"
    for value in ("4:00:00", "yes", "1e-5", "null", "", "a: b", "# not a comment"):
        after = set_values(text, [(("runs", 0, "compute", "mem"), value)])
        assert parse_yaml(after, "s").data["runs"][0]["compute"]["mem"] == value, (value, after)
