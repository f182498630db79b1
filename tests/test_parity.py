"""Train/eval parity: the dataset builders give exactly the tokens the evaluation step's Hugging Face tokenizer
gives (tiny offline tokenizers carrying the real Llama 3.2 and Qwen2.5 Instruct chat templates), and the
verification suite's train_eval_parity check catches each way a config could train other text."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("transformers", reason="transformers is not installed (pip install '.[test]')")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from transformers import AutoTokenizer  # noqa: E402

from scaffold.testing.hf_tokenizers import write_hf_tokenizer  # noqa: E402
from scaffold.torchtune_ext.datasets import (  # noqa: E402
    ParityError,
    chat_template_dataset,
    prompt_completion_text_dataset,
)

from .verify_support import EXP, Planted  # noqa: E402

pytest_plugins = ["pytester"]

FAMILIES = ["llama3", "qwen2"]
PROMPTS = ["Capitalize the given word: {input}\n", "Word: {input} -> capitalize it.\nAnswer:"]
SYSTEM = "You are a helpful assistant."
DATE = "26 Jul 2024"
R4 = "Llama-3.2-1B-Instruct_rank4"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tokenizers")
    return {family: write_hf_tokenizer(root / family, family).parent for family in FAMILIES}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "words.json"
    records = [{"input": w, "output": w.capitalize()} for w in ("apple", "peach", "lemon")]
    path.write_text(json.dumps({"train": records, "validation": records[:1]}))
    return path


def build(kind: str, model: Path, data: Path, prompt: str, **kw):
    args = dict(source="json", data_files=str(data), field="train", model_path=str(model), prompt=prompt)
    if kind == "chat":
        args.update(system_prompt=kw.pop("system_prompt", SYSTEM), chat_template_kwargs={"date_string": DATE})
        return chat_template_dataset(SimpleNamespace(max_seq_len=kw.pop("max_seq_len", None)), **args, **kw)
    return prompt_completion_text_dataset(SimpleNamespace(max_seq_len=kw.pop("max_seq_len", None)), **args, **kw)


def split(example: dict) -> tuple[list[int], list[int]]:
    """(masked prompt tokens, trained tokens)"""
    n = sum(1 for label in example["labels"] if label == -100)
    assert example["labels"][:n] == [-100] * n and example["labels"][n:] == example["tokens"][n:]
    return example["tokens"][:n], example["tokens"][n:]


@pytest.mark.parametrize("prompt", PROMPTS, ids=["trailing-newline", "arrow"])
@pytest.mark.parametrize("system", [SYSTEM, ""], ids=["system", "no-system"])
@pytest.mark.parametrize("family", FAMILIES)
def test_chat_example_is_the_chat_template_text(models, data, family, system, prompt) -> None:
    tok = AutoTokenizer.from_pretrained(models[family])
    example = build("chat", models[family], data, prompt, system_prompt=system)[0]
    masked, trained = split(example)
    # The system turn always (an empty one too), as the evaluator sends it.
    messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt.format(input="apple")}]
    want_prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, date_string=DATE)
    want_full = tok.apply_chat_template(
        messages + [{"role": "assistant", "content": "Apple"}], tokenize=False, date_string=DATE
    )
    assert tok.decode(masked) == want_prompt  # the evaluated prompt, byte for byte
    assert tok.decode(masked + trained) == want_full
    assert tok.decode(trained) == want_full.removeprefix(want_prompt)
    if family == "llama3":
        assert masked.count(tok.bos_token_id) == 1  # one BOS, as apply_chat_template(tokenize=True) gives
        assert "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024" in want_prompt
    else:
        assert tok.bos_token_id is None
        if not system:  # the empty system turn the evaluator sends, not the template's default system prompt
            assert "You are Qwen" not in want_prompt and "<|im_start|>system\n<|im_end|>\n" in want_prompt
    # The prompt's whitespace reaches the template: nothing stripped around {input} (Llama's template trims the
    # message's ends itself, as it does at evaluation).
    user = prompt.format(input="apple")
    assert (user.strip() if family == "llama3" else user) in tok.decode(masked)


@pytest.mark.parametrize("family", FAMILIES)
def test_train_on_input_trains_the_prompt_too(models, data, family) -> None:
    masked = build("chat", models[family], data, PROMPTS[0])[0]
    unmasked = build("chat", models[family], data, PROMPTS[0], train_on_input=True)[0]
    assert unmasked["tokens"] == masked["tokens"] and unmasked["labels"] == unmasked["tokens"]


@pytest.mark.parametrize("family", FAMILIES)
def test_text_example_is_the_plain_encoding(models, data, family) -> None:
    tok = AutoTokenizer.from_pretrained(models[family])
    ds = build("text", models[family], data, PROMPTS[1])
    masked, trained = split(ds[0])
    prompt = PROMPTS[1].format(input="apple")
    assert masked == tok(prompt)["input_ids"]  # what the evaluation step feeds the model
    assert trained == tok("Apple", add_special_tokens=False)["input_ids"]
    assert tok.decode(masked, skip_special_tokens=True) == prompt  # verbatim, whitespace kept
    if family == "llama3":
        assert masked[0] == tok.bos_token_id
    unmasked = build("text", models[family], data, PROMPTS[1], train_on_input=True)[0]
    assert unmasked["labels"] == unmasked["tokens"]


def test_max_seq_len_cuts_on_the_right(models, data) -> None:
    full = build("chat", models["llama3"], data, PROMPTS[0])[0]
    cut = build("chat", models["llama3"], data, PROMPTS[0], max_seq_len=10)[0]
    assert cut["tokens"] == full["tokens"][:10] and cut["labels"] == full["labels"][:10]


def test_an_answer_that_breaks_the_prefix_fails_clearly(models, tmp_path) -> None:
    """Qwen's template ends the prompt with 'assistant\\n'; an answer starting with a newline merges with it."""
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"train": [{"input": "apple", "output": "\nApple"}]}))
    ds = build("chat", models["qwen2"], path, PROMPTS[0])
    with pytest.raises(ParityError, match="record 0: the chat template's prompt part is not a prefix"):
        ds[0]


def test_a_tokenizer_without_chat_template_fails_clearly(models, data, tmp_path) -> None:
    model = tmp_path / "base-model"
    write_hf_tokenizer(model, "llama3")
    config = json.loads((model / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ParityError, match="has no chat template"):
        build("chat", model, data, PROMPTS[0])
    assert len(build("text", model, data, PROMPTS[0])) == 3  # a base model trains as text


def test_a_prompt_naming_a_missing_key_fails_at_setup(models, data) -> None:
    with pytest.raises(ValueError, match="record 0 .* cannot be filled"):
        build("chat", models["llama3"], data, "{input} in {language}")


# --- the verification suite's check, on planted defects -------------------------------------------------------


def test_clean_run_passes_train_eval_parity(planted: Planted, pytester) -> None:
    out = planted.verify(pytester, "-k", "train_eval_parity")
    assert not out.failed and f"train_eval_parity[{R4}]" in out.passed, out.text


@pytest.mark.parametrize(
    "old, new, also",
    [
        (
            "_component_: scaffold.torchtune_ext.datasets.chat_template_dataset",
            "_component_: torchtune.datasets.instruct_dataset",
            "dataset_builder",
        ),
        ('prompt: "Capitalize the given word: {input}\\n"', 'prompt: "Capitalize the given word:{input}"', "values"),
        ("train_on_input: false", "train_on_input: true", "values"),
    ],
    ids=["instruct_dataset", "stripped-prompt", "unmasked-prompt"],
)
def test_planted_defect_fails_train_eval_parity(planted: Planted, pytester, old, new, also) -> None:
    planted.replace(f"{R4}/finetune.yaml", old, new)
    out = planted.verify(pytester)
    assert f"train_eval_parity[{R4}]" in out.failed, out.text
    assert "train_eval_parity[Llama-3.2-1B-Instruct_rank8]" not in out.failed, out.text


def test_missing_chat_template_fails_train_eval_parity(planted: Planted, pytester) -> None:
    config_path = planted.path("models/Llama-3.2-1B-Instruct/tokenizer_config.json")
    config = json.loads(config_path.read_text())
    del config["chat_template"]
    config_path.write_text(json.dumps(config))
    out = planted.verify(pytester)
    assert out.failed == {f"train_eval_parity[{R4}]", "train_eval_parity[Llama-3.2-1B-Instruct_rank8]"}, out.text
    assert "no chat template" in out.text


def test_without_transformers_the_check_says_why(planted: Planted, pytester, monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_transformers(name, *args, **kw):
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError("no transformers here")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    out = planted.verify(pytester, "-k", "train_eval_parity")
    assert f"train_eval_parity[{R4}]" in out.skipped, out.text
    assert "transformers is not installed here" in out.skipped[f"train_eval_parity[{R4}]"]
    assert EXP


# --- the check against the evaluator: each difference measured with the real evaluator, planted ---------------

# (model, its tokenizer family, chat template in its directory) and the runs: (model, dataset_type, system_prompt)
CONTRACT_MODELS = {
    "Llama-3.2-1B-Instruct": ("llama3", True),
    "Llama-3.2-1B": ("llama3", False),
    "Qwen2.5-3B-Instruct": ("qwen2", True),
    "Qwen2.5-3B": ("qwen2", False),
}
CONTRACT_RUNS = {
    "llama-chat": ("Llama-3.2-1B-Instruct", "chat_completion", SYSTEM),
    "llama-chat-empty": ("Llama-3.2-1B-Instruct", "chat_completion", ""),
    "qwen-chat": ("Qwen2.5-3B-Instruct", "chat_completion", SYSTEM),
    "qwen-chat-empty": ("Qwen2.5-3B-Instruct", "chat_completion", ""),
    "llama-base": ("Llama-3.2-1B", "text_completion", ""),
    "qwen-base": ("Qwen2.5-3B", "text_completion", ""),
}


@pytest.fixture(scope="module")
def contract_template(tmp_path_factory):
    """The example with one run per evaluator case (Llama and Qwen chat models with and without a system prompt,
    and their base models, whose directories have no chat template), generated once."""
    from .conftest import EXAMPLE, EXAMPLE_LOCAL, Experiment, make_model_dir

    root = tmp_path_factory.mktemp("contract")
    exp = root / "cap"
    ignore = __import__("shutil").ignore_patterns("Llama-*", "logs", "arrays", ".scaffold-manifest.json")
    __import__("shutil").copytree(EXAMPLE, exp, ignore=ignore)
    local = root / "scaffold.local.yaml"
    local.write_text(EXAMPLE_LOCAL.read_text())
    template = Experiment(exp, local)
    data = template.load()
    data["experiment"]["dir"] = "/cluster/exp/cap"
    data.pop("variables", None)
    data["models"]["base"] = []
    for name, (family, has_template) in CONTRACT_MODELS.items():
        model = make_model_dir(exp / "models" / name, ["config.json", "model.safetensors", "original/tokenizer.model"])
        if family != "llama3":
            for stale in model.glob("*"):
                if stale.is_file():
                    stale.unlink()
            write_hf_tokenizer(model, family)
            for extra in ("config.json", "model.safetensors"):
                (model / extra).write_text("{}" if extra.endswith(".json") else "")
        if not has_template:
            config = json.loads((model / "tokenizer_config.json").read_text())
            del config["chat_template"]
            (model / "tokenizer_config.json").write_text(json.dumps(config))
        data["models"]["base"].append({"name": name, "path": f"models/{name}", "size_gb": 1})
    data["runs"] = [
        {
            "name": name,
            "type": "fine-tuned",
            "model": model,
            "parameters": {"lora_rank": 8, "dataset_type": dataset_type, "system_prompt": system},
        }
        for name, (model, dataset_type, system) in CONTRACT_RUNS.items()
    ]
    template.save(data)
    res = template.generate("--no-check-paths")
    assert res.code == 0, res.out + res.err
    return template


@pytest.fixture
def contract(contract_template, pytester, restore_syrupy) -> Planted:
    import shutil

    shutil.copytree(contract_template.dir, pytester.path / EXP)
    local = pytester.path / "scaffold.local.yaml"
    shutil.copy(contract_template.local, local)
    return Planted(pytester.path / EXP, local)


def parity_failures(out) -> set[str]:
    return {t.removeprefix("train_eval_parity[").removesuffix("]") for t in out.failed if "train_eval_parity" in t}


def test_every_evaluator_case_passes_train_eval_parity(contract: Planted, pytester) -> None:
    out = contract.verify(pytester, "-k", "train_eval_parity")
    assert not out.failed and {f"train_eval_parity[{n}]" for n in CONTRACT_RUNS} <= out.passed, out.text


def _no_bos_strip(monkeypatch) -> None:
    from scaffold.torchtune_ext import eval_contract

    monkeypatch.setattr(eval_contract, "without_special_tokens", lambda post_processor: post_processor)


def _no_date_default(monkeypatch) -> None:
    from scaffold.torchtune_ext import eval_contract

    monkeypatch.setattr(eval_contract, "with_date_default", lambda template, date: template)


def _no_empty_system_turn(monkeypatch) -> None:
    from scaffold.torchtune_ext import datasets

    def old_conversation(prompt, system_prompt, record):
        system = [{"role": "system", "content": system_prompt}] if system_prompt else []
        return [*system, {"role": "user", "content": datasets.fill_prompt(prompt, record)}]

    monkeypatch.setattr(datasets, "conversation", old_conversation)


def _no_plain_template(monkeypatch) -> None:
    from scaffold.torchtune_ext import eval_contract

    monkeypatch.setattr(eval_contract, "PLAIN_TEMPLATE", None)  # the provider's `user: PROMPT` fallback


@pytest.mark.parametrize(
    "plant, failing, words",
    [
        (_no_bos_strip, {"llama-chat", "llama-chat-empty"}, "<|begin_of_text|><|begin_of_text|>"),
        (_no_date_default, {"llama-chat", "llama-chat-empty"}, "Date: 26 Jul"),
        (_no_empty_system_turn, {"qwen-chat-empty"}, "You are Qwen"),
        (_no_plain_template, {"llama-base", "qwen-base"}, "user: "),
    ],
    ids=["second-bos", "evaluation-day-date", "no-empty-system-turn", "base-model-user-prefix"],
)
def test_each_measured_difference_fails_train_eval_parity(contract, pytester, monkeypatch, plant, failing, words):
    plant(monkeypatch)
    out = contract.verify(pytester, "-k", "train_eval_parity")
    assert parity_failures(out) == failing, out.text
    assert "differs from what the evaluator feeds the model" in out.text and words in out.text, out.text
