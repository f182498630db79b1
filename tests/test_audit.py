"""The token audit (scaffold.torchtune_ext.audit, scaffold.checks.token_audit): with the run's own dataset builder and a
tiny offline tokenizer carrying the real Llama 3.2 chat template, records that would train on no answer token, or
on part of it, are counted and named; the verification suite's token_audit check fails on each planted defect."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

pytest.importorskip("transformers", reason="transformers is not installed (pip install '.[test]')")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from scaffold.checks.token_audit import audit_run  # noqa: E402
from scaffold.testing.hf_tokenizers import write_hf_tokenizer  # noqa: E402
from scaffold.torchtune_ext import audit  # noqa: E402
from scaffold.torchtune_ext.datasets import chat_template_dataset, prompt_completion_text_dataset  # noqa: E402

from .verify_support import R4, R8, Planted  # noqa: E402

pytest_plugins = ["pytester"]

LONG = "word " * 300  # a prompt part far over max_seq_len 64


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_hf_tokenizer(tmp_path_factory.mktemp("model"), "llama3").parent


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "words.json"
    train = [
        {"input": "apple", "output": "Apple"},
        {"input": LONG, "output": "Long"},  # 1: the prompt alone fills max_seq_len
        {"input": "peach", "output": "Peach " * 40},  # 2: the answer is cut part way
        {"input": "lemon", "output": "Lemon"},
    ]
    path.write_text(json.dumps({"train": train, "validation": train[:1]}))
    return path


def chat_section(data: Path, model: Path, **extra) -> dict:
    return {
        "_component_": "scaffold.torchtune_ext.datasets.chat_template_dataset",
        "source": "json",
        "data_files": str(data),
        "field": "train",
        "model_path": str(model),
        "prompt": "Capitalize the given word: {input}\n",
        "system_prompt": "",
        "chat_template_kwargs": {"date_string": "26 Jul 2024"},
        "train_on_input": False,
        "packed": False,
        **extra,
    }


def test_the_audit_names_untrainable_and_cut_records(model, data) -> None:
    section = chat_section(data, model)
    result = audit.audit_split(
        chat_template_dataset, section, "train", str(data), str(model), 64, audit.ends_with_end_token(section)
    )
    assert result.untrainable == [1] and result.cut == [2] and result.over == [1, 2]
    assert result.end_trained == 2 and result.max_length > 300 and result.p95_length == result.max_length
    line = result.line()
    assert "4 records" in line and "1 training on no answer token" in line and "1 with the answer cut" in line
    roomy = audit.audit_split(chat_template_dataset, section, "train", str(data), str(model), 4096, True)
    assert roomy.untrainable == roomy.cut == roomy.over == [] and roomy.end_trained == 4


def test_a_text_run_without_eos_trains_no_end_token(model, data) -> None:
    section = {**chat_section(data, model), "_component_": "x.prompt_completion_text_dataset"}
    del section["system_prompt"], section["chat_template_kwargs"]
    result = audit.audit_split(
        prompt_completion_text_dataset, section, "train", str(data), str(model), 64, audit.ends_with_end_token(section)
    )
    assert result.end_trained == 0 and "no end-of-turn token" in result.line() and result.untrainable == [1]
    assert audit.ends_with_end_token({**section, "add_eos": True})


def test_the_builder_drops_untrainable_records_when_asked(model, data) -> None:
    args = {k: v for k, v in chat_section(data, model).items() if k != "_component_"}
    kept = chat_template_dataset(SimpleNamespace(max_seq_len=64), **args, drop_untrainable=True)
    assert len(kept) == 3 and kept.dropped == [1]
    assert all(any(label != -100 for label in kept[i]["labels"]) for i in range(3))
    assert len(chat_template_dataset(SimpleNamespace(max_seq_len=64), **args)) == 4


def test_records_are_built_once_for_runs_that_share_data_and_builder(model, data, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(audit.CACHE_ENV, "off")  # the process's own cache (the disk's: the tests below)
    calls = []
    real = chat_template_dataset

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    counting.__module__, counting.__qualname__ = "test", "counting"
    section = chat_section(data, model)
    for limit in (64, 128, 4096):  # another max_seq_len, train_on_input or policy: the same built records
        audit.audit_split(counting, section, "train", str(data), str(model), limit, True)
    assert len(calls) == 1
    data.write_text(data.read_text().replace("lemon", "melon"))  # the file changed: built again
    os.utime(data, ns=(1, 1))
    audit.audit_split(counting, section, "train", str(data), str(model), 64, True)
    assert len(calls) == 2


def test_runs_that_share_records_and_limits_share_one_split_audit(model, data, monkeypatch) -> None:
    """Worked out once for a sweep's runs on the same data (not once a run), never shared across other limits or
    other records."""
    monkeypatch.setenv(audit.CACHE_ENV, "off")
    section = chat_section(data, model)

    def split_audit(limit: int | None, ends: bool = True) -> audit.SplitAudit:
        return audit.audit_split(chat_template_dataset, section, "train", str(data), str(model), limit, ends)

    first = split_audit(64)
    assert split_audit(64) is first
    assert first.untrainable == [1] and first.cut == [2]
    wide = split_audit(4096)
    assert wide is not first and wide.untrainable == [] and wide.cut == [] and first.untrainable == [1]
    assert split_audit(64, ends=False) is not first and split_audit(64, ends=False).end_trained == 0
    data.write_text(data.read_text().replace('"Long"', '"Longer and longer"'))  # built again, counted again
    os.utime(data, ns=(1, 1))
    again = split_audit(4096)
    assert again is not wide and again.lengths[1] > wide.lengths[1] and again.max_length == max(again.lengths)


def counting_builder(calls: list) -> object:
    """chat_template_dataset under another name (so no other test's records are its), counting its calls."""

    def counting(*a, **kw):
        calls.append(1)
        return chat_template_dataset(*a, **kw)

    counting.__module__, counting.__qualname__ = chat_template_dataset.__module__, "counting_for_the_disk_cache"
    return counting


def test_built_records_are_found_on_disk_by_content(model, data, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(audit.CACHE_ENV, str(tmp_path / "cache"))
    calls: list = []
    builder = counting_builder(calls)

    def records(data_file: Path = data, model_dir: Path = model, **extra) -> tuple:
        section = chat_section(data_file, model_dir, **extra)
        audit._BUILT.clear()  # as a new process would
        return audit.built_records(builder, section, "train", str(data_file), str(model_dir))

    first = records()
    assert len(calls) == 1 and len(list((tmp_path / "cache").glob("*.json"))) == 1
    assert records() == first and len(calls) == 1  # a later process: from disk, nothing tokenized
    # The same bytes elsewhere (another experiment, a fresh clone): found by content, not by path or stamp.
    copy, model_copy = tmp_path / "copy" / "words.json", tmp_path / "model-copy"
    copy.parent.mkdir()
    shutil.copy(data, copy)
    shutil.copytree(model, model_copy)
    assert records(copy, model_copy) == first and len(calls) == 1
    # What the records depend on, changed: built again.
    copy.write_text(copy.read_text().replace("lemon", "melon melon"))
    assert records(copy, model_copy) != first and len(calls) == 2
    config = model_copy / "tokenizer_config.json"
    config.write_text(config.read_text().replace("Cutting Knowledge Date", "Knowledge cut-off"))
    records(copy, model_copy)
    assert len(calls) == 3
    records(prompt="Capitalize: {input}\n")
    assert len(calls) == 4
    with monkeypatch.context() as m:  # another transformers, tokenizers or jinja2 installed
        m.setattr(audit, "package_stamp", lambda name: f"{name}: upgraded")
        assert records() == first and len(calls) == 5
    # A damaged entry is built again and written anew; a cache that cannot be written fails nothing.
    for entry in (tmp_path / "cache").glob("*.json"):
        entry.write_text("{")
    assert records() == first and len(calls) == 6
    assert records() == first and len(calls) == 6
    monkeypatch.setenv(audit.CACHE_ENV, str(data))  # a file where the directory should be
    assert records() == first and len(calls) == 7
    monkeypatch.setenv(audit.CACHE_ENV, "off")
    assert records() == first and len(calls) == 8


def test_records_found_on_disk_start_no_worker(model, data, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(audit.CACHE_ENV, str(tmp_path / "cache"))
    section = chat_section(data, model)
    component = section["_component_"]
    module, _, name = component.rpartition(".")
    builder = getattr(__import__(module, fromlist=[name]), name)
    audit._BUILT.clear()
    built = audit.built_records(builder, section, "train", str(data), str(model))
    audit._BUILT.clear()
    audit.stop_worker()
    key = audit.prefetch(component, section, "train", str(data), str(model))
    assert audit._POOL is None and audit.ready(key) and audit._BUILT[key] == built


def test_audit_run_refuses_by_default_and_accepts_explicitly(model, data) -> None:
    config = {"dataset": chat_section(data, model), "tokenizer": {"max_seq_len": 64}}
    refused = audit_run({"untrainable_records": "refuse"}, config, data, model)
    (problem,) = refused.problems
    assert "record(s) 1" in problem["message"] and "max_seq_len to at least" in problem["fix"]
    assert any("answer cut" in w and "record(s) 2" in w for w in refused.warnings)
    missing_drop = audit_run({"untrainable_records": "drop"}, config, data, model)
    assert "does not drop" in missing_drop.problems[0]["message"]
    config["dataset"]["drop_untrainable"] = True
    dropped = audit_run({"untrainable_records": "drop"}, config, data, model)
    assert not dropped.problems and any("left out" in w for w in dropped.warnings)
    kept = audit_run({"untrainable_records": "train"}, config, data, model)
    assert not kept.problems and any("kept (untrainable_records: train)" in w for w in kept.warnings)


# --- the verification suite's check, on planted defects -------------------------------------------------------


def test_clean_runs_pass_token_audit(planted: Planted, pytester) -> None:
    out = planted.verify(pytester, "-k", "token_audit")
    assert not out.failed and {f"token_audit[{R4}]", f"token_audit[{R8}]"} <= out.passed, out.text


def test_data_changed_after_generation_fails_token_audit(planted: Planted, pytester) -> None:
    path = planted.path("data/words_5L_80P_10.json")
    data = json.loads(path.read_text())
    data["train"].append({"input": "word " * 3000, "output": "Word"})
    path.write_text(json.dumps(data))
    out = planted.verify(pytester, "-k", "token_audit")
    assert out.failed == {f"token_audit[{R4}]", f"token_audit[{R8}]"}, out.text
    assert f"record(s) {len(data['train']) - 1}" in out.text and "max_seq_len to at least" in out.text


def test_a_max_seq_len_too_small_fails_token_audit(planted: Planted, pytester) -> None:
    planted.replace(f"{R4}/finetune.yaml", "max_seq_len: 2048", "max_seq_len: 8")
    out = planted.verify(pytester, "-k", "token_audit")
    assert out.failed == {f"token_audit[{R4}]"}, out.text


def test_drop_asked_but_not_done_fails_token_audit(planted: Planted, pytester) -> None:
    planted.edit_summary(lambda s: s["controls"].update(untrainable_records="drop"))
    planted.replace(f"{R4}/finetune.yaml", "max_seq_len: 2048", "max_seq_len: 8")
    out = planted.verify(pytester, "-k", "token_audit")
    assert f"token_audit[{R4}]" in out.failed and "does not drop" in out.text, out.text
    setup = yaml.safe_load(planted.path(f"{R4}/setup_finetune.yaml").read_text())
    assert setup.get("untrainable_records", "refuse") == "refuse"  # the file on disk predates the change
