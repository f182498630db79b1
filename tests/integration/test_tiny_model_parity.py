"""The tiny models mean the same thing to torchtune 0.6.1 and to Hugging Face transformers: the same token ids for
plain text (torchtune's llama3 / qwen2_5 tokenizers vs the model directory's tokenizer.json) and the same logits
(torchtune's checkpointer + builder vs transformers' AutoModelForCausalLM). Run by `nox -s integration`."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torchtune", reason="torchtune is not installed here: run `nox -s integration`")
pytest.importorskip("transformers", reason="transformers is not installed here: run `nox -s integration`")

from scaffold.testing import hf_tokenizers, tiny_model  # noqa: E402

from ..conftest import REPO  # noqa: E402

pytestmark = pytest.mark.integration

TEXTS = [
    "Capitalize the given word: apple\n",
    "You are a helpful assistant.",
    "  leading spaces, trailing spaces   \n\n\nparagraphs\n\n  indented 12345 6789 3.14159",
    "Ünïcödé ﬁ café — 日本語 テキスト 😀 'quotes' \"double\" it's they're I'M",
    "\t\r\n tabs\tand\r\nCRLF ",
    "",
]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("parity")
    return {
        "llama3": tiny_model.make_tiny_llama(root / "llama"),
        "qwen2": tiny_model.make_tiny_qwen(root / "qwen"),
    }


@pytest.fixture(scope="module")
def hf_tokenizers_loaded(models):
    import transformers

    return {
        family: transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        for family, path in models.items()
    }


def corpus() -> list[str]:
    return TEXTS + [path.read_text(encoding="utf-8") for path in sorted((REPO / "scaffold").glob("*.py"))[:8]]


def test_llama_ids_agree_with_torchtune(models, hf_tokenizers_loaded) -> None:
    from torchtune.models.llama3 import llama3_tokenizer

    tt = llama3_tokenizer(**tiny_model.tiny_tokenizer_kwargs(models["llama3"]))
    hf = hf_tokenizers_loaded["llama3"]
    assert tt.special_tokens == hf_tokenizers.added_tokens("llama3")
    for text in corpus():
        assert tt.encode(text, add_bos=False, add_eos=False) == hf(text, add_special_tokens=False).input_ids, text[:80]
        if text:  # torchtune encodes "" as [] even with add_bos
            assert tt.encode(text, add_bos=True, add_eos=False) == hf(text).input_ids, text[:80]
    assert (tt.bos_id, tt.eot_id, tt.pad_id) == (hf.bos_token_id, hf.eos_token_id, 503)


def test_qwen_ids_agree_with_torchtune(models, hf_tokenizers_loaded) -> None:
    from omegaconf import OmegaConf
    from torchtune.config import instantiate

    entry = tiny_model.qwen_registry_entry()["tokenizer"]
    cfg = {"_component_": entry["component"], **{k: str(models["qwen2"] / v) for k, v in entry["files"].items()}}
    tt = instantiate(OmegaConf.create(cfg))
    hf = hf_tokenizers_loaded["qwen2"]
    for text in corpus():
        assert tt.encode(text, add_bos=False, add_eos=False) == hf(text).input_ids, text[:80]
    assert (tt.eos_id, tt.pad_id, tt.im_start_id) == (hf.eos_token_id, hf.pad_token_id, 500)
    assert max(tt.special_tokens.values()) < tiny_model.TINY_QWEN_MODEL_KWARGS["vocab_size"]


@pytest.mark.parametrize("family", ["llama3", "qwen2"])
def test_torchtune_and_transformers_compute_the_same_logits(models, hf_tokenizers_loaded, tmp_path, family) -> None:
    import torch
    import transformers
    from torchtune.models.llama3_2 import llama3_2
    from torchtune.models.qwen2 import qwen2
    from torchtune.training import FullModelHFCheckpointer

    builder, kw, model_type = {
        "llama3": (llama3_2, tiny_model.TINY_LLAMA_MODEL_KWARGS, "LLAMA3_2"),
        "qwen2": (qwen2, tiny_model.TINY_QWEN_MODEL_KWARGS, "QWEN2"),
    }[family]
    checkpointer = FullModelHFCheckpointer(
        checkpoint_dir=str(models[family]),
        checkpoint_files=[tiny_model.WEIGHTS_FILE],
        model_type=model_type,
        output_dir=str(tmp_path),
    )
    model = builder(**kw)
    model.load_state_dict(checkpointer.load_checkpoint()["model"], strict=True)
    reference = transformers.AutoModelForCausalLM.from_pretrained(models[family], local_files_only=True)
    tok = hf_tokenizers_loaded[family]
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "Capitalize the given word: apple"}, {"role": "assistant", "content": "Apple"}],
        tokenize=True,
        return_dict=False,
        date_string="26 Jul 2024",
    )
    x = torch.tensor([ids])
    with torch.no_grad():
        ours, theirs = model(x), reference(x).logits
    assert ours.shape == theirs.shape == (1, len(ids), kw["vocab_size"])
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
