"""The evaluator contract (scaffold.torchtune_ext.eval_contract): the post-training step's edits of an epoch
directory's tokenizer files make the evaluator's path (inspect-ai's Hugging Face provider: render the template
to text without a date, tokenize it with special tokens on; or `role: content` lines without a template) give
exactly the prompt tokens the run trained on, and change what other consumers of the directory see only as
docs/training.md says. Tiny offline tokenizers carrying the real Llama 3.2 and Qwen2.5 Instruct chat templates."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="transformers is not installed (pip install '.[test]')")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from transformers import AutoTokenizer  # noqa: E402

from scaffold.testing.hf_tokenizers import write_hf_tokenizer  # noqa: E402
from scaffold.torchtune_ext import eval_contract, evaluator, post_finetune  # noqa: E402
from scaffold.torchtune_ext.datasets import conversation, token_ids  # noqa: E402

DATE = "26 Jul 2024"
PROMPT = "Capitalize the given word: apple\n"
FAMILIES = ["llama3", "qwen2"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {family: write_hf_tokenizer(root / family, family).parent for family in FAMILIES}


def epoch(models: dict[str, Path], tmp_path: Path, family: str, dataset_type: str, date: str | None = DATE) -> Path:
    """A copy of the model's tokenizer files, as the checkpointer leaves an epoch directory, prepared by the post
    step's code."""
    target = eval_contract.copy_tokenizer_files(models[family], tmp_path / f"epoch_0_{family}_{dataset_type}")
    eval_contract.prepare(target, dataset_type=dataset_type, chat_template_date=date)
    return target


def native_chat_prompt(model: Path, system: str) -> list[int]:
    """What a chat run trains on as its prompt part: the model's own template, tokenized by transformers."""
    tok = AutoTokenizer.from_pretrained(model)
    messages = conversation("Capitalize the given word: {input}\n", system, {"input": "apple"})
    return token_ids(tok.apply_chat_template(messages, add_generation_prompt=True, date_string=DATE, return_dict=False))


@pytest.mark.parametrize("system", ["You are a helpful assistant.", ""], ids=["system", "empty-system"])
@pytest.mark.parametrize("family", FAMILIES)
def test_the_evaluator_feeds_a_chat_run_its_trained_prompt(models, tmp_path, family, system) -> None:
    tok = evaluator.load(epoch(models, tmp_path, family, "chat_completion"))
    messages = eval_contract.messages("chat_completion", system, PROMPT)
    fed = evaluator.encode(tok, evaluator.render(tok, messages))
    assert fed == native_chat_prompt(models[family], system)
    text = tok.decode(fed)
    if family == "llama3":
        assert text.count("<|begin_of_text|>") == 1 and f"Today Date: {DATE}" in text
    else:
        assert ("<|im_start|>system\n<|im_end|>\n" in text) == (not system) and "You are Qwen" not in text


@pytest.mark.parametrize("family", FAMILIES)
def test_without_the_post_step_the_evaluator_feeds_other_tokens(models, tmp_path, family) -> None:
    """The four differences measured with the real evaluator (a model directory as the checkpointer copies it)."""
    tok = evaluator.load(eval_contract.copy_tokenizer_files(models[family], tmp_path / "raw"))
    text = tok.decode(
        evaluator.encode(tok, evaluator.render(tok, eval_contract.messages("chat_completion", "", PROMPT)))
    )
    if family == "llama3":
        assert text.startswith("<|begin_of_text|><|begin_of_text|>") and f"Today Date: {DATE}" not in text
    base = eval_contract.copy_tokenizer_files(models[family], tmp_path / "raw-base")
    config = json.loads((base / "tokenizer_config.json").read_text())
    del config["chat_template"]  # a base model's directory without a chat template
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    tok = evaluator.load(base)
    assert tok.decode(evaluator.encode(tok, evaluator.render(tok, [{"role": "user", "content": PROMPT}]))).endswith(
        f"user: {PROMPT}\n"
    )


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("has_template", [True, False], ids=["template", "no-template"])
def test_the_evaluator_feeds_a_base_model_run_its_plain_prompt(models, tmp_path, family, has_template) -> None:
    source = eval_contract.copy_tokenizer_files(models[family], tmp_path / "model")
    if not has_template:
        config = json.loads((source / "tokenizer_config.json").read_text())
        del config["chat_template"]
        (source / "tokenizer_config.json").write_text(json.dumps(config))
    target = eval_contract.copy_tokenizer_files(source, tmp_path / "epoch_0")
    eval_contract.prepare(target, dataset_type="text_completion", chat_template_date=None)
    tok = evaluator.load(target)
    fed = evaluator.encode(tok, evaluator.render(tok, eval_contract.messages("text_completion", "", PROMPT)))
    plain = AutoTokenizer.from_pretrained(source)(PROMPT)["input_ids"]  # what a text_completion run trains on
    assert fed == plain


def test_prepare_is_idempotent_and_a_new_date_replaces_the_old(models, tmp_path) -> None:
    target = epoch(models, tmp_path, "llama3", "chat_completion")
    files = {p.name: p.read_bytes() for p in target.iterdir()}
    assert eval_contract.prepare(target, dataset_type="chat_completion", chat_template_date=DATE) == []
    assert {p.name: p.read_bytes() for p in target.iterdir()} == files  # a requeued job's second post step
    eval_contract.prepare(target, dataset_type="chat_completion", chat_template_date="01 Jan 2025")
    template = json.loads((target / "tokenizer_config.json").read_text())["chat_template"]
    default = template[: template.index("{%- endif %}")]
    assert template.count("scaffold-torchtune: training date") == 1 and '"01 Jan 2025"' in default


# --- what other consumers of the epoch directory see (docs/training.md) -----------------------------------------


def test_other_consumers_of_a_chat_epoch_directory(models, tmp_path) -> None:
    model, prepared = models["llama3"], epoch(models, tmp_path, "llama3", "chat_completion")
    before, after = AutoTokenizer.from_pretrained(model), AutoTokenizer.from_pretrained(prepared)
    messages = conversation("{input}", "S", {"input": "apple"})
    # apply_chat_template(tokenize=True) (vLLM's chat path renders and tokenizes without special tokens the same
    # way): unchanged, for any date given.
    for date in (DATE, "01 Jan 2025"):
        assert token_ids(after.apply_chat_template(messages, date_string=date, return_dict=False)) == token_ids(
            before.apply_chat_template(messages, date_string=date, return_dict=False)
        )
    # Without a date: the training date, not the day it runs.
    assert f"Today Date: {DATE}" in after.apply_chat_template(messages, tokenize=False)
    # Plain encoding of a text: no BOS any more (the chat template writes it); the text's own tokens unchanged.
    assert before("apple")["input_ids"] == [before.bos_token_id, *after("apple")["input_ids"]]
    assert after.decode(after("apple")["input_ids"]) == "apple"


def test_other_consumers_of_a_base_model_epoch_directory(models, tmp_path) -> None:
    model, prepared = models["qwen2"], epoch(models, tmp_path, "qwen2", "text_completion", None)
    before, after = AutoTokenizer.from_pretrained(model), AutoTokenizer.from_pretrained(prepared)
    assert after("Word: apple")["input_ids"] == before("Word: apple")["input_ids"]  # plain encoding unchanged
    # A chat template that writes the messages' contents as they are (system and user, no roles).
    assert after.apply_chat_template([{"role": "user", "content": "Word: apple"}], tokenize=False) == "Word: apple"


# --- the post step ---------------------------------------------------------------------------------------------


def test_post_step_prepares_every_epoch_and_keeps_the_adapter_rewrite(models, tmp_path, capsys) -> None:
    out = tmp_path / "artifacts"
    for n in (0, 1):
        e = eval_contract.copy_tokenizer_files(models["llama3"], out / f"epoch_{n}")
        (e / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "meta-llama/x", "r": 8}))
    args = ["--output-dir", str(out), "--model-dir", str(models["llama3"]), "--method", "lora"]
    assert post_finetune.main([*args, "--dataset-type", "chat_completion", "--chat-template-date", DATE]) == 0
    for n in (0, 1):
        tok = evaluator.load(out / f"epoch_{n}")
        fed = evaluator.encode(tok, evaluator.render(tok, eval_contract.messages("chat_completion", "", PROMPT)))
        assert fed == native_chat_prompt(models["llama3"], "")
        adapter = json.loads((out / f"epoch_{n}" / "adapter_config.json").read_text())
        assert adapter == {"base_model_name_or_path": str(models["llama3"]), "r": 8}
    logged = capsys.readouterr().out
    assert "epoch_1: the tokenizer adds no special tokens" in logged and "chat template: date default" in logged


def test_post_step_full_fine_tuning_prepares_the_tokenizer_and_leaves_no_adapter_warning(models, tmp_path, capsys):
    out = tmp_path / "artifacts"
    eval_contract.copy_tokenizer_files(models["qwen2"], out / "epoch_0")
    args = ["--output-dir", str(out), "--model-dir", str(models["qwen2"]), "--method", "full"]
    assert post_finetune.main([*args, "--dataset-type", "text_completion"]) == 0
    assert json.loads((out / "epoch_0" / "tokenizer_config.json").read_text())["chat_template"] == (
        eval_contract.PLAIN_TEMPLATE
    )
    assert "adapter_config" not in capsys.readouterr().err


def test_post_step_reports_an_epoch_without_tokenizer_files(tmp_path, capsys) -> None:
    out = tmp_path / "artifacts"
    (out / "epoch_0").mkdir(parents=True)
    args = ["--output-dir", str(out), "--model-dir", str(tmp_path), "--method", "full", "--dataset-type"]
    assert post_finetune.main([*args, "chat_completion", "--chat-template-date", DATE]) == 1
    assert "has no tokenizer_config.json: the evaluator loads its tokenizer from here" in capsys.readouterr().err
