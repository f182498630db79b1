"""The tiny offline Hugging Face tokenizers (scaffold.testing.hf_tokenizers) carry the real Llama 3.2 / Qwen2.5
Instruct chat templates and load with transformers.AutoTokenizer offline; their ids fit the tiny models."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("tokenizers", reason="the tokenizers library is not installed (pip install -e '.[test]')")
pytest.importorskip("transformers", reason="transformers is not installed (pip install -e '.[test]')")

from scaffold.testing import hf_tokenizers, tiny_model  # noqa: E402

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
DATE = "26 Jul 2024"
SYSTEM = "You are a helpful assistant."
USER = "Capitalize the given word: apple"
ANSWER = "Apple"

# The real templates (see the module docstring of hf_tokenizers for where they come from).
TEMPLATE_SHA256 = {
    "llama3": "5816fce10444e03c2e9ee1ef8a4a1ea61ae7e69e438613f3b17b69d0426223a4",
    "qwen2": "cd8e9439f0570856fd70470bf8889ebd8b5d1107207f67a5efb46e342330527f",
}


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf_tokenizers")
    for family in hf_tokenizers.FAMILIES:
        hf_tokenizers.write_hf_tokenizer(root / family, family)
    return {family: root / family for family in hf_tokenizers.FAMILIES}


@pytest.fixture(scope="module")
def tokenizers(written):
    with pytest.MonkeyPatch.context() as mp:
        for key, value in OFFLINE.items():
            mp.setenv(key, value)
        import transformers

        yield {family: transformers.AutoTokenizer.from_pretrained(path) for family, path in written.items()}


def messages(system: bool, answer: bool = False) -> list[dict[str, str]]:
    out = [{"role": "system", "content": SYSTEM}] if system else []
    out.append({"role": "user", "content": USER})
    if answer:
        out.append({"role": "assistant", "content": ANSWER})
    return out


def render(tok, msgs, *, tokenize: bool = False, prompt: bool = True):
    return tok.apply_chat_template(
        msgs,
        tokenize=tokenize,
        add_generation_prompt=prompt,
        date_string=DATE,
        **({"return_dict": False} if tokenize else {}),
    )


@pytest.mark.parametrize("family", hf_tokenizers.FAMILIES)
def test_templates_are_the_real_ones_and_are_written_verbatim(written, family: str) -> None:
    template = hf_tokenizers.chat_template(family)
    assert hashlib.sha256(template.encode("utf-8")).hexdigest() == TEMPLATE_SHA256[family]
    config = json.loads((written[family] / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["chat_template"] == template


def test_writing_is_deterministic(tmp_path: Path) -> None:
    for family in hf_tokenizers.FAMILIES:
        a = hf_tokenizers.write_hf_tokenizer(tmp_path / "a" / family, family).parent
        b = hf_tokenizers.write_hf_tokenizer(tmp_path / "b" / family, family).parent
        names = sorted(p.name for p in a.iterdir())
        assert names == sorted(p.name for p in b.iterdir())
        assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names), family
    assert {p.name for p in (tmp_path / "a" / "qwen2").iterdir()} >= {"vocab.json", "merges.txt", "tokenizer.json"}


def test_both_load_offline_in_a_fresh_process(written) -> None:
    code = (
        "import sys, transformers\n"
        "for d in sys.argv[1:]:\n"
        "    t = transformers.AutoTokenizer.from_pretrained(d, local_files_only=True)\n"
        "    print(len(t), t.eos_token)\n"
    )
    env = {**os.environ, **OFFLINE}
    proc = subprocess.run(
        [sys.executable, "-c", code, str(written["llama3"]), str(written["qwen2"])],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[:2] == ["512 <|eot_id|>", "521 <|im_end|>"]


def test_llama_renders_the_real_template_text(tokenizers) -> None:
    tok = tokenizers["llama3"]
    header = (
        f"<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: {DATE}\n\n"
    )
    user = f"<|start_header_id|>user<|end_header_id|>\n\n{USER}<|eot_id|>"
    assistant = "<|start_header_id|>assistant<|end_header_id|>\n\n"
    assert render(tok, messages(True)) == f"<|begin_of_text|>{header}{SYSTEM}<|eot_id|>{user}{assistant}"
    # No system message: the header block is still there, empty.
    assert render(tok, messages(False)) == f"<|begin_of_text|>{header}<|eot_id|>{user}{assistant}"
    full = render(tok, messages(True, answer=True), prompt=False)
    assert full == f"<|begin_of_text|>{header}{SYSTEM}<|eot_id|>{user}{assistant}{ANSWER}<|eot_id|>"


def test_qwen_renders_the_real_template_text(tokenizers) -> None:
    tok = tokenizers["qwen2"]
    user = f"<|im_start|>user\n{USER}<|im_end|>\n<|im_start|>assistant\n"
    default = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    assert render(tok, messages(False)) == f"<|im_start|>system\n{default}<|im_end|>\n{user}"
    assert render(tok, messages(True)) == f"<|im_start|>system\n{SYSTEM}<|im_end|>\n{user}"
    full = render(tok, messages(True, answer=True), prompt=False)
    assert full == f"<|im_start|>system\n{SYSTEM}<|im_end|>\n{user}{ANSWER}<|im_end|>\n"


def test_llama_bos_appears_once(tokenizers) -> None:
    tok = tokenizers["llama3"]
    bos = tok.convert_tokens_to_ids("<|begin_of_text|>")
    assert bos == tok.bos_token_id == 499
    ids = tok("Hello world").input_ids
    assert ids[0] == bos and ids.count(bos) == 1
    chat = render(tok, messages(True), tokenize=True)
    assert isinstance(chat, list) and chat[0] == bos and chat.count(bos) == 1
    # The rendered text already starts with BOS: encode it without the post-processor's.
    assert tok(render(tok, messages(True)), add_special_tokens=False).input_ids == chat


def test_qwen_adds_no_bos(tokenizers) -> None:
    tok = tokenizers["qwen2"]
    assert tok.bos_token is None
    chat = render(tok, messages(True), tokenize=True)
    assert tok(render(tok, messages(True))).input_ids == chat
    assert chat[0] == tok.convert_tokens_to_ids("<|im_start|>")


@pytest.mark.parametrize("family", hf_tokenizers.FAMILIES)
@pytest.mark.parametrize("system", [True, False])
def test_prompt_ids_are_a_prefix_of_the_conversation(tokenizers, family: str, system: bool) -> None:
    tok = tokenizers[family]
    prompt = render(tok, messages(system), tokenize=True)
    full = render(tok, messages(system, answer=True), tokenize=True, prompt=False)
    assert len(full) > len(prompt) and full[: len(prompt)] == prompt
    assert tok.decode(prompt, skip_special_tokens=False) == render(tok, messages(system))


def test_paragraph_break_is_one_token_as_in_the_real_vocabularies(tokenizers) -> None:
    for tok in tokenizers.values():
        assert len(tok("\n\n", add_special_tokens=False).input_ids) == 1


def test_added_tokens_follow_the_bpe_and_fit_the_tiny_models(written, tokenizers) -> None:
    llama = json.loads((written["llama3"] / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    assert [(t["content"], t["id"]) for t in llama] == [
        (name, 499 + i) for i, name in enumerate(tiny_model.LLAMA3_SPECIAL_TOKEN_NAMES)
    ]
    assert tiny_model.special_tokens() == {t["content"]: t["id"] for t in llama}
    qwen = json.loads((written["qwen2"] / "tokenizer.json").read_text(encoding="utf-8"))["added_tokens"]
    assert [(t["content"], t["id"], t["special"]) for t in qwen] == [
        (name, 499 + i, special) for i, (name, special) in enumerate(hf_tokenizers.QWEN2_ADDED_TOKENS)
    ]
    q = tokenizers["qwen2"]
    assert (q.eos_token, q.eos_token_id, q.pad_token, q.pad_token_id) == ("<|im_end|>", 501, "<|endoftext|>", 499)
    assert tokenizers["llama3"].eos_token_id == 499 + tiny_model.LLAMA3_SPECIAL_TOKEN_NAMES.index("<|eot_id|>")
    assert len(tokenizers["llama3"]) == hf_tokenizers.vocab_size("llama3") == tiny_model.VOCAB_SIZE
    assert len(q) == hf_tokenizers.vocab_size("qwen2") <= tiny_model.TINY_QWEN_MODEL_KWARGS["vocab_size"]
    gen = json.loads((written["qwen2"] / "generation_config.json").read_text(encoding="utf-8"))
    assert gen == {"bos_token_id": 499, "eos_token_id": [501, 499], "pad_token_id": 499}


def test_the_llama_tiktoken_file_has_the_same_ranks(tmp_path: Path, tokenizers) -> None:
    """The tiktoken file torchtune reads and the HF tokenizer.json are one BPE (the ids of their plain-text
    encodings are compared with torchtune itself in tests/integration)."""
    import base64

    path = tiny_model.write_tokenizer(tmp_path)
    ranks = [base64.b64decode(tok) for tok, _rank in (ln.split() for ln in path.read_text().splitlines())]
    assert tuple(ranks) == hf_tokenizers.bpe_vocabulary() and len(ranks) == hf_tokenizers.NUM_BPE_TOKENS
    bpe, _merges = hf_tokenizers.bpe_vocab_and_merges()
    vocab = tokenizers["llama3"].get_vocab()
    assert {token: vocab[token] for token in bpe} == bpe and len(vocab) == len(bpe) + 13
    assert (tmp_path / "tokenizer.json").is_file()


def test_unknown_family_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="llama3, qwen2"):
        hf_tokenizers.write_hf_tokenizer(tmp_path, "mistral")
    with pytest.raises(ValueError, match="llama3, qwen2"):
        tiny_model.write_experiment(tmp_path, "x", {}, {}, family="gemma")
